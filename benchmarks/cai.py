"""Constitutional AI's supervised stage on the bundled model: wall time, refusal rates before and after, and
the revisions written out for a person to judge.

    .venv/bin/python benchmarks/cai.py [--out DIR] [--train-prompts 8] [-- --rl-stage dpo --threads 2 ...]

Runs ``python -m rlhf_core demo cai`` in a fresh project under ``--out`` (kept, so the runs can be opened
in the app), then writes ``revisions.txt`` there: each training prompt with the policy's response, the
critique, the principle and the revision, numbered, for the "would a person accept this revision?" count
(docs/cai.md). Prints a JSON object as its last line: the refusal rates before / after (n and Wilson 95 %
intervals), the seconds of every stage, the revision counts, the machine and its load average.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rlhf_core.store import Project  # noqa: E402


def write_review(project_folder: Path, run_id: int, target: Path) -> int:
    """Every chain of the critique_revise run as numbered plain text; returns how many chains."""
    with Project.open(project_folder) as project:
        chains = [s["payload"] for s in project.samples(run_id, "critique_revision")]
    lines = []
    for n, chain in enumerate(chains, 1):
        lines += [f"=== {n}. PROMPT (id {chain['prompt_id']}): {chain['prompt']}", "--- RESPONSE:", chain["original"]]
        for step in chain["steps"]:
            lines += [f"--- ROUND {step['round']}, PRINCIPLE: {step['principle']}", "--- CRITIQUE:", step["critique"],
                      "--- REVISION" + ("" if step["revision_id"] else f" (not stored: {step.get('not_stored')})")
                      + ":", step["revision"]]
        lines.append("")
    target.write_text("\n".join(lines), encoding="utf-8")
    return len(chains)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="Folder for the project and revisions.txt "
                        "(default: a new temporary folder, kept).")
    parser.add_argument("--train-prompts", type=int, default=8, help="Prompts to critique and revise.")
    parser.add_argument("extra", nargs="*", help="more demo flags, after --")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="cai-benchmark-"))
    out.mkdir(parents=True, exist_ok=True)
    folder = out / "cai.rlhf"
    if folder.exists():
        shutil.rmtree(folder)
    Project.create(folder, name="CAI benchmark").close()
    load_before = os.getloadavg()[0]
    cmd = [sys.executable, "-m", "rlhf_core", "demo", "cai", "--project", str(folder),
           "--max-train-prompts", str(args.train_prompts), *args.extra]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
        raise SystemExit("the demo failed")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    review = out / "revisions.txt"
    chains = write_review(folder, result["runs"]["critique_revise"], review)
    keep = ("refusal_before", "refusal_after", "refusal_after_dpo", "revisions", "not_stored", "train_prompts",
            "eval_prompts", "sft_examples", "ai_labels", "dpo_pairs", "stage_seconds", "wall_seconds", "runs",
            "critic_model", "rl_stage")
    print(json.dumps({"benchmark": "cai", "flags": ["--max-train-prompts", str(args.train_prompts), *args.extra],
                      "machine": f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}",
                      "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                      "project": str(folder), "review_file": str(review), "chains": chains,
                      **{k: result[k] for k in keep if k in result}}))


if __name__ == "__main__":
    main()
