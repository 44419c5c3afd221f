"""The device and precision settings of the text jobs: what resolves here (a CPU-only torch), what is refused
in words (a config check, the CLI, a run's failure), and the memory estimate's shape."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from rlhf_core import config as cfg
from rlhf_core import devices
from rlhf_core.devices import DeviceError
from rlhf_core.sources.generate import GenerateConfig
from rlhf_core.store import describe_failure, describe_stored_error
from rlhf_core.text.rl_common import activation_memory_mb, build_batch, job_device
from rlhf_core.trainers.text.dpo import DPOConfig
from rlhf_core.trainers.text.grpo import GRPOConfig
from rlhf_core.trainers.text.sft import SFTConfig
from tests.conftest import ROOT

JOB_CONFIGS = [GenerateConfig, SFTConfig, DPOConfig, GRPOConfig]


def test_auto_is_the_cpu_here_and_the_default_setting_is_honoured(monkeypatch):
    monkeypatch.delenv(devices.DEVICE_ENV, raising=False)
    assert not torch.cuda.is_available()  # the suite runs on a CPU-only torch
    assert devices.resolve_device("auto") == torch.device("cpu")
    assert devices.resolve_device(" CPU ") == torch.device("cpu")
    monkeypatch.setenv(devices.DEVICE_ENV, "cpu")
    assert devices.resolve_device("auto") == torch.device("cpu")
    monkeypatch.setenv(devices.DEVICE_ENV, "cuda")  # Settings asked for the GPU: auto does not fall back
    with pytest.raises(DeviceError, match="cpu"):
        devices.resolve_device("auto")
    assert devices.resolve_precision("auto", torch.device("cpu")) == "float32"
    assert devices.resolve_precision("bf16", torch.device("cpu")) == "bf16"
    with pytest.raises(DeviceError, match="fp16 needs a GPU"):
        devices.resolve_precision("fp16", torch.device("cpu"))


@pytest.mark.parametrize("spec", ["cuda", "cuda:1"])
def test_the_gpu_is_refused_in_words_without_falling_back(spec, monkeypatch):
    monkeypatch.delenv(devices.DEVICE_ENV, raising=False)
    with pytest.raises(DeviceError) as info:
        devices.resolve_device(spec)
    message = str(info.value)
    assert "torch sees none" in message and "cpu" in message and "\n" not in message
    with pytest.raises(DeviceError):
        job_device(SFTConfig(device=spec))
    failure = describe_failure(info.value)
    assert failure.kind == "bad_device" and "cpu" in failure.sentence
    stored = f"Traceback (most recent call last):\n  File \"x.py\", line 1, in f\nrlhf_core.devices.DeviceError: {message}"
    assert describe_stored_error(stored).kind == "bad_device"


@pytest.mark.parametrize("config_cls", JOB_CONFIGS, ids=lambda c: c.__name__)
def test_every_text_job_has_the_settings_and_refuses_a_misspelt_device(config_cls):
    config = config_cls()
    assert config.device == "auto" and config.precision == "auto"
    cfg.validate(config_cls(device="cuda:0", precision="bf16"))  # spelling only: availability is checked at start
    with pytest.raises(cfg.ConfigError, match="device: must be auto, cpu, cuda or cuda:N"):
        cfg.validate(config_cls(device="gpu"))
    with pytest.raises(cfg.ConfigError, match="precision"):
        cfg.validate(config_cls(precision="half"))


def test_the_cli_refuses_a_bad_device_in_one_sentence():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    bad = subprocess.run([sys.executable, "-m", "rlhf_core", "run", "sft", "--device", "gpu"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0
    assert "Traceback" not in bad.stderr and "device: must be auto, cpu, cuda or cuda:N" in bad.stderr
    assert bad.stdout == ""


def test_batches_follow_the_device_and_the_memory_estimate_grows_with_the_batch():
    batch = build_batch([[1, 2, 3], [4]], [[5, 6], [7]], 0, device="cpu")
    assert batch.input_ids.device.type == "cpu" and batch.to("cpu") is batch
    same = build_batch([[1, 2, 3], [4]], [[5, 6], [7]], 0)
    assert torch.equal(batch.input_ids, same.input_ids) and torch.equal(batch.position_ids, same.position_ids)
    assert torch.equal(batch.select([1]).input_ids, same.input_ids[1:])

    class Config:  # SmolLM2-135M's sizes
        hidden_size, num_hidden_layers, intermediate_size, vocab_size = 576, 30, 1536, 49152

    plain = activation_memory_mb(Config, 4, 512, "float32")
    assert activation_memory_mb(Config, 8, 512, "float32") == pytest.approx(2 * plain)
    assert activation_memory_mb(Config, 4, 512, "float32", gradient_checkpointing=True) < plain
    assert activation_memory_mb(Config, 4, 512, "bf16") < plain
    assert activation_memory_mb(Config, 0, 512, "float32") == 0.0
    devices.check_fits(torch.device("cpu"), 10.0 ** 9)  # the CPU is never refused by the estimate
