"""Fuzz every command-line entry point with generated malformed input, in-process.

Each case calls ``rlhf_core.cli.main(argv)`` with stdout/stderr captured and checks: a failing case
exits non-zero with ``error: ...`` as the first line of stderr; no case prints a traceback or an
"internal error"; a failing case changes neither the project (a digest of its SQL dump and its
files) nor anything else in the sandbox folder (no partial export, no empty new project). The
generator is deterministic (a fixed seed); valid cases are mixed in and must succeed.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import random
import shutil
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from rlhf_core import config as cfg
from rlhf_core.cli import main as cli_main
from rlhf_core.jobs import list_jobs

SEED = 20
FAIL, OK, ANY = "fail", "ok", "any"
SURROGATE_ARG = "\udcff"  # what Python makes of the byte 0xff in a command line
PROMPTS = ["Name a fruit.", "What is a reward model?", "Say hello.", "Define behavioural cloning."]


# ----------------------------------------------------------------------------- the project
def build_project(folder: Path) -> Path:
    """A small project with prompts, responses, decided comparisons and a finished run with metrics."""
    from rlhf_core.store import Project

    with Project.create(folder, name="Fuzz") as project:
        pids = [project.add_prompt(p, category="helpfulness") for p in PROMPTS]
        for i, pid in enumerate(pids):
            a = project.add_item("response", prompt_id=pid, text=f"Answer {i} a.", model_id="m")
            b = project.add_item("response", prompt_id=pid, text=f"Answer {i} b.", model_id="m")
            project.add_comparison(a, b, "right" if i % 2 else "left", source="human")
        run = project.create_run("synthetic_preferences", {"steps": 2}, status="queued")
        project.start_run(run)
        project.log_metrics(run, 0, {"reward_model/loss": 0.5})
        project.finish_run(run, "completed", result={"ok": True})
    return folder


def project_digest(folder: Path) -> str:
    """The project's rows (SQL dump through SQLite, read-only) and its non-database files."""
    db = folder / "project.db"
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        dump = "\n".join(conn.iterdump())
    finally:
        conn.close()
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                   if p.is_file() and not p.name.startswith("project.db") and "locks" not in p.parts)
    return hashlib.sha256((dump + "\n" + "\n".join(files)).encode("utf-8", "surrogateescape")).hexdigest()


def sandbox_listing(root: Path, project: Path) -> list[tuple[str, int]]:
    """Every path under ``root`` (files with sizes), leaving out the project's own database files."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        if d == project or project in d.parents:
            dirnames[:] = []
            continue
        for name in dirnames:
            out.append((str((d / name).relative_to(root)), -1))
        for name in filenames:
            p = d / name
            out.append((str(p.relative_to(root)), p.lstat().st_size))
    return sorted(out)


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli_main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def run_cli_with_timeout(argv: list[str], seconds: float, fifo: Path | None = None) -> tuple[int, str, str]:
    """``run_cli`` in a thread; a case still running after ``seconds`` fails (a FIFO is unblocked first)."""
    box: dict = {}

    def target():
        box["result"] = run_cli(argv)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        if fifo is not None:  # give the blocked reader an end of file
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            os.close(fd)
        pytest.fail(f"{argv} still running after {seconds} s")
    return box["result"]


# ----------------------------------------------------------------------------- files
def trl_rows() -> list[dict]:
    return [{"prompt": p, "chosen": f"Good answer to {p}", "rejected": f"Bad answer to {p}"} for p in PROMPTS]


def deep(n: int) -> str:
    return "[" * n + "]" * n


def trl_line_mutations(rng: random.Random, row: dict) -> list[bytes]:
    """Ways to make one TRL line bad; each result is certainly refused."""
    text = json.dumps(row)
    key = rng.choice(["prompt", "chosen", "rejected"])
    cut = rng.randrange(1, len(text) - 1)
    surrogate = rng.choice(["\\ud800", "\\udfff", "\\udc80"])
    return [
        text.replace(f'"{key}": ', f'"{key}": {deep(rng.choice([150, 3000, 100_000]))}, "x": ', 1).encode(),
        text.replace(f'"{key}": ', f'"{key}": {"7" * rng.choice([20, 4301, 10_000])}, "x": ', 1).encode(),
        text.replace(f'"{key}": "', f'"{key}": "{surrogate}', 1).encode(),
        text.replace(f'"{key}": "', f'"{key}": "\xff\xfe', 1).encode("latin-1", "replace"),
        text[:cut].encode(),
        json.dumps({**row, key: rng.choice([None, 3, 1.5, True, [], {}, ["x"]])}).encode(),
        json.dumps({k: v for k, v in row.items() if k != key}).encode(),
        text.replace(f'"{key}": ', f'"{key}": {rng.choice(["NaN", "Infinity", "-Infinity", "1e400"])}, "x": ', 1).encode(),
        json.dumps({**row, "prompt": rng.choice(["", " ", "\t\n"])}).encode(),
        json.dumps(rng.choice([[1, 2], "text", 3, None, True])).encode(),
        json.dumps({"prompt": [{"role": "assistant", "content": row["prompt"]}],
                    "chosen": [{"role": "assistant", "content": "a"}],
                    "rejected": [{"role": "assistant", "content": "b"}]}).encode(),
        text.replace(f'"{key}": "', f'"{key}": "\x00', 1).encode(),
        json.dumps({**row, "label": True}).replace('"chosen"', '"completion"', 1).encode(),
    ]


def prompt_line_mutations(rng: random.Random, text: str) -> list[bytes]:
    row = {"text": text, "category": "style", "tags": ["a"], "meta": {"k": 1}}
    line = json.dumps(row)
    return [
        line.replace('"meta": ', f'"meta": {deep(rng.choice([150, 5000, 100_000]))}, "x": ', 1).encode(),
        line.replace('"meta": {"k": 1}', '"meta": {"k": ' + "9" * rng.choice([20, 4301, 9000]) + "}").encode(),
        line.replace('"text": "', '"text": "\\ud800', 1).encode(),
        line.replace('"meta": {"k": 1}', '"meta": {"\\udfff": 1}').encode(),
        line.replace('"text": "', '"text": "\xff', 1).encode("latin-1", "replace"),
        line.replace('"meta": {"k": 1}', f'"meta": {{"k": {rng.choice(["NaN", "Infinity", "1e999"])}}}').encode(),
        line[: rng.randrange(1, len(line) - 1)].encode(),
        json.dumps({**row, "text": rng.choice(["", "   ", None, 5, ["x"]])}).encode(),
        json.dumps({**row, "surprise": 1}).encode(),
        json.dumps({**row, rng.choice(["tags", "meta", "category", "key"]): rng.choice([5, [1], True])}).encode(),
        json.dumps({**row, "gold_answer": rng.choice([True, [1], {"a": 1}])}).encode(),
        json.dumps(rng.choice([[1], 3, None])).encode(),
    ]


def csv_mutations(rng: random.Random) -> list[bytes]:
    good = 'text,category,tags,gold_answer,meta\n"Add 2 and 3.",reasoning,math;easy,5,"{""k"": 1}"\n'
    meta = rng.choice([deep(3000), '{"k": ' + "1" * 5000 + "}", '{"k": "\\ud800"}', '{"k": NaN}', "{not json"])
    return [
        good.replace('"{""k"": 1}"', '"' + meta.replace('"', '""') + '"').encode(),
        good.replace("text,", "txt,", 1).encode(),
        good.replace("category,", "colour,", 1).encode(),
        (good + "only,two\n").encode(),
        good.replace("Add 2", "Add \xff2").encode("latin-1", "replace"),
        (good + "a,b,c,d,e,f\n").encode(),
        good.replace('"Add 2 and 3."', '"   "').encode(),
        good.replace('"Add 2 and 3."', '"' + "x" * 140_000 + '"').encode(),
    ]


class Files:
    """The input files of the fuzz, written once under ``folder``."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir()
        self.n = 0
        self.trl = self.write("good.jsonl", "".join(json.dumps(r) + "\n" for r in trl_rows()).encode())
        self.prompts = self.write("prompts.jsonl", "".join(json.dumps({"text": p}) + "\n" for p in PROMPTS).encode())
        self.fifo = folder / "fifo.jsonl"
        os.mkfifo(self.fifo)
        self.big = folder / "big.jsonl"
        with open(self.big, "wb") as fh:  # sparse: the size is refused before anything is read
            fh.truncate(600_000_000)
        self.dir = folder / "a-folder.jsonl"
        self.dir.mkdir()
        self.missing = folder / "missing.jsonl"
        self.broken_model = folder / "broken-model"
        self.broken_model.mkdir()
        (self.broken_model / "config.json").write_text(json.dumps(
            {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 0, "hidden_size": 8,
             "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16}))
        (self.broken_model / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")

    def write(self, name: str, data: bytes) -> Path:
        self.n += 1
        path = self.folder / f"{self.n:04d}-{name}"
        path.write_bytes(data)
        return path


# ----------------------------------------------------------------------------- cases
INT_BAD = ["abc", "1.5", "", "nan", "9" * 25, str(2**63), str(-(2**63) - 1), "1e3", "0x1f", SURROGATE_ARG]
FLOAT_BAD = ["abc", "nan", "inf", "-inf", "1e400", "", "-nan", "1,5", SURROGATE_ARG]
ID_LIST_BAD = ["abc", "0", "-3", "1,x", "1e400", str(2**63), "nan"]
CONFIG_JSON_BAD = [b"[1, 2]", b'"settings"', b"null", b"3", b"true", b"", b"{", b"\xff\xfe{}",
                   deep(100_000).encode(), deep(200).encode(), b'{"seed": ' + b"1" * 5000 + b"}",
                   b'{"seed": "\\ud800"}', b'{"\\ud800": 1}', b'{"no_such_setting": 1}', b'{"seed": NaN}',
                   b'{"seed": 1e400}', b"{}\x00", b'{"seed": 1} {"seed": 2}']


def field_bad_values(info: cfg.FieldInfo) -> list[str]:
    if info.type is bool:
        return ["=3", "=yes"]  # an explicit value on a true/false flag
    if info.type is int:
        return INT_BAD
    if info.type is float:
        return FLOAT_BAD
    if info.type is list:
        return ID_LIST_BAD if info.each == "id" else [SURROGATE_ARG]
    bad = [SURROGATE_ARG, "x" + SURROGATE_ARG]
    if info.choices is not None or info.subset_of is not None:
        bad += ["bogus", "Bogus,human"]
    return bad


def json_bad_values(info: cfg.FieldInfo) -> list:
    common = [None, {"a": 1}, [[1]], "\ud800"]
    if info.type is bool:
        return common + [1, "true", 0.0]
    if info.type is int:
        return common + ["3", 1.5, float("nan"), 2**63, -(2**63) - 1, True]
    if info.type is float:
        return common + ["0.1", float("inf"), float("nan"), True]
    if info.type is list:
        return common[:2] + ["1,2", 3, [float("nan")]] + ([[0], ["x"], [2**63]] if info.each == "id" else [])
    return common + [3, 1.5, True, ["x"]] + (["bogus"] if info.choices or info.subset_of else [])


def generate_cases(rng: random.Random, files: Files, project: Path, sandbox: Path, scratch: Path) -> list:
    """(argv, expected, label, options) for every entry point; options: {"fifo": Path} for hang risks."""
    cases: list = []
    P = str(project)

    def add(argv, expect=FAIL, label="", **opts):
        cases.append(([str(a) for a in argv], expect, label or argv[0], opts))

    # run / demo: each job's settings, one certainly bad value at a time (flags and --config-json)
    jobs = list_jobs()
    demos = {"extrapolation": "extrapolation_demo", "ppo": "ppo_demo", "grpo": "grpo_demo"}
    for spec in jobs:
        infos = cfg.fields(spec.config_class())
        for info in infos:
            flag = "--" + info.name.replace("_", "-")
            for value in rng.sample(field_bad_values(info), min(2, len(field_bad_values(info)))):
                argv = ["run", spec.name, "--project", P]
                argv += [flag + value] if value.startswith("=") else [f"{flag}={value}"]
                add(argv, label=f"run {spec.name} {flag}")
        for info in rng.sample(infos, min(3, len(infos))):
            value = rng.choice(json_bad_values(info))
            path = files.write(f"{spec.name}.json", json.dumps({info.name: value}).encode("utf-8", "surrogatepass"))
            add(["run", spec.name, "--project", P, "--config-json", path], label=f"run {spec.name} json {info.name}")
        data = rng.choice(CONFIG_JSON_BAD)
        add(["run", spec.name, "--config-json", files.write("config.json", data)], label=f"run {spec.name} config")
        add(["run", spec.name, "--no-such-setting", "1"], label=f"run {spec.name} unknown flag")
        add(["run", spec.name, "--project", sandbox / "not-a-project"], label=f"run {spec.name} no project")
    for data in CONFIG_JSON_BAD:
        add(["run", "synthetic_preferences", "--project", P, "--config-json", files.write("c.json", data)],
            label="run config-json")
    for path in (files.fifo, files.dir, files.missing, files.big, "/dev/zero"):
        add(["run", "synthetic_preferences", "--config-json", path], label="run config-json special",
            fifo=files.fifo)
    for bad in ("0", "-1", "abc", "99999"):
        add(["run", "synthetic_preferences", "--threads", bad], label="run --threads")
    add(["run", "no_such_job"], label="run unknown job")
    add(["run"], label="run no job")
    for name, job in demos.items():
        spec = next(s for s in jobs if s.name == job)
        for info in rng.sample(cfg.fields(spec.config_class()), 4):
            value = rng.choice(field_bad_values(info))
            flag = "--" + info.name.replace("_", "-")
            add(["demo", name, "--project", P] + ([flag + value] if value.startswith("=") else [f"{flag}={value}"]),
                label=f"demo {name}")
    add(["demo", "bogus"], label="demo unknown")
    # eval-text
    from rlhf_core.analysis.text_evaluation import TextEvalConfig

    for info in cfg.fields(TextEvalConfig):
        value = rng.choice(field_bad_values(info))
        flag = "--" + info.name.replace("_", "-")
        add(["eval-text", "--project", P] + ([flag + value] if value.startswith("=") else [f"{flag}={value}"]),
            label="eval-text")
    add(["eval-text", "--project", P, "--policy-run", "0", "--policy-folder", files.broken_model],
        label="eval-text broken model")

    # TRL import: valid rows and one bad line, into the project, a new path and an empty folder
    rows = trl_rows()
    empty_dir = sandbox / "empty-dir.rlhf"
    empty_dir.mkdir()
    for i in range(120):
        bad_lines = trl_line_mutations(rng, rng.choice(rows))
        line = bad_lines[i % len(bad_lines)]
        lines = [json.dumps(r).encode() for r in rows]
        lines.insert(rng.randrange(len(lines) + 1), line)
        path = files.write("trl.jsonl", b"\n".join(lines) + b"\n")
        target = [P, sandbox / f"new-{i}.rlhf", empty_dir][i % 3]
        add(["import", "--project", target, "--format", "trl", path], label="import trl")
    for path in (files.fifo, files.dir, files.missing, files.big, "/dev/zero", files.write("empty.jsonl", b"\n\n"),
                 project / "project.db"):
        add(["import", "--project", P, "--format", "trl", path], label="import special", fifo=files.fifo)
        add(["import", "--project", sandbox / "new-special.rlhf", "--format", "trl", path], label="import special",
            fifo=files.fifo)
    for argv in (["import", "--project", P, "--format", "csv", files.trl],
                 ["import", "--project", P, "--format", "trl", "--source", "bogus", files.trl],
                 ["import", "--project", P, files.trl], ["import", "--format", "trl", files.trl],
                 ["import", "--project", files.trl, "--format", "trl", files.trl]):
        add(argv, label="import argv")
    for i in range(6):  # valid: a new project each, outside the sandbox
        add(["import", "--project", scratch / f"ok-{i}.rlhf", "--format", "trl", files.trl], OK, "import ok")

    # prompt import: JSONL and CSV
    for i in range(70):
        muts = prompt_line_mutations(rng, rng.choice(PROMPTS))
        lines = [json.dumps({"text": p}).encode() for p in PROMPTS]
        lines.insert(rng.randrange(len(lines) + 1), muts[i % len(muts)])
        add(["prompts", "import", "--project", P, files.write("p.jsonl", b"\n".join(lines) + b"\n")],
            label="prompts import jsonl")
    for i in range(24):
        muts = csv_mutations(rng)
        add(["prompts", "import", "--project", P, files.write("p.csv", muts[i % len(muts)])],
            label="prompts import csv")
    for path in (files.fifo, files.dir, files.missing, files.big, files.write("p.txt", b"text\nx\n"),
                 project / "project.db"):
        add(["prompts", "import", "--project", P, path], label="prompts import special", fifo=files.fifo)
    for argv in (["prompts", "import", "--project", P, "--builtin", "bogus"],
                 ["prompts", "import", "--project", P, "--builtin", "lecture", "--category", "bogus"],
                 ["prompts", "import", "--project", P, "--builtin", "lecture", "--category", SURROGATE_ARG],
                 ["prompts", "import", files.prompts], ["prompts", "bogus"], ["prompts"],
                 ["prompts", "import", "--project", sandbox / "nope.rlhf", files.prompts]):
        add(argv, ANY if argv == ["prompts"] else FAIL, "prompts argv")
    add(["prompts", "list"], OK, "prompts list")

    # the other commands: valid argument vectors, then each with one token dropped or replaced
    out_file = sandbox / "out.jsonl"
    valid = [
        ["info", P], ["metrics", P, "--run", "1"], ["jobs"],
        ["export", "--project", P, "--format", "trl", "--out", scratch / "export.jsonl"],
        ["export", "--project", P, "--format", "trl", "--out", scratch / "export.jsonl", "--conversational",
         "--source", "human,ai"],
        ["new-project", scratch / "new-ok.rlhf", "--name", "ok"],
    ]
    for argv in valid:
        add(argv, OK, argv[0])
    garbage = ["", "-", "--", "nan", "9" * 30, str(2**63), SURROGATE_ARG, "/dev/null", str(files.fifo),
               str(sandbox / "missing" / "deeper"), str(files.trl), "--bogus", "x" * 300]
    templates = [
        ["info", P], ["metrics", P, "--run", "1"],
        ["export", "--project", P, "--format", "trl", "--out", out_file, "--source", "human"],
        ["export-cluster", "--project", P, "--algo", "dpo", "--out", sandbox / "cluster", "--run", "1"],
        ["import-checkpoint", "--project", P, "--kind", "policy", files.broken_model],
        ["new-project", sandbox / "created.rlhf", "--name", "x"],
    ]
    for i in range(110):
        argv = list(rng.choice(templates))
        op = i % 4
        pos = rng.randrange(1, len(argv))
        if op == 0:
            del argv[pos]
        elif op in (1, 2):
            argv[pos] = rng.choice(garbage)
        else:
            argv.insert(pos, rng.choice(["--bogus", "--run=0", "--run=-1", "--format=csv", "--algo=bogus"]))
        add(argv, ANY, f"{argv[0]} mutated")
    for argv in (["metrics", P, "--run", "99"], ["metrics", P, "--run", str(2**63)], ["metrics", P],
                 ["info", sandbox / "nope.rlhf"], ["info", files.trl], ["info", empty_dir],
                 ["new-project", P], ["new-project", files.trl], ["new-project", sandbox / "n.rlhf", "--name",
                                                                   SURROGATE_ARG],
                 ["export", "--project", P, "--format", "trl", "--out", files.dir],
                 ["export", "--project", P, "--format", "trl", "--out", sandbox / "no" / "such" / "x.jsonl"],
                 ["export", "--project", P, "--format", "trl", "--out", out_file, "--source", "bogus"],
                 ["export-cluster", "--project", P, "--algo", "dpo", "--out", sandbox / "c2", "--set", "beta"],
                 ["export-cluster", "--project", P, "--algo", "dpo", "--out", sandbox / "c3", "--run", "99"],
                 ["export-cluster", "--project", P, "--algo", "dpo", "--out", sandbox / "c4", "--model",
                  files.broken_model, "--include-model"],
                 ["import-checkpoint", "--project", P, "--kind", "policy", files.missing],
                 ["import-checkpoint", "--project", P, "--kind", "policy", "--run", "99", files.broken_model],
                 ["demo-project", files.trl], ["demo-project", files.broken_model], ["demo-project", SURROGATE_ARG],
                 ["demo-project", files.trl, "--bogus"], ["--bogus"], ["bogus-command"]):
        add(argv, FAIL, f"{argv[0]} bad")  # (a valid demo-project runs real jobs: too slow here)
    return cases


# ----------------------------------------------------------------------------- the test
def test_every_entry_point_answers_bad_input_with_a_sentence(tmp_path, monkeypatch):
    started = time.monotonic()
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    monkeypatch.chdir(sandbox)  # relative paths among the garbage land in the sandbox too
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    project = build_project(sandbox / "fuzz.rlhf")
    files = Files(sandbox / "files")
    cases = generate_cases(random.Random(SEED), files, project, sandbox, scratch)
    assert len(cases) >= 500, len(cases)

    digest = project_digest(project)
    listing = sandbox_listing(sandbox, project)
    problems: list[str] = []
    counts = {"failed": 0, "ok": 0}
    for argv, expect, label, opts in cases:
        if "fifo" in opts and any(str(opts["fifo"]) == a for a in argv):
            code, out, err = run_cli_with_timeout(argv, 10.0, opts["fifo"])
        else:
            code, out, err = run_cli(argv)
        shown = f"[{label}] {[a[:80] for a in argv]} -> {code}: {err[-400:]!r}"
        if "Traceback" in err or "Traceback" in out or "internal error" in err:
            problems.append(f"traceback: {shown}")
        if expect == OK and code != 0:
            problems.append(f"refused a valid case: {shown}")
        if expect == FAIL and code == 0:
            problems.append(f"accepted a bad case: {shown}")
        if code == 0:
            counts["ok"] += 1
            if project_digest(project) != digest or sandbox_listing(sandbox, project) != listing:
                # an accepted mutation wrote something: put the sandbox back as it was
                shutil.rmtree(project)
                build_project(project)
                for path, size in sandbox_listing(sandbox, project):
                    if (path, size) not in listing and (sandbox / path).exists():
                        target = sandbox / path
                        shutil.rmtree(target) if target.is_dir() else target.unlink()
                digest = project_digest(project)
            continue
        counts["failed"] += 1
        first = next((line for line in err.splitlines() if line.startswith("error: ")), "")
        if len(first) < 12 or (code == 2 and not err.startswith("error: ")):
            problems.append(f"no 'error: <sentence>' line: {shown}")
        if project_digest(project) != digest:
            problems.append(f"the project changed: {shown}")
            shutil.rmtree(project)
            build_project(project)
            digest = project_digest(project)
        now = sandbox_listing(sandbox, project)
        if now != listing:
            extra = sorted(set(now) - set(listing))[:5]
            problems.append(f"files changed {extra}: {shown}")
            listing = now
    elapsed = time.monotonic() - started
    print(f"{len(cases)} cases ({counts['failed']} refused, {counts['ok']} accepted) in {elapsed:.1f} s")
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:40])
    assert counts["failed"] >= 450
    assert elapsed < 60, f"the fuzz took {elapsed:.1f} s"
