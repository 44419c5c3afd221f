"""Sampling and the ``generate`` job: a real tiny Llama with the real SmolLM2 tokenizer, a real project."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from rlhf_core import config as cfg
from rlhf_core.jobs import JobCancelled, RecordingContext, execute_job, get_job
from rlhf_core.text.generation import SamplingSettings, _pick, generate_batch, hf_generate_batch
from rlhf_core.sources.generate import GenerateConfig
from tests.conftest import ROOT
from tests.conftest import needs_model

pytestmark = needs_model

QUESTIONS = [
    "Define behavioral cloning.",
    "Explain reinforcement learning to a 6 year old, with an example about a dog and treats.",
    "Hi",
]


@pytest.fixture(scope="module")
def lm(tiny_model):
    from rlhf_core.text.model import load_model

    torch.set_num_threads(1)
    return load_model(tiny_model)


@pytest.fixture(scope="module")
def rendered(lm):
    from rlhf_core.text.prompts import PromptTemplate

    return [PromptTemplate().render(lm.tokenizer, q) for q in QUESTIONS]


def small(tiny_model, **changes) -> GenerateConfig:
    base = dict(model=str(tiny_model), prompt_set="lecture", samples_per_prompt=3, max_new_tokens=6,
                batch_size=4)
    base.update(changes)
    return cfg.from_dict(GenerateConfig, base)


# ------------------------------------------------------------------------------- the sampler
def test_greedy_matches_model_generate_token_for_token(lm, rendered):
    s = SamplingSettings(max_new_tokens=12, temperature=0)
    ours, stats = generate_batch(lm.model, lm.tokenizer, rendered, s, [1, 2, 3])
    theirs, _ = hf_generate_batch(lm.model, lm.tokenizer, rendered, s, 0)
    assert [c.token_ids for c in ours] == [c.token_ids for c in theirs]  # left padding handled alike
    assert len({tuple(c.token_ids) for c in ours}) == 3  # not degenerate
    # a row ends at the end token (not kept) or at the 12-token cap; one forward pass per token drawn
    assert all((c.finish_reason == "length") == (c.n_tokens == 12) and c.n_tokens <= 12 for c in ours)
    assert stats.new_tokens == sum(c.n_tokens for c in ours)
    assert stats.forward_passes == max(c.n_tokens + (c.finish_reason == "stop") for c in ours)
    lengths = [len(lm.tokenizer(r, add_special_tokens=False)["input_ids"]) for r in rendered]
    assert [c.prompt_tokens for c in ours] == lengths and len(set(lengths)) == 3


def test_a_finished_row_leaves_the_batch_without_disturbing_the_others(lm, rendered):
    """In float64: a smaller batch may take another matrix-multiply path, and in float32 that can move a
    logit by one rounding step and flip a draw that sits on a token boundary (seen on one CPU, at the
    4th token of a row); what is tested here is the bookkeeping, not the CPU's summation order."""
    import copy

    model = copy.deepcopy(lm.model).double()
    s = SamplingSettings(max_new_tokens=10, temperature=1.0)
    free, _ = generate_batch(model, lm.tokenizer, rendered, s, [5, 6, 7], eos_token_ids=[])
    row0, others = free[0].token_ids, free[1].token_ids + free[2].token_ids
    k = next(k for k in range(1, 10) if row0[k] not in row0[:k] + others)  # row 0 "ends" at its token k
    out, stats = generate_batch(model, lm.tokenizer, rendered, s, [5, 6, 7], eos_token_ids=[row0[k]])
    assert out[0].token_ids == row0[:k] and out[0].finish_reason == "stop"
    assert out[1].token_ids == free[1].token_ids and out[2].token_ids == free[2].token_ids
    assert stats.new_tokens == k + 10 + 10


def test_same_seed_same_text_whatever_the_batch(lm, rendered):
    """In float64, as the test above: a row alone and in a padded batch differ in float32 rounding."""
    import copy

    model = copy.deepcopy(lm.model).double()
    s = SamplingSettings(max_new_tokens=10, temperature=1.0, top_p=0.9, top_k=40, repetition_penalty=1.2)
    a, _ = generate_batch(model, lm.tokenizer, rendered, s, [11, 22, 33])
    b, _ = generate_batch(model, lm.tokenizer, rendered, s, [11, 22, 33])
    c, _ = generate_batch(model, lm.tokenizer, rendered[1:2], s, [22])
    d, _ = generate_batch(model, lm.tokenizer, rendered, s, [12, 23, 34])
    assert [x.text for x in a] == [x.text for x in b]
    assert c[0].token_ids == a[1].token_ids
    assert [x.token_ids for x in d] != [x.token_ids for x in a]


def test_top_k_top_p_and_repetition_penalty_follow_their_definitions():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log()
    gens = [torch.Generator().manual_seed(i) for i in range(400)]

    def draws(settings, seen=None):
        return {int(_pick(logits, settings, seen, [g])) for g in gens}

    assert draws(SamplingSettings(temperature=1.0)) == {0, 1, 2, 3}
    assert draws(SamplingSettings(temperature=1.0, top_k=2)) == {0, 1}
    assert draws(SamplingSettings(temperature=1.0, top_p=0.7)) == {0, 1}  # 0.5 < 0.7 <= 0.8
    assert draws(SamplingSettings(temperature=1.0, top_p=0.85)) == {0, 1, 2}
    assert draws(SamplingSettings(temperature=1.0, top_p=0.4)) == {0}
    assert draws(SamplingSettings(temperature=1.0, top_k=3, top_p=0.7)) == {0, 1}
    assert int(_pick(logits, SamplingSettings(temperature=0), None, gens[:1])) == 0
    seen = torch.tensor([[True, False, False, False]])  # token 0 was used: log 0.5 * 2 < log 0.3
    assert int(_pick(logits, SamplingSettings(temperature=0, repetition_penalty=2.0), seen, gens[:1])) == 1
    positive = torch.tensor([[2.0, 1.5, 0.0]])  # positive scores are divided, not multiplied
    assert int(_pick(positive, SamplingSettings(temperature=0, repetition_penalty=2.0),
                     torch.tensor([[True, False, False]]), gens[:1])) == 1


def test_a_cancel_inside_a_batch_abandons_it(lm, rendered):
    calls = []

    def on_step():
        calls.append(1)
        if len(calls) == 3:
            raise JobCancelled("cancelled")

    with pytest.raises(JobCancelled):
        generate_batch(lm.model, lm.tokenizer, rendered, SamplingSettings(max_new_tokens=50), [1, 2, 3],
                       on_step=on_step)
    assert len(calls) == 3  # checked before every forward pass


# ------------------------------------------------------------------------------- the job
def test_generate_job_stores_k_responses_per_prompt_with_their_settings(project, tiny_model):
    ctx = RecordingContext()
    config = small(tiny_model, template="few_shot", system_prompt="Answer briefly.", seed=7)
    out = execute_job(get_job("generate"), config, ctx, project_path=project.folder)
    assert out.status == "completed", out.error
    items = project.items("response")
    prompts = project.conn.execute("SELECT id, text FROM prompts ORDER BY id").fetchall()
    assert len(prompts) == 7 and len(items) == 7 * 3 == out.result["responses"]
    assert out.result["item_ids"] == [i["id"] for i in items]
    per_prompt: dict[int, list[int]] = {}
    for it in items:
        params = json.loads(it["params_json"])
        per_prompt.setdefault(it["prompt_id"], []).append(params["sample_index"])
        assert it["run_id"] == out.run_id and it["model_id"] == str(tiny_model) and it["source"] == "generated"
        assert params["temperature"] == 0.8 and params["top_p"] == 0.95 and params["top_k"] == 50
        assert params["max_new_tokens"] == 6 and params["repetition_penalty"] == 1.0
        assert params["run_seed"] == 7 and params["seed"] == it["seed"]
        assert params["template"] == "few_shot" and params["system_prompt"] == "Answer briefly."
        assert len(params["exemplars"]) == 3
        assert 0 < it["length"] <= 6 and it["text"] is not None
        assert json.loads(it["meta_json"])["finish_reason"] in ("stop", "length")
    assert sorted(per_prompt) == [p["id"] for p in prompts]
    assert all(sorted(v) == [0, 1, 2] for v in per_prompt.values())
    # one published sample and one metrics row per batch of 4; progress reaches 100 %
    batches = (21 + 3) // 4
    samples = project.samples(out.run_id, "generation")
    assert len(samples) == batches == len(ctx.sample_log)
    assert sum(len(s["payload"]["completions"]) for s in samples) == 21
    first = samples[0]["payload"]["completions"][0]
    assert first["item_id"] == items[0]["id"] and first["text"] == items[0]["text"]
    metrics = project.metrics(out.run_id)
    assert metrics["generation/tokens_per_second"][0] == list(range(batches))
    assert all(v > 0 for v in metrics["generation/tokens_per_second"][1])
    assert all(0 < v <= 6 for v in metrics["completions/mean_length"][1])
    assert ctx.progress_log[-1][0] == 1.0
    run = project.get_run(out.run_id)
    assert run["status"] == "completed" and run["config"]["samples_per_prompt"] == 3


def test_same_seed_reproduces_the_run_and_another_seed_does_not(project, tiny_model):
    def texts(seed, **kw):
        out = execute_job(get_job("generate"), small(tiny_model, seed=seed, **kw), RecordingContext(),
                          project_path=project.folder)
        assert out.status == "completed", out.error
        rows = project.conn.execute(
            "SELECT prompt_id, json_extract(params_json, '$.sample_index') AS k, text FROM items "
            "WHERE run_id=?", [out.run_id]).fetchall()
        return {(r["prompt_id"], r["k"]): r["text"] for r in rows}

    first = texts(3)
    assert texts(3, batch_size=7) == first  # a different batching gives the same samples
    assert texts(4) != first


def test_cancel_stops_between_batches_and_keeps_the_finished_ones(project, tiny_model):
    ctx = RecordingContext(cancel_after_metrics=2)
    out = execute_job(get_job("generate"), small(tiny_model), ctx, project_path=project.folder)
    assert out.status == "cancelled"
    assert len(project.items("response")) == 2 * 4  # two whole batches, not one row more
    assert len(project.samples(out.run_id)) == 2
    assert project.get_run(out.run_id)["status"] == "cancelled"


def test_prompts_by_id_and_by_category(project, tiny_model):
    mine = project.add_prompt("Name three colours.", category="style")
    out = execute_job(get_job("generate"), small(tiny_model, prompt_set="starter", category="reasoning",
                                                 prompt_ids=[str(mine)], max_prompts=4, samples_per_prompt=1),
                      RecordingContext(), project_path=project.folder)
    assert out.status == "completed", out.error
    prompt_ids = [i["prompt_id"] for i in project.items("response")]
    cats = {r["id"]: r["category"] for r in project.conn.execute("SELECT id, category FROM prompts")}
    assert len(prompt_ids) == 4 and mine in prompt_ids
    assert sorted(cats[p] for p in prompt_ids) == ["reasoning"] * 3 + ["style"]
    missing = execute_job(get_job("generate"), small(tiny_model, prompt_set="", prompt_ids=[999]),
                          RecordingContext(), project_path=project.folder)
    assert missing.status == "failed" and "no prompt with id 999" in missing.error


def test_impossible_settings_are_reported_before_anything_runs(tiny_model):
    with pytest.raises(cfg.ConfigError) as info:
        cfg.from_dict(GenerateConfig, {"prompt_set": "", "top_p": 0.0, "samples_per_prompt": 0,
                                       "few_shot_exemplars": "[{", "prompt_ids": ["x"]})
    text = str(info.value)
    assert text.count("'x'") == 1  # said once
    for expected in ("top_p: must be greater than 0.0", "samples_per_prompt: must be at least 1",
                     "few_shot_exemplars: few-shot exemplars are not valid JSON", "prompt_ids: 'x' is not an id"):
        assert expected in text
    with pytest.raises(cfg.ConfigError, match="choose prompts"):
        cfg.from_dict(GenerateConfig, {"prompt_set": ""})
    with pytest.raises(cfg.ConfigError, match="no built-in prompt set 'nope'"):
        cfg.from_dict(GenerateConfig, {"prompt_set": "nope"})


def test_a_broken_model_fails_the_run_with_the_clear_message(project, tmp_path):
    out = execute_job(get_job("generate"), small(tmp_path / "no-model"), RecordingContext(),
                      project_path=project.folder)
    assert out.status == "failed" and "ModelNotFoundError: No model folder at" in out.error
    assert project.items("response") == []


def test_cli_run_generate_prints_json_last(tmp_path, tiny_model):
    folder = tmp_path / "g.rlhf"

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "rlhf_core", *map(str, args)], cwd=ROOT,
                              capture_output=True, text=True, timeout=180)

    assert cli("new-project", folder).returncode == 0
    out = cli("run", "generate", "--project", folder, "--model", tiny_model, "--prompt-set", "lecture",
              "--category", "reasoning", "--samples-per-prompt", 2, "--max-new-tokens", 4,
              "--template", "chain_of_thought")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["status"] == "completed" and result["result"]["responses"] == 4
    assert result["result"]["template"]["template"] == "chain_of_thought"
    assert "100.0%" in out.stderr
