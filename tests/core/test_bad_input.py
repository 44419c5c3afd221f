"""Each bad input the tester found answers with a sentence (no traceback) and changes nothing;
what TRL's own tools accept (empty answers, any text) is accepted and kept byte for byte."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import sqlite3
import threading
from pathlib import Path

import pytest

from rlhf_core import config as cfg
from rlhf_core.cli import main as cli_main
from rlhf_core.input_files import InputFileError, InputProblem, parse_json
from rlhf_core.store import Project
from rlhf_core.text import prompts as pr
from rlhf_core.io import trl as trl_io
from rlhf_core.io.trl import export_trl, import_trl

DEEP = "[" * 5000 + "]" * 5000
BIG = "7" * 5000


def cli(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli_main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def rows_of(folder: Path) -> dict[str, int]:
    conn = sqlite3.connect(f"file:{folder / 'project.db'}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}
    finally:
        conn.close()


@pytest.fixture
def folder(tmp_path) -> Path:
    with Project.create(tmp_path / "p.rlhf") as project:
        project.add_prompt("Name a fruit.")
    return tmp_path / "p.rlhf"


def assert_refused(code: int, err: str, *needles: str) -> None:
    assert code != 0, err
    assert err.startswith("error: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


# ------------------------------------------------------------------------------ JSON that json.loads mishandles
@pytest.mark.parametrize("text, message", [
    (DEEP, "nested more than 100 levels deep"),
    ("[" * 150 + "]" * 150, "nested more than 100 levels deep"),
    (BIG, "too large"),
    (str(2**63), "too large"),
    ('"\\ud800"', "lone surrogate (\\ud800)"),
    ('{"\\udfff": 1}', "lone surrogate"),
    ("NaN", "NaN is not a JSON number"),
    ("1e400", "too large"),
    (b"\xff", "not valid UTF-8"),
])
def test_parse_json_refuses_what_cannot_be_stored(text, message):
    with pytest.raises(InputProblem) as err:
        parse_json(text)
    assert message in str(err.value)
    assert parse_json('{"a": [1, 2.5, "\\ud83d\\ude00", null]}') == {"a": [1, 2.5, "\U0001F600", None]}


@pytest.mark.parametrize("line, message", [
    ('{"prompt": "p", "chosen": ' + DEEP + ', "rejected": "b"}', "line 2: JSON nested more than 100 levels deep"),
    ('{"prompt": "p", "chosen": ' + BIG + ', "rejected": "b"}', "line 2: a whole number is too large"),
    ('{"prompt": "p\\ud800", "chosen": "a", "rejected": "b"}', "line 2: the text has a lone surrogate (\\ud800)"),
    ('{"prompt": "p", "chosen": NaN, "rejected": "b"}', "line 2: NaN is not a JSON number"),
])
def test_trl_import_names_the_line_and_changes_nothing(folder, tmp_path, line, message):
    f = tmp_path / "prefs.jsonl"
    good = json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"})
    f.write_text(f"{good}\n{line}\n", encoding="utf-8")
    before = rows_of(folder)
    code, _, err = cli("import", "--project", folder, "--format", "trl", f)
    assert_refused(code, err, "prefs.jsonl: nothing was imported", message)
    assert rows_of(folder) == before
    # into a new path: no empty project is left behind
    code, _, err = cli("import", "--project", tmp_path / "new.rlhf", "--format", "trl", f)
    assert_refused(code, err, message)
    assert not (tmp_path / "new.rlhf").exists()


@pytest.mark.parametrize("suffix, content, message", [
    (".jsonl", '{"text": "x", "meta": ' + DEEP + "}\n", "line 1: JSON nested more than 100 levels deep"),
    (".jsonl", '{"text": "x", "meta": {"k": ' + BIG + "}}\n", "line 1: a whole number is too large"),
    (".jsonl", '{"text": "x\\ud800"}\n', "line 1: the text has a lone surrogate"),
    (".jsonl", '"ok"\n{"text": "x", "meta": {"k": Infinity}}\n', "line 2: Infinity is not a JSON number"),
    (".csv", 'text,meta\nx,"' + DEEP + '"\n', "line 2: the meta column: JSON nested more than 100 levels deep"),
    (".csv", 'text,meta\nx,"{""k"": ' + BIG + '}"\n', "line 2: the meta column: a whole number is too large"),
    (".csv", 'text,meta\ny,\nx,"{""k"": ""\\ud800""}"\n', "line 3: the meta column: the text has a lone surrogate"),
])
def test_prompt_import_names_the_line_and_changes_nothing(folder, tmp_path, suffix, content, message):
    f = tmp_path / f"prompts{suffix}"
    f.write_text(content, encoding="utf-8")
    before = rows_of(folder)
    code, _, err = cli("prompts", "import", "--project", folder, f)
    assert_refused(code, err, f"prompts{suffix}: nothing was imported", message)
    assert rows_of(folder) == before


def test_a_file_error_names_the_file_and_its_problems():
    assert issubclass(InputFileError, ValueError)
    message = str(InputFileError("a/prompts.jsonl", ["line 3: bad"]))
    assert message == "prompts.jsonl: nothing was imported; fix these problems first:\n  line 3: bad"


# ------------------------------------------------------------------------------ files that are not files
def test_devices_folders_and_huge_files_are_refused_without_reading(folder, tmp_path, monkeypatch):
    for path in ("/dev/zero", tmp_path):
        code, _, err = cli("import", "--project", folder, "--format", "trl", path)
        assert_refused(code, err)
        assert "not a regular file" in err or "folder" in err
    code, _, err = cli("import", "--project", folder, "--format", "trl", folder / "project.db")
    assert_refused(code, err, "this is a workbench project's database, not a data file")
    big = tmp_path / "big.jsonl"
    big.write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}) + "\n")
    monkeypatch.setattr(trl_io, "MAX_FILE_BYTES", 10)
    monkeypatch.setattr(pr, "MAX_FILE_BYTES", 10)
    code, _, err = cli("import", "--project", folder, "--format", "trl", big)
    assert_refused(code, err, "the limit is 10 bytes")
    code, _, err = cli("prompts", "import", "--project", folder, big)
    assert_refused(code, err, "the limit is 10 bytes")


def test_a_fifo_without_a_writer_is_refused_not_waited_on(folder, tmp_path):
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    config = tmp_path / "config.json"
    os.mkfifo(config)
    for argv in (["import", "--project", folder, "--format", "trl", fifo],
                 ["prompts", "import", "--project", folder, fifo],
                 ["run", "synthetic_preferences", "--config-json", config]):
        box = {}
        thread = threading.Thread(target=lambda: box.setdefault("r", cli(*argv)), daemon=True)
        thread.start()
        thread.join(10)
        if thread.is_alive():
            for f in (fifo, config):  # give a blocked reader its end of file
                with contextlib.suppress(OSError):
                    os.close(os.open(f, os.O_WRONLY | os.O_NONBLOCK))
            pytest.fail(f"{argv[0]} waited on a FIFO")
        code, _, err = box["r"]
        assert_refused(code, err, "not a regular file")


# ------------------------------------------------------------------------------ --config-json
@pytest.mark.parametrize("data, message", [
    (b"[1, 2]", "settings must be a JSON object of name: value pairs, got a list"),
    (b'"steps"', "got a string"), (b"null", "got null"), (b"3", "got a number"),
    (b'{"steps": 1}\xff', "not valid UTF-8"), (DEEP.encode(), "nested more than 100 levels deep"),
    (b'{"seed": ' + BIG.encode() + b"}", "too large"), (b'{"teacher": "\\ud800"}', "lone surrogate"),
])
def test_config_json_must_be_an_object_of_settings(tmp_path, data, message):
    f = tmp_path / "settings.json"
    f.write_bytes(data)
    code, _, err = cli("run", "synthetic_preferences", "--config-json", f)
    assert_refused(code, err, "settings.json", message)
    assert code == 2


# ------------------------------------------------------------------------------ settings
@pytest.mark.parametrize("argv, message", [
    (["synthetic_preferences", "--heldout-fraction", "nan"], "heldout_fraction: must be a finite number"),
    (["synthetic_preferences", "--heldout-fraction", "inf"], "heldout_fraction: must be a finite number"),
    (["synthetic_preferences", "--seed", str(2**63)], "seed: must be between"),
    (["synthetic_preferences", "--seed", str(-(2**63) - 1)], "seed: must be between"),
    (["bc", "--demo-ids", "abc"], "demo_ids: 'abc' is not an id"),
    (["bc", "--demo-ids", "1,0"], "demo_ids: 0 is not an id"),
    (["reward_model", "--label-sources", "bogus"], "label_sources: unknown 'bogus'; choose from human, synthetic"),
    (["dpo", "--label-sources", "human,robots"], "label_sources: unknown 'robots'"),
    (["generate", "--prompt-ids", str(2**63)], "prompt_ids:"),
    (["synthetic_preferences", "--teacher", "\udcff"], "not valid UTF-8 text"),
    (["synthetic_preferences", "--seed", "1e3"], "argument --seed: invalid int value"),
])
def test_impossible_settings_are_refused_before_a_run_is_stored(folder, argv, message):
    before = rows_of(folder)
    code, _, err = cli("run", argv[0], "--project", folder, *argv[1:])
    assert_refused(code, err, message)
    assert code == 2 and rows_of(folder) == before


def test_validate_checks_types_ranges_and_lists():
    from rlhf_core.trainers.control.bc import BCConfig
    from rlhf_core.trainers.control.synthetic_preferences import SyntheticPreferenceConfig as S

    for bad in ({"seed": 2**63}, {"seed": 1.5}, {"seed": True}, {"heldout_fraction": math.nan},
                {"heldout_fraction": 10**400}, {"teacher": 3}, {"teacher": "\ud800"}):
        with pytest.raises(cfg.ConfigError):
            cfg.from_dict(S, bad)
    for bad in ([1, 2], "x", None, 3):
        with pytest.raises(cfg.ConfigError, match="settings must be a JSON object"):
            cfg.from_dict(S, bad)
    with pytest.raises(cfg.ConfigError, match="heldout_fraction: must be a finite number"):
        cfg.from_dict(S, {"heldout_fraction": math.inf})  # check() is not reached with a bad field
    assert cfg.from_dict(S, {"seed": 2**63 - 1}).seed == 2**63 - 1
    assert cfg.from_dict(BCConfig, {"demo_ids": [1, 2]}).demo_ids == [1, 2]
    for bad in (["abc"], [0], [1.5], "1,2", [2**63]):
        with pytest.raises(cfg.ConfigError, match="demo_ids"):
            cfg.from_dict(BCConfig, {"demo_ids": bad})


# ------------------------------------------------------------------------------ jobs that fail
def _last_run(folder: Path) -> dict:
    conn = sqlite3.connect(f"file:{folder / 'project.db'}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        return dict(conn.execute("SELECT * FROM runs ORDER BY id DESC LIMIT 1").fetchone())
    finally:
        conn.close()


def test_a_bad_env_id_fails_the_run_with_its_message_and_keeps_the_traceback(folder, _private_home):
    code, out, err = cli("run", "rollouts", "--project", folder, "--env-id", ":")
    assert code == 1
    assert "Traceback" not in err and "error: ':' is not an environment id" in err, err
    assert json.loads(out.splitlines()[-1])["status"] == "failed"
    run = _last_run(folder)
    assert run["status"] == "failed" and "Traceback" in run["error"] and "EnvError" in run["error"]
    log = (_private_home / "logs" / "cli.log").read_text()
    assert "Traceback" in log and "is not an environment id" in log


def broken_model(tmp_path: Path, **config) -> Path:
    folder = tmp_path / "broken-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(
        {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 0, "hidden_size": 8,
         "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16, **config}))
    (folder / "model.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    return folder


def test_a_model_folder_with_vocab_size_0_is_called_damaged(folder, tmp_path):
    from rlhf_core.text.model import CorruptModelError, check_model_folder

    model = broken_model(tmp_path)
    with pytest.raises(CorruptModelError, match="vocab_size is 0; it must be a positive whole number"):
        check_model_folder(model)
    code, _, err = cli("run", "generate", "--project", folder, "--model", model, "--max-prompts", "1")
    assert code == 1 and "Traceback" not in err, err
    assert "error: " in err and "vocab_size is 0" in err
    run = _last_run(folder)
    assert run["status"] == "failed" and "Traceback" in run["error"]
    # eval-text checks its folders before it stores a run
    before = rows_of(folder)
    code, _, err = cli("eval-text", "--project", folder, "--policy-folder", model)
    assert_refused(code, err, "policy_folder:", "vocab_size is 0")
    assert rows_of(folder) == before


def test_bad_run_ids_and_arguments_are_sentences(folder):
    for argv, message in ((["metrics", folder, "--run", str(2**63)], "is not a run id"),
                          (["metrics", folder, "--run", "x"], "is not a run id"),
                          (["--bogus"], "unrecognized arguments: --bogus"),
                          (["new-project", folder.parent / "n.rlhf", "--name", "\udcff"], "not valid UTF-8"),
                          (["info", Path("\udcff")], "not valid UTF-8")):
        code, _, err = cli(*argv)
        assert_refused(code, err, message)
    assert not (folder.parent / "n.rlhf").exists()


# ------------------------------------------------------------------------------ what TRL accepts, we accept
ODD = ["", " ", "  \t ", "\n", "line one\nline two", "a\r\nb\r\n", "\ttabbed\t", "trailing space ",
       " leading", "ünïcödé ✓ 日本語 🙂", "\u2028separator\u2029", "\x01\x02\x1f\x7f controls", "\\ backslash \"quote\"",
       "é (NFD: e\u0301)", "\ufeffbom"]


@pytest.mark.parametrize("conversational", [False, True])
def test_odd_texts_round_trip_byte_exact(tmp_path, conversational):
    rows = []
    for i, chosen in enumerate(ODD):
        rejected = ODD[(i + 1) % len(ODD)] + " (worse)"
        prompt = f"Prompt {i}:\r\n\t{ODD[i] or 'x'}"
        rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    f = tmp_path / "odd.jsonl"
    if conversational:
        lines = [{"prompt": [{"role": "user", "content": r["prompt"]}],
                  "chosen": [{"role": "assistant", "content": r["chosen"]}],
                  "rejected": [{"role": "assistant", "content": r["rejected"]}]} for r in rows]
    else:
        lines = rows
    f.write_text("".join(json.dumps(r, ensure_ascii=bool(i % 2)) + "\n" for i, r in enumerate(lines)),
                 encoding="utf-8")
    code, out, err = cli("import", "--project", tmp_path / "odd.rlhf", "--format", "trl", f)
    assert code == 0, err
    report = json.loads(out.splitlines()[-1])
    empty = sum(1 for r in rows if not r["chosen"].strip())
    assert report["rows"] == len(rows) and report["empty_responses"] == empty == 4
    assert f"note: {empty} rows have an empty or whitespace-only answer" in err
    out_file = tmp_path / "out.jsonl"
    code, _, err = cli("export", "--project", tmp_path / "odd.rlhf", "--format", "trl", "--out", out_file,
                       *(["--conversational"] if conversational else []))
    assert code == 0, err
    exported = [json.loads(line) for line in out_file.read_bytes().decode("utf-8").split("\n") if line]
    assert exported == lines  # every string byte for byte, in file order
    with Project.open(tmp_path / "odd.rlhf") as project:
        texts = {i["text"] for i in project.items("response")}
    assert set(ODD) <= texts


def test_empty_answers_are_counted_not_refused(project, tmp_path):
    f = tmp_path / "kto.jsonl"
    f.write_text(json.dumps({"prompt": "p", "chosen": "", "rejected": "A real answer."}) + "\n"
                 + json.dumps({"prompt": "p", "completion": "   ", "label": False}) + "\n"
                 + json.dumps({"prompt": "p", "completion": "Yes.", "label": True}) + "\n")
    report = import_trl(project, f)
    assert report.empty_responses == 2 and report.comparisons_added == 2
    # the same text on both sides prefers nothing: left out and reported, the file's other rows imported
    same = tmp_path / "same.jsonl"
    same.write_text(json.dumps({"prompt": "p", "chosen": "", "rejected": ""}) + "\n"
                    + json.dumps({"prompt": "q", "chosen": "", "rejected": "Something."}) + "\n")
    report = import_trl(project, same)
    assert report.skipped_rows == ["line 1: chosen and rejected are the same text, so it prefers nothing"]
    assert report.comparisons_added == 1 and report.empty_responses == 1
    out = tmp_path / "out.jsonl"
    export_trl(project, out)
    assert {"prompt": "p", "chosen": "", "rejected": "A real answer."} in [json.loads(x) for x in
                                                                         out.read_text().splitlines()]
