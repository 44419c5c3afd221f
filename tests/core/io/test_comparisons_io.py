"""Clip and trajectory labels as JSONL: round trip into a project with the same trajectories (times,
labellers, clip ranges and rankings kept; a second import adds nothing), a file naming unknown
trajectories refused whole, the CLI."""

from __future__ import annotations

import json

import pytest

from rlhf_core.cli import main as cli_main
from rlhf_core.envs.clips import make_clips
from rlhf_core.envs.make import close_env, make_env
from rlhf_core.envs.policies import RandomPolicy
from rlhf_core.envs.rollout import rollout
from rlhf_core.envs.storage import save_trajectory
from rlhf_core.input_files import InputFileError
from rlhf_core.io.comparisons import export_comparisons, import_comparisons
from rlhf_core.store import Project, copy_project

ENV = "CartPole-v1"


def _rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _as_set(rows) -> set[str]:
    return {json.dumps(r, sort_keys=True) for r in rows}


def _state(project) -> dict:
    tables = ("items", "comparisons", "labellers", "rankings", "ranking_entries")
    return {t: project.conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}


@pytest.fixture
def two_projects(project, tmp_path):
    """``project`` with four CartPole trajectories, and an unlabelled copy of it (same trajectory ids)."""
    env = make_env(ENV, render=False)
    try:
        trajs = [save_trajectory(project, rollout(env, RandomPolicy(env.action_space, seed=s), seed=s, max_steps=30,
                                                  render=False, source={"kind": "random"})) for s in range(4)]
    finally:
        close_env(env)
    copy = copy_project(project.folder, tmp_path / "copy.rlhf")
    other = Project.open(copy)
    yield project, other, trajs
    other.close()


def _label(project, trajs) -> int:
    """Comparisons of clips and of whole trajectories, a ranking, an undone and an edited label; returns
    how many rows the export should hold."""
    clips = make_clips(project, trajs, length=8, per_trajectory=2, seed=0)
    ann = project.ensure_labeller("ann")
    bot = project.ensure_labeller("oracle", kind="synthetic")
    project.add_comparison(clips[0], clips[2], "left", labeller_id=ann, response_ms=812, note="close call")
    project.add_comparison(clips[3], clips[5], "tie", labeller_id=ann)
    project.add_comparison(clips[1], clips[6], "right", labeller_id=bot, source="synthetic")
    project.add_comparison(trajs[0], trajs[1], "both_bad")  # no labeller
    gone = project.add_comparison(clips[4], clips[7], "left", labeller_id=ann)
    project.undo_comparison(gone)  # not exported
    edited = project.add_comparison(clips[2], clips[7], "left", labeller_id=ann)
    project.edit_comparison(edited, "right")  # exported once, as edited
    project.add_ranking([[trajs[2]], [trajs[0], trajs[3]], [trajs[1]]], labeller_id=ann, response_ms=4000)
    return 6


def test_round_trip_into_a_project_with_the_same_trajectories(two_projects, tmp_path):
    project, other, trajs = two_projects
    expected = _label(project, trajs)
    first = tmp_path / "labels.jsonl"
    report = export_comparisons(project, first)
    rows = _rows(first)
    assert (report.comparisons, report.rankings) == (5, 1) and len(rows) == expected
    clip_row = next(r for r in rows if r.get("note") == "close call")
    clip = project.get_item(project.comparisons()[0]["left_id"])
    assert clip_row["left"] == {"trajectory": clip["parent_id"], "env_id": ENV, "kind": "clip",
                                "start_step": clip["start_step"], "end_step": clip["end_step"]}
    assert clip_row["labeller"] == "ann" and clip_row["response_ms"] == 812 and clip_row["outcome"] == "left"
    ranking = next(r for r in rows if r["type"] == "ranking")
    assert [[s["trajectory"] for s in g] for g in ranking["groups"]] == [[trajs[2]], [trajs[0], trajs[3]], [trajs[1]]]

    got = import_comparisons(other, first)
    assert (got.comparisons_added, got.rankings_added, got.clips_added) == (5, 1, 7)
    assert got.labellers_added == 2 and got.already_present == 0
    second = tmp_path / "again.jsonl"
    export_comparisons(other, second)
    assert _as_set(_rows(second)) == _as_set(rows)  # same items, outcomes, labellers, sources and times
    # the new clips cover the same steps with the same true return
    theirs = {(c["parent_id"], c["start_step"], c["end_step"]): c["true_return"] for c in project.items("clip")}
    for c in other.items("clip"):
        assert c["true_return"] == pytest.approx(theirs[(c["parent_id"], c["start_step"], c["end_step"])])

    before = _state(other)
    again = import_comparisons(other, first)
    assert again.already_present == expected and again.comparisons_added == again.rankings_added == 0
    assert _state(other) == before
    only_synthetic = tmp_path / "synthetic.jsonl"
    assert export_comparisons(project, only_synthetic, sources="synthetic").comparisons == 1


def test_a_file_naming_unknown_trajectories_imports_nothing(two_projects, tmp_path):
    project, other, trajs = two_projects
    _label(project, trajs)
    good = _rows(export_comparisons(project, tmp_path / "labels.jsonl").path)
    bad = [dict(r) for r in good]
    bad[1] = {**bad[1], "left": {**bad[1]["left"], "trajectory": 99}}
    bad[2] = {**bad[2], "right": {**bad[2]["right"], "env_id": "Pendulum-v1"}}
    bad[3] = {**bad[3], "time": "yesterday"}
    bad[4] = {**bad[4], "left": {**bad[4]["left"], "start_step": 0, "end_step": 999}}
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in bad) + "not json\n", encoding="utf-8")
    before = _state(other)
    with pytest.raises(InputFileError) as info:
        import_comparisons(other, path)
    text = str(info.value)
    assert "nothing was imported" in text
    assert "line 2: left names trajectory 99, which is not in this project" in text
    assert "line 3: right names trajectory" in text and "the file belongs to another project" in text
    assert "line 4: \"time\" is not an ISO 8601 date and time" in text
    assert "line 5: left covers steps 0-999" in text and "line 7: not valid JSON" in text
    assert _state(other) == before


def test_cli_export_and_import(two_projects, tmp_path, capsys):
    project, other, trajs = two_projects
    _label(project, trajs)
    out = tmp_path / "cli.jsonl"
    assert cli_main(["export", "--project", str(project.folder), "--format", "comparisons", "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["comparisons"] == 5
    assert cli_main(["import", "--project", str(other.folder), "--format", "comparisons", str(out)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["rankings_added"] == 1
    assert cli_main(["export", "--project", str(project.folder), "--format", "comparisons"]) == 2
    assert "needs --out" in capsys.readouterr().err
    out.write_text('{"type": "comparison"}\n', encoding="utf-8")
    assert cli_main(["import", "--project", str(other.folder), "--format", "comparisons", str(out)]) == 2
    err = capsys.readouterr().err
    assert 'line 1: a comparison needs "left"' in err and "Traceback" not in err
