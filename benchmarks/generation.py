"""Generation speed: the workbench's sampler vs plain ``model.generate``, same model, batch and settings.

Both sample the same batch of chat-formatted prompts (built-in "starter" set, mixed categories)
with the same settings, alternating which goes first, in one process:

- ``natural``: completions stop at the end-of-turn token (what a generate run does). Tokens/s
  counts the completion tokens people get; ``model.generate`` keeps computing finished rows as
  padding until the longest is done, the workbench drops them from the batch.
- ``fixed_length``: the end token is ignored, so both do exactly the same work (per-step overhead).

    .venv/bin/python benchmarks/generation.py [--model FOLDER] [--batch-size 8] [--max-new-tokens 64]
                                              [--repeats 2] [--threads 1]

Prints a JSON object as its last line. Target (issue 7): ratio >= 1.0 in both scenarios.
The default model is the bundled SmolLM2-135M-Instruct from the per-user cache (converted first
if needed; the conversion time is then reported too).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from rlhf_core.jobs import NullContext  # noqa: E402
from rlhf_core.text.generation import SamplingSettings, generate_batch, hf_generate_batch  # noqa: E402
from rlhf_core.text.model import (  # noqa: E402
    default_model_dir,
    ensure_default_model,
    is_converted,
    load_model,
    read_marker,
)
from rlhf_core.text.prompts import PromptTemplate, load_builtin_set  # noqa: E402


def pick_prompts(n: int) -> list[str]:
    records = load_builtin_set("starter")
    by_cat: dict[str, list[str]] = {}
    for r in records:
        by_cat.setdefault(r.category, []).append(r.text)
    cats = sorted(by_cat)
    return [by_cat[cats[i % len(cats)]][i // len(cats)] for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="", help="Model folder (default: the bundled model).")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiny", action="store_true", help="A 2-layer, 64-wide random Llama (quick check).")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (auto: a GPU when there is one).")
    parser.add_argument("--precision", default="float32", help="Weights' dtype for both: float32, bf16 or fp16.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from rlhf_core import devices

    device = devices.resolve_device(args.device)
    precision = devices.resolve_precision(args.precision, device)
    if args.tiny:
        import tempfile

        from bench_models import pick_model

        args.model = str(pick_model(True, "", Path(tempfile.mkdtemp(prefix="gen-bench-")))[0])

    conversion = None
    if not args.model and not is_converted(default_model_dir()):
        t0 = time.monotonic()
        ensure_default_model(NullContext())
        conversion = {"seconds": round(time.monotonic() - t0, 1),
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}
    lm = load_model(args.model or None, device=device,
                    dtype={"float32": "float32", "bf16": "bfloat16", "fp16": "float16"}[precision])
    tok = lm.tokenizer
    prompts = [PromptTemplate().render(tok, p) for p in pick_prompts(args.batch_size)]
    seeds = [args.seed * 1000 + i for i in range(len(prompts))]
    base = dict(max_new_tokens=args.max_new_tokens, temperature=0.8, top_p=0.95, top_k=50,
                repetition_penalty=1.0)

    # warm-up (first-call allocations, lazy imports) for both
    warm = SamplingSettings(**{**base, "max_new_tokens": 4})
    generate_batch(lm.model, tok, prompts, warm, seeds)
    hf_generate_batch(lm.model, tok, prompts, warm, args.seed)

    scenarios = {}
    for name, ignore_eos in (("natural", False), ("fixed_length", True)):
        s = SamplingSettings(**base, ignore_eos=ignore_eos)
        runs: dict[str, list[tuple[int, float]]] = {"workbench": [], "model_generate": []}
        for rep in range(args.repeats):
            order = ("workbench", "model_generate") if rep % 2 == 0 else ("model_generate", "workbench")
            for which in order:
                if which == "workbench":
                    _, stats = generate_batch(lm.model, tok, prompts, s, [x + rep for x in seeds])
                else:
                    _, stats = hf_generate_batch(lm.model, tok, prompts, s, args.seed + rep)
                runs[which].append((stats.new_tokens, stats.seconds))
        summary = {}
        for which, rs in runs.items():
            summary[which] = {
                "tokens_per_second": round(sum(t for t, _ in rs) / sum(sec for _, sec in rs), 2),
                "median_seconds": round(statistics.median(sec for _, sec in rs), 2),
                "mean_completion_tokens": round(sum(t for t, _ in rs) / len(rs) / len(prompts), 1),
            }
        summary["ratio"] = round(summary["workbench"]["tokens_per_second"]
                                 / summary["model_generate"]["tokens_per_second"], 3)
        scenarios[name] = summary
        print(f"{name:13s} workbench {summary['workbench']['tokens_per_second']:7.2f} tok/s   "
              f"model.generate {summary['model_generate']['tokens_per_second']:7.2f} tok/s   "
              f"ratio {summary['ratio']:.3f}", file=sys.stderr)

    result = {
        "benchmark": "generation",
        "model": lm.model_id,
        "storage_dtype": read_marker(lm.path).get("storage_dtype") if lm.path else None,
        "compute_dtype": str(lm.model.dtype).replace("torch.", ""),
        "batch_size": len(prompts),
        "settings": base,
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        **devices.device_record(device, precision),
        "load_seconds": round(lm.load_seconds, 2),
        "conversion": conversion,
        "scenarios": scenarios,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
