"""Does any control reward model extrapolate? Predicted vs true return over the project's trajectories.

:func:`check_reward` scores every stored trajectory of the reward model's environment (or only those
of one policy) with the model and sets the prediction beside the true return, which control always
knows: Pearson r and Spearman ρ (:mod:`rlhf_core.analysis.extrapolation`), on all trajectories and on
those the model never saw. Which trajectories it saw is read from the run that made it:

- ``reward_model`` (also a round's reward step): its ``source`` setting. ``comparisons``: the
  trajectories whose clips (or themselves) were in a live label of a chosen ``label_sources`` when the
  run started; ``rankings``: those in a live ranking then; ``checkpoint_order`` / ``drex``: the
  trajectories that source takes (learner checkpoints / a noise level), made before the run started;
- ``preference_rl``: the trajectories of its own clips that were labelled (a person's answers; a
  simulated teacher's labels stay inside the run, so none), plus earlier labels with ``seed_labels``;
- ``extrapolation_demo``: the demonstrations it stored before saving the model.

The best demonstration is the best true return among the trajectories it saw. The prediction is the
sum of the ensemble's raw per-state rewards over the states a trajectory reaches
(:func:`rlhf_core.rewards.training.predicted_returns`, as the demo and the rounds score).

Also here: the reward-hacking alert of control runs that train a policy on a learned reward — the
learned return rises while the true return falls (:func:`control_alerts`, the text alert's margins).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from rlhf_core import kinds
from rlhf_core.analysis.extrapolation import extrapolation_report, spearman
from rlhf_core.analysis.text_rl_monitor import Alert, Series, reward_hacking
from rlhf_core.rewards.outcomes import outcome_target
from rlhf_core.store import artefacts

#: policy artefacts whose rollouts can be picked out (their trajectories name the checkpoint in their source)
POLICY_KINDS = (kinds.SB3_PPO, kinds.BC_POLICY)
#: jobs that train a control policy on a learned reward and log both returns (a round's policy step is ppo_learned)
LEARNED_REWARD_JOBS = ("ppo_learned", "preference_rl", "extrapolation_demo")
LEARNED_KEY, TRUE_KEY = "rollout/learned_return", "rollout/true_return"


class RewardCheckError(ValueError):
    """The check cannot be made; ``str(error)`` says why, for a person."""


@dataclass
class RewardCheck:
    """Per trajectory (same order): item id, true and predicted return, whether the model saw it."""

    reward_id: int
    reward_name: str
    env_id: str
    basis: str  # how the trajectories it saw were found, in words
    item_ids: list[int]
    true_returns: np.ndarray
    predicted: np.ndarray
    seen: np.ndarray  # bool
    policy_id: int | None = None
    policy_name: str | None = None
    report: dict = field(default_factory=dict)

    @property
    def best_demo_return(self) -> float | None:
        """The best true return among the trajectories the model saw (None: it saw none of them)."""
        return float(self.true_returns[self.seen].max()) if self.seen.any() else None

    def text(self) -> str:
        """r and ρ in words: over all trajectories, on those never seen, and how many beat the best demo."""
        rep, n = self.report, len(self.item_ids)
        whose = f" of policy {self.policy_name!r}" if self.policy_name else ""
        lines = [f"{self.reward_name!r} on {n} trajectories{whose} of {self.env_id}: "
                 f"{_correlation_words(rep['all_pearson'], rep['all_spearman'])}"]
        n_unseen = rep["n_unseen"]
        if n_unseen and rep["n_demo"]:
            lines.append(f"On the {n_unseen} it never saw: "
                         f"{_correlation_words(rep['unseen_pearson'], rep['unseen_spearman'])}")
        best = self.best_demo_return
        if best is None:
            lines.append(f"It saw none of these trajectories ({self.basis}), so there is no best demonstration "
                         "to compare with.")
        else:
            lines.append(f"It saw {rep['n_demo']} of them ({self.basis}); the best has true return {best:.1f}, "
                         f"and {rep['unseen_beyond_best_demo']} of the {n_unseen} unseen ones do better.")
        return "\n".join(lines)


def _correlation_words(r: float, rho: float) -> str:
    if math.isnan(r) or math.isnan(rho):
        return "too few trajectories (or returns that do not vary) for a correlation."
    strength = abs(rho)
    word = ("strong" if strength >= 0.7 else "moderate" if strength >= 0.4 else "weak" if strength >= 0.2
            else "no")
    direction = "" if rho >= 0 or word == "no" else "reversed "
    return (f"Pearson r = {r:.2f}, Spearman ρ = {rho:.2f} — {word} {direction}agreement with the true return's "
            "order"
            + (" (it ranks better trajectories lower)." if direction else "."))


def control_alerts(metrics: Mapping[str, Series], *, window: int = 5, min_change: float = 0.05) -> list[Alert]:
    """The reward-hacking alert of a control run on a learned reward: ``rollout/learned_return`` rose while
    ``rollout/true_return`` fell, each beyond the text alert's noise margin (``reward_hacking``)."""
    return reward_hacking(metrics, (LEARNED_KEY,), (TRUE_KEY,), window=window, min_change=min_change,
                          names=("the learned return", "the true return"))


# ------------------------------------------------------------------------------------------- the check
def _json(text: str | None) -> dict:
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _reward_artefact(project, reward) -> artefacts.Artefact:
    try:
        found = artefacts.resolve(project, str(reward), (kinds.REWARD_ENSEMBLE,), allow_path=False)
    except artefacts.ArtefactError as exc:
        raise RewardCheckError(str(exc)) from None
    return found


def _checkpoint_meta(project, checkpoint_id: int) -> dict:
    row = next((c for c in project.checkpoints() if c["id"] == checkpoint_id), None)
    return _json(row["meta_json"]) if row else {}


def _env_trajectories(project, env_id: str) -> list[dict]:
    return [t for t in project.items("trajectory")
            if t["env_id"] == env_id and t["data_path"] and t["true_return"] is not None]


def policy_trajectory_counts(project, env_id: str) -> dict[int, int]:
    """Policy checkpoint id -> how many live trajectories of ``env_id`` it rolled out (their source names it)."""
    counts: dict[int, int] = {}
    for t in _env_trajectories(project, env_id):
        cid = _json(t["params_json"]).get("checkpoint_id")
        if isinstance(cid, int) and cid > 0:
            counts[cid] = counts.get(cid, 0) + 1
    return counts


def reward_env(project, reward) -> str:
    """The environment a control reward model was trained on (from its checkpoint's or its run's record)."""
    return _env_of(project, _reward_artefact(project, reward))


def _env_of(project, art: artefacts.Artefact) -> str:
    env = _checkpoint_meta(project, art.id).get("env_id")
    if not env and art.run_id is not None:
        env = (project.get_run(art.run_id) or {}).get("config", {}).get("env_id")
    if not env:
        raise RewardCheckError(f"{art.name!r} does not say which environment it was trained on.")
    return str(env)


def _live_at(row: dict, when: str) -> bool:
    return row["created_at"] <= when and (row["deleted_at"] is None or row["deleted_at"] > when)


class _Items:
    """Item rows by id, each read once; ``trajectory(id)``: the item's trajectory (a clip's parent), None for
    a response."""

    def __init__(self, project):
        self.project, self.rows = project, {}

    def __call__(self, item_id: int) -> dict:
        if item_id not in self.rows:
            self.rows[item_id] = self.project.get_item(item_id)
        return self.rows[item_id]

    def trajectory(self, item_id: int) -> int | None:
        item = self(item_id)
        return None if item["kind"] == "response" else item["id"] if item["kind"] == "trajectory" else item["parent_id"]


def seen_trajectories(project, artefact: artefacts.Artefact, env_id: str) -> tuple[set[int], str]:
    """The trajectory ids the reward model learned from (a clip counts for its trajectory), and how they were
    found, in words. Unknown origins (no run, an import) see nothing."""
    run = project.get_run(artefact.run_id) if artefact.run_id is not None else None
    if run is None:
        return set(), "its run is not in this project, so which data it saw is unknown"
    config, started = run["config"], run["started_at"] or run["created_at"]
    item = _Items(project)
    seen: set[int] = set()
    if run["kind"] == "reward_model":
        source = config.get("source", "comparisons")
        if source == "comparisons":
            wanted = {s.strip() for s in str(config.get("label_sources", "human,synthetic,ai")).split(",")}
            labels = 0
            for c in project.comparisons(include_deleted=True):
                if (c["source"] in wanted and outcome_target(c["outcome"]) is not None and _live_at(c, started)):
                    ids = [item.trajectory(i) for i in (c["left_id"], c["right_id"])]
                    items = [item(i) for i in ids if i is not None]
                    if len(items) == 2 and all(it["env_id"] == env_id for it in items):
                        seen.update(ids)
                        labels += 1
            return seen, f"{labels} labelled pairs when its run {run['id']} started"
        if source == "rankings":
            rows = project.conn.execute("SELECT id, created_at, deleted_at FROM rankings").fetchall()
            for r in rows:
                if _live_at(dict(r), started):
                    ids = [item.trajectory(i) for g in project.ranking_groups(r["id"]) for i in g]
                    items = [item(i) for i in ids if i is not None]
                    if items and len(items) == len(ids) and all(it["env_id"] == env_id for it in items):
                        seen.update(ids)
            return seen, f"the rankings when its run {run['id']} started"
        for t in project.items("trajectory", include_deleted=True):
            src = _json(t["params_json"])
            takes = (src.get("kind") == "checkpoint" and "step" in src) if source == "checkpoint_order" else (
                src.get("epsilon") is not None)
            if t["env_id"] == env_id and takes and _live_at(t, started):
                seen.add(t["id"])
        what = "learner checkpoints' rollouts" if source == "checkpoint_order" else "noise-level rollouts (D-REX)"
        return seen, f"the {what} when its run {run['id']} started"
    if run["kind"] == "preference_rl":
        made = artefact.created_at
        for c in project.comparisons(include_deleted=True):
            if outcome_target(c["outcome"]) is None or not _live_at(c, made):
                continue
            items = [item(i) for i in (c["left_id"], c["right_id"])]
            if any(it["kind"] != "clip" or it["env_id"] != env_id for it in items):
                continue
            mine = all(it["run_id"] == run["id"] for it in items)
            earlier = config.get("seed_labels") and c["created_at"] <= started
            if mine or earlier:
                seen.update(it["parent_id"] for it in items)
        return seen, f"the clips labelled for its run {run['id']}"
    if run["kind"] == "extrapolation_demo":
        seen = {t["id"] for t in project.run_items(run["id"], "trajectory") if t["created_at"] <= artefact.created_at}
        return seen, f"the demonstrations of run {run['id']}"
    return set(), f"run {run['id']} ({run['kind']}) does not record which data it saw"


def check_reward(project, reward, policy=None) -> RewardCheck:
    """Predicted vs true return of the project's trajectories of the reward model's environment.

    ``reward``: a control reward model (checkpoint id, ``checkpoint:N``, ``run:N`` or its name); ``policy``
    (optional, same forms): only the trajectories that policy rolled out. Raises :class:`RewardCheckError`
    with a sentence when it cannot be made."""
    from rlhf_core.envs.storage import load_arrays  # start-up: imports PyAV
    from rlhf_core.rewards.networks import RewardEnsemble  # start-up: imports torch
    from rlhf_core.rewards.training import predicted_returns  # start-up: imports torch

    art = _reward_artefact(project, reward)
    env_id = _env_of(project, art)
    trajectories = _env_trajectories(project, env_id)
    policy_art = None
    if policy not in (None, "", 0):
        try:
            policy_art = artefacts.resolve(project, str(policy), POLICY_KINDS, allow_path=False)
        except artefacts.ArtefactError as exc:
            raise RewardCheckError(str(exc)) from None
        policy_env = _checkpoint_meta(project, policy_art.id).get("env_id")
        if policy_env and policy_env != env_id:
            raise RewardCheckError(f"{policy_art.name!r} acts in {policy_env}, but {art.name!r} is a reward model "
                                   f"of {env_id}; pick a policy of {env_id}.")
        trajectories = [t for t in trajectories if _json(t["params_json"]).get("checkpoint_id") == policy_art.id]
        if not trajectories:
            raise RewardCheckError(f"The project has no trajectories of {policy_art.name!r}: roll it out with the "
                                   f"rollouts job (policy 'checkpoint' or 'bc', checkpoint_id {policy_art.id}).")
    elif not trajectories:
        raise RewardCheckError(f"The project has no trajectories of {env_id} to score {art.name!r} on: collect "
                               "some with the rollouts job first.")
    try:
        ensemble, _ = RewardEnsemble.load(art.path)
    except Exception as exc:  # noqa: BLE001 - a missing or damaged file, said in a sentence
        raise RewardCheckError(f"{art.name!r} could not be read from {art.path}: {exc}") from None
    spec = ensemble.spec
    if spec.kind != "mlp" or spec.action_dim:
        raise RewardCheckError(f"{art.name!r} reads {'pixels' if spec.kind != 'mlp' else 'actions too'}; "
                               "only state-based reward models are checked here.")
    seen_ids, basis = seen_trajectories(project, art, env_id)
    observations = []
    for t in trajectories:
        obs = load_arrays(project, t)["observations"]
        width = int(np.prod(obs.shape[1:]))
        if width != spec.obs_dim:
            raise RewardCheckError(f"{art.name!r} reads observations of {spec.obs_dim} numbers, but trajectory "
                                   f"{t['id']} of {env_id} has {width}: it was trained on another environment.")
        observations.append(obs)
    predicted = predicted_returns(ensemble, observations)
    true = np.asarray([float(t["true_return"]) for t in trajectories])
    seen = np.asarray([t["id"] in seen_ids for t in trajectories], dtype=bool)
    report = extrapolation_report(true[seen], predicted[seen], true[~seen], predicted[~seen])
    report["all_spearman"] = spearman(true, predicted)
    return RewardCheck(reward_id=art.id, reward_name=art.name, env_id=env_id, basis=basis,
                       item_ids=[int(t["id"]) for t in trajectories], true_returns=true, predicted=predicted,
                       seen=seen, policy_id=policy_art.id if policy_art else None,
                       policy_name=policy_art.name if policy_art else None, report=report)
