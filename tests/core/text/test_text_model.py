"""Language models: the one-time GGUF conversion, loading local folders, and clear errors."""

from __future__ import annotations

import json
import os
import shutil
import struct
import time

import pytest

from tests.conftest import link_default_into_home, needs_model

pytestmark = needs_model


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    torch.set_num_threads(1)


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_real_conversion_writes_a_complete_bf16_safetensors_folder(converted_model):
    from rlhf_core.text.model import MARKER_NAME, is_converted, read_marker

    assert is_converted(converted_model)
    marker = read_marker(converted_model)
    assert marker["source"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert marker["storage_dtype"] == "bfloat16"
    assert marker["parameters"] == 134_515_008
    assert marker["conversion_seconds"] < 300  # a sanity bound (21.6 s measured quietly; docs/performance.md)
    assert len(marker["source_sha256"]) == 64
    # bf16 on disk: every tensor in the header says BF16, and the file is ~2 bytes per parameter
    weights = converted_model / "model.safetensors"
    with open(weights, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(n))
    dtypes = {v["dtype"] for k, v in header.items() if k != "__metadata__"}
    assert dtypes == {"BF16"}
    assert 2 * 134_000_000 < weights.stat().st_size < 2 * 135_000_000
    # nothing half-written is left next to it
    assert [p.name for p in converted_model.parent.iterdir()] == [converted_model.name]
    assert (converted_model / MARKER_NAME).is_file()
    assert os.stat(converted_model).st_mode & 0o755 == 0o755


def test_converted_model_loads_as_float32_and_answers_sensibly(converted_model):
    import torch

    from rlhf_core.text.generation import SamplingSettings, generate_batch
    from rlhf_core.text.model import load_model
    from rlhf_core.text.prompts import PromptTemplate

    lm = load_model(converted_model)
    assert lm.model.dtype == torch.float32 and not lm.model.training
    assert type(lm.model).__name__ == "LlamaForCausalLM"
    assert lm.tokenizer.pad_token == lm.tokenizer.eos_token == "<|im_end|>"
    assert lm.tokenizer.padding_side == "left" and lm.eos_token_ids == [2]
    prompt = PromptTemplate().render(lm.tokenizer, "What is the capital of France?")
    assert prompt.startswith("<|im_start|>system\n") and prompt.endswith("<|im_start|>assistant\n")
    [c], _ = generate_batch(lm.model, lm.tokenizer, [prompt], SamplingSettings(max_new_tokens=16, temperature=0),
                            [0])
    assert "Paris" in c.text and c.finish_reason == "stop"  # de-quantised weights are right


def test_default_model_is_found_in_the_cache_without_converting_again(converted_model, _private_home):
    from rlhf_core.text.model import DEFAULT_MODEL_NAME, default_model_dir, ensure_default_model, load_model

    link_default_into_home(_private_home, converted_model)
    t0 = time.monotonic()
    assert ensure_default_model() == default_model_dir()
    lm = load_model(None)
    assert lm.model_id == DEFAULT_MODEL_NAME and time.monotonic() - t0 < 20


def test_a_bad_gguf_file_leaves_no_folder_behind(tmp_path):
    from rlhf_core.text.model import CorruptModelError, convert_gguf

    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 64)
    target = tmp_path / "models" / "broken"
    with pytest.raises(CorruptModelError, match="broken.gguf"):
        convert_gguf(bad, target)
    assert not target.exists()
    assert list((tmp_path / "models").iterdir()) == []  # the temporary folder was removed too


def test_stale_partial_folders_are_cleaned_up(tmp_path):
    from rlhf_core.text.model import _remove_stale_partials

    target = tmp_path / "SmolLM2-135M-Instruct"
    old = tmp_path / ".SmolLM2-135M-Instruct.partial-abc"
    fresh = tmp_path / ".SmolLM2-135M-Instruct.partial-def"
    old.mkdir()
    fresh.mkdir()
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    _remove_stale_partials(target)
    assert not old.exists() and fresh.exists()  # a conversion running elsewhere is left alone


def test_tiny_model_has_the_real_tokenizer(tiny_model, converted_model):
    from transformers import AutoTokenizer

    from rlhf_core.text.model import load_model

    lm = load_model(tiny_model)
    real = AutoTokenizer.from_pretrained(converted_model)
    assert lm.model.config.num_hidden_layers == 2 and lm.model.config.hidden_size == 64
    assert lm.model.config.vocab_size == len(real) == 49152
    assert sum(p.numel() for p in lm.model.parameters()) < 4_000_000
    text = "Explain reinforcement learning to a 6 year old."
    assert lm.tokenizer(text)["input_ids"] == real(text)["input_ids"]
    assert lm.tokenizer.chat_template == real.chat_template


def test_missing_folder_is_a_clear_error(tmp_path):
    from rlhf_core.text.model import ModelNotFoundError, load_model

    with pytest.raises(ModelNotFoundError, match="No model folder at .*nowhere"):
        load_model(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        load_model(tmp_path / "empty")


def test_hub_ids_need_the_network_switched_on():
    from rlhf_core.text.model import ModelNotFoundError, NetworkDisabledError, load_model

    with pytest.raises(ModelNotFoundError, match="hub is off"):
        load_model("HuggingFaceTB/SmolLM2-135M-Instruct")
    with pytest.raises(NetworkDisabledError, match="Allow downloads from the Hugging Face hub"):
        load_model("HuggingFaceTB/SmolLM2-135M-Instruct", allow_network=True)


def test_the_network_switch_flips_the_hub_offline_flag_and_back():
    import os

    import huggingface_hub.constants as hub_constants

    from rlhf_core.runtime import network_allowed, set_network_allowed

    assert not network_allowed() and hub_constants.HF_HUB_OFFLINE
    try:
        set_network_allowed(True)
        assert network_allowed() and not hub_constants.HF_HUB_OFFLINE
        assert os.environ["HF_HUB_OFFLINE"] == "0" and os.environ["HF_HUB_DISABLE_TELEMETRY"] == "1"
    finally:
        set_network_allowed(False)
    assert not network_allowed() and os.environ["HF_HUB_OFFLINE"] == "1"


@pytest.mark.parametrize(
    "config, what",
    [
        ({"model_type": "bert", "architectures": ["BertForMaskedLM"], "hidden_size": 64}, "BertForMaskedLM"),
        ({"model_type": "bert", "hidden_size": 64}, "bert"),
        ({"model_type": "t5", "architectures": ["T5ForConditionalGeneration"], "is_encoder_decoder": True},
         "encoder-decoder"),
        ({"model_type": "vit", "architectures": ["ViTForImageClassification"]}, "ViTForImageClassification"),
    ],
)
def test_a_model_that_is_not_a_causal_lm_is_refused(tmp_path, config, what):
    from rlhf_core.text.model import NotACausalLMError, load_model

    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(NotACausalLMError, match=what) as info:
        load_model(tmp_path)
    assert "causal language model" in str(info.value)


def test_corrupt_weights_are_a_clear_error(tiny_model, tmp_path):
    from rlhf_core.text.model import CorruptModelError, load_model

    truncated = _copy(tiny_model, tmp_path / "truncated")
    weights = truncated / "model.safetensors"
    with open(weights, "r+b") as fh:
        fh.truncate(weights.stat().st_size // 2)
    with pytest.raises(CorruptModelError, match="model.safetensors is damaged .*truncated"):
        load_model(truncated)

    garbage = _copy(tiny_model, tmp_path / "garbage")
    (garbage / "model.safetensors").write_bytes(b"\x00\x01not a safetensors file at all" * 10)
    with pytest.raises(CorruptModelError, match="damaged"):
        load_model(garbage)

    bad_config = _copy(tiny_model, tmp_path / "bad-config")
    (bad_config / "config.json").write_text("{not json")
    with pytest.raises(CorruptModelError, match="config.json is damaged"):
        load_model(bad_config)


def test_weights_that_do_not_fit_the_config_are_refused(tiny_model, tmp_path):
    from rlhf_core.text.model import CorruptModelError, load_model

    folder = _copy(tiny_model, tmp_path / "three-layers")
    config = json.loads((folder / "config.json").read_text())
    config["num_hidden_layers"] = 3  # the file only has two layers' weights
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CorruptModelError, match="do not match its config.json .*missing"):
        load_model(folder)


def test_pickle_weights_are_never_loaded(tiny_model, tmp_path):
    from rlhf_core.text.model import CorruptModelError, load_model

    folder = _copy(tiny_model, tmp_path / "pickled")
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(CorruptModelError, match="no safetensors weights.*pytorch_model.bin"):
        load_model(folder)
