"""The GPU check script: refuses a GPU that is not there in one JSON line, and judges its targets only on a GPU."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_asking_for_cuda_without_one_ends_with_the_reason_as_json():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    out = subprocess.run([sys.executable, str(SCRIPT), "--device", "cuda"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    last = json.loads(out.stdout.strip().splitlines()[-1])
    assert last["benchmark"] == "gpu_check" and "sees none here" in last["error"]


def test_summary_judges_targets_on_a_gpu_only():
    summary = _module()._summary
    results = {
        "generation_batch8": {"scenarios": {"fixed_length": {"workbench": {"tokens_per_second": 900.0},
                                                             "model_generate": {"tokens_per_second": 300.0},
                                                             "ratio": 3.0}}},
        "grpo_dpo_vs_trl": {"ratio_grpo": 0.5, "ratio_dpo": 0.7},
        "reward_model_vs_trl": {"ratio": 0.9},
        "grpo_demo": {"wall_seconds": 80.0, "reward_first": 0.2, "reward_last": 0.6},
    }
    gpu = summary(results, on_gpu=True)
    assert gpu["generation_batch8_tokens_per_s"] == {"ours": 900.0, "model_generate": 300.0, "ratio": 3.0}
    assert gpu["targets_met"] == {"grpo_demo_at_most_90s": True, "every_step_at_most_0.8x_trl": False}
    results["reward_model_vs_trl"]["ratio"] = 0.8
    assert summary(results, on_gpu=True)["targets_met"]["every_step_at_most_0.8x_trl"] is True
    del results["reward_model_vs_trl"]  # a part that failed: no verdict rather than a wrong one
    assert summary(results, on_gpu=True)["targets_met"]["every_step_at_most_0.8x_trl"] is None
    assert "targets_met" not in summary(results, on_gpu=False)
