"""generate, SFT, DPO and GRPO with the device and precision settings, on the CPU: the result says where the
run went, bf16 autocast trains (close to float32's loss), fp16's gradient scaler steps like plain float32,
and a GPU that is not there stops the run before anything is written."""

from __future__ import annotations

import math

import pytest
import torch

from rlhf_core.jobs import RecordingContext, execute_job, get_job
from rlhf_core.sources.generate import GenerateConfig
from rlhf_core.text.generation import SamplingSettings, generate_batch
from rlhf_core.text.rl_common import (
    build_batch,
    load_policy,
    make_optimizer,
    render_chat_prompt,
    response_ids,
    tokenize_prompts,
)
from rlhf_core.trainers.text.dpo import DPOConfig, PreferencePair, dpo_step
from rlhf_core.trainers.text.grpo import GRPOConfig
from rlhf_core.trainers.text.sft import SFTConfig, sft_loss
from tests.conftest import add_marker_pairs, needs_model


def _demonstrations(project, n=4):
    for i in range(n):
        pid = project.add_prompt(f"Tell me about fruit number {i}.")
        project.add_item("response", prompt_id=pid, text="It is sweet and people like it.", source="demonstration",
                         model_id=None)


def _configs(tiny_model, project):
    model = str(tiny_model)
    pid = project.add_prompt("Say hello.")
    return {
        "generate": GenerateConfig(model=model, prompt_set="", prompt_ids=[pid], samples_per_prompt=2,
                                   max_new_tokens=3),
        "sft": SFTConfig(model=model, data="demonstrations", steps=1, batch_size=2, heldout_fraction=0.0),
        "dpo": DPOConfig(model=model, steps=1, batch_size=2, heldout_fraction=0.0),
        "grpo": GRPOConfig(model=model, steps=1, prompts_per_step=1, group_size=2, max_new_tokens=3, train_tasks=2,
                           heldout_tasks=0, eval_every=0, few_shot=False),
    }


@needs_model
@pytest.mark.parametrize("job", ["generate", "sft", "dpo", "grpo"])
def test_a_cpu_run_records_where_it_ran(job, tiny_model, project):
    _demonstrations(project)
    add_marker_pairs(project, 4)
    config = _configs(tiny_model, project)[job]
    config.device = "cpu"
    outcome = execute_job(get_job(job), config, RecordingContext(), project_path=project.folder)
    assert outcome.status == "completed", outcome.error
    result = outcome.result
    assert result["device"] == "cpu" and result["dtype"] == "float32" and result["device_name"]
    assert result["peak_memory_mb"] > 0 and result["peak_memory_kind"] == "process_peak_rss"
    if job != "generate":
        assert result["peak_rss_mb"] > 0  # the trainers' own key stays


@needs_model
@pytest.mark.parametrize("job", ["generate", "sft", "dpo", "grpo"])
def test_a_gpu_that_is_not_there_stops_the_run_before_anything_is_written(job, tiny_model, project, monkeypatch):
    monkeypatch.delenv("RLHF_DEVICE", raising=False)
    _demonstrations(project)
    add_marker_pairs(project, 4)
    config = _configs(tiny_model, project)[job]
    config.device = "cuda"
    items = project.conn.execute("SELECT COUNT(*) FROM items").fetchone()[0]
    prompts = project.conn.execute("SELECT COUNT(*) FROM prompts").fetchone()[0]
    outcome = execute_job(get_job(job), config, RecordingContext(), project_path=project.folder)
    assert outcome.status == "failed"
    assert "asks for the GPU (cuda)" in outcome.message and "cpu" in outcome.message
    assert "DeviceError" in outcome.error
    assert project.checkpoints(outcome.run_id) == []
    folder = project.run_folder(outcome.run_id)
    assert not folder.exists() or not any(folder.rglob("*.safetensors"))
    assert project.conn.execute("SELECT COUNT(*) FROM items").fetchone()[0] == items
    assert project.conn.execute("SELECT COUNT(*) FROM prompts").fetchone()[0] == prompts


def _sft_batch(setup):
    tok = setup.tokenizer
    prompts = tokenize_prompts(tok, [render_chat_prompt(tok, "Name a fruit."), render_chat_prompt(tok, "Hi")])
    completions = [response_ids(tok, "An apple, a pear.", tok.eos_token_id), response_ids(tok, "Hello.",
                                                                                          tok.eos_token_id)]
    return build_batch(prompts, completions, tok.pad_token_id, device=setup.device)


@needs_model
def test_bf16_autocast_on_the_cpu_gives_a_close_loss_and_a_policy_that_reloads(tiny_model, project):
    setup = load_policy(str(tiny_model), need_reference=False, device="cpu", precision="bf16")
    assert setup.precision == "bf16" and setup.device == torch.device("cpu")
    assert all(p.dtype == torch.float32 for p in setup.model.parameters())  # the trainable weights stay float32
    batch = _sft_batch(setup)
    setup.model.eval()
    with torch.no_grad():
        full, _ = sft_loss(setup.model, batch)
        with setup.autocast():
            half, _ = sft_loss(setup.model, batch)
            logits = setup.model(input_ids=batch.input_ids).logits
    assert logits.dtype == torch.bfloat16  # the autocast really ran the matmuls in bf16
    assert half.dtype == torch.float32 and math.isfinite(float(half))  # log-probs from float32 logits
    assert float(half) == pytest.approx(float(full), rel=0.05)
    # bf16 sampling runs too (generation keeps its CPU generators)
    with setup.autocast():
        (done,), _ = generate_batch(setup.model, setup.tokenizer, ["Hello"], SamplingSettings(max_new_tokens=3), [1])
    assert done.n_tokens <= 3

    _demonstrations(project)
    config = SFTConfig(model=str(tiny_model), data="demonstrations", steps=2, batch_size=2, heldout_fraction=0.0,
                       learning_rate=1e-3, device="cpu", precision="bf16")
    outcome = execute_job(get_job("sft"), config, RecordingContext(), project_path=project.folder)
    assert outcome.status == "completed", outcome.error
    result = outcome.result
    assert result["dtype"] == "bf16" and math.isfinite(result["loss_last"])
    reloaded = load_policy(result["path"], need_reference=False)
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in reloaded.model.parameters())


@needs_model
def test_dpo_steps_in_bf16_and_through_the_fp16_gradient_scaler(tiny_model):
    pairs = [PreferencePair("Name a fruit.", "An apple.", "A rock."), PreferencePair("Say hi.", "Hello!", "Go away.")]
    common = dict(beta=0.1, label_smoothing=0.0, eos_token_id=None, max_length=64, max_grad_norm=1.0)

    bf16 = load_policy(str(tiny_model), device="cpu", precision="bf16")
    assert bf16.reference is not None and all(p.dtype == torch.float32 for p in bf16.reference.parameters())
    optimizer = make_optimizer(bf16.trainable_parameters(), 1e-3)
    metrics = dpo_step(bf16, optimizer, bf16.tokenizer, pairs, pad_id=bf16.tokenizer.pad_token_id,
                       shared_prompt=True, **common)
    assert all(math.isfinite(v) for v in metrics.values())
    assert metrics["train/loss"] == pytest.approx(math.log(2), rel=0.05)  # step 0: the policy is the reference

    # fp16 needs a GPU; its scaler is exercised here in float32 on the CPU: scaling by a power of two and
    # unscaling before the clip gives the update of a plain step
    after = []
    for scaler in (None, torch.amp.GradScaler("cpu")):
        torch.manual_seed(0)
        setup = load_policy(str(tiny_model), device="cpu")
        optimizer = make_optimizer(setup.trainable_parameters(), 1e-3)
        got = dpo_step(setup, optimizer, setup.tokenizer, pairs, pad_id=setup.tokenizer.pad_token_id,
                       scaler=scaler, **common)
        after.append((got, [p.detach().clone() for p in setup.trainable_parameters()]))
    (plain, plain_weights), (scaled, scaled_weights) = after
    assert scaled["train/grad_norm"] == pytest.approx(plain["train/grad_norm"], rel=1e-5)
    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(plain_weights, scaled_weights))
    assert not all(torch.equal(a, b) for a, b in zip(plain_weights, load_policy(str(tiny_model)).model.parameters()))
