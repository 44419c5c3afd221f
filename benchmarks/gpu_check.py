"""The GPU check: the text track's speed on one device, against TRL 1.16 and ``model.generate``, in one run.

    .venv/bin/python benchmarks/gpu_check.py [--device auto|cpu|cuda|cuda:N] [--budget 470]

On a CUDA machine (SmolLM2-135M, bf16 autocast where the card has it) it runs, one after the other in
their own processes so that one failure (or running out of memory) does not lose the rest:

1. generation tokens/s, ours vs ``model.generate``, batch 8 and 32 (benchmarks/generation.py);
2. GRPO and DPO step time vs TRL's ``GRPOTrainer`` / ``DPOTrainer`` (benchmarks/text_steps_vs_trl.py);
3. reward-model step time vs TRL's ``RewardTrainer`` (benchmarks/reward_model_vs_trl.py);
4. the GRPO demo (16 steps): wall time, reward rise, peak memory (``python -m rlhf_core demo grpo``).

``--device cpu`` runs a shortened version of every part on the CPU with a tiny random model (minutes),
to check the script before GPU time is spent on it. Each part gets what is left of ``--budget`` seconds
(parts that would start with under 20 s left are skipped and listed). Targets on one H100: GRPO demo
<= 90 s wall; every step <= 0.8x TRL's. Prints a JSON object as its last line. How to run it on the
lent GPU machine: DEVELOPERS.md, "The GPU check".
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _last_json(text: str) -> dict | None:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                return None
    return None


def run_part(name: str, cmd: list[str], deadline: float, results: dict, skipped: list) -> dict | None:
    left = deadline - time.monotonic()
    if left < 20:
        skipped.append(name)
        return None
    started = time.monotonic()
    print(f"gpu_check: {name} ({int(left)} s left)", file=sys.stderr, flush=True)
    try:
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=left)
    except subprocess.TimeoutExpired as exc:
        results[name] = {"error": f"stopped after {int(left)} s (the budget ran out)",
                         "stderr_tail": (exc.stderr or "")[-1500:] if isinstance(exc.stderr, str) else ""}
        return None
    data = _last_json(out.stdout)
    if out.returncode != 0 or data is None:
        results[name] = {"error": f"exit code {out.returncode}", "stderr_tail": out.stderr[-1500:]}
        return None
    data["part_wall_seconds"] = round(time.monotonic() - started, 1)
    results[name] = data
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--precision", default="auto", help="auto, float32, bf16 or fp16")
    parser.add_argument("--budget", type=float, default=470.0, help="Seconds for all parts together.")
    parser.add_argument("--model", default="", help="Causal LM folder (default: the bundled SmolLM2-135M; "
                        "--device cpu uses a tiny random model unless this is given).")
    args = parser.parse_args()
    started = time.monotonic()
    deadline = started + args.budget

    import torch

    from rlhf_core import devices

    try:
        device = devices.resolve_device(args.device)
        precision = devices.resolve_precision(args.precision, device)
    except devices.DeviceError as exc:
        print(json.dumps({"benchmark": "gpu_check", "error": str(exc)}))
        raise SystemExit(2) from None
    on_gpu = device.type == "cuda"
    py = [sys.executable]
    dev = ["--device", str(device), "--precision", precision]
    model = ["--model", args.model] if args.model else ([] if on_gpu else ["--tiny"])
    results: dict = {}
    skipped: list[str] = []

    for batch in (8, 32) if on_gpu else (4,):
        run_part(f"generation_batch{batch}",
                 py + ["benchmarks/generation.py", *dev, *[m for m in model if m != "--tiny"],
                       *(["--tiny"] if "--tiny" in model else []),
                       "--batch-size", str(batch), "--max-new-tokens", "64" if on_gpu else "16",
                       "--repeats", "2" if on_gpu else "1"],
                 deadline, results, skipped)
    run_part("grpo_dpo_vs_trl",
             py + ["benchmarks/text_steps_vs_trl.py", *dev, *model, "--steps", "3" if on_gpu else "1",
                   "--prompts", "4" if on_gpu else "2", "--group-size", "8" if on_gpu else "2",
                   "--max-new-tokens", "64" if on_gpu else "8", "--pairs", "16" if on_gpu else "4"],
             deadline, results, skipped)
    run_part("reward_model_vs_trl",
             py + ["benchmarks/reward_model_vs_trl.py", *dev, *model, "--steps", "3" if on_gpu else "1",
                   "--pairs", "16" if on_gpu else "4"],
             deadline, results, skipped)
    demo = ["--steps", "16"] if on_gpu else ["--steps", "2", "--heldout-tasks", "2", "--max-new-tokens", "8"]
    if args.model or not on_gpu:
        demo += ["--model", args.model or _tiny_folder()]
    run_part("grpo_demo", py + ["-m", "rlhf_core", "demo", "grpo", *dev, *demo], deadline, results, skipped)

    summary = _summary(results, on_gpu)
    print(json.dumps({
        "benchmark": "gpu_check", "device": str(device), "device_name": devices.device_name(device),
        "precision": precision, "torch_build": devices.torch_build(), "torch": torch.__version__,
        "python": platform.python_version(), "date": time.strftime("%Y-%m-%d"),
        "wall_seconds": round(time.monotonic() - started, 1), "budget_seconds": args.budget,
        "skipped": skipped, "summary": summary, "parts": results,
    }))


def _tiny_folder() -> str:
    """A tiny random Llama with the real tokenizer, for the CPU dry run of the demo."""
    import tempfile

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_models import pick_model

    return str(pick_model(True, "", Path(tempfile.mkdtemp(prefix="gpu-check-tiny-")))[0])


def _summary(results: dict, on_gpu: bool) -> dict:
    """The headline numbers and whether the targets are met (targets only mean something on a GPU)."""
    out: dict = {}
    for name, data in results.items():
        if name.startswith("generation_") and "scenarios" in data:
            s = data["scenarios"].get("fixed_length") or data["scenarios"].get("natural", {})
            out[f"{name}_tokens_per_s"] = {"ours": s.get("workbench", {}).get("tokens_per_second"),
                                           "model_generate": s.get("model_generate", {}).get("tokens_per_second"),
                                           "ratio": s.get("ratio")}
    steps = results.get("grpo_dpo_vs_trl", {})
    rm = results.get("reward_model_vs_trl", {})
    ratios = {"grpo": steps.get("ratio_grpo"), "dpo": steps.get("ratio_dpo"), "reward_model": rm.get("ratio")}
    out["step_ratio_vs_trl"] = ratios
    demo = results.get("grpo_demo", {})
    if demo:
        out["grpo_demo"] = {k: demo.get(k) for k in ("wall_seconds", "reward_first", "reward_last",
                                                       "peak_memory_mb", "peak_rss_mb", "device", "dtype")}
    if on_gpu:
        known = [r for r in ratios.values() if r is not None]
        out["targets_met"] = {
            "grpo_demo_at_most_90s": (demo.get("wall_seconds") or 1e9) <= 90 if demo else None,
            "every_step_at_most_0.8x_trl": all(r <= 0.8 for r in known) if len(known) == 3 else None,
        }
    return out


if __name__ == "__main__":
    main()
