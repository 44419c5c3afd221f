"""The model picker: model folders a person adds are checked at once, remembered per user (also after a
restart) and can be forgotten; a bad folder is refused in one sentence and not remembered."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlhf_core import kinds

pytest.importorskip("PySide6")

GPT2 = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": 16, "n_embd": 8, "n_layer": 1,
        "n_head": 2}
BERT = {"architectures": ["BertForMaskedLM"], "model_type": "bert", "vocab_size": 16, "hidden_size": 8}


def model_folder(root: Path, name: str, config: dict, *, weights: str = "model.safetensors",
                 tokenizer: str | None = "vocab.json") -> Path:
    """A folder with the files check_model_folder reads (a valid safetensors header, no real model)."""
    folder = root / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    if weights == "model.safetensors":
        header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
        (folder / weights).write_bytes(len(header).to_bytes(8, "little") + header + b"\x00" * 8)
    else:
        (folder / weights).write_bytes(b"pickled")
    if tokenizer:
        (folder / tokenizer).write_text("{}")
    return folder


def _box(qtbot, settings):
    from app.training.config_form import ArtefactBox

    box = ArtefactBox("", (kinds.TEXT_POLICY,), "(the bundled SmolLM2-135M-Instruct)", settings=settings)
    qtbot.addWidget(box.row)
    return box


def test_an_added_folder_is_remembered_after_a_restart_and_can_be_forgotten(qtbot, tmp_path):
    from app.settings import Settings

    path = str(tmp_path / "settings.ini")
    gpt2 = model_folder(tmp_path, "tiny-gpt2", GPT2)
    box = _box(qtbot, Settings(path))
    assert box.count() == 1 and box.remembers
    assert box.add_folder(str(gpt2)) and box.text() == str(gpt2)
    assert box.problem.isHidden()

    again = _box(qtbot, Settings(path))  # a new widget on a new Settings object: as after a restart
    datas = [again.itemData(i) for i in range(again.count())]
    assert datas[0] == "" and datas[-1] == str(gpt2)
    assert again.itemText(again.count() - 1) == "tiny-gpt2 — your folder · gpt2"
    assert again.text() == ""  # listed, not chosen
    again.setCurrentIndex(again.count() - 1)
    assert again.text() == str(gpt2)

    again.forget_folder(str(gpt2))
    assert Settings(path).model_folders() == [] and again.count() == 1 and again.text() == ""
    assert gpt2.is_dir()  # forgetting leaves the folder alone


@pytest.mark.parametrize("name, build, words", [
    ("bert", lambda root: model_folder(root, "bert", BERT, tokenizer="vocab.txt"), "causal language model"),
    ("pickled", lambda root: model_folder(root, "pickled", GPT2, weights="pytorch_model.bin"),
     "only pytorch_model.bin"),
    ("no-tokenizer", lambda root: model_folder(root, "no-tokenizer", GPT2, tokenizer=None), "no tokenizer files"),
    ("photos", lambda root: root / "photos", "not a Hugging Face model folder"),
])
def test_a_bad_folder_is_refused_in_a_sentence_and_not_remembered(qtbot, tmp_path, name, build, words):
    from app.settings import Settings

    path = str(tmp_path / "settings.ini")
    folder = build(tmp_path)
    folder.mkdir(exist_ok=True)
    box = _box(qtbot, Settings(path))
    box.setText("run:3")
    assert not box.add_folder(str(folder))
    text = box.problem.text()
    assert words in text and "\n" not in text and "Traceback" not in text
    assert not box.problem.isHidden()
    assert Settings(path).model_folders() == [] and box.count() == 1
    assert box.text() == "run:3"  # the setting is unchanged
    box.setEditText("run:4")  # a new choice clears the old problem
    assert box.problem.isHidden()


def test_text_job_forms_list_the_folders_and_reward_pickers_do_not(qtbot, tmp_path):
    from app.settings import Settings
    from app.training.config_form import ArtefactBox, ConfigForm
    from rlhf_core.trainers.text.ppo import PPOTextConfig

    gpt2 = model_folder(tmp_path, "tiny-gpt2", GPT2)
    Settings().add_model_folder(str(gpt2))  # the per-test user folder, as the app's forms read it
    form = ConfigForm(PPOTextConfig)
    qtbot.addWidget(form)
    model, reward = form.editors["model"], form.editors["reward_model"]
    assert isinstance(model, ArtefactBox) and model.findData(str(gpt2)) > 0
    assert reward.findData(str(gpt2)) < 0 and not reward.remembers
    model.setCurrentIndex(model.findData(str(gpt2)))
    assert form.values()["model"] == str(gpt2)


def test_every_text_jobs_model_setting_is_a_text_model_picker():
    from rlhf_core import config as cfg
    from rlhf_core.registry import list_jobs

    with_model = []
    for spec in list_jobs():
        info = {f.name: f for f in cfg.fields(spec.config_class())}.get("model")
        if info is not None:
            with_model.append(spec.name)
            assert info.type is str and kinds.TEXT_POLICY in (info.artefact or ()), spec.name
    assert {"generate", "sft", "dpo", "grpo", "ppo_text", "text_reward_model"} <= set(with_model)
