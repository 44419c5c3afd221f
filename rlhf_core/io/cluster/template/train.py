#!/usr/bin/env python3
"""Train a model with TRL 1.16 from an RLHF Workbench export (DPO, GRPO or a reward model).

Reads config.json beside this file: the algorithm ("algo"), the starting model ("model": a hub id
or a folder; relative paths are relative to this folder), the data ("data.train", JSON Lines in
TRL's format), TRL's arguments ("trainer_args") and optional LoRA settings ("peft").

    python train.py --cpu --max-steps 1             # a quick check on one CPU process
    accelerate launch --num_processes 8 train.py    # 8 GPUs (see launch.sh)

The final model is saved to output/ (safetensors, with its tokenizer; LoRA merged in) together with
workbench_result.json (what was trained and the last logged values). Intermediate checkpoints of
the trainer go to checkpoints/. Import output/ back into the workbench:

    python -m rlhf_core import-checkpoint --project P --kind policy output         # DPO, GRPO
    python -m rlhf_core import-checkpoint --project P --kind reward_model output   # reward model

This script needs only the packages of requirements.txt, not the workbench itself.
"""

import argparse
import json
import math
import re
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULT_FILE = "workbench_result.json"

# ----------------------------------------------------------------------------- rule-based rewards
# GRPO's rewards: the rules of the workbench's rlhf_core.text.rewards, written out here so that this
# script needs nothing from the workbench. TRL calls each with the batch's completions (strings, or
# lists of chat messages) and the dataset's other columns as keyword arguments (gold_answer).
TAGS = ("<think>", "</think>", "<answer>", "</answer>")
LAYOUT_RE = re.compile(r"\s*<think>(.*?)</think>\s*<answer>(.*?)</answer>\s*", re.DOTALL)
ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
NUMBER_RE = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def completion_text(completion):
    """The text of one completion: a string, or a list of chat messages (conversational data)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        return "".join(str(m.get("content", "")) for m in completion
                       if isinstance(m, dict) and m.get("role", "assistant") == "assistant")
    return str(completion)


def layout_score(text, partial):
    """1.0 for exactly <think>..</think> <answer>..</answer> (each tag once, only whitespace around);
    otherwise, with partial credit, 0.2 for each of the four tags that appears exactly once."""
    counts = [text.count(tag) for tag in TAGS]
    if all(c == 1 for c in counts) and LAYOUT_RE.fullmatch(text):
        return 1.0
    return 0.2 * sum(1 for c in counts if c == 1) if partial else 0.0


def last_number(text):
    """The last number in the text ("= 1,234." -> 1234.0), or None."""
    found = NUMBER_RE.findall(text)
    if not found:
        return None
    try:
        return float(found[-1].replace(",", ""))
    except ValueError:
        return None


def as_number(text):
    try:
        value = float(text.replace(",", "").strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def same_answer(answer, gold):
    """Numbers compare by value (the last number of the answer); other gold answers as text
    (case and spacing ignored)."""
    if answer is None or gold is None:
        return False
    gold_text = str(gold).strip()
    if not gold_text:
        return False
    gold_value = as_number(gold_text)
    if gold_value is not None:
        value = last_number(answer)
        return value is not None and abs(value - gold_value) <= 1e-9
    return " ".join(answer.split()).lower() == " ".join(gold_text.split()).lower()


def final_answer(text, fallback_whole_text):
    """The content of the last <answer>...</answer> block (or the whole text, or None)."""
    blocks = ANSWER_RE.findall(text)
    if blocks:
        return blocks[-1]
    return text if fallback_whole_text else None


def format_reward(completions, **kwargs):
    return [layout_score(completion_text(c), True) for c in completions]


def format_strict_reward(completions, **kwargs):
    return [layout_score(completion_text(c), False) for c in completions]


def correctness_reward(completions, gold_answer=None, **kwargs):
    golds = gold_answer if gold_answer is not None else [None] * len(completions)
    return [1.0 if same_answer(final_answer(completion_text(c), False), g) else 0.0
            for c, g in zip(completions, golds)]


def correctness_any_reward(completions, gold_answer=None, **kwargs):
    golds = gold_answer if gold_answer is not None else [None] * len(completions)
    return [1.0 if same_answer(final_answer(completion_text(c), True), g) else 0.0
            for c, g in zip(completions, golds)]


def length_penalty(completions, completion_ids=None, **kwargs):
    """Minus the completion's length in tokens (words when token ids are not given)."""
    if completion_ids is not None:
        return [-float(len(ids)) for ids in completion_ids]
    return [-float(len(completion_text(c).split())) for c in completions]


REWARD_FUNCTIONS = {f.__name__: f for f in (format_reward, format_strict_reward, correctness_reward,
                                            correctness_any_reward, length_penalty)}


# ----------------------------------------------------------------------------- set-up
def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=HERE / "config.json", help="The export's config.json.")
    parser.add_argument("--max-steps", type=int, default=None, help="Stop after this many optimisation steps.")
    parser.add_argument("--cpu", action="store_true", help="Train on the CPU (no GPU, no mixed precision).")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice).")
    parser.add_argument("--model", default=None, help="Start from this model instead of config.json's.")
    parser.add_argument("--output-dir", type=Path, default=HERE / "output", help="Where the final model goes.")
    parser.add_argument("--checkpoint-dir", type=Path, default=HERE / "checkpoints",
                        help="The trainer's own output folder (intermediate checkpoints, logs).")
    return parser.parse_args(argv)


def read_jsonl(path):
    rows = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise SystemExit(f"{path}: line {number} is not valid JSON ({exc.msg})")
    if not rows:
        raise SystemExit(f"{path} has no rows")
    return rows


def resolve_model(spec, base):
    """A folder (relative paths: to this export's folder) or a hub id."""
    candidate = Path(spec).expanduser()
    if not candidate.is_absolute() and (base / candidate).exists():
        return str((base / candidate).resolve())
    if candidate.exists():
        return str(candidate)
    if spec.startswith(("/", ".", "~")) or spec.count("/") > 1:
        raise SystemExit(f"the model folder {spec} does not exist on this machine: copy it here and pass "
                         "--model FOLDER, or export again with --include-model")
    return spec  # a hub id


def main(argv=None):
    args = parse_args(argv)
    config = json.loads(args.config.read_text(encoding="utf-8"))
    base = args.config.resolve().parent
    algo = config["algo"]
    if algo not in ("dpo", "grpo", "reward_model"):
        raise SystemExit(f"unknown algo {algo!r} in {args.config}")

    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer

    import trl

    if args.threads:
        torch.set_num_threads(args.threads)
    model_id = resolve_model(args.model or config["model"], base)
    rows = read_jsonl(base / config["data"]["train"])
    dataset = Dataset.from_list(rows)

    trainer_args = dict(config["trainer_args"])
    trainer_args["output_dir"] = str(args.checkpoint_dir)
    if args.max_steps is not None:
        trainer_args["max_steps"] = args.max_steps
    if args.cpu:
        trainer_args.update(use_cpu=True, bf16=False, fp16=False)
    peft_config = None
    if config.get("peft"):
        from peft import LoraConfig

        peft_config = LoraConfig(**config["peft"])

    config_class = {"dpo": trl.DPOConfig, "grpo": trl.GRPOConfig, "reward_model": trl.RewardConfig}[algo]
    training_args = make_config(config_class, trainer_args)  # a wrong setting stops here, before any loading

    tokenizer = AutoTokenizer.from_pretrained(model_id)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    common = dict(model=model_id, args=training_args, train_dataset=dataset, processing_class=tokenizer,
                  peft_config=peft_config)
    if algo == "dpo":
        trainer = trl.DPOTrainer(**common)
    elif algo == "grpo":
        funcs = [REWARD_FUNCTIONS[name] for name in config["rewards"]["functions"]]
        trainer = trl.GRPOTrainer(reward_funcs=funcs, **common)
    else:
        trainer = trl.RewardTrainer(**common)

    started = time.time()
    trainer.train()
    seconds = time.time() - started
    save_final(trainer, tokenizer, args.output_dir, peft_config is not None)
    if trainer.accelerator.is_main_process:
        write_result(trainer, config, model_id, args, seconds)
        print(f"saved the trained model to {args.output_dir}", flush=True)


def make_config(cls, kwargs):
    """TRL's config from config.json's trainer_args, with a clear message for a wrong one."""
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise SystemExit(f"config.json trainer_args do not fit trl.{cls.__name__}: {exc}")


def save_final(trainer, tokenizer, folder, merge_lora):
    """The final model as a plain safetensors folder with its tokenizer (LoRA merged in)."""
    folder = Path(folder)
    trainer.accelerator.wait_for_everyone()
    if merge_lora:
        model = trainer.accelerator.unwrap_model(trainer.model)
        if trainer.accelerator.is_main_process:
            merged = model.merge_and_unload()
            merged.save_pretrained(folder, safe_serialization=True)
            tokenizer.save_pretrained(folder)
    else:
        trainer.save_model(str(folder))  # every process takes part (sharded states are gathered)
    trainer.accelerator.wait_for_everyone()
    if trainer.accelerator.is_main_process:
        args_file = folder / "training_args.bin"  # a pickle: not needed to use the model
        if args_file.exists():
            args_file.unlink()


def write_result(trainer, config, model_id, args, seconds):
    history = [dict(h) for h in trainer.state.log_history]
    last = {}
    for entry in history:
        last.update({k: v for k, v in entry.items() if isinstance(v, (int, float)) and math.isfinite(v)})
    result = {
        "algo": config["algo"], "base_model": model_id, "global_step": int(trainer.state.global_step),
        "max_steps": args.max_steps, "train_loss": last.get("train_loss", last.get("loss")),
        "train_seconds": round(seconds, 2), "last_logged": last, "log_history": history[-50:],
        "max_length": config["trainer_args"].get("max_length"), "trl_version": __import__("trl").__version__,
        "world_size": trainer.accelerator.num_processes, "device": str(trainer.accelerator.device),
    }
    (Path(args.output_dir) / RESULT_FILE).write_text(json.dumps(result, indent=2, default=str) + "\n")


if __name__ == "__main__":
    sys.exit(main())
