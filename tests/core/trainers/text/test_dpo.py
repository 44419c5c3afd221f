"""DPO: the loss by hand, and the trainer on a tiny Llama (real SmolLM2 tokenizer) with real project files."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from rlhf_core import config as cfg
from rlhf_core.jobs import RecordingContext, execute_job, get_job
from rlhf_core.trainers.text.dpo import DPOConfig, dpo_loss, encode_pairs, preference_pairs
from tests.conftest import MARKER, add_marker_pairs, needs_model




def _marker_project(project, n_pairs=12, seed=0):
    """``n_pairs`` decided comparisons whose preferred response ends with the marker; plus ones DPO leaves out."""
    pids = add_marker_pairs(project, n_pairs, seed)
    x = project.add_item("response", prompt_id=pids[0], text="x", model_id="m")
    y = project.add_item("response", prompt_id=pids[0], text="y", model_id="m")
    for outcome in ("tie", "skip", "both_bad"):
        project.add_comparison(x, y, outcome, source="synthetic")
    project.add_comparison(x, y, "left", source="human")  # another source


def test_loss_by_hand_and_cdpo():
    c, r = torch.tensor([-10.0, -4.0]), torch.tensor([-12.0, -3.0])
    rc, rr = torch.tensor([-11.0, -4.5]), torch.tensor([-11.0, -3.5])
    beta = 0.5
    h = [(-10 + 11) - (-12 + 11), (-4 + 4.5) - (-3 + 3.5)]  # [2, 0]
    loss, per_pair, rew_c, rew_r = dpo_loss(c, r, rc, rr, beta)
    expected = [-math.log(1 / (1 + math.exp(-beta * x))) for x in h]
    assert per_pair.tolist() == pytest.approx(expected, abs=1e-6)
    assert float(loss) == pytest.approx(sum(expected) / 2, abs=1e-6)
    assert rew_c.tolist() == pytest.approx([0.5, 0.25]) and rew_r.tolist() == pytest.approx([-0.5, 0.25])
    eps = 0.1
    _, smoothed, _, _ = dpo_loss(c, r, rc, rr, beta, label_smoothing=eps)
    manual = [-(1 - eps) * math.log(1 / (1 + math.exp(-beta * x))) - eps * math.log(1 / (1 + math.exp(beta * x)))
              for x in h]
    assert smoothed.tolist() == pytest.approx(manual, abs=1e-6)
    same = torch.tensor([-5.0])
    assert float(dpo_loss(same, same, same, same, 0.1)[0]) == pytest.approx(math.log(2))
    for bad in (dict(beta=0.0), dict(label_smoothing=0.5), dict(batch_size=0), dict(heldout_fraction=0.9)):
        with pytest.raises(cfg.ConfigError):
            cfg.from_dict(DPOConfig, bad)


def test_pairs_leave_out_ties_skips_and_other_sources(project):
    _marker_project(project)
    pairs = preference_pairs(project, "synthetic")
    assert len(pairs) == 12 and all(p.chosen.endswith(MARKER) and not p.rejected.endswith(MARKER) for p in pairs)
    assert len(preference_pairs(project, "synthetic,human")) == 13
    assert preference_pairs(project, "ai") == []


@needs_model
def test_encoding_is_the_chat_prompt_then_the_response_and_end_token(tiny_model):
    from transformers import AutoTokenizer

    from rlhf_core.trainers.text.dpo import PreferencePair
    from rlhf_core.text.rl_common import render_chat_prompt

    tok = AutoTokenizer.from_pretrained(tiny_model)
    pairs = [PreferencePair("Say hello.", "Hello there!", "No."),
             PreferencePair("Name a fruit.", "An apple " * 40, "A pear.")]
    prompts, comps = encode_pairs(tok, pairs, tok.eos_token_id, max_length=48)
    assert len(prompts) == 4  # chosen rows, then rejected rows
    p0 = tok(render_chat_prompt(tok, "Say hello."), add_special_tokens=False)["input_ids"]
    assert prompts[0] == p0 == prompts[2]
    assert comps[0] == tok("Hello there!", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert len(prompts[1]) + len(comps[1]) == 48  # the long response is cut on the right
    assert comps[1][-1] != tok.eos_token_id and comps[3][-1] == tok.eos_token_id


@needs_model
def test_training_prefers_the_marker_from_log2_and_saves_a_checkpoint(project, tiny_model):
    _marker_project(project)
    config = cfg.from_dict(DPOConfig, dict(model=str(tiny_model), label_sources="synthetic", epochs=4, batch_size=4,
                                           learning_rate=1e-3, beta=0.5, heldout_fraction=0.25, max_length=96,
                                           eval_every=3, seed=0))
    ctx = RecordingContext()
    out = execute_job(get_job("dpo"), config, ctx, project_path=project.folder)
    assert out.status == "completed", out.error
    res = out.result
    assert res["pairs"] == 12 and res["train_pairs"] == 9 and res["heldout_pairs"] == 3
    assert res["steps"] == 4 * 3
    step0 = ctx.metric_log[1][1]  # after the held-out evaluation at step 0
    assert step0["train/loss"] == pytest.approx(math.log(2), abs=1e-5)  # pi == pi_ref before any update
    assert step0["dpo/margin"] == 0.0 and step0["dpo/reward_chosen"] == 0.0 and step0["dpo/accuracy"] == 0.0
    assert {"dpo/reward_rejected", "train/grad_norm", "memory/peak_rss_mb", "time/steps_per_second"} <= set(step0)
    _, losses = ctx.series("train/loss")
    _, margins = ctx.series("dpo/margin")
    assert len(losses) == 12 and sum(losses[-3:]) / 3 < math.log(2) - 0.2, losses
    assert margins[-1] > 0.3
    assert ctx.series("dpo/accuracy")[1][-1] == 1.0
    held_steps, held_loss = ctx.series("dpo/heldout_loss")
    assert held_steps == [0, 3, 6, 9, 12] and held_loss[0] == pytest.approx(math.log(2), abs=1e-5)
    assert len(ctx.series("dpo/heldout_accuracy")[1]) == 5  # (9 pairs are too few for a random tiny model to
    # generalise from: its held-out numbers are only checked for being measured)
    # the implicit rewards: beta * (log pi - log pi_ref) for chosen / rejected (margin = their difference)
    for _, m in ctx.metric_log:
        if "dpo/margin" in m:
            assert m["dpo/margin"] == pytest.approx(m["dpo/reward_chosen"] - m["dpo/reward_rejected"], abs=1e-5)
    ckpts = project.checkpoints(out.run_id)
    assert [c["kind"] for c in ckpts] == ["text_policy"] and ckpts[0]["step"] == 12
    folder = project.abspath(ckpts[0]["path"])
    assert (folder / "model.safetensors").is_file()
    assert json.loads((folder / "workbench_policy.json").read_text())["algorithm"] == "dpo"

    # the saved policy gives the chosen (marker) responses a higher log-ratio than the reference does
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhf_core.text.pairs import split_pairs
    from rlhf_core.text.rl_common import build_batch, completion_logprobs, sequence_logprob

    tok = AutoTokenizer.from_pretrained(folder)
    trained = AutoModelForCausalLM.from_pretrained(folder).eval()
    base = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    pairs, _ = split_pairs(preference_pairs(project, "synthetic"), 0.25, 0)  # the job's training pairs
    assert len(pairs) == 9
    prompts, comps = encode_pairs(tok, pairs, tok.eos_token_id, 96)
    batch = build_batch(prompts, comps, tok.pad_token_id)
    with torch.no_grad():
        new = sequence_logprob(completion_logprobs(trained, batch)[0], batch.completion_mask)
        old = sequence_logprob(completion_logprobs(base, batch)[0], batch.completion_mask)
    n = len(pairs)
    h = (new[:n] - old[:n]) - (new[n:] - old[n:])
    assert float((h > 0).float().mean()) >= 0.9
    assert float(F.logsigmoid(0.5 * h).mean()) > -math.log(2) + 0.2


@needs_model
def test_no_pairs_fails_clearly_and_cancel_saves_nothing(project, tiny_model):
    pid = project.add_prompt("Say hello.")
    a = project.add_item("response", prompt_id=pid, text="Hi", model_id="m")
    b = project.add_item("response", prompt_id=pid, text="Hello", model_id="m")
    project.add_comparison(a, b, "tie")
    config = cfg.from_dict(DPOConfig, dict(model=str(tiny_model), max_length=64, heldout_fraction=0.0))
    out = execute_job(get_job("dpo"), config, RecordingContext(), project_path=project.folder)
    assert out.status == "failed" and "ValueError: No usable text comparisons for DPO" in out.error

    _marker_project(project)
    ctx = RecordingContext(cancel_after_metrics=2)
    cancelled = execute_job(get_job("dpo"), cfg.replace(config, epochs=3, batch_size=2), ctx,
                            project_path=project.folder)
    assert cancelled.status == "cancelled"
    assert len(ctx.series("train/loss")[1]) == 2
    assert project.checkpoints(cancelled.run_id) == []


@needs_model
def test_lora_dpo_uses_the_adapter_free_model_as_reference(project, tiny_model):
    _marker_project(project, n_pairs=4)
    config = cfg.from_dict(DPOConfig, dict(model=str(tiny_model), label_sources="synthetic", steps=3, batch_size=4,
                                           learning_rate=1e-2, beta=0.5, heldout_fraction=0.0, max_length=64,
                                           lora_rank=4, gradient_checkpointing=False, save=False))
    ctx = RecordingContext()
    out = execute_job(get_job("dpo"), config, ctx, project_path=project.folder)
    assert out.status == "completed", out.error
    _, losses = ctx.series("train/loss")
    assert losses[0] == pytest.approx(math.log(2), abs=1e-5) and losses[-1] < losses[0]
    assert out.result["lora"] is True and "checkpoint_id" not in out.result
