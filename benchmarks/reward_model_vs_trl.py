"""Reward-model training step: the workbench's (``text_reward_model`` job) vs TRL 1.16's ``RewardTrainer``.

Both train the same starting weights (the backbone from one folder; TRL's bias-free ``score`` head
gets our head's initial weight, the same bias-free layer) on the same batch of chat-formatted
pairs, with the same maximum length, torch AdamW (fused kernel, TRL's default), learning rate and
gradient checkpointing setting, in one process, taking turns step by step (a TRL step, then one of
ours from TRL's step-end callback), so that a change in the machine's load hits both alike:

- ours: :func:`rlhf_core.trainers.text.reward_model.train_step`, exactly the job's per-step work: render
  and tokenise the pairs, score the chosen and rejected rows (in groups of similar length, each
  padded to its own longest row), Bradley-Terry loss, backward, AdamW step, the step's metrics;
- TRL: ``RewardTrainer.train()`` for 1 + N steps (constant learning rate; TRL's own defaults for
  the rest, e.g. gradient clipping at 1.0; all 2B rows padded to the longest). A TRL step is timed
  from the end of our previous step to TRL's next ``on_step_end``, so it includes fetching and
  collating the batch and the trainer's bookkeeping; TRL tokenises its dataset once, before
  training, which is not counted (ours tokenises per step, and that is counted).

One warm-up step each, then the median of N steps. The first-step losses of the two are printed
as a check that both compute the same thing (they start from the same weights and batch).

    .venv/bin/python benchmarks/reward_model_vs_trl.py [--model FOLDER | --tiny] [--pairs 8]
        [--max-length 512] [--steps 3] [--threads 1] [--lr 1e-5] [--gradient-checkpointing on|off]

Prints a JSON object as its last line. Target: ratio (ours / TRL) <= 1.0. The default model is
the bundled SmolLM2-135M-Instruct (converted first if needed); ``--tiny`` uses a 2-layer, 64-wide
random Llama with the real tokenizer (seconds instead of minutes: a smoke test, its timings are
dominated by per-step overhead, not compute).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from bench_models import pick_model  # noqa: E402  (benchmarks/)

from rlhf_core.text.model import quiet_transformers  # noqa: E402
from rlhf_core.text.pairs import TextPair  # noqa: E402
from rlhf_core.text.reward_model import format_pair_text, length_groups, load_base_reward_model  # noqa: E402
from rlhf_core.trainers.text.reward_model import set_gradient_checkpointing, train_step  # noqa: E402
from rlhf_core.text.rl_common import make_optimizer  # noqa: E402

# (prompt, chosen, rejected): written for this benchmark; 40-130 tokens each once chat-formatted
TRIPLES = [
    ("Explain what a reward model is in one paragraph.",
     "A reward model is a neural network that reads a prompt and a response and returns one number, "
     "the reward. It is trained on human comparisons of two responses so that the preferred one gets "
     "the higher score, and it then stands in for the people when a policy is optimised.",
     "It is a model that gives rewards."),
    ("Give me three tips for a good night's sleep.",
     "1. Go to bed and get up at the same time every day. 2. Keep the bedroom dark, quiet and cool. "
     "3. Avoid caffeine in the afternoon and screens in the last hour before bed.",
     "Sleep more. Also you could try not sleeping at all and see what happens, some people say it works."),
    ("Translate 'good morning' into French.",
     "Bonjour.",
     "Good morning in French is 'bonne nuit', which people say when they wake up."),
    ("What is the capital of Australia?",
     "Canberra. Sydney and Melbourne are larger, but Canberra was chosen as a compromise between them "
     "and has been the capital since 1913.",
     "Sydney."),
    ("Write a haiku about autumn.",
     "Red leaves drift and fall / the cold wind counts what is left / one branch holds the sun",
     "Autumn is a season. Leaves fall from trees. It gets colder. The end."),
    ("How do I reverse a list in Python?",
     "Use `my_list.reverse()` to reverse it in place, or `my_list[::-1]` / `list(reversed(my_list))` "
     "to get a reversed copy and leave the original unchanged.",
     "You cannot reverse a list in Python; convert it to a string first."),
    ("Why is the sky blue?",
     "Sunlight is scattered by the molecules of the air, and short (blue) wavelengths are scattered "
     "much more strongly than long (red) ones, so blue light reaches us from every part of the sky.",
     "Because it reflects the ocean."),
    ("Suggest a name for a grey cat.",
     "Smokey, Ash or Pebble would all suit a grey cat.",
     "Dog."),
]


def make_pairs(n: int) -> list[TextPair]:
    return [TextPair(*TRIPLES[i % len(TRIPLES)], 1.0) for i in range(n)]  # left = chosen


def run_both(folder: Path, pairs: list[TextPair], args, out_dir: Path) -> dict:
    """Alternate the two: each TRL step is followed by one of ours, run from TRL's step-end callback.

    Alternating keeps a machine whose load changes (other processes) from favouring either side.
    A TRL step is timed from the end of our previous step to TRL's next ``on_step_end``.
    """
    import datasets
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, TrainerCallback
    from transformers.trainer_callback import PrinterCallback
    from trl import RewardConfig, RewardTrainer

    from rlhf_core import devices

    device = devices.resolve_device(args.device)
    precision = devices.resolve_precision(args.precision, device)
    ours_model, tok, _ = load_base_reward_model(str(folder), max_length=args.max_length, seed=args.seed)
    ours_model.place(device, precision)
    scaler = devices.grad_scaler(device, precision)
    set_gradient_checkpointing(ours_model, args.gradient_checkpointing == "on")
    ours_model.train()
    optimiser = make_optimizer(ours_model.parameters(), args.lr)
    lengths = [len(r) for r in ours_model.tokenize(
        [format_pair_text(tok, p.prompt, s) for p in pairs for s in (p.left, p.right)], tok)]

    # The model TRL would build from the folder name (AutoModelForSequenceClassification, num_labels=1,
    # float32), made here so that its head starts from our head's weights (the same bias-free layer).
    with quiet_transformers():  # its load report says the new head is missing from the checkpoint
        trl_model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=1, dtype=torch.float32,
                                                                       local_files_only=True)
    datasets.disable_progress_bars()
    with torch.no_grad():
        trl_model.score.weight.copy_(ours_model.head.weight)

    ours_times: list[float] = []
    ours_losses: list[float] = []

    class Alternate(TrainerCallback):
        def __init__(self):
            self.begin, self.end, self.resume = [], [], []

        def on_step_begin(self, args, state, control, **kwargs):
            self.begin.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            self.end.append(time.perf_counter())
            t0 = time.perf_counter()
            metrics = train_step(ours_model, optimiser, pairs, tok, scaler=scaler)
            ours_times.append(time.perf_counter() - t0)
            ours_losses.append(metrics["reward_model/loss"])
            self.resume.append(time.perf_counter())

    rows = [{"prompt": [{"role": "user", "content": p.prompt}],
             "chosen": [{"role": "assistant", "content": p.left}],
             "rejected": [{"role": "assistant", "content": p.right}]} for p in pairs]
    config = RewardConfig(
        output_dir=str(out_dir), use_cpu=device.type == "cpu", bf16=precision == "bf16",
        fp16=precision == "fp16", report_to="none", disable_tqdm=True,
        max_length=args.max_length, per_device_train_batch_size=len(pairs), max_steps=1 + args.steps,
        learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
        optim="adamw_torch_fused", gradient_checkpointing=args.gradient_checkpointing == "on",
        save_strategy="no", logging_steps=1, seed=args.seed, dataloader_num_workers=0)
    clock = Alternate()
    trainer = RewardTrainer(model=trl_model, args=config, train_dataset=Dataset.from_list(rows),
                            callbacks=[clock])
    trainer.remove_callback(PrinterCallback)
    if len(trainer.train_dataset) != len(pairs):
        raise SystemExit(f"TRL dropped {len(pairs) - len(trainer.train_dataset)} pairs longer than "
                         f"--max-length {args.max_length}: raise it so both train on the same batch")
    trainer.train()
    trl_times = [clock.end[0] - clock.begin[0]] + [e - r for r, e in zip(clock.resume, clock.end[1:])]
    inner = [e - b for b, e in zip(clock.begin, clock.end)]
    trl_losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"ours": ours_times, "ours_losses": ours_losses, "trl": trl_times, "trl_inner": inner,
            "trl_losses": trl_losses, "lengths": lengths,
            "groups": len(length_groups(lengths, ours_model.flops_per_token, ours_model.group_overhead_flops)),
            "threads_after": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="", help="Causal LM folder (default: the bundled SmolLM2-135M).")
    parser.add_argument("--tiny", action="store_true", help="A 2-layer, 64-wide random Llama (quick check).")
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--steps", type=int, default=3, help="Timed steps after one warm-up step.")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--gradient-checkpointing", choices=("on", "off"), default="off")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N, for both (auto: a GPU if any).")
    parser.add_argument("--precision", default="float32", help="float32, bf16 or fp16, for both.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    tmp = Path(tempfile.mkdtemp(prefix="rm-vs-trl-"))
    folder, model_name = pick_model(args.tiny, args.model, tmp)
    pairs = make_pairs(args.pairs)
    load1 = os.getloadavg()[0]
    try:
        run = run_both(folder, pairs, args, tmp / "trl-out")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    load2 = os.getloadavg()[0]

    our_step = statistics.median(run["ours"][1:])
    trl_step = statistics.median(run["trl"][1:])
    ratio = our_step / trl_step
    lengths = run["lengths"]
    print(f"model {model_name}, {args.pairs} pairs ({min(lengths)}-{max(lengths)} tokens, our length groups: "
          f"{run['groups']}), {args.threads} thread(s), gradient checkpointing {args.gradient_checkpointing}",
          file=sys.stderr)
    for name, times in (("ours", run["ours"]), ("TRL ", run["trl"])):
        print(f"{name}: warm-up {times[0]:.3f} s, steps {', '.join(f'{t:.3f}' for t in times[1:])} s "
              f"-> median {statistics.median(times[1:]):.3f} s", file=sys.stderr)
    print(f"ratio ours/TRL {ratio:.3f} (target <= 1.0); TRL inside its step callbacks "
          f"{statistics.median(run['trl_inner'][1:]):.3f} s; first-step loss ours {run['ours_losses'][0]:.4f}, "
          f"TRL {run['trl_losses'][0]:.4f}; load average {load1:.2f} -> {load2:.2f}", file=sys.stderr)

    result = {
        "benchmark": "reward_model_vs_trl",
        "our_step_s": round(our_step, 4),
        "trl_step_s": round(trl_step, 4),
        "ratio": round(ratio, 3),
        "model": model_name,
        "threads": args.threads,
        "device": args.device,
        "precision": args.precision,
        "pairs": args.pairs,
        "max_length": args.max_length,
        "tokens_min_max": [min(lengths), max(lengths)],
        "tokens_total": sum(lengths),
        "tokens_padded_trl": len(lengths) * max(lengths),
        "our_length_groups": run["groups"],
        "gradient_checkpointing": args.gradient_checkpointing,
        "steps": args.steps,
        "our_steps_s": [round(t, 4) for t in run["ours"]],
        "trl_steps_s": [round(t, 4) for t in run["trl"]],
        "trl_inner_step_s": round(statistics.median(run["trl_inner"][1:]), 4),
        "first_step_loss": {"ours": round(run["ours_losses"][0], 5), "trl": run["trl_losses"][0]},
        "threads_after_trl": run["threads_after"],
        "load_average": [round(load1, 2), round(load2, 2)],
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
