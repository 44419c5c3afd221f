"""SFT: which demonstrations are used, the completion-only loss by hand, and the job on a tiny Llama."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from rlhf_core import config as cfg
from rlhf_core.jobs import RecordingContext, execute_job, get_job
from rlhf_core.labelers.text_labels import add_correction, undo_correction
from rlhf_core.text.rl_common import build_batch, load_policy, render_chat_prompt, response_ids, tokenize_prompts
from rlhf_core.trainers.text.sft import SFTConfig, sft_examples, sft_loss
from tests.conftest import needs_model



def _labelled_project(project):
    """Two prompts with sampled responses, a correction, demonstrations and some comparisons."""
    labeller = project.ensure_labeller("ann")
    p1 = project.add_prompt("Name a fruit.")
    p2 = project.add_prompt("Say hello.")
    a = project.add_item("response", prompt_id=p1, text="A rock.", model_id="m")
    b = project.add_item("response", prompt_id=p1, text="An apple.", model_id="m")
    c = project.add_item("response", prompt_id=p2, text="Go away.", model_id="m")
    d = project.add_item("response", prompt_id=p2, text="Hello there!", model_id="m")
    e = project.add_item("response", prompt_id=p2, text="Hi.", model_id="m")
    project.add_comparison(a, b, "right", source="human", labeller_id=labeller)  # chosen: An apple.
    project.add_comparison(d, c, "left", source="synthetic")  # chosen: Hello there!
    project.add_comparison(c, e, "tie", source="human", labeller_id=labeller)  # no chosen side
    project.add_comparison(e, d, "left", source="ai")  # chosen: Hi. (only when 'ai' counts)
    corr, _ = add_correction(project, a, "A banana.", labeller)  # correction, also chosen over a and b
    project.add_item("response", prompt_id=p2, text="Hello, friend.", source="demonstration", model_id=None)
    project.add_item("response", prompt_id=p1, text="A pear.", model_id="m", meta={"demonstration": True})
    gone = project.add_item("response", prompt_id=p1, text="A plum.", source="demonstration", model_id=None)
    project.conn.execute("UPDATE items SET deleted_at = '2025-01-01' WHERE id = ?", [gone])
    return corr


def test_examples_come_from_corrections_demonstrations_and_the_chosen_side(project):
    corr = _labelled_project(project)
    got = [(e.source, e.prompt, e.response) for e in sft_examples(project)]
    assert got == [
        ("corrections", "Name a fruit.", "A banana."),
        ("demonstrations", "Say hello.", "Hello, friend."),
        ("demonstrations", "Name a fruit.", "A pear."),
        ("chosen", "Name a fruit.", "An apple."),
        ("chosen", "Say hello.", "Hello there!"),
        ("chosen", "Say hello.", "Hi."),
    ]  # the correction is also chosen in its comparisons: used once; the tie gives nothing
    only_human = sft_examples(project, "chosen", "human")
    assert [e.response for e in only_human] == ["An apple.", "A banana."]
    undo_correction(project, corr)
    assert [e.response for e in sft_examples(project, "corrections")] == []
    with pytest.raises(ValueError, match="unknown data source"):
        sft_examples(project, "corrections,bogus")


@needs_model
def test_loss_is_cross_entropy_on_completion_tokens_only(tiny_model):
    setup = load_policy(str(tiny_model), need_reference=False)
    model, tok = setup.model.eval(), setup.tokenizer
    prompts = tokenize_prompts(tok, [render_chat_prompt(tok, "Name a fruit."), render_chat_prompt(tok, "Hi")])
    completions = [response_ids(tok, "An apple, a pear.", tok.eos_token_id),
                   response_ids(tok, "Hello.", tok.eos_token_id)]
    batch = build_batch(prompts, completions, tok.pad_token_id)
    with torch.no_grad():
        loss, n_tokens = sft_loss(model, batch)
        # by hand: each row alone, full-sequence logits, cross-entropy on the completion tokens only
        total, count = 0.0, 0
        for p, c in zip(prompts, completions):
            ids = torch.tensor([p + c])
            logits = model(input_ids=ids).logits[0].float()
            targets = ids[0, len(p):]
            total += float(F.cross_entropy(logits[len(p) - 1:-1], targets, reduction="sum"))
            count += len(c)
    assert n_tokens == count == len(completions[0]) + len(completions[1])
    assert math.isclose(float(loss), total / count, rel_tol=1e-5)
    # HF's own loss with the prompt (and padding) ignored agrees too
    labels = batch.input_ids.clone()
    labels[:, :batch.prompt_width] = -100
    labels[batch.attention_mask == 0] = -100
    with torch.no_grad():
        hf = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids,
                   labels=labels).loss
    assert math.isclose(float(loss), float(hf), rel_tol=1e-4)


def _demo_project(project, n=10):
    words = ["apples", "pears", "plums", "grapes", "limes", "figs", "kiwis", "dates", "melons", "berries", "cherries"]
    for i in range(n):
        pid = project.add_prompt(f"Tell me about {words[i % len(words)]}.")
        project.add_item("response", prompt_id=pid, text="They are a fruit that people like to eat.",
                         source="demonstration", model_id=None)


@needs_model
def test_the_job_lowers_train_and_heldout_loss_and_saves_a_policy(tiny_model, project):
    _demo_project(project)
    config = SFTConfig(model=str(tiny_model), data="demonstrations", steps=8, batch_size=4, learning_rate=3e-3,
                       heldout_fraction=0.2, eval_every=4, seed=0)
    ctx = RecordingContext()
    outcome = execute_job(get_job("sft"), config, ctx, project_path=project.folder)
    assert outcome.status == "completed", outcome.error
    steps, losses = ctx.series("train/loss")
    assert steps == list(range(0, 9))
    held_steps, held = ctx.series("sft/heldout_loss")
    assert held_steps == [0, 4, 8]
    assert losses[-1] < 0.5 * losses[0] and held[-1] < 0.5 * held[0], (losses, held)
    result = outcome.result
    assert result["train_examples"] == 8 and result["heldout_examples"] == 2
    assert result["by_source"] == {"corrections": 0, "demonstrations": 10, "chosen": 0}
    assert result["heldout_loss_first"] == held[0] and result["heldout_loss_last"] == held[-1]
    from rlhf_core.store import Project

    with Project.open(project.folder) as p2:
        row = [c for c in p2.checkpoints(outcome.run_id) if c["kind"] == "text_policy"][0]
        folder = p2.abspath(row["path"])
        assert p2.metrics(outcome.run_id)["sft/heldout_loss"][0] == [0, 4, 8]
    assert json.loads((folder / "workbench_policy.json").read_text())["job"] == "sft"
    # the saved policy is the trained one: it gives the held-out examples the final held-out loss
    reloaded = load_policy(str(folder), need_reference=False)
    assert reloaded.model.config.num_hidden_layers == 2


@needs_model
def test_lora_trains_only_adapters_and_saves_a_merged_model(tiny_model, project):
    _demo_project(project, n=4)
    config = SFTConfig(model=str(tiny_model), data="demonstrations", steps=3, batch_size=2, learning_rate=1e-2,
                       heldout_fraction=0.0, lora_rank=4)
    outcome = execute_job(get_job("sft"), config, RecordingContext(), project_path=project.folder)
    assert outcome.status == "completed", outcome.error
    assert outcome.result["loss_last"] < outcome.result["loss_first"]
    assert outcome.result["heldout_loss_last"] is None
    from pathlib import Path

    folder = Path(outcome.result["path"])
    assert (folder / "model.safetensors").is_file() and not (folder / "adapter_config.json").exists()


@needs_model
def test_cancel_and_bad_settings(tiny_model, project):
    _demo_project(project)
    ctx = RecordingContext(cancel_after_metrics=2)
    outcome = execute_job(get_job("sft"), SFTConfig(model=str(tiny_model), steps=50, batch_size=2, save=True), ctx,
                          project_path=project.folder)
    assert outcome.status == "cancelled"
    assert [s for s, _ in ctx.metric_log] == [0, 1]
    assert project.checkpoints(outcome.run_id) == []
    with pytest.raises(cfg.ConfigError, match="data"):
        cfg.validate(SFTConfig(data="everything"))
    with pytest.raises(cfg.ConfigError, match="learning_rate"):
        cfg.validate(SFTConfig(learning_rate=0.0))
    empty = execute_job(get_job("sft"), SFTConfig(model=str(tiny_model), data="corrections"), RecordingContext(),
                        project_path=project.folder)
    assert empty.status == "failed" and "No demonstrations" in empty.error
