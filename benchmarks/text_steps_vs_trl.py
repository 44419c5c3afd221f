"""GRPO and DPO step time: the workbench's trainers vs TRL 1.16's ``GRPOTrainer`` / ``DPOTrainer``.

Same model folder, same settings, one after the other in one process, each timed as a median of N
steps after one warm-up step:

- GRPO: B prompts x G completions of at most ``--max-new-tokens`` tokens at temperature 0.7, the
  format (0.5) + correctness (1.0) reward on generated level-1 arithmetic tasks (prompts with the
  worked example, as the demo uses them), beta 0.04 with a reference model, epsilon 0.2, one
  update per batch, token-level loss (TRL ``loss_type="dapo"``; ``use_bias_correction_kl=False`` as
  ours), AdamW (fused), gradient clipping 1.0, gradient checkpointing off for both by default.
  Ours: the ``grpo`` job's own loop (:func:`rlhf_core.trainers.text.grpo.train_grpo`, its
  ``time/steps_per_second``: sampling, rewards, the reference and policy forward passes (each
  prompt once per group), backward, optimiser step). TRL: ``GRPOTrainer.train()``,
  a step timed from one ``on_step_end`` to the next (generation and scoring happen inside it).
- DPO: P pairs per step (chat-rendered prompts, responses + end token), beta 0.1, the reference
  forward every step (TRL's default ``precompute_ref_log_probs=False``). Ours:
  :func:`rlhf_core.trainers.text.dpo.dpo_step` as the job runs it (each prompt once for its two responses
  unless gradient checkpointing is on). TRL: ``DPOTrainer.train()``, timed like GRPO.

    .venv/bin/python benchmarks/text_steps_vs_trl.py [--tiny | --model FOLDER] [--threads 1] [--steps 3]
        [--which grpo,dpo] [--prompts 2] [--group-size 4] [--max-new-tokens 48] [--pairs 8]
        [--gradient-checkpointing off|on]

Prints a JSON object as its last line with ``ratio_grpo`` and ``ratio_dpo`` (ours / TRL; target
<= 0.8). ``--tiny`` uses a 2-layer, 64-wide random Llama with the real tokenizer (a smoke test: its
timings are per-step overhead, not compute; the tiny model never stops early, so both generate
all ``max_new_tokens``). On the real model the two GRPO runs sample different completions (TRL
uses ``model.generate`` and its own seeding), so their lengths differ; the mean completion lengths
are reported next to the times.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from bench_models import pick_model  # noqa: E402  (benchmarks/)

from rlhf_core import config as cfg  # noqa: E402
from rlhf_core.jobs import RecordingContext  # noqa: E402

PAIRS = [
    ("Explain what a reward model is in one paragraph.",
     "A reward model reads a prompt and a response and returns one number. It is trained on comparisons so "
     "that the preferred response gets the higher score, and then stands in for people during RL.",
     "It is a model that gives rewards."),
    ("Give me three tips for a good night's sleep.",
     "1. Keep a regular schedule. 2. Keep the bedroom dark, quiet and cool. 3. No caffeine after noon.",
     "Sleep more, or try not sleeping at all and see what happens."),
    ("Translate 'good morning' into French.", "Bonjour.", "Good morning in French is 'bonne nuit'."),
    ("What is the capital of Australia?", "Canberra, chosen as a compromise between Sydney and Melbourne.",
     "Sydney."),
    ("Write a haiku about autumn.", "Red leaves drift and fall / the cold wind counts what is left / one branch "
     "holds the sun", "Autumn is a season. Leaves fall. The end."),
    ("How do I reverse a list in Python?", "Use my_list.reverse() in place, or my_list[::-1] for a copy.",
     "You cannot reverse a list in Python."),
    ("Why is the sky blue?", "Air molecules scatter short (blue) wavelengths of sunlight much more strongly than "
     "long (red) ones, so blue light reaches us from every part of the sky.", "Because it reflects the ocean."),
    ("Suggest a name for a grey cat.", "Smokey, Ash or Pebble.", "Dog."),
]


class StepClock:
    """A TrainerCallback that records step boundaries (made lazily: transformers is imported late)."""

    @staticmethod
    def make():
        from transformers import TrainerCallback

        class _Clock(TrainerCallback):
            def __init__(self):
                self.begin, self.end = [], []

            def on_step_begin(self, args, state, control, **kwargs):
                self.begin.append(time.perf_counter())

            def on_step_end(self, args, state, control, **kwargs):
                self.end.append(time.perf_counter())

        return _Clock()


def _trl_device(args) -> dict:
    """TRL's settings for the same device and precision as ours (bf16/fp16 = mixed precision there too)."""
    from rlhf_core import devices

    device = devices.resolve_device(args.device)
    precision = devices.resolve_precision(args.precision, device)
    return {"use_cpu": device.type == "cpu", "bf16": precision == "bf16", "fp16": precision == "fp16"}


def _trl_times(clock) -> list[float]:
    return [clock.end[0] - clock.begin[0]] + [b - a for a, b in zip(clock.end, clock.end[1:])]


# ------------------------------------------------------------------------------- GRPO
def grpo_ours(folder: Path, args) -> dict:
    from rlhf_core.trainers.text.grpo import GRPOConfig, train_grpo

    config = cfg.from_dict(GRPOConfig, dict(
        model=str(folder), steps=1 + args.steps, prompts_per_step=args.prompts, group_size=args.group_size,
        max_new_tokens=args.max_new_tokens, temperature=0.7, learning_rate=1e-6, beta=0.04, heldout_tasks=0,
        train_tasks=64, gradient_checkpointing=args.gradient_checkpointing == "on", threads=args.threads,
        save=False, seed=args.seed, device=args.device, precision=args.precision))
    ctx = RecordingContext()
    train_grpo(config, ctx)
    times = [1.0 / v for v in ctx.series("time/steps_per_second")[1]]
    lengths = ctx.series("completions/mean_length")[1]
    gc.collect()
    return {"times": times, "lengths": lengths}


def grpo_trl(folder: Path, args, out_dir: Path) -> dict:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from rlhf_core.text.gold_eval import task_prompts
    from rlhf_core.text.rewards import CorrectnessReward, FormatReward
    from rlhf_core.text.tasks import task_messages

    train, _ = task_prompts(1, 64, 0, args.seed)
    rows = [{"prompt": task_messages(p.text, True), "gold_answer": p.meta["gold_answer"]} for p in train]

    def text_of(completion):
        return completion[0]["content"] if isinstance(completion, list) else completion

    def format_reward(prompts, completions, **kw):
        return FormatReward()(prompts, [text_of(c) for c in completions], [{}] * len(completions))

    def correctness_reward(prompts, completions, gold_answer, **kw):
        return CorrectnessReward()(prompts, [text_of(c) for c in completions],
                                   [{"gold_answer": g} for g in gold_answer])

    n = args.prompts * args.group_size
    config = GRPOConfig(
        output_dir=str(out_dir), **_trl_device(args), report_to="none", disable_tqdm=True,
        per_device_train_batch_size=n, num_generations=args.group_size, max_completion_length=args.max_new_tokens,
        temperature=0.7, beta=0.04, epsilon=0.2, loss_type="dapo", use_bias_correction_kl=False,
        learning_rate=1e-6, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, optim="adamw_torch_fused",
        max_grad_norm=1.0, reward_weights=[0.5, 1.0], max_steps=1 + args.steps, save_strategy="no", logging_steps=1,
        gradient_checkpointing=args.gradient_checkpointing == "on", seed=args.seed, dataloader_num_workers=0)
    clock = StepClock.make()
    trainer = GRPOTrainer(model=str(folder), reward_funcs=[format_reward, correctness_reward], args=config,
                          train_dataset=Dataset.from_list(rows), callbacks=[clock])
    torch.set_num_threads(args.threads)
    trainer.train()
    lengths = [h.get("completions/mean_length") for h in trainer.state.log_history if "completions/mean_length" in h]
    del trainer
    gc.collect()
    return {"times": _trl_times(clock), "lengths": lengths}


# ------------------------------------------------------------------------------- DPO
def dpo_ours(folder: Path, args) -> dict:
    from rlhf_core.trainers.text.dpo import PreferencePair, dpo_step
    from rlhf_core.text.rl_common import make_optimizer
    from rlhf_core.text.rl_common import load_policy

    from rlhf_core import devices

    device = devices.resolve_device(args.device)
    setup = load_policy(str(folder), gradient_checkpointing=args.gradient_checkpointing == "on", need_reference=True,
                        device=device, precision=devices.resolve_precision(args.precision, device))
    tok = setup.tokenizer
    pairs = [PreferencePair(*PAIRS[i % len(PAIRS)]) for i in range(args.pairs)]
    optimizer = make_optimizer(setup.trainable_parameters(), 1e-6)
    setup.model.train()
    times, losses = [], []
    for _ in range(1 + args.steps):
        t0 = time.perf_counter()
        m = dpo_step(setup, optimizer, tok, pairs, beta=0.1, label_smoothing=0.0, eos_token_id=tok.eos_token_id,
                     pad_id=tok.pad_token_id, max_length=512, max_grad_norm=1.0,
                     shared_prompt=args.gradient_checkpointing == "off")  # as the dpo job does
        times.append(time.perf_counter() - t0)
        losses.append(m["train/loss"])
    del setup, optimizer
    gc.collect()
    return {"times": times, "losses": losses}


def dpo_trl(folder: Path, args, out_dir: Path) -> dict:
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from rlhf_core.text.rl_common import render_chat_prompt

    tok = AutoTokenizer.from_pretrained(folder)
    rows = [{"prompt": render_chat_prompt(tok, p), "chosen": c, "rejected": r}
            for p, c, r in (PAIRS[i % len(PAIRS)] for i in range(args.pairs))]
    config = DPOConfig(
        output_dir=str(out_dir), **_trl_device(args), report_to="none", disable_tqdm=True, beta=0.1,
        max_length=512, per_device_train_batch_size=args.pairs, max_steps=1 + args.steps, learning_rate=1e-6,
        lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, optim="adamw_torch_fused", max_grad_norm=1.0,
        gradient_checkpointing=args.gradient_checkpointing == "on", save_strategy="no", logging_steps=1,
        seed=args.seed, dataloader_num_workers=0)
    clock = StepClock.make()
    trainer = DPOTrainer(model=str(folder), args=config, train_dataset=Dataset.from_list(rows), callbacks=[clock])
    torch.set_num_threads(args.threads)
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    del trainer
    gc.collect()
    return {"times": _trl_times(clock), "losses": losses}


# ------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="", help="Causal LM folder (default: the bundled SmolLM2-135M).")
    parser.add_argument("--tiny", action="store_true", help="A 2-layer, 64-wide random Llama (quick check).")
    parser.add_argument("--which", default="grpo,dpo")
    parser.add_argument("--steps", type=int, default=3, help="Timed steps after one warm-up step.")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--prompts", type=int, default=2, help="GRPO prompts per step.")
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--pairs", type=int, default=8, help="DPO pairs per step.")
    parser.add_argument("--gradient-checkpointing", choices=("on", "off"), default="off",
                        help="For both (off: our GRPO runs each prompt once per group; on: the plain forward).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N, for both (auto: a GPU if any).")
    parser.add_argument("--precision", default="float32", help="float32, bf16 or fp16, for both.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    which = {w.strip() for w in args.which.split(",") if w.strip()}

    tmp = Path(tempfile.mkdtemp(prefix="text-steps-vs-trl-"))
    folder, model_name = pick_model(args.tiny, args.model, tmp)
    load = [os.getloadavg()[0]]
    result: dict = {"benchmark": "text_steps_vs_trl", "model": model_name, "threads": args.threads,
                    "steps": args.steps, "gradient_checkpointing": args.gradient_checkpointing,
                    "device": args.device, "precision": args.precision}
    if "grpo" in which:
        ours = grpo_ours(folder, args)
        trl = grpo_trl(folder, args, tmp / "trl-grpo")
        o, t = statistics.median(ours["times"][1:]), statistics.median(trl["times"][1:])
        result.update({"grpo_ours_s": round(o, 4), "grpo_trl_s": round(t, 4), "ratio_grpo": round(o / t, 3),
                       "grpo_ours_steps_s": [round(x, 3) for x in ours["times"]],
                       "grpo_trl_steps_s": [round(x, 3) for x in trl["times"]],
                       "grpo_ours_mean_length": [round(x, 1) for x in ours["lengths"]],
                       "grpo_trl_mean_length": [round(x, 1) for x in trl["lengths"] if x is not None],
                       "grpo_batch": f"{args.prompts} prompts x {args.group_size} x {args.max_new_tokens} tokens"})
        print(f"GRPO: ours {o:.3f} s, TRL {t:.3f} s per step -> ratio {o / t:.3f}", file=sys.stderr)
        load.append(os.getloadavg()[0])
    if "dpo" in which:
        ours = dpo_ours(folder, args)
        trl = dpo_trl(folder, args, tmp / "trl-dpo")
        o, t = statistics.median(ours["times"][1:]), statistics.median(trl["times"][1:])
        result.update({"dpo_ours_s": round(o, 4), "dpo_trl_s": round(t, 4), "ratio_dpo": round(o / t, 3),
                       "dpo_ours_steps_s": [round(x, 3) for x in ours["times"]],
                       "dpo_trl_steps_s": [round(x, 3) for x in trl["times"]],
                       "dpo_first_loss": {"ours": round(ours["losses"][0], 5), "trl": trl["losses"][0]},
                       "dpo_pairs": args.pairs})
        print(f"DPO: ours {o:.3f} s, TRL {t:.3f} s per step -> ratio {o / t:.3f}", file=sys.stderr)
        load.append(os.getloadavg()[0])
    result.update({"target_ratio": 0.8, "load_average": [round(x, 2) for x in load],
                   "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                   "torch": torch.__version__, "python": platform.python_version()})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
