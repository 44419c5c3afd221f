"""check_model_folder: a folder that cannot be a workbench model is refused in one sentence, from its files
alone, before transformers is asked to load it (folders built here; no model is loaded)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlhf_core.text.model import (
    CorruptModelError,
    ModelError,
    ModelNotFoundError,
    NotACausalLMError,
    check_model_folder,
    load_model,
)

LLAMA = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 16, "hidden_size": 8,
         "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16}
BERT = {"architectures": ["BertForMaskedLM"], "model_type": "bert", "vocab_size": 16, "hidden_size": 8,
        "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16}


def _weights(path: Path) -> None:
    """A structurally valid safetensors file (what the check reads: its header and size)."""
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    path.write_bytes(len(header).to_bytes(8, "little") + header + b"\x00" * 8)


def make_folder(root: Path, name: str, *, config: dict | None = LLAMA, weights: str | None = "model.safetensors",
                tokenizer: str | None = "tokenizer.json") -> Path:
    folder = root / name
    folder.mkdir()
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    if weights == "model.safetensors":
        _weights(folder / weights)
    elif weights:
        (folder / weights).write_bytes(b"PK\x03\x04 pickled tensors")
    if tokenizer:
        (folder / tokenizer).write_text("{}")
    return folder


def _one_sentence(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and "Traceback" not in text and len(text) < 400, text
    return text


def test_a_complete_folder_passes(tmp_path):
    assert check_model_folder(make_folder(tmp_path, "ok"))["model_type"] == "llama"
    # GPT-2's byte-level BPE files count as a tokenizer too
    gpt2 = make_folder(tmp_path, "gpt2", config={"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
                                                 "vocab_size": 16, "n_embd": 8, "n_layer": 1, "n_head": 2},
                       tokenizer="vocab.json")
    assert check_model_folder(gpt2)["model_type"] == "gpt2"


def test_a_bert_folder_is_not_a_causal_lm(tmp_path):
    folder = make_folder(tmp_path, "bert", config=BERT, tokenizer="vocab.txt")
    with pytest.raises(NotACausalLMError) as info:
        check_model_folder(folder)
    text = _one_sentence(info.value)
    assert "BertForMaskedLM" in text and "causal language model" in text


def test_pickle_only_weights_are_refused_with_what_to_do(tmp_path):
    folder = make_folder(tmp_path, "pickled", weights="pytorch_model.bin")
    with pytest.raises(CorruptModelError) as info:
        check_model_folder(folder)
    text = _one_sentence(info.value)
    assert "only pytorch_model.bin" in text and "safe_serialization=True" in text


def test_a_folder_without_tokenizer_files_is_refused(tmp_path):
    folder = make_folder(tmp_path, "no-tokenizer", tokenizer=None)
    (folder / "tokenizer_config.json").write_text("{}")  # settings alone cannot build a tokenizer
    with pytest.raises(CorruptModelError) as info:
        check_model_folder(folder)
    assert "has no tokenizer files" in _one_sentence(info.value)
    # loading says the same before transformers tries (which would fail on the missing tokenizer otherwise)
    with pytest.raises(CorruptModelError, match="has no tokenizer files"):
        load_model(folder)


def test_a_folder_that_is_not_a_model_folder(tmp_path):
    folder = make_folder(tmp_path, "photos", config=None, weights=None, tokenizer=None)
    (folder / "holiday.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(ModelNotFoundError) as info:
        check_model_folder(folder)
    assert "is not a Hugging Face model folder" in _one_sentence(info.value)
    with pytest.raises(ModelError, match="path does not exist"):
        check_model_folder(tmp_path / "nowhere")
