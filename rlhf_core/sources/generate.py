"""Sample K responses per prompt from a language model and store them as items to be judged.

The first step of the text track: responses generated here are what people (or AI labellers)
compare and rank. Prompts come from the project (``prompt_ids``) and/or a built-in set
(``prompt_set`` + ``category``; the set's prompts are added to the project if they are not there
yet). Each prompt is rendered with a template (zero-shot, few-shot, chain-of-thought, optional
system prompt) through the model's chat template, and K completions are sampled per prompt.

Work is done in batches (similar prompt lengths together, left padding). After every batch its
responses are stored as ``response`` items in one transaction (model id and every sampling
setting in ``params``, the per-sample seed in ``seed``, the token count in ``length``), published
with ``ctx.sample("generation", ...)``, and progress and metrics are reported; cancellation is
checked before every forward pass and a cancelled batch stores nothing.

Every sample gets its own seed derived from the run seed, the prompt text and the sample index,
so the same settings reproduce the same texts whatever the batch size or prompt order.

``device`` and ``precision`` (:mod:`rlhf_core.devices`): the model is loaded on the device in
:func:`~rlhf_core.devices.frozen_dtype` (half on a GPU, float32 on the CPU) and sampled under
autocast for bf16/fp16; the result records where it ran (``device``, ``dtype``, ``peak_memory_mb``).
A device that cannot be used stops the run before anything is written.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from rlhf_core import devices, kinds
from rlhf_core.config import param
from rlhf_core.jobs import JobContext
from rlhf_core.text.model import DEFAULT_MODEL_NAME, default_model_dir, is_converted, load_model, resolve_model_spec
from rlhf_core.text.prompts import (
    TEMPLATE_STYLES,
    PromptTemplate,
    add_builtin_prompts,
    builtin_set_path,
    parse_exemplars,
)


@dataclass
class GenerateConfig:
    model: str = param("", "Model folder (a Hugging Face causal-LM folder with safetensors weights). "
                       "Empty: the bundled SmolLM2-135M-Instruct, converted on first use.", label="Model")
    prompt_set: str = param("lecture", "Built-in prompt set to generate for (added to the project if "
                            "needed), e.g. 'lecture' or 'starter'. Empty: only the prompt ids below.")
    category: str = param("", "Only prompts of this category from the set (helpfulness, harmlessness, "
                          "reasoning, style; comma-separated for several). Empty: all.")
    prompt_ids: list = param([], "Ids of prompts already in the project to generate for (in addition "
                             "to the prompt set's; empty the prompt set to use only these).", label="Prompt ids",
                             each="id")
    max_prompts: int = param(0, "Use at most this many prompts (0: all selected).", min=0, max=1_000_000)
    samples_per_prompt: int = param(4, "K: completions sampled per prompt (the responses to compare).",
                                    min=1, max=64, label="Samples per prompt (K)")
    max_new_tokens: int = param(128, "Longest completion, in tokens.", min=1, max=4096)
    temperature: float = param(0.8, "Sampling temperature; 0 picks the most likely token (greedy, "
                               "so all K samples are the same).", min=0.0, max=5.0)
    top_p: float = param(0.95, "Nucleus sampling: sample from the smallest set of tokens whose "
                         "probability adds up to top_p (1 = off).", min=0.0, min_inclusive=False, max=1.0)
    top_k: int = param(50, "Sample only from the k most likely tokens (0 = off).", min=0, max=1_000_000)
    repetition_penalty: float = param(1.0, "Divide the scores of tokens already used by this "
                                      "(1 = off; 1.1-1.3 discourages loops).", min=0.0,
                                      min_inclusive=False, max=10.0)
    seed: int = param(0, "Random seed; the same seed and settings give the same texts.", min=0)
    batch_size: int = param(16, "Completions generated together (more is faster per token, up to "
                            "memory).", min=1, max=1024)
    template: str = param("zero_shot", "How prompts are presented: zero_shot (as written), few_shot "
                          "(worked examples first), chain_of_thought (adds \"Let's think step by step.\").",
                          choices=TEMPLATE_STYLES)
    system_prompt: str = param("", "System prompt (empty: the model's own default).")
    few_shot_exemplars: str = param("", "few_shot only: JSON list of {\"question\", \"answer\"} "
                                    "examples (empty: three worked arithmetic examples).", advanced=True)
    allow_network: bool = param(False, "Allow a Hugging Face hub id as the model (needs a process "
                                "started with HF_HUB_OFFLINE=0).", advanced=True)
    device: str = devices.device_param()
    precision: str = devices.precision_param()

    def check(self) -> list[str]:
        problems = [p for p in [devices.spec_problem(self.device)] if p]
        if not self.prompt_set.strip() and not self.prompt_ids:
            problems.append("choose prompts: a prompt_set or some prompt_ids")
        if self.prompt_set.strip() and not builtin_set_path(self.prompt_set.strip()).is_file():
            problems.append(f"prompt_set: there is no built-in prompt set {self.prompt_set.strip()!r}")
        if self.category.strip() and not self.prompt_set.strip():
            problems.append("category: only applies to a prompt_set")
        try:
            parse_exemplars(self.few_shot_exemplars)
        except ValueError as exc:
            problems.append(f"few_shot_exemplars: {exc}")
        return problems

    def template_obj(self) -> PromptTemplate:
        return PromptTemplate(style=self.template, system_prompt=self.system_prompt,
                              exemplars=parse_exemplars(self.few_shot_exemplars))

    def sampling(self):
        from rlhf_core.text.generation import SamplingSettings  # start-up: imports torch

        return SamplingSettings(max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                                top_p=self.top_p, top_k=self.top_k,
                                repetition_penalty=self.repetition_penalty)


def sample_seed(run_seed: int, prompt_text: str, sample_index: int) -> int:
    """The seed of one sample: a hash of (run seed, prompt text, sample index), 63 bits."""
    digest = hashlib.sha256(f"{run_seed}\x1f{sample_index}\x1f{prompt_text}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


class _Scaled:
    """Maps a sub-task's progress (0..1) into ``[lo, hi]`` of the job's bar."""

    def __init__(self, ctx: JobContext, lo: float, hi: float):
        self.ctx, self.lo, self.hi = ctx, lo, hi

    def progress(self, done, total=None, message=""):
        f = float(done) / float(total) if total else float(done)
        self.ctx.progress(self.lo + (self.hi - self.lo) * min(max(f, 0.0), 1.0), message=message)

    def log(self, message):
        self.ctx.log(message)

    def raise_if_cancelled(self):
        self.ctx.raise_if_cancelled()


def select_prompts(project, config: GenerateConfig) -> list[dict]:
    """The prompt rows to generate for, in order (project ids first, then the set's prompts)."""
    ids: list[int] = [int(p) for p in config.prompt_ids]
    if config.prompt_set.strip():
        ids += add_builtin_prompts(project, config.prompt_set.strip(), config.category or None)
    seen, ordered = set(), []
    for i in ids:
        if i not in seen:
            seen.add(i)
            ordered.append(i)
    if config.max_prompts:
        ordered = ordered[: config.max_prompts]
    rows = {r["id"]: dict(r) for r in project.conn.execute(
        f"SELECT * FROM prompts WHERE deleted_at IS NULL AND id IN ({','.join('?' * len(ordered))})", ordered
    )} if ordered else {}
    missing = [i for i in ordered if i not in rows]
    if missing:
        raise ValueError(f"no prompt with id {', '.join(map(str, missing[:10]))} in this project")
    return [rows[i] for i in ordered]


def generate_responses(config: GenerateConfig, ctx: JobContext) -> dict:
    """Sample ``samples_per_prompt`` responses for every selected prompt and store them."""
    from rlhf_core.text.generation import generate_batch  # start-up: imports torch

    if ctx.project_path is None:
        raise ValueError("generation stores its responses in a project: run it with a project")
    device = devices.resolve_device(config.device)
    precision = devices.resolve_precision(config.precision, device)
    devices.reset_peak_memory(device)
    project = ctx.project()
    prompts = select_prompts(project, config)
    ctx.raise_if_cancelled()

    converting = config.model.strip() in ("", "default", DEFAULT_MODEL_NAME) and not is_converted(default_model_dir())
    gen_lo = 0.3 if converting else 0.02
    ctx.progress(0.0, message="Loading the model")
    dtype = str(devices.frozen_dtype(device, precision)).removeprefix("torch.")
    lm = load_model(resolve_model_spec(config.model, project) or None, allow_network=config.allow_network,
                    ctx=_Scaled(ctx, 0.0, gen_lo) if converting else None, device=device, dtype=dtype)
    ctx.log(f"Loaded {lm.model_id} in {lm.load_seconds:.1f} s; {len(prompts)} prompts x "
            f"{config.samples_per_prompt} samples")
    template = config.template_obj()
    sampling = config.sampling()
    tokenizer = lm.tokenizer
    rendered = [template.render(tokenizer, p["text"]) for p in prompts]
    lengths = [len(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in rendered]
    # One row per sample; similar prompt lengths share a batch (less padding), K samples adjacent.
    rows = sorted(((lengths[i], i, k) for i in range(len(prompts)) for k in range(config.samples_per_prompt)))
    batches = [rows[s: s + config.batch_size] for s in range(0, len(rows), config.batch_size)]
    base_params = {
        **sampling.as_params(), **template.describe(),
        "run_seed": config.seed, "samples_per_prompt": config.samples_per_prompt,
        "batch_size": config.batch_size,
    }
    eos = lm.eos_token_ids
    item_ids: list[int] = []
    total_tokens, gen_seconds, done_rows = 0, 0.0, 0
    started = time.monotonic()
    for b, batch in enumerate(batches):
        ctx.raise_if_cancelled()
        seeds = [sample_seed(config.seed, prompts[i]["text"], k) for _, i, k in batch]
        with devices.autocast(device, precision):
            completions, stats = generate_batch(
                lm.model, tokenizer, [rendered[i] for _, i, _ in batch], sampling, seeds,
                eos_token_ids=eos, on_step=ctx.raise_if_cancelled,
            )
        payload = []
        with project.db.atomic():
            for (_, i, k), c in zip(batch, completions):
                params = {**base_params, "sample_index": k, "seed": c.seed}
                item_id = project.add_item(
                    "response", prompt_id=prompts[i]["id"], run_id=ctx.run_id, source="generated",
                    seed=c.seed, length=c.n_tokens, text=c.text, model_id=lm.model_id, params=params,
                    meta={"finish_reason": c.finish_reason, "prompt_tokens": c.prompt_tokens, "batch": b},
                )
                item_ids.append(item_id)
                payload.append({"item_id": item_id, "prompt_id": prompts[i]["id"], "prompt": prompts[i]["text"],
                                "sample_index": k, "text": c.text, "n_tokens": c.n_tokens,
                                "finish_reason": c.finish_reason})
        total_tokens += stats.new_tokens
        gen_seconds += stats.seconds
        done_rows += len(batch)
        ctx.sample(kinds.SAMPLE_GENERATION, {"batch": b, "model_id": lm.model_id, "completions": payload}, step=b)
        lengths_b = [c.n_tokens for c in completions]
        ctx.metrics(b, {
            "generation/tokens_per_second": stats.tokens_per_second,
            "completions/mean_length": sum(lengths_b) / len(lengths_b),
            "completions/stopped_fraction": sum(c.finish_reason == "stop" for c in completions) / len(completions),
        })
        fraction = 1.0 if done_rows == len(rows) else gen_lo + (1.0 - gen_lo) * done_rows / len(rows)
        ctx.progress(fraction, message=f"{done_rows}/{len(rows)} responses")
    return {
        "responses": len(item_ids),
        "prompts": len(prompts),
        "model_id": lm.model_id,
        "new_tokens": total_tokens,
        "tokens_per_second": round(total_tokens / gen_seconds, 2) if gen_seconds else 0.0,
        "wall_seconds": round(time.monotonic() - started, 2),
        "load_seconds": round(lm.load_seconds, 2),
        "item_ids": item_ids,
        "template": template.describe(),
        **devices.device_record(device, precision),
    }
