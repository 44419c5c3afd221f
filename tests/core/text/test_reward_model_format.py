"""The saved text reward model is a standard ``AutoModelForSequenceClassification`` folder: plain
transformers, its pipeline and TRL's ``RewardTrainer`` open it and score as the workbench does; folders in
the earlier layout (backbone + ``reward_head.safetensors``) are converted when opened, the old files kept."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from tests.conftest import needs_model

pytestmark = needs_model

PAIRS = [("Say hello.", "Hello! How can I help you today?", "Go away."),
         ("Name a fruit.", "An apple.", "A rock is a fruit, and so is a chair."),
         ("What is a reward model?", "A network that scores a response with one number.", "No.")]


def _texts(tok):
    from rlhf_core.text.reward_model import format_pair_text

    texts = [format_pair_text(tok, p, r) for p, c, w in PAIRS for r in (c, w)]
    # not what the job scores, but the same rule must hold: a text ending with the pad token
    # (<|im_end|>) is scored on the token before it, one with the pad token inside on its last token
    return texts + [f"plain text{tok.pad_token}", f"pad {tok.pad_token} inside, then more words"]


def _nudged_model(tiny_model, seed=3):
    from rlhf_core.text.reward_model import load_base_reward_model

    model, tok, _ = load_base_reward_model(str(tiny_model), max_length=64, seed=seed)
    with torch.no_grad():
        model.head.weight.mul_(3.0)  # rewards spread out, so equal scores are not an accident
    return model.eval(), tok


def _transformers_scores(folder, texts):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    clf = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    enc = tok(texts, padding=True, return_tensors="pt")
    assert int(enc["attention_mask"].sum(1).min()) < enc["input_ids"].shape[1]  # padding present
    with torch.no_grad():
        batched = clf(**enc).logits[:, 0]
    pipe = pipeline("text-classification", model=str(folder), function_to_apply="none")
    one_by_one = torch.tensor([r["score"] for r in pipe(texts)])
    in_batches = torch.tensor([r["score"] for r in pipe(texts, batch_size=4)])
    return clf, batched, one_by_one, in_batches


def test_saved_folder_is_a_standard_sequence_classifier_that_scores_as_the_workbench(tiny_model, tmp_path):
    from safetensors import safe_open

    from rlhf_core.text.reward_model import load_text_reward_model, save_text_reward_model

    model, tok = _nudged_model(tiny_model)
    folder = save_text_reward_model(model, tmp_path / "rm", meta={"base_model": str(tiny_model)})
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["LlamaForSequenceClassification"]
    assert len(config["id2label"]) == 1 and config["pad_token_id"] == tok.pad_token_id == 2
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        names = set(f.keys())
        assert f.metadata().get("format") == "pt"
    assert "score.weight" in names and "score.bias" not in names and "model.embed_tokens.weight" in names
    assert not list(folder.glob("*.bin")) and not (folder / "reward_head.safetensors").exists()
    assert json.loads((folder / "tokenizer_config.json").read_text())["pad_token"] == "<|im_end|>"
    assert json.loads((folder / "reward_model.json").read_text())["version"] == 2

    texts = _texts(tok)
    with torch.no_grad():
        before = model.score(texts)
        loaded, tok2 = load_text_reward_model(folder)
        ours = loaded.score(texts)
    torch.testing.assert_close(ours, before, rtol=0, atol=1e-5)
    assert float(ours.std()) > 0.05
    clf, batched, one_by_one, in_batches = _transformers_scores(folder, texts)
    for theirs in (batched, one_by_one, in_batches):
        assert float((theirs - ours).abs().max()) < 1e-4, (theirs, ours)
    # the pad-token rule: a trailing pad token is skipped, so the text scores like the one without it
    with torch.no_grad():
        assert abs(float(loaded.score(["plain text"])[0]) - float(ours[-2])) < 1e-5
    assert torch.equal(clf.score.weight, loaded.head.weight)
    # the text_reward_model job may start from a saved reward model (trained further, not a new head)
    from rlhf_core.text.reward_model import load_base_reward_model

    further, _, model_id = load_base_reward_model(str(folder), max_length=32, seed=99)
    assert torch.equal(further.head.weight, loaded.head.weight) and further.max_length == 32
    assert model_id == str(folder.absolute())


def _write_format_1(model, tok, folder, bias):
    """A reward model folder exactly as the earlier saver wrote it."""
    from safetensors.torch import save_file

    model.backbone.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    save_file({"weight": model.head.weight.detach().contiguous(), "bias": torch.tensor([bias])},
              str(folder / "reward_head.safetensors"))
    record = {"format": "rlhf-workbench-text-reward-model", "version": 1, "max_length": 64,
              "hidden_size": int(model.backbone.config.hidden_size), "padding_side": "right",
              "score_token": "last non-padding token", "base_model": "tiny", "heldout_accuracy": 0.75}
    (folder / "reward_model.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return folder


def test_a_folder_in_the_earlier_layout_is_converted_when_opened_and_its_files_kept(tiny_model, tmp_path):
    from rlhf_core.store.model_card import read_card_header
    from rlhf_core.text.reward_model import OLD_FORMAT_FOLDER, load_text_reward_model

    model, tok = _nudged_model(tiny_model, seed=5)
    folder = _write_format_1(model, tok, tmp_path / "old", bias=0.25)
    assert json.loads((folder / "config.json").read_text())["architectures"] == ["LlamaModel"]
    old_bytes = {p.name: p.read_bytes() for p in folder.iterdir()}
    texts = _texts(tok)[:6]  # what the workbench scores: chat-formatted pairs
    with torch.no_grad():
        old_scores = model.score(texts) + 0.25  # what the old head (weight and bias) gave

    # loading without converting (the cluster import reads someone else's folder) changes nothing
    copy = shutil.copytree(folder, tmp_path / "untouched")
    with torch.no_grad():
        as_is = load_text_reward_model(copy, convert=False)[0].score(texts)
    assert {p.name: p.read_bytes() for p in copy.iterdir()} == old_bytes
    torch.testing.assert_close(as_is, old_scores - 0.25, rtol=0, atol=1e-5)
    # two loaders at once (the app's page and a job): one converts, the other waits and loads the result
    from concurrent.futures import ThreadPoolExecutor

    def load_and_score(_):
        with torch.no_grad():
            return load_text_reward_model(copy)[0].score(texts)

    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(load_and_score, range(2))
    torch.testing.assert_close(first, second, rtol=0, atol=1e-6)
    assert {p.name: p.read_bytes() for p in (copy / OLD_FORMAT_FOLDER).iterdir()} == old_bytes
    assert sorted(p.name for p in copy.iterdir() if p.name.startswith(".")) == []  # no lock or partial left

    loaded, _ = load_text_reward_model(folder)
    with torch.no_grad():
        ours = loaded.score(texts)
    # the bias cannot live in a bias-free score layer: every reward moves by the same constant,
    # so each pair's order and every accuracy stay as they were
    torch.testing.assert_close(ours, old_scores - 0.25, rtol=0, atol=1e-5)
    meta = json.loads((folder / "reward_model.json").read_text())
    assert meta["version"] == 2 and meta["converted_from_version"] == 1 and meta["dropped_head_bias"] == 0.25
    assert meta["heldout_accuracy"] == 0.75 and meta["max_length"] == 64 and loaded.max_length == 64
    kept = folder / OLD_FORMAT_FOLDER
    assert {p.name: p.read_bytes() for p in kept.iterdir()} == old_bytes
    assert not (folder / "reward_head.safetensors").exists()
    assert read_card_header(folder)["rlhf_workbench"]["final_metrics"]["heldout_accuracy"] == 0.75
    # plain transformers reads the converted folder and agrees
    _, batched, one_by_one, _ = _transformers_scores(folder, texts)
    assert float((batched - ours).abs().max()) < 1e-4 and float((one_by_one - ours).abs().max()) < 1e-4
    # opened again: no second conversion, the same rewards
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    with torch.no_grad():
        again = load_text_reward_model(folder)[0].score(texts)
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    torch.testing.assert_close(again, ours, rtol=0, atol=1e-6)


def test_trl_reward_trainer_trains_the_saved_folder_further(tiny_model, tmp_path):
    trl = pytest.importorskip("trl", reason="trl is a test dependency (pip install trl==1.16.0)")
    from datasets import Dataset

    from rlhf_core.text.reward_model import load_classifier_folder, save_text_reward_model

    model, tok = _nudged_model(tiny_model, seed=7)
    folder = save_text_reward_model(model, tmp_path / "rm")
    rows = [{"prompt": [{"role": "user", "content": p}], "chosen": [{"role": "assistant", "content": c}],
             "rejected": [{"role": "assistant", "content": r}]} for p, c, r in PAIRS]
    args = trl.RewardConfig(output_dir=str(tmp_path / "trl"), use_cpu=True, bf16=False, report_to="none",
                            max_length=128, per_device_train_batch_size=3, max_steps=1, learning_rate=1e-2,
                            save_strategy="no", seed=0, disable_tqdm=True)
    trainer = trl.RewardTrainer(model=str(folder), args=args, train_dataset=Dataset.from_list(rows))
    assert type(trainer.model).__name__ == "LlamaForSequenceClassification"
    assert torch.equal(trainer.model.score.weight.detach(), model.head.weight)  # our head, not a random one
    # TRL's first batch scores as the workbench does
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))])
    with torch.no_grad():
        theirs = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, 0]
        ours = model.score(_texts(tok)[:6:2] + _texts(tok)[1:6:2])  # chosen rows first, as TRL's collator
    assert float((theirs - ours).abs().max()) < 1e-4
    trainer.train()
    assert trainer.state.global_step == 1
    assert not torch.equal(trainer.model.score.weight.detach(), model.head.weight)
    trainer.save_model(str(tmp_path / "further"))
    further, _ = load_classifier_folder(tmp_path / "further", max_length=128)
    assert torch.equal(further.head.weight, trainer.model.score.weight.detach().cpu())
