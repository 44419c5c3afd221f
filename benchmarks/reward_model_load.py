"""Load a saved text reward model and score 8 chat-formatted texts: plain transformers vs the workbench.

A reward model on the bundled SmolLM2-135M-Instruct (or ``--model FOLDER``, a causal LM) is saved once
in the workbench's layout (a standard ``AutoModelForSequenceClassification`` folder). Then, taking
turns in one process (imports done beforehand, so neither pays them):

- transformers: ``AutoModelForSequenceClassification.from_pretrained`` + ``AutoTokenizer``, one padded
  batch of the 8 texts through the model (``logits[:, 0]``);
- workbench: :func:`rlhf_core.text.reward_model.load_text_reward_model` (which checks the folder's
  files first) + ``TextRewardModel.score`` (texts in groups of similar length).

The two sets of rewards are compared (largest difference printed). Median of ``--repeats`` rounds.

    .venv/bin/python benchmarks/reward_model_load.py [--model FOLDER | --tiny] [--repeats 3] [--threads 1]

Prints a JSON object as its last line.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROMPTS = ["Say hello.", "Name a fruit.", "What is a reward model?", "Define behavioral cloning.",
           "Write a haiku about rain.", "What is 17 times 3?", "Give me one tip for sleeping well.",
           "Explain RLHF in one sentence."]
RESPONSES = ["Hello! How can I help you today?", "An apple.",
             "A network that scores a response to a prompt with a single number.",
             "Supervised learning of an expert's actions from the states it saw.",
             "Soft rain on the roof / the gutters hum a low song / the street shines like glass.",
             "17 times 3 is 51.", "Keep the same bedtime every day, weekends included.",
             "People compare model outputs, a reward model learns their preferences, and RL optimises it."]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="", help="Causal LM folder ('' = the bundled SmolLM2-135M-Instruct).")
    parser.add_argument("--tiny", action="store_true", help="A 2-layer random Llama instead (a smoke test).")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rlhf_core.text.model import ensure_default_model, make_tiny_model, quiet_transformers
    from rlhf_core.text.reward_model import (
        format_pair_text,
        load_base_reward_model,
        load_text_reward_model,
        save_text_reward_model,
    )

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="rm-load-"))
    base = args.model or str(ensure_default_model())
    if args.tiny:
        base = str(make_tiny_model(work / "tiny", tokenizer_source=ensure_default_model()))
    model, tok, _ = load_base_reward_model(base, max_length=512, seed=0)
    folder = save_text_reward_model(model, work / "rm", meta={"base_model": base})
    texts = [format_pair_text(tok, p, r) for p, r in zip(PROMPTS, RESPONSES)]
    del model

    def transformers_way():
        with quiet_transformers():
            clf = AutoModelForSequenceClassification.from_pretrained(folder).eval()
            tokenizer = AutoTokenizer.from_pretrained(folder)
        enc = tokenizer(texts, padding=True, return_tensors="pt")
        with torch.no_grad():
            return clf(**enc).logits[:, 0]

    def workbench_way():
        rm, _ = load_text_reward_model(folder)
        with torch.no_grad():
            return rm.score(texts)

    times: dict[str, list[float]] = {"transformers": [], "workbench": []}
    largest = 0.0
    for _ in range(args.repeats):
        out = {}
        for name, fn in (("transformers", transformers_way), ("workbench", workbench_way)):
            started = time.perf_counter()
            out[name] = fn()
            times[name].append(time.perf_counter() - started)
        largest = max(largest, float((out["transformers"] - out["workbench"]).abs().max()))
    result = {"model": "tiny" if args.tiny else Path(base).name, "texts": len(texts),
              "threads": args.threads, "repeats": args.repeats,
              "transformers_s": round(statistics.median(times["transformers"]), 3),
              "workbench_s": round(statistics.median(times["workbench"]), 3),
              "largest_difference": largest, "torch": torch.__version__, "machine": platform.machine()}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
