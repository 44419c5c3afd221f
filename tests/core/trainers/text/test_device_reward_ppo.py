"""Device and precision of the text reward model, ppo_text, AI labels and text_eval: the CPU path
records where it ran, bf16 autocast trains and scores on the CPU, and a GPU that is not there is refused
in words before anything is written."""

from __future__ import annotations

import contextlib
import io
import json
import math

import pytest
import torch

from rlhf_core import config as cfg
from rlhf_core.jobs import RecordingContext, execute_job, get_job
from rlhf_core.labelers.ai_feedback import AILabelConfig
from rlhf_core.analysis.text_evaluation import TextEvalConfig
from rlhf_core.store.errors import describe_stored_error
from rlhf_core.text.pairs import TextPair
from rlhf_core.text.reward_model import (format_pair_text, load_base_reward_model, load_text_reward_model,
                                         save_text_reward_model, score_responses)
from rlhf_core.trainers.text.ppo import PPOTextConfig
from rlhf_core.trainers.text.reward_model import TextRewardModelConfig, train_step
from rlhf_core.text.rl_common import make_optimizer
from tests.conftest import add_marker_pairs, needs_model

NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: cuda is not refused")
BATCH = [TextPair("Say hello.", "Hello there friend.", "Go away.", 1.0),
         TextPair("Name a fruit.", "A rock.", "An apple, ripe and sweet.", 0.0),
         TextPair("What is a reward model?", "A learned score.", "I am not sure.", 1.0)]


def _device_keys_are_the_cpus(result: dict) -> None:
    assert result["device"] == "cpu" and result["dtype"] == "float32"
    assert result["peak_memory_mb"] > 0 and result["peak_memory_kind"] == "process_peak_rss"
    assert isinstance(result["device_name"], str) and result["device_name"]


def test_a_device_that_is_no_device_is_refused_by_every_config():
    for config_class, extra in ((TextRewardModelConfig, {}), (PPOTextConfig, {"reward": "length:0.01"}),
                                (AILabelConfig, {}), (TextEvalConfig, {})):
        with pytest.raises(cfg.ConfigError, match="device: must be auto, cpu, cuda or cuda:N"):
            cfg.from_dict(config_class, {"device": "gpu", **extra})
        with pytest.raises(cfg.ConfigError, match="precision"):
            cfg.from_dict(config_class, {"precision": "half", **extra})
        config = cfg.from_dict(config_class, {"device": "cuda:1", "precision": "bf16", **extra})
        assert (config.device, config.precision) == ("cuda:1", "bf16")


@needs_model
def test_the_reward_model_job_on_the_cpu_records_where_it_ran(project, tiny_model):
    add_marker_pairs(project, 4)
    config = cfg.from_dict(TextRewardModelConfig, dict(model=str(tiny_model), epochs=1, batch_size=4, max_length=64,
                                                       heldout_fraction=0.0, score_responses=0, device="cpu"))
    outcome = execute_job(get_job("text_reward_model"), config, RecordingContext(), project_path=project.folder)
    assert outcome.status == "completed", outcome.error
    _device_keys_are_the_cpus(outcome.result)
    assert outcome.result["steps"] == 1


@needs_model
def test_ppo_text_on_the_cpu_records_where_it_ran(project, tiny_model):
    rm, _, _ = load_base_reward_model(str(tiny_model), max_length=64, seed=0)
    folder = save_text_reward_model(rm, project.folder / "models" / "rm", meta={"base_model": "tiny"})
    pids = [project.add_prompt(t) for t in ("Say hi.", "Name a fruit.")]
    config = PPOTextConfig(model=str(tiny_model), reward_model=str(folder), prompt_set="", prompt_ids=pids, steps=1,
                           batch_size=2, minibatch_size=2, ppo_epochs=1, max_new_tokens=3, reward_baseline="batch",
                           device="cpu", precision="auto")
    ctx = RecordingContext()
    outcome = execute_job(get_job("ppo_text"), config, ctx, project_path=project.folder)
    assert outcome.status == "completed", outcome.error
    result = outcome.result
    _device_keys_are_the_cpus(result)
    assert result["peak_rss_mb"] > 0 and "memory/peak_rss_mb" in ctx.metric_log[0][1]
    assert result["kl_first"] == 0.0 and math.isfinite(result["reward_last"])


@needs_model
def test_ai_labels_by_a_reward_model_on_the_cpu_record_where_they_ran(project, tiny_model):
    from rlhf_core.labelers.text_labels import queue_response_pairs

    rm, _, _ = load_base_reward_model(str(tiny_model), max_length=64, seed=0)
    folder = save_text_reward_model(rm, project.folder / "models" / "rm", meta={"base_model": "tiny"})
    pid = project.add_prompt("Name a fruit.")
    for text in ("An apple.", "A rock.", "A pear, ripe."):
        project.add_item("response", prompt_id=pid, text=text, model_id="m")
    queue_response_pairs(project, seed=0)
    config = AILabelConfig(method="reward_model", reward_model=str(folder), max_pairs=2, device="cpu",
                           precision="float32")
    outcome = execute_job(get_job("ai_labels"), config, RecordingContext(), project_path=project.folder)
    assert outcome.status == "completed", outcome.error
    assert outcome.result["labelled"] == 2
    _device_keys_are_the_cpus(outcome.result)


@needs_model
def test_text_eval_with_a_win_rate_on_the_cpu_in_bf16_records_where_it_ran(project, tiny_model):
    rm, _, _ = load_base_reward_model(str(tiny_model), max_length=64, seed=0)
    folder = save_text_reward_model(rm, project.folder / "models" / "rm", meta={"base_model": "tiny"})
    config = TextEvalConfig(policy_folder=str(tiny_model), reward_model=str(folder), heldout_tasks=2, k=2,
                            max_new_tokens=3, few_shot=False, device="cpu", precision="bf16")
    outcome = execute_job(get_job("text_eval"), config, RecordingContext(), project_path=project.folder)
    assert outcome.status == "completed", outcome.error
    result = outcome.result
    assert (result["device"], result["dtype"], result["peak_memory_kind"]) == ("cpu", "bf16", "process_peak_rss")
    assert result["win_prompts"] == 2 and 0.0 <= result["win_rate"] <= 1.0 and result["peak_rss_mb"] > 0


@needs_model
def test_a_bf16_step_on_the_cpu_is_close_to_float32_and_saves_a_float32_folder(tiny_model, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    losses = {}
    for precision in ("float32", "bf16"):
        model, tok, _ = load_base_reward_model(str(tiny_model), max_length=64, seed=0)
        model.place("cpu", precision)
        model.train()
        losses[precision] = train_step(model, make_optimizer(model.parameters(), 1e-4), BATCH, tok)
    bf16 = losses["bf16"]["reward_model/loss"]
    assert math.isfinite(bf16) and abs(bf16 - losses["float32"]["reward_model/loss"]) < 0.05, losses
    assert model.precision == "bf16" and all(p.dtype == torch.float32 for p in model.parameters())

    folder = save_text_reward_model(model, tmp_path / "rm", meta={"base_model": "tiny"})
    assert json.loads((folder / "config.json").read_text()).get("dtype", "float32") == "float32"
    plain = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    assert all(p.dtype == torch.float32 for p in plain.parameters())
    plain_tok = AutoTokenizer.from_pretrained(folder)
    prompts, responses = [p.prompt for p in BATCH], [p.left for p in BATCH]
    with torch.no_grad():
        expected = torch.cat([plain(**plain_tok(format_pair_text(plain_tok, p, r), return_tensors="pt",
                                                add_special_tokens=False)).logits[:, 0]
                              for p, r in zip(prompts, responses)])
    ours, ours_tok = load_text_reward_model(folder)
    torch.testing.assert_close(score_responses(ours, ours_tok, prompts, responses), expected, rtol=1e-4, atol=1e-4)
    # the same folder scored under bf16 autocast: close, as a float32 CPU tensor
    half, half_tok = load_text_reward_model(folder, device="cpu", precision="bf16")
    scores = score_responses(half, half_tok, prompts, responses)
    assert scores.dtype == torch.float32 and scores.device.type == "cpu" and not scores.is_inference()
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in half.parameters())  # frozen, float32 on a CPU
    spread = float(expected.abs().max()) + 1.0
    assert float((scores - expected).abs().max()) < 0.05 * spread, (scores, expected)


def _cli(*argv) -> tuple[int, str]:
    from rlhf_core.cli import main

    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, err.getvalue()


@NO_GPU
@needs_model
def test_cuda_without_a_gpu_is_refused_in_words_and_nothing_is_saved(project, tiny_model):
    add_marker_pairs(project, 4)
    rm_config = cfg.from_dict(TextRewardModelConfig, dict(model=str(tiny_model), gold_fraction=0.5, device="cuda"))
    ppo_config = PPOTextConfig(model=str(tiny_model), reward="length:0.01", prompt_set="lecture", steps=1,
                               device="cuda", save=True)
    for job, config in (("text_reward_model", rm_config), ("ppo_text", ppo_config)):
        outcome = execute_job(get_job(job), config, RecordingContext(), project_path=project.folder)
        assert outcome.status == "failed"
        assert outcome.message.startswith("This run asks for the GPU (cuda), but torch sees none here"), outcome.message
        assert describe_stored_error(outcome.error).kind == "bad_device"  # the app's wording of the stored error
        assert project.checkpoints(outcome.run_id) == []
        run_folder = project.run_folder(outcome.run_id)
        assert not run_folder.exists() or not any(run_folder.iterdir()), list(run_folder.iterdir())
    # the command line: one line of error, no traceback
    code, err = _cli("run", "ppo_text", "--project", project.folder, "--reward", "length:0.01", "--device", "cuda",
                     "--steps", "1")
    assert code == 1 and "error: This run asks for the GPU (cuda)" in err and "Traceback" not in err
