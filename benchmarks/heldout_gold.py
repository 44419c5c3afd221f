"""Your own data as gold, end to end on the bundled model: a held-out gold reward model and pass@k on
prompts with gold answers (docs/evidence.md, "Your own data as gold").

    .venv/bin/python benchmarks/heldout_gold.py [--project DIR] [--prompts 16] [--grpo-steps 8] [--threads 1]

1. ``generate``: 3 responses to each of ``--prompts`` starter prompts (helpfulness and style);
2. labels: every pair of responses to a prompt, by a scripted stand-in for a person who prefers the
   shorter answer (fewer words; equal counts are a tie), stored as ``synthetic`` comparisons;
3. ``text_reward_model`` with ``gold_fraction`` 0.5: the reward model and a held-out gold model on
   disjoint halves of those labels;
4. ``grpo`` on the same prompts, optimising the reward model (``model:1``) with the held-out model as
   ``gold_reward_model``: proxy and gold per step, the over-optimisation curve and the alerts;
5. ``text_eval`` of the GRPO policy on the starter set's reasoning prompts (their gold answers;
   prompt_source project), pass@1 / cons@k / pass@k, and its win rate against the untouched model on the
   project's prompts judged by the held-out gold model.

Prints each phase's wall time and a JSON object as its last line.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=None, help="project folder (default: a new temporary one)")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--grpo-steps", type=int, default=8)
    parser.add_argument("--eval-prompts", type=int, default=12)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    from rlhf_core import config as cfg
    from rlhf_core.analysis.text_evaluation import TextEvalConfig
    from rlhf_core.analysis.text_rl_monitor import check_alerts, overoptimisation_curve
    from rlhf_core.jobs import RecordingContext, execute_job, get_job
    from rlhf_core.runtime import set_torch_threads
    from rlhf_core.sources.generate import GenerateConfig
    from rlhf_core.store import Project
    from rlhf_core.trainers.text.grpo import GRPOConfig
    from rlhf_core.trainers.text.reward_model import TextRewardModelConfig

    set_torch_threads(args.threads)
    folder = args.project or Path(tempfile.mkdtemp(prefix="heldout-gold-")) / "gold.rlhf"
    if not folder.exists():
        Project.create(folder, name="Held-out gold").close()
    load_before = os.getloadavg()[0]
    times: dict[str, float] = {}
    out: dict = {}

    def run(job: str, config) -> dict:
        started = time.monotonic()
        outcome = execute_job(get_job(job), config, RecordingContext(), project_path=folder,
                              torch_threads=args.threads)
        times[job] = round(time.monotonic() - started, 1)
        if outcome.status != "completed":
            raise SystemExit(f"{job} {outcome.status}: {outcome.message or outcome.error}")
        print(f"{job}: {times[job]} s", file=sys.stderr)
        return {"run_id": outcome.run_id, **outcome.result}

    generated = run("generate", cfg.from_dict(GenerateConfig, dict(
        prompt_set="starter", category="helpfulness,style", max_prompts=args.prompts, samples_per_prompt=3,
        max_new_tokens=48, temperature=1.0, seed=0)))
    with Project.open(folder) as project:
        labelled = 0
        for prompt in project.prompts_with_responses(3):
            items = [project.get_item(i) for i in project.response_ids(prompt["id"])]
            for a, b in itertools.combinations(items, 2):
                words = len(a["text"].split()), len(b["text"].split())
                outcome = "tie" if words[0] == words[1] else ("left" if words[0] < words[1] else "right")
                project.add_comparison(a["id"], b["id"], outcome, source="synthetic")
                labelled += 1
    out["labels"] = labelled
    rm = run("text_reward_model", cfg.from_dict(TextRewardModelConfig, dict(
        epochs=2, batch_size=8, learning_rate=2e-5, max_length=192, heldout_fraction=0.25, gold_fraction=0.5,
        score_responses=0, seed=0)))
    out["reward_model"] = {k: rm.get(k) for k in (
        "all_pairs", "train_pairs", "heldout_pairs", "heldout_accuracy", "gold_train_pairs", "gold_heldout_pairs",
        "gold_heldout_accuracy")}
    grpo = run("grpo", cfg.from_dict(GRPOConfig, dict(
        prompt_source="project", reward="model:1", reward_model=f"run:{rm['run_id']}",
        gold_reward_model=str(rm["gold_checkpoint_id"]), steps=args.grpo_steps, prompts_per_step=4, group_size=4,
        max_new_tokens=48, learning_rate=3e-5, few_shot=False, format_instruction=False, heldout_fraction=0.0,
        eval_every=0, threads=args.threads, seed=0)))
    with Project.open(folder) as project:
        metrics = project.metrics(grpo["run_id"])
    curve = overoptimisation_curve(metrics)
    out["grpo"] = {"proxy": [round(v, 3) for v in metrics["reward/model"][1]],
                   "gold": [round(v, 3) for v in metrics["gold/reward"][1]],
                   "sqrt_kl": [round(v, 3) for v in curve["sqrt_kl"]],
                   "mean_length": [round(v, 1) for v in metrics["completions/mean_length"][1]],
                   "alerts": [a.kind for a in check_alerts(metrics)], "seconds_per_step": grpo.get("seconds_per_step")}
    evaluation = run("text_eval", cfg.from_dict(TextEvalConfig, dict(
        policy_run=grpo["run_id"], prompt_source="project", prompt_set="starter", category="reasoning",
        max_prompts=args.eval_prompts, k=args.k, temperature=0.7, max_new_tokens=64, few_shot=True,
        reward_model=f"checkpoint:{rm['gold_checkpoint_id']}", win_prompt_source="project",
        heldout_tasks=args.prompts, threads=args.threads, seed=0)))
    out["text_eval"] = {k: evaluation.get(k) for k in (
        "prompts", "k", "pass_at_1", "cons_at_k", "pass_at_k", "sample_accuracy", "win_rate", "wins", "ties",
        "losses", "win_prompts")}
    print(json.dumps({"benchmark": "heldout_gold", "project": str(folder), **out, "seconds": times,
                      "machine": f"{platform.machine()} {os.cpu_count()} cores, torch threads {args.threads}",
                      "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)]}))


if __name__ == "__main__":
    main()
