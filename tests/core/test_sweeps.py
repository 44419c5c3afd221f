"""Sweeps: the plan of member settings, a local sweep of real worker processes into a real project, its
aggregate per setting, and Cancel stopping the members."""

from __future__ import annotations

import json
import threading
import time

import pytest

from rlhf_core.cli import main
from rlhf_core.jobs import RecordingContext, execute_job
from rlhf_core.store import Project
from rlhf_core.sweeps import SWEEP_KIND, SweepConfig, SweepError, parse_grid, plan_sweep, run_sweep, worker_count


def test_the_plan_is_the_grid_times_the_seeds_with_typed_settings():
    plan = plan_sweep("synthetic_preferences", [0, 1, 2], parse_grid(["steps=10,20", "teacher=oracle,noisy"]),
                      {"hidden": "16"})
    assert len(plan.members) == 12
    assert plan.members[0].settings == {"hidden": 16, "steps": 10, "teacher": "oracle"}  # in the order given
    assert {(m.settings["steps"], m.settings["teacher"], m.seed) for m in plan.members} == {
        (s, t, seed) for s in (10, 20) for t in ("oracle", "noisy") for seed in (0, 1, 2)}
    for args, says in [
        (("synthetic_preferences", [0], {"nope": ["1"]}), "has no setting 'nope'"),
        (("synthetic_preferences", [0], {"seed": ["1"]}), "swept by the seeds list"),
        (("synthetic_preferences", [0], {"steps": ["ten"]}), "steps: 'ten' is not a int"),
        (("synthetic_preferences", [0], {"steps": ["0"]}), "must be at least 1"),
        (("synthetic_preferences", [0, 0], {}), "different seeds"),
        (("no_such_job", [0], {}), "unknown job 'no_such_job'"),
        (("synthetic_preferences", list(range(300)), {"steps": ["1", "2"]}), "the limit is 500"),
    ]:
        with pytest.raises(SweepError, match=says):
            plan_sweep(*args)
    with pytest.raises(SweepError, match="NAME=V1,V2"):
        parse_grid(["steps"])
    assert worker_count(0, 1) == 1 and worker_count(64, 100) <= worker_count(0, 100)


def test_a_local_sweep_stores_its_members_and_aggregates_each_setting(tmp_path, capsys):
    folder = tmp_path / "s.rlhf"
    Project.create(folder).close()
    code = main(["sweep", "synthetic_preferences", "--project", str(folder), "--seeds", "0", "1",
                 "--grid", "steps=5,40", "--set", "n_pairs=200", "--workers", "2",
                 "--metric", "reward_model/heldout_accuracy", "--metric", "reward_model/loss"])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and out["status"] == "completed", out
    result = out["result"]
    assert (result["members"], result["completed"]) == (4, 4)
    by_steps = {g["settings"]["steps"]: g for g in result["groups"]}
    assert sorted(by_steps) == [5, 40] and all(sorted(g["seeds"]) == [0, 1] for g in by_steps.values())
    with Project.open(folder) as project:
        sweep = project.get_run(out["run_id"])
        members = [r for r in project.runs() if r["parent_run_id"] == sweep["id"]]
        assert sweep["kind"] == SWEEP_KIND and sweep["status"] == "completed"
        assert sorted(r["id"] for r in members) == sorted(i for g in result["groups"] for i in g["runs"])
        assert all(r["status"] == "completed" and r["config"]["n_pairs"] == 200 for r in members)
        for steps, group in by_steps.items():
            finals = [project.metrics(i)["reward_model/heldout_accuracy"][1][-1] for i in group["runs"]]
            summary = group["final"]["reward_model/heldout_accuracy"]
            assert summary["n"] == 2 and summary["mean"] == pytest.approx(sum(finals) / 2)
            assert summary["iqm"] == pytest.approx(sum(finals) / 2)  # two runs: nothing to cut
            assert min(finals) <= summary["mean_ci"][0] <= summary["mean_ci"][1] <= max(finals)
    # 40 steps fit the labels better than 5 (both seeds): the aggregate orders the settings
    assert by_steps[40]["final"]["reward_model/loss"]["mean"] < by_steps[5]["final"]["reward_model/loss"]["mean"]
    assert set(by_steps[5]["final"]) == {"reward_model/heldout_accuracy", "reward_model/loss"}


@pytest.mark.timeout(240)
def test_cancel_stops_the_running_members_and_starts_no_more(project):
    config = SweepConfig(job="synthetic_preferences", seeds=[0, 1, 2, 3], workers=2,
                         settings={"steps": 10_000_000, "n_pairs": 200})
    ctx = RecordingContext()
    box: dict = {}
    thread = threading.Thread(target=lambda: box.setdefault("out", execute_job(
        run_sweep, config, ctx, project_path=project.folder, kind=SWEEP_KIND)))
    thread.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if sum(r["status"] == "running" for r in project.runs() if r["kind"] == "synthetic_preferences") == 2:
            break
        time.sleep(0.1)
    ctx.cancel()
    thread.join(timeout=120)
    assert not thread.is_alive()
    assert box["out"].status == "cancelled"
    members = [r for r in project.runs() if r["parent_run_id"] == box["out"].run_id]
    assert len(members) == 2 and all(r["status"] == "cancelled" for r in members)  # the other two never started


def test_a_sweeps_time_left_counts_the_running_members_not_only_the_finished_ones():
    """3 runs of 300 s, 2 at a time: the first two finish together at 300 s, and 18 s into the third
    about 282 s are left. Counting finished runs alone, the clock measured 18 s for the last run and
    said "about 19 s left"; counting the running run by its time so far says ~282 s."""
    from rlhf_core.jobs import ProgressClock
    from rlhf_core.sweeps import SweepPace

    now = [0.0]
    pace, clock = SweepPace(lambda: now[0]), ProgressClock(lambda: now[0])
    pace.started("a"), pace.started("b")
    for t in range(0, 320, 2):  # the sweep's loop reports every 2 s
        now[0] = float(t)
        if t == 300:
            pace.finished("a"), pace.finished("b"), pace.started("c")
        clock.update(pace.fraction(3))
    assert pace.fraction(3) == pytest.approx((2 + 18 / 300) / 3)
    assert clock.timing().remaining == pytest.approx(282, rel=0.1)
    now[0] = 900.0  # a member that runs far longer than the mean never counts as finished
    assert pace.fraction(3) == pytest.approx((2 + 0.95) / 3)
