"""TRL preference JSONL: export (ties/both_bad/skip left out and counted), import (whole file
checked first, errors by line number, nothing written from a bad file), round trip, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from rlhf_core.cli import main as cli_main
from rlhf_core.store import Project
from rlhf_core.input_files import InputFileError
from rlhf_core.io.trl import export_trl, import_trl, parse_trl_file
from tests.conftest import ROOT

SKY = "What colour is the sky?"
SUN = "Where does the sun rise?"
NAME = "Name a prime number."


def _rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _as_set(rows) -> set[str]:
    return {json.dumps(r, sort_keys=True) for r in rows}


def _state(project) -> dict:
    """Everything an import could change."""
    tables = ("prompts", "items", "comparisons", "labellers", "rankings")
    return {t: project.conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}


def _build(project) -> dict:
    """Prompts, responses and labels of every kind, with known expected TRL rows."""
    ann = project.ensure_labeller("ann")
    bot = project.ensure_labeller("oracle", kind="synthetic")
    sky = project.add_prompt(SKY)
    sun = project.add_prompt(SUN)
    name = project.add_prompt(NAME)
    r = {key: project.add_item("response", prompt_id=pid, text=text, source="generated")
         for key, pid, text in [
             ("blue", sky, "It is blue."), ("green", sky, "It is green."), ("plaid", sky, " Plaid, obviously."),
             ("east", sun, "In the east."), ("west", sun, "In the west."),
             ("seven", name, "7"), ("nine", name, "9"), ("four", name, "4")]}
    project.add_comparison(r["green"], r["blue"], "right", labeller_id=ann)          # blue > green
    project.add_comparison(r["east"], r["west"], "left", labeller_id=ann)            # east > west
    project.add_comparison(r["blue"], r["plaid"], "tie", labeller_id=ann)            # left out
    project.add_comparison(r["green"], r["plaid"], "skip", labeller_id=ann)          # left out
    project.add_comparison(r["green"], r["plaid"], "both_bad", labeller_id=ann)      # left out
    project.add_comparison(r["plaid"], r["blue"], "right", labeller_id=bot, source="synthetic")  # blue > plaid
    gone = project.add_comparison(r["west"], r["east"], "left", labeller_id=ann)     # undone below
    project.undo_comparison(gone)
    edited = project.add_comparison(r["plaid"], r["green"], "left", labeller_id=ann)
    project.edit_comparison(edited, "right")                                         # green > plaid
    # a ranking writes its own pairs (ranking_id): worst -> best = four < nine < seven
    project.add_ranking([[r["four"]], [r["nine"]], [r["seven"]]], labeller_id=ann, prompt_id=name)
    # a clip comparison is not text and is ignored
    traj = project.add_item("trajectory", env_id="CartPole-v1")
    c1 = project.add_item("clip", parent_id=traj, start_step=0, end_step=5)
    c2 = project.add_item("clip", parent_id=traj, start_step=5, end_step=10)
    project.add_comparison(c1, c2, "left", labeller_id=ann)
    expected = [
        (SKY, "It is blue.", "It is green."), (SUN, "In the east.", "In the west."),
        (SKY, "It is blue.", " Plaid, obviously."), (SKY, "It is green.", " Plaid, obviously."),
        (NAME, "9", "4"), (NAME, "7", "4"), (NAME, "7", "9"),
    ]
    return {"responses": r, "expected": expected}


def _standard(triples) -> set[str]:
    return _as_set({"prompt": p, "chosen": c, "rejected": j} for p, c, j in triples)


def test_export_standard_and_conversational_rows(project, tmp_path):
    built = _build(project)
    out = tmp_path / "prefs.jsonl"
    report = export_trl(project, out)
    assert report.written == 7 and report.skipped == {"tie": 1, "both_bad": 1, "skip": 1}
    assert report.not_text == 1 and report.from_rankings == 0
    assert _as_set(_rows(out)) == _standard(built["expected"])
    assert [list(r) for r in _rows(out)] == [["prompt", "chosen", "rejected"]] * 7
    conv = tmp_path / "conv.jsonl"
    export_trl(project, conv, conversational=True)
    first = _rows(conv)[0]
    assert first == {"prompt": [{"role": "user", "content": SKY}],
                     "chosen": [{"role": "assistant", "content": "It is blue."}],
                     "rejected": [{"role": "assistant", "content": "It is green."}]}
    # only the synthetic label
    only = export_trl(project, tmp_path / "syn.jsonl", sources="synthetic")
    assert only.written == 1 and only.skipped == {"tie": 0, "both_bad": 0, "skip": 0}
    assert _rows(tmp_path / "syn.jsonl") == [{"prompt": SKY, "chosen": "It is blue.", "rejected": " Plaid, obviously."}]
    with pytest.raises(ValueError, match="unknown label source"):
        export_trl(project, tmp_path / "x.jsonl", sources="people")
    # no temporary files are left next to the export
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_rankings_without_stored_pairs_are_expanded_once(project, tmp_path):
    ann = project.ensure_labeller("ann")
    pid = project.add_prompt(NAME)
    a, b, c = (project.add_item("response", prompt_id=pid, text=t) for t in ("4", "9", "7"))
    rid = project.add_ranking([[a], [b, c]], labeller_id=ann, prompt_id=pid)  # 4 < 9 = 7
    first = export_trl(project, tmp_path / "one.jsonl")
    assert (first.written, first.skipped["tie"], first.from_rankings) == (2, 1, 0)
    # a ranking stored WITHOUT its pairs (e.g. by an older writer) is expanded by the export
    project.conn.execute("DELETE FROM comparisons WHERE ranking_id = ?", [rid])
    second = export_trl(project, tmp_path / "two.jsonl")
    assert (second.written, second.skipped["tie"], second.from_rankings) == (2, 1, 2)
    assert _as_set(_rows(tmp_path / "one.jsonl")) == _as_set(_rows(tmp_path / "two.jsonl"))
    # an undone ranking exports nothing
    project.undo_ranking(rid)
    assert export_trl(project, tmp_path / "three.jsonl").written == 0


@pytest.mark.parametrize("conversational", [False, True])
def test_round_trip_export_import_export(project, tmp_path, conversational):
    _build(project)
    first = tmp_path / "first.jsonl"
    export_trl(project, first, conversational=conversational)
    report = import_trl(tmp_path / "fresh.rlhf", first)
    assert report.project_created and report.rows == report.preference_rows == 7
    assert (report.prompts_added, report.responses_added, report.comparisons_added) == (3, 8, 7)
    assert report.labeller == "import:first.jsonl" and report.unpaired_rows == 0
    with Project.open(tmp_path / "fresh.rlhf") as fresh:
        counts = fresh.counts()
        assert (counts["prompts"], counts["responses"], counts["comparisons"]) == (3, 8, 7)
        assert {c["source"] for c in fresh.comparisons()} == {"human"}
        assert {c["outcome"] for c in fresh.comparisons()} == {"right"}
        assert {i["source"] for i in fresh.items("response")} == {"import"}
        assert {p["source"] for p in fresh.conn.execute("SELECT source FROM prompts")} == {"import"}
        assert [l["name"] for l in fresh.labellers()] == ["import:first.jsonl"]
        second = tmp_path / "second.jsonl"
        export_trl(fresh, second, conversational=conversational)
    assert _as_set(_rows(first)) == _as_set(_rows(second))
    assert len(_rows(second)) == 7
    # importing the same file again adds nothing
    again = import_trl(tmp_path / "fresh.rlhf", first)
    assert (again.comparisons_added, again.already_present, again.prompts_reused, again.responses_reused) == (0, 7, 3, 8)
    assert not again.project_created


def test_export_loads_with_datasets(project, tmp_path):
    from datasets import load_dataset

    _build(project)
    for conversational in (False, True):
        out = tmp_path / f"prefs-{conversational}.jsonl"
        export_trl(project, out, conversational=conversational)
        ds = load_dataset("json", data_files=str(out), split="train", cache_dir=str(tmp_path / "hf-cache"))
        assert ds.column_names == ["prompt", "chosen", "rejected"] and ds.num_rows == 7
        if conversational:
            assert ds[0]["prompt"] == [{"role": "user", "content": SKY}]
            assert ds[0]["chosen"] == [{"role": "assistant", "content": "It is blue."}]
        else:
            assert ds[0]["prompt"] == SKY and ds[0]["rejected"] == "It is green."


def test_import_reuses_prompts_and_responses_and_takes_the_source(project, tmp_path):
    pid = project.add_prompt(SKY)
    blue = project.add_item("response", prompt_id=pid, text="It is blue.")
    f = tmp_path / "more.jsonl"
    f.write_text(json.dumps({"prompt": SKY, "chosen": "It is blue.", "rejected": "Green.", "id": 17}) + "\n")
    report = import_trl(project, f, source="ai")
    assert (report.prompts_added, report.prompts_reused, report.responses_added, report.responses_reused) == (0, 1, 1, 1)
    (c,) = project.comparisons()
    assert c["right_id"] == blue and c["outcome"] == "right" and c["source"] == "ai"
    assert project.get_item(c["left_id"])["text"] == "Green."
    assert project.labellers()[0]["kind"] == "ai"


def test_implicit_prompt_conversations(project, tmp_path):
    f = tmp_path / "implicit.jsonl"
    rows = [{"chosen": [{"role": "user", "content": SKY}, {"role": "assistant", "content": "Blue."}],
             "rejected": [{"role": "user", "content": SKY}, {"role": "assistant", "content": "Green."}]},
            # a plain-text prompt next to whole conversations: ignored, as trl.maybe_extract_prompt does
            {"prompt": SUN, "chosen": [{"role": "user", "content": SUN}, {"role": "assistant", "content": "East."}],
             "rejected": [{"role": "user", "content": SUN}, {"role": "assistant", "content": "West."}]}]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [(r.prompt, r.chosen, r.rejected) for r in parse_trl_file(f)] == [
        (SKY, "Blue.", "Green."), (SUN, "East.", "West.")]
    assert import_trl(project, f).comparisons_added == 2
    out = tmp_path / "out.jsonl"
    export_trl(project, out)
    assert _as_set(_rows(out)) == _standard([(SKY, "Blue.", "Green."), (SUN, "East.", "West.")])


def test_unpaired_rows_pair_true_with_false_per_prompt(project, tmp_path):
    f = tmp_path / "kto.jsonl"
    rows = [{"prompt": SKY, "completion": "Blue.", "label": True},
            {"prompt": SKY, "completion": "Green.", "label": False},
            {"prompt": SKY, "completion": "Red.", "label": False},
            {"prompt": [{"role": "user", "content": SKY}],
             "completion": [{"role": "assistant", "content": "Azure."}], "label": True},
            {"prompt": SUN, "completion": "East.", "label": True}]  # no false partner: no pair
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = import_trl(project, f)
    assert (report.unpaired_rows, report.responses_added, report.comparisons_added) == (5, 5, 4)
    assert (report.unpaired_pairs, report.unpaired_unmatched) == (4, 1)
    labels = {i["text"]: json.loads(i["meta_json"])["label"] for i in project.items("response")}
    assert labels == {"Blue.": True, "Green.": False, "Red.": False, "Azure.": True, "East.": True}
    out = tmp_path / "out.jsonl"
    export_trl(project, out)
    assert _as_set(_rows(out)) == _standard([(SKY, good, bad) for good in ("Blue.", "Azure.")
                                             for bad in ("Green.", "Red.")])
    assert all(json.loads(c["meta_json"])["from_unpaired"] for c in project.comparisons())


BAD_FILES = {
    "bad_json": ('{"prompt": "p", "chosen": "a", "rejected": "b"', "line 2: not valid JSON"),
    "missing_key": ('{"prompt": "p", "chosen": "a"}', 'line 2: missing key "rejected"'),
    "no_kind": ('{"prompt": "p", "answer": "a"}', 'line 2: missing key "chosen"'),
    "wrong_type": ('{"prompt": "p", "chosen": 3, "rejected": "b"}', 'line 2: "chosen" must be a string, got a number'),
    "empty_text": ('{"prompt": "  ", "chosen": "a", "rejected": "b"}', 'line 2: "prompt" is empty'),
    "not_object": ('["p", "a", "b"]', "line 2: expected a JSON object, got a list"),
    "bad_label": ('{"prompt": "p", "completion": "a", "label": "yes"}', 'line 2: "label" must be true or false'),
    "multi_turn": ('{"prompt": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}], '
                   '"chosen": [{"role": "assistant", "content": "a"}], "rejected": [{"role": "assistant", "content": "b"}]}',
                   'line 2: "prompt" has 2 messages (system, user)'),
    "wrong_role": ('{"prompt": [{"role": "user", "content": "u"}], "chosen": [{"role": "user", "content": "a"}], '
                   '"rejected": [{"role": "assistant", "content": "b"}]}',
                   'line 2: "chosen" must be a assistant message'),
    "implicit_strings": ('{"chosen": "The sky is blue.", "rejected": "The sky is green."}',
                         'line 2: missing key "prompt"'),
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_malformed_file_names_the_line_and_imports_nothing(project, tmp_path, kind):
    _build(project)
    line, message = BAD_FILES[kind]
    f = tmp_path / f"{kind}.jsonl"
    good = json.dumps({"prompt": "New prompt", "chosen": "Good answer.", "rejected": "Bad answer."})
    f.write_text(f"{good}\n{line}\n\n{good}\n", encoding="utf-8")
    before = _state(project)
    with pytest.raises(InputFileError) as err:
        import_trl(project, f)
    assert message in str(err.value), str(err.value)
    assert str(err.value).startswith(f"{kind}.jsonl: nothing was imported")
    assert _state(project) == before


def test_conflicting_unpaired_labels_and_empty_file(project, tmp_path):
    f = tmp_path / "conflict.jsonl"
    f.write_text('{"prompt": "p", "completion": "a", "label": true}\n'
                 '{"prompt": "p", "completion": "a", "label": false}\n')
    with pytest.raises(InputFileError, match="line 2: this completion was labelled true on line 1 and false here"):
        import_trl(project, f)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(InputFileError, match="the file contains no rows"):
        import_trl(project, empty)
    # a bad file does not create the project either
    with pytest.raises(InputFileError):
        import_trl(tmp_path / "never.rlhf", empty)
    assert not (tmp_path / "never.rlhf").exists()
    assert _state(project)["comparisons"] == 0


def test_cli_export_and_import(project, tmp_path, capsys):
    _build(project)
    out = tmp_path / "cli.jsonl"
    assert cli_main(["export", "--project", str(project.folder), "--format", "trl", "--out", str(out),
                     "--conversational", "--source", "human,synthetic,ai"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out.strip().splitlines()[-1])
    assert result["written"] == 7 and result["skipped"] == {"tie": 1, "both_bad": 1, "skip": 1}
    assert result["path"] == str(out) and "wrote 7 preference pairs" in captured.err
    assert len(_rows(out)) == 7 and isinstance(_rows(out)[0]["prompt"], list)
    target = tmp_path / "imported.rlhf"
    assert cli_main(["import", "--project", str(target), "--format", "trl", "--source", "synthetic", str(out)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["comparisons_added"] == 7 and result["project_created"] is True
    with Project.open(target) as p:
        assert {c["source"] for c in p.comparisons()} == {"synthetic"}


def test_cli_bad_file_subprocess(tmp_path):
    target = tmp_path / "p.rlhf"
    Project.create(target).close()
    f = tmp_path / "bad.jsonl"
    f.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n{"prompt": "p", "chosen": "a"}\n')
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "rlhf_core", "import", "--project", str(target), "--format", "trl",
                          str(f)], cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 2 and out.stdout == ""
    assert 'line 2: missing key "rejected"' in out.stderr and "nothing was imported" in out.stderr
    with Project.open(target) as p:
        assert p.counts()["comparisons"] == 0 and p.counts()["prompts"] == 0


def test_rows_that_prefer_nothing_are_left_out_and_reported_not_refused(project, tmp_path):
    f = tmp_path / "same.jsonl"
    f.write_text('{"prompt": "p", "chosen": "same", "rejected": "same "}\n'
                 '{"prompt": "p", "chosen": "a", "rejected": "b"}\n'
                 '{"prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "assistant", "content": "x"}], '
                 '"rejected": [{"role": "assistant", "content": "x"}]}\n', encoding="utf-8")
    report = import_trl(project, f)
    assert report.rows == 1 and report.comparisons_added == 1
    assert report.skipped_rows == ["line 1: chosen and rejected are the same text, so it prefers nothing",
                                   "line 3: chosen and rejected are the same text, so it prefers nothing"]
    only = tmp_path / "only_same.jsonl"
    only.write_text('{"prompt": "p", "chosen": "x", "rejected": "x"}\n', encoding="utf-8")
    with pytest.raises(InputFileError, match="no rows with a preference"):
        import_trl(project, only)
