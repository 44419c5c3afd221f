"""Train a reward ensemble from what the project holds: labels, rankings or automatic rankings.

Sources (``source``):
- ``comparisons``: pairwise labels of clips or trajectories (human, synthetic or AI; ``left``,
  ``right`` and ``tie`` as 0.5; ``both_bad``/``skip`` carry no preference and are left out);
  each pair compares the two items' summed rewards.
- ``rankings``: rankings of whole trajectories -> T-REX snippet pairs between different groups.
- ``checkpoint_order``: trajectories rolled out from learner checkpoints, ranked by checkpoint
  step (learning from a learner, no person needed).
- ``drex``: trajectories with a noise level ε in their source, ranked by ε (less noise = better);
  a person's labels between two of them (D-REX ranking panel overrides, rankings) win over ε.
The result is a ``reward_ensemble`` checkpoint (with the reward mean/std for normalising) that
``ppo_learned`` trains on.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from rlhf_core import kinds
from rlhf_core.config import RENAMED_FIELDS, param
from rlhf_core.envs.storage import load_arrays
from rlhf_core.jobs import JobContext
from rlhf_core.rewards.datasets import PairSet, Segment, drex_pairs, stack_observations, trex_pairs, whole_pairs
from rlhf_core.rewards.drex_overrides import drex_overrides, drex_trajectories, overridden_pair_count
from rlhf_core.rewards.outcomes import outcome_target, prefer_adjudications
from rlhf_core.rewards.training import FitSettings, FitState, fit_reward_ensemble, reward_stats
from rlhf_core.config import to_dict
from rlhf_core.store import SOURCES
from rlhf_core.store.model_card import control_reward_card, final_metrics


@dataclass
class RewardModelConfig:
    RENAMED_FROM = RENAMED_FIELDS["reward_model"]  # old field names still read (not a field: no annotation)
    env_id: str = param("Pendulum-v1", "Only items of this environment are used.")
    source: str = param("comparisons", "What to learn from.", choices=("comparisons", "rankings", "checkpoint_order", "drex"))
    label_sources: str = param("human,synthetic,ai", "comparisons: which label sources to use (comma-separated).",
                            subset_of=SOURCES)
    snippet_pairs: int = param(3000, "rankings / checkpoint_order / drex: T-REX snippet pairs.", min=10)
    snippet_min: int = param(20, "Shortest snippet (steps).", min=1)
    snippet_max: int = param(50, "Longest snippet (steps).", min=1)
    drex_min_gap: float = param(0.3, "drex: pair only noise levels at least this far apart.", min=0.0, max=1.0)
    members: int = param(3, "Ensemble size (each member on its own bootstrap of the pairs).", min=1, max=16)
    hidden: int = param(64, "Hidden units per layer (T-REX MuJoCo used 256).", min=4)
    steps: int = param(800, "Optimisation steps per member.", min=10)
    learning_rate: float = param(1e-3, "Adam learning rate.", min=0.0, min_inclusive=False)
    weight_decay: float = param(0.01, "L2 weight decay.", min=0.0)
    random_answer_prob: float = param(0.0, "Christiano's chance that a label was random (0.1 in the paper).",
                                      min=0.0, max=0.5)
    heldout_fraction: float = param(0.1, "Pairs held out for accuracy and early stopping.", min=0.0, max=0.5)
    seed: int = param(0, "Random seed.", min=0)
    save_steps: int = param(0, "Save a resumable state every N optimisation steps (0: only when cancelled); a "
                            "cancelled, failed or killed run resumes from the last one.", min=0)

    def check(self) -> list[str]:
        return ["snippet_min must not exceed snippet_max"] if self.snippet_min > self.snippet_max else []


def _comparison_pairs(project, config):
    wanted = {s.strip() for s in config.label_sources.split(",") if s.strip()}
    obs, index, pairs = [], {}, []
    for c in prefer_adjudications(c for c in project.comparisons() if c["source"] in wanted):
        target = outcome_target(c["outcome"])
        if target is None:
            continue
        items = [project.get_item(c["left_id"]), project.get_item(c["right_id"])]
        if any(i["env_id"] != config.env_id or i["kind"] == "response" for i in items):
            continue
        for it in items:
            if it["id"] not in index:
                index[it["id"]] = len(obs)
                obs.append(load_arrays(project, it)["observations"])
        pairs.append((index[items[0]["id"]], index[items[1]["id"]], target))
    if len(pairs) < 2:
        raise ValueError(f"only {len(pairs)} usable labelled pairs of {config.env_id}; label more pairs first")
    return whole_pairs(obs, pairs), obs


def _trajectories(project, env_id, predicate):
    out = []
    for t in project.items("trajectory"):
        src = json.loads(t["params_json"])
        if t["env_id"] == env_id and predicate(t, src):
            out.append((t, src))
    return out


def train_reward_model(config: RewardModelConfig, ctx: JobContext) -> dict:
    project = ctx.project()
    extra = {}
    if config.source == "comparisons":
        pairs, obs = _comparison_pairs(project, config)
    elif config.source == "rankings":
        obs, ranks = [], []  # ranks[i]: (ranking id, position in it) of trajectory i
        rows = project.conn.execute("SELECT id FROM rankings WHERE deleted_at IS NULL ORDER BY id").fetchall()
        for (rid,) in rows:
            groups = project.ranking_groups(rid)
            items = [project.get_item(i) for g in groups for i in g]
            if any(it["env_id"] != config.env_id for it in items):
                continue
            for pos, g in enumerate(groups):
                for i in g:
                    obs.append(load_arrays(project, project.get_item(i))["observations"])
                    ranks.append((rid, pos))
        if len(set(ranks)) < 2:
            raise ValueError(f"no ranking of {config.env_id} trajectories yet; rank some first")
        pairs = _ranking_pairs(obs, ranks, config)
    elif config.source == "checkpoint_order":
        trajs = _trajectories(project, config.env_id, lambda t, s: s.get("kind") == "checkpoint" and "step" in s)
        if len({s["step"] for _, s in trajs}) < 2:
            raise ValueError(f"need trajectories from at least two learner checkpoints of {config.env_id}")
        obs = [load_arrays(project, t)["observations"] for t, _ in trajs]
        pairs = trex_pairs(obs, [float(s["step"]) for _, s in trajs], config.snippet_pairs,
                           min_len=config.snippet_min, max_len=config.snippet_max, seed=config.seed)
    else:  # drex
        pairs, obs, extra = drex_training_pairs(project, config)
    settings = FitSettings(members=config.members, hidden=config.hidden, steps=config.steps, lr=config.learning_rate,
                           weight_decay=config.weight_decay, random_answer_prob=config.random_answer_prob,
                           heldout_fraction=config.heldout_fraction, seed=config.seed)
    fingerprint = _pairs_fingerprint(pairs)
    resume = None
    if ctx.resume_from is not None:
        if ctx.resume_from.extra.get("pairs") != fingerprint:
            raise ValueError("The training pairs changed since this run stopped (new or edited labels); "
                             "start a new run instead.")
        resume = FitState(ctx.resume_from.step, ctx.resume_from.tensors, ctx.resume_from.extra["fit"])

    def save(state: FitState) -> None:
        ctx.save_state(state.step, state.tensors, {"fit": state.extra, "pairs": fingerprint})

    ensemble, stats = fit_reward_ensemble(pairs, settings, ctx, save=save, save_steps=config.save_steps,
                                          resume=resume)
    mean, std = reward_stats(ensemble, stack_observations(obs)[0])
    path = project.run_folder(ctx.run_id) / "reward_ensemble.safetensors"  # rlhf_core.rewards.LearnedReward loads it
    ensemble.save(path, {"reward_mean": mean, "reward_std": std, "env_id": config.env_id, "source": config.source})
    cid = project.add_checkpoint(ctx.run_id, kinds.REWARD_ENSEMBLE, path, meta={"env_id": config.env_id,
                                                                             "source": config.source})
    result = {"checkpoint_id": cid, "pairs": stats["pairs"], "heldout_pairs": stats["heldout_pairs"],
              "heldout_accuracy": stats.get("heldout_accuracy"), "reward_mean": mean, "reward_std": std, **extra}
    control_reward_card(job="reward_model", config=to_dict(config), env_id=config.env_id, files=[path.name],
                        run_id=ctx.run_id, project=project.name,
                        training_data={"pairs": stats["pairs"], "heldout_pairs": stats["heldout_pairs"],
                                       "source": config.source},
                        metrics=final_metrics(result)).write(path.parent)
    return result


def _pairs_fingerprint(pairs: PairSet) -> str:
    """A digest of the training pairs: a resumed fit must see the same ones."""
    digest = hashlib.sha256()
    for array in (pairs.obs, pairs.offsets, pairs.target):
        digest.update(np.ascontiguousarray(array).tobytes())
    digest.update(repr([(s.traj, s.start, s.end) for s in pairs.first + pairs.second]).encode())
    return digest.hexdigest()


def drex_training_pairs(project, config: RewardModelConfig):
    """D-REX snippet pairs ranked by ε, with the person's labels between noise trajectories
    (overrides, see ``rlhf_core.rewards.drex_overrides``) replacing the automatic order.

    Returns ``(pairs, observations, result fields)``; the fields count the overridden trajectory
    pairs and the snippet pairs whose target came from an override.
    """
    trajs = drex_trajectories(project, config.env_id)
    if not trajs:
        raise ValueError(f"no noise-injected rollouts of {config.env_id}; run 'Collect trajectories' with a "
                         "D-REX noise schedule first")
    obs = [load_arrays(project, t)["observations"] for t, _ in trajs]
    overrides = drex_overrides(project, [t["id"] for t, _ in trajs])
    pairs = drex_pairs(obs, [float(s["epsilon"]) for _, s in trajs], config.snippet_pairs,
                       min_gap=config.drex_min_gap, min_len=config.snippet_min, max_len=config.snippet_max,
                       seed=config.seed, overrides=overrides)
    return pairs, obs, {"drex_overrides": len(overrides),
                        "drex_overridden_snippet_pairs": overridden_pair_count(pairs, overrides)}


def _ranking_pairs(obs, ranks: list[tuple[int, int]], config):
    """Snippet pairs from several rankings (``ranks[i]`` = (ranking id, position)): trajectories are
    compared only with those ranked beside them."""
    by_ranking: dict[int, list[int]] = {}
    for i, (rid, _) in enumerate(ranks):
        by_ranking.setdefault(rid, []).append(i)
    per_ranking = max(1, config.snippet_pairs // len(by_ranking))
    parts = [trex_pairs([obs[i] for i in rows], [ranks[i][1] for i in rows], per_ranking,
                        min_len=config.snippet_min, max_len=config.snippet_max, seed=config.seed + rid)
             for rid, rows in sorted(by_ranking.items()) if len({ranks[i][1] for i in rows}) > 1]
    if len(parts) == 1:
        return parts[0]
    # merge the per-ranking pair sets into one observation table
    flat = np.concatenate([p.obs for p in parts])
    base, offsets, first, second, target = 0, [], [], [], []
    n_traj = 0
    for p in parts:
        offsets.extend((p.offsets + base).tolist())
        first += [Segment(s.traj + n_traj, s.start, s.end) for s in p.first]
        second += [Segment(s.traj + n_traj, s.start, s.end) for s in p.second]
        target.append(p.target)
        base += len(p.obs)
        n_traj += len(p.offsets)
    return PairSet(flat, np.asarray(offsets), first, second, np.concatenate(target))
