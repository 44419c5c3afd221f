"""D-REX: noise levels and their degradation curve, a person's overrides of the automatic order
(stored as human comparisons, undoable), and the reward_model job applying them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlhf_core.envs.rollout import Trajectory
from rlhf_core.envs.storage import save_trajectory
from rlhf_core.rewards.drex_overrides import (
    OVERRIDE_NOTE,
    clear_level_override,
    drex_auto_pairs,
    drex_envs,
    drex_levels,
    drex_overrides,
    level_override,
    set_level_override,
)

T = 30


def noisy_trajectory(eps: float, k: int, quality: float, env_id="Pendulum-v1", kind="bc",
                     video: bool = False) -> Trajectory:
    """A fake rollout at noise level ``eps``: the true reward is obs[:, 0], centred on ``quality``.
    With ``video``, 32×32 frames whose brightness follows the step (so frames differ)."""
    rng = np.random.default_rng(int(eps * 1000) + k)
    obs = rng.normal(scale=0.1, size=(T + 1, 3)).astype(np.float32)
    obs[:, 0] += quality
    frames = None
    if video:
        frames = np.zeros((T + 1, 32, 32, 3), np.uint8)
        frames[..., 0] = (np.arange(T + 1) * 8 % 256)[:, None, None]
        frames[:, :, : 4 + 4 * k, 1] = 200  # a bar whose width tells the trajectories of a level apart
    return Trajectory(env_id=env_id, seed=k, observations=obs, actions=np.zeros((T, 1), np.float32),
                      rewards=obs[1:, 0].copy(), frames=frames, fps=30, source={"kind": kind, "epsilon": eps})


def fill(project, levels=((0.0, 1.0), (0.25, 0.5), (0.5, -0.5), (0.75, -1.0)), per_level=2) -> dict[float, list[int]]:
    """Trajectories per level, written through the store; returns {ε: [item ids]}."""
    ids: dict[float, list[int]] = {}
    for eps, quality in levels:
        for k in range(per_level):
            ids.setdefault(eps, []).append(save_trajectory(project, noisy_trajectory(eps, k, quality)))
    return ids


def test_levels_curve_and_auto_pairs(project):
    ids = fill(project)
    # a trajectory without ε (a demonstration) and one of another env are not D-REX data
    demo = noisy_trajectory(0.0, 9, 2.0)
    demo.source = {"kind": "human"}
    save_trajectory(project, demo)
    save_trajectory(project, noisy_trajectory(0.1, 0, 0.0, env_id="CartPole-v1"))
    assert drex_envs(project) == ["Pendulum-v1"]  # CartPole has a single level
    levels = drex_levels(project, "Pendulum-v1")
    assert [lv.epsilon for lv in levels] == [0.0, 0.25, 0.5, 0.75]
    assert levels[1].trajectory_ids == ids[0.25] and levels[1].sources == ["bc"]
    rets = [project.get_item(i)["true_return"] for i in ids[0.5]]
    assert levels[2].mean_return == pytest.approx(np.mean(rets)) and levels[2].std_return == pytest.approx(np.std(rets))
    assert levels[0].mean_return == pytest.approx(T * 1.0, abs=1.0)  # quality 1 per step
    pairs = drex_auto_pairs(levels, min_gap=0.3)
    assert [(p.better.epsilon, p.worse.epsilon) for p in pairs] == [(0.0, 0.5), (0.0, 0.75), (0.25, 0.75)]
    assert all(p.true_returns_agree for p in pairs)
    assert len(drex_auto_pairs(levels, min_gap=0.25)) == 6
    assert pairs[0].trajectory_pairs == [(a, b) for a in ids[0.0] for b in ids[0.5]]


def test_overrides_in_index_space_both_orientations_latest_wins(project):
    ids = fill(project)
    order = [i for eps in sorted(ids) for i in ids[eps]]  # index space: 0,1 = ε 0; 2,3 = ε .25; ...
    a, b, c = order[0], order[4], order[6]
    project.add_comparison(a, b, "right", source="human")  # stored a-left: P(a better) = 0
    project.add_comparison(c, a, "left", source="human")  # stored the other way round: P(c better) = 1
    project.add_comparison(order[2], order[5], "tie", source="human")
    project.add_comparison(order[1], order[7], "skip", source="human")  # no preference: ignored
    project.add_comparison(order[1], order[6], "left", source="synthetic")  # not the person's: ignored
    assert drex_overrides(project, order) == {(0, 4): 0.0, (0, 6): 0.0, (2, 5): 0.5}
    # a later label of the same pair wins, whichever side it was stored on
    later = project.add_comparison(b, a, "right", source="human")  # P(b better) = 0 -> P(a better) = 1
    assert drex_overrides(project, order)[(0, 4)] == 1.0
    project.undo_comparison(later)
    assert drex_overrides(project, order)[(0, 4)] == 0.0
    # index space follows the list it is given
    assert drex_overrides(project, [b, a]) == {(0, 1): 1.0}


def test_level_override_writes_every_trajectory_pair_in_one_transaction_and_undoes(project):
    ids = fill(project, per_level=3)
    levels = drex_levels(project, "Pendulum-v1")
    pair = drex_auto_pairs(levels, 0.3)[1]  # ε 0.0 vs 0.75
    assert level_override(project, pair).text() == "auto"
    labeller = project.ensure_labeller("ann", "human")
    new = set_level_override(project, pair, "reverse", labeller_id=labeller, env_id="Pendulum-v1")
    rows = [c for c in project.comparisons() if c["id"] in new]
    assert len(rows) == 3 * 3
    assert {(c["left_id"], c["right_id"]) for c in rows} == {(x, y) for x in ids[0.0] for y in ids[0.75]}
    assert all(c["outcome"] == "right" and c["source"] == "human" and c["note"] == OVERRIDE_NOTE
               and c["labeller_id"] == labeller for c in rows)
    state = level_override(project, pair)
    assert (state.verdict, state.labelled, state.total) == ("reverse", 9, 9) and state.text() == "reverse"
    order = [t for lv in levels for t in lv.trajectory_ids]
    over = drex_overrides(project, order)
    assert len(over) == 9 and set(over.values()) == {0.0}  # lower ε (lower index) is worse now
    # changing the verdict supersedes the rows (kept, soft-deleted) instead of piling up labels
    again = set_level_override(project, pair, "equal")
    assert len(project.comparisons()) == 9 and len(project.comparisons(include_deleted=True)) == 18
    assert {c["supersedes_id"] for c in project.comparisons()} == set(new)
    assert level_override(project, pair).verdict == "equal" and set(drex_overrides(project, order).values()) == {0.5}
    # Clear = undo: nothing live is left, nothing is deleted
    assert clear_level_override(project, pair) == 9
    assert project.comparisons() == [] and len(project.comparisons(include_deleted=True)) == 18
    assert drex_overrides(project, order) == {} and level_override(project, pair).verdict is None
    assert all(c["deleted_at"] for c in project.comparisons(include_deleted=True) if c["id"] in again)


def test_level_override_is_atomic(project):
    fill(project)
    pair = drex_auto_pairs(drex_levels(project, "Pendulum-v1"), 0.3)[0]
    set_level_override(project, pair, "agree")
    before = project.comparisons(include_deleted=True)
    # an item that does not exist breaks the 3rd insert (foreign key): nothing of the batch may stay
    pair.worse.trajectory_ids.append(10_000)
    with pytest.raises(ValueError):
        set_level_override(project, pair, "reverse")
    assert project.comparisons(include_deleted=True) == before  # the old rows are not even undone
    pair.worse.trajectory_ids.pop()
    assert level_override(project, pair).verdict == "agree"


def test_drex_level_pair_needs_a_known_verdict(project):
    fill(project)
    pair = drex_auto_pairs(drex_levels(project, "Pendulum-v1"), 0.3)[0]
    with pytest.raises(ValueError, match="verdict"):
        set_level_override(project, pair, "worse")


def test_reward_model_job_applies_overrides(project):
    from rlhf_core.jobs import RecordingContext, execute_job, get_job
    from rlhf_core.rewards.networks import RewardEnsemble
    from rlhf_core.trainers.control.reward_model import RewardModelConfig, drex_training_pairs

    ids = fill(project, levels=((0.0, 1.0), (0.5, -1.0)), per_level=3)
    cfg = RewardModelConfig(env_id="Pendulum-v1", source="drex", members=1, steps=150, hidden=8, learning_rate=3e-3,
                            snippet_pairs=200, snippet_min=5, snippet_max=10, heldout_fraction=0.0, seed=0)
    auto, _, extra = drex_training_pairs(project, cfg)
    assert extra == {"drex_overrides": 0, "drex_overridden_snippet_pairs": 0}
    less_noise = {0, 1, 2}  # index space: the ε=0 trajectories come first (item id order)
    assert all(t == float(a.traj in less_noise) for a, t in zip(auto.first, auto.target))
    pair = drex_auto_pairs(drex_levels(project, "Pendulum-v1"), 0.3)[0]
    set_level_override(project, pair, "reverse")
    over, _, extra = drex_training_pairs(project, cfg)
    assert extra == {"drex_overrides": 9, "drex_overridden_snippet_pairs": 200}  # every pair crosses the levels
    assert [(a.traj, b.traj) for a, b in zip(over.first, over.second)] == \
        [(a.traj, b.traj) for a, b in zip(auto.first, auto.second)]  # same snippets ...
    np.testing.assert_array_equal(over.target, 1.0 - auto.target)  # ... opposite labels

    out = execute_job(get_job("reward_model"), cfg, RecordingContext(), project_path=project.folder)
    assert out.status == "completed", out.error
    assert out.result["drex_overrides"] == 9 and out.result["drex_overridden_snippet_pairs"] == 200
    ens, _ = RewardEnsemble.load(project.abspath(project.checkpoints()[-1]["path"]))
    per_state = [float(ens.predict(torch.from_numpy(np.load(project.abspath(project.get_item(i)["data_path"]))
                                                    ["observations"][1:])).sum()) for i in ids[0.0] + ids[0.5]]
    assert min(per_state[3:]) > max(per_state[:3])  # the learned reward now prefers the noisier level
