"""Command line: every core job runs headless. ``python -m rlhf_core --help`` lists the commands.

Long commands draw a text progress bar on stderr and print a JSON object as their LAST line on
stdout, so scripts and benchmarks can parse it. Ctrl-C cancels a running job cleanly (the run is
stored as cancelled); a second Ctrl-C aborts.

Bad input is answered with ``error: <sentence>`` on stderr and a non-zero exit code (2 for input
that was refused before anything ran, 1 for a job that failed); tracebacks go to the run's stored
error and to ``logs/cli.log`` in the per-user folder, never to the console.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sqlite3
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from rlhf_core import __version__
from rlhf_core import config as cfg
from rlhf_core.demo import ensure_demo_project
from rlhf_core.input_files import INT64_MAX, InputFileError, InputProblem, parse_json, read_input_file, text_problem
from rlhf_core.jobs import CliContext, ResumeError, execute_job, failure_message, get_job, list_jobs, resume_run
from rlhf_core.paths import logs_dir
from rlhf_core.store import Project, ProjectError, artefacts, friendly_db_error
from rlhf_core.sweeps import SWEEP_KIND, SweepConfig, SweepError, parse_grid, run_sweep
from rlhf_core.io import cluster as ce
from rlhf_core.text import prompts as pr
from rlhf_core.io import trl as trl_io
from rlhf_core.io import metrics_export, report as run_report
from rlhf_core.runtime import TENSORBOARD_ENV, set_tensorboard_enabled
from rlhf_core.analysis.text_evaluation import TextEvalConfig, resolve_inputs
from rlhf_core.text.model import ModelError
from rlhf_core import rounds

MAX_CONFIG_BYTES = 10_000_000
LOG_NAME = "cli.log"
log = logging.getLogger("rlhf_core")


class UsageError(Exception):
    """Command-line arguments that cannot be used; ``str(error)`` is the message."""


class _Parser(argparse.ArgumentParser):
    """An argument parser that reports a bad argument as :class:`UsageError` instead of exiting."""

    def error(self, message: str):
        if len(message) > 300:
            message = message[:300] + "..."
        raise UsageError(f"{message} (see `{self.prog} --help`)")


class _LogFile(logging.Handler):
    """Appends records to ``logs/cli.log`` of the per-user folder (looked up at each record)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {record.levelname} {record.name}: {record.getMessage()}\n"
            with open(logs_dir() / LOG_NAME, "a", encoding="utf-8", errors="backslashreplace") as fh:
                fh.write(line)
        except Exception:  # noqa: BLE001 - logging must never break a command
            pass


def _setup_logging() -> None:
    if not any(isinstance(h, _LogFile) for h in log.handlers):
        log.addHandler(_LogFile(logging.ERROR))


def _row_id(text: str) -> int:
    """An argparse type: a row id (a whole number from 1 that fits SQLite's 64-bit integers)."""
    try:
        value = int(text) if len(text) <= 20 else 0
    except ValueError:
        value = 0
    if not 1 <= value <= INT64_MAX:
        raise argparse.ArgumentTypeError(f"{text[:30]!r} is not a run id (a whole number from 1)")
    return value


def _check_text_args(args: argparse.Namespace, skip: tuple[str, ...] = ()) -> None:
    """Refuse text arguments that are not valid Unicode (undecodable bytes in the command line), and
    project folders whose path is not (SQLite opens a database by its UTF-8 name)."""
    for name, value in vars(args).items():
        values = value if isinstance(value, list) else [value]
        for v in values:
            if isinstance(v, str) and name not in skip and text_problem(v):
                raise UsageError(f"--{name.replace('_', '-')} is not valid UTF-8 text")
            if isinstance(v, Path) and name in ("project", "path") and text_problem(str(v)):
                raise UsageError(f"the project path {str(v).encode('utf-8', 'backslashreplace').decode()!r} is "
                                 "not valid UTF-8 text; rename the folder")


def _execute_with_ctrl_c(spec, config, ctx, project_path, threads, run=None):
    """Run a job in this thread (with ``run``: call it instead); the first Ctrl-C cancels it
    cooperatively, a second one aborts."""
    previous = signal.getsignal(signal.SIGINT)

    def on_sigint(signum, frame):
        ctx.log("cancelling… (Ctrl-C again to abort)")
        ctx.cancel()
        signal.signal(signal.SIGINT, previous)

    signal.signal(signal.SIGINT, on_sigint)
    try:
        if run is not None:
            return run()
        return execute_job(spec, config, ctx, project_path=project_path, torch_threads=threads)
    finally:
        signal.signal(signal.SIGINT, previous)


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


def _fail(message: str, code: int = 2) -> int:
    sys.stderr.write(f"error: {message}\n")
    return code


def _report_failure(outcome) -> None:
    """A failed job: its message on stderr; the traceback stays in the run's stored error and the log."""
    if outcome.status != "failed":
        return
    where = f"run {outcome.run_id}'s stored error and " if outcome.run_id is not None else ""
    sys.stderr.write(f"error: {outcome.message or 'the job failed'}\n"
                     f"(the full traceback is in {where}{_log_path()})\n")


def _log_path() -> str:
    try:
        return str(logs_dir() / LOG_NAME)
    except OSError:
        return LOG_NAME


def cmd_new_project(args: argparse.Namespace) -> int:
    with Project.create(args.path, name=args.name) as project:
        _print_json({"project": str(project.folder), "name": project.name,
                     "schema_version": project.schema_version})
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    with Project.open(args.path) as project:
        runs = [{k: r[k] for k in ("id", "kind", "status", "created_at", "finished_at")} for r in project.runs()]
        _print_json({"project": str(project.folder), "name": project.name,
                     "schema_version": project.schema_version, "counts": project.counts(), "runs": runs})
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    for spec in list_jobs():
        print(f"{spec.name:28s} {spec.title}")
        print(f"{'':28s} {spec.description}")
    return 0


def cmd_metrics(args: argparse.Namespace) -> int:
    with Project.open(args.path) as project:
        if project.get_run(args.run) is None:
            return _fail(f"no run {args.run} in {project.folder}")
        data = project.metrics(args.run)
    _print_json({"run": args.run, "metrics": {k: {"steps": s, "values": v} for k, (s, v) in data.items()}})
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """``compare``: runs side by side (settings, results, final metrics) as JSON."""
    from rlhf_core.analysis.compare import CompareError, compare_runs  # start-up: only the `compare` command

    with Project.open(args.project) as project:
        try:
            comparison = compare_runs(project, args.runs)
        except CompareError as exc:
            return _fail(str(exc))
    _print_json(comparison.to_dict())
    return 0


def cmd_export_metrics(args: argparse.Namespace) -> int:
    """``export-metrics``: a run's metrics as CSV or JSON, on stdout or into ``--out`` (written whole or not at all)."""
    with Project.open(args.project) as project:
        try:
            text = metrics_export.export_metrics(project, args.run, args.format)
        except metrics_export.MetricsExportError as exc:
            return _fail(str(exc))
    if args.out is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return 0
    try:
        path = metrics_export.write_text_atomically(args.out, text)
    except metrics_export.MetricsExportError as exc:
        return _fail(str(exc))
    sys.stderr.write(f"wrote run {args.run}'s metrics to {path}\n")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """``report``: one self-contained HTML page of a run (plots, settings, data, samples, versions)."""
    started = time.perf_counter()
    with Project.open(args.project) as project:
        try:
            path = run_report.write_report(project, args.run, args.out)
        except run_report.ReportError as exc:
            return _fail(str(exc))
    sys.stderr.write(f"wrote run {args.run}'s report to {path} (open it in a browser; it prints to PDF)\n")
    _print_json({"run": args.run, "report": str(path), "bytes": path.stat().st_size,
                 "seconds": round(time.perf_counter() - started, 3)})
    return 0


def cmd_artefacts(args: argparse.Namespace) -> int:
    with Project.open(args.project) as project:
        if args.rename:
            ident, name = args.rename
            if not ident.strip().isdigit():
                return _fail(f"{ident!r} is not an artefact id (the ids are listed by `artefacts --project P`)")
            try:
                stored = artefacts.rename_artefact(project, int(ident), name)
            except artefacts.ArtefactError as exc:
                return _fail(str(exc))
            _print_json({"id": int(ident), "name": stored})
            return 0
        rows = artefacts.list_artefacts(project, [args.kind] if args.kind else None)
        _print_json({"artefacts": [{
            "id": a.id, "reference": a.reference, "name": a.name, "kind": a.kind, "run": a.run_id,
            "job": a.run_kind, "step": a.step, "created_at": a.created_at, "path": str(a.path),
            "trained_on": a.trained_on, "headline": dict([a.headline]) if a.headline else {}} for a in rows]})
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    ctx = CliContext(title=f"resume run {args.run}")
    threads = args.threads
    if threads is not None and not 1 <= threads <= 1024:
        return _fail("--threads must be between 1 and 1024")
    try:
        outcome = _execute_with_ctrl_c(None, None, ctx, args.project, threads, run=lambda: resume_run(
            args.project, args.run, ctx, torch_threads=threads))
    except ResumeError as exc:
        return _fail(str(exc))
    _report_failure(outcome)
    _print_json({"run_id": outcome.run_id, "status": outcome.status, "wall_seconds": round(outcome.wall_seconds, 3),
                 "result": outcome.result})
    return {"completed": 0, "cancelled": 130}.get(outcome.status, 1)


def cmd_sweep(args: argparse.Namespace) -> int:
    try:
        settings = {k: v[-1] for k, v in parse_grid(args.set or []).items()}
        config = SweepConfig(job=args.job, seeds=list(args.seeds), grid=parse_grid(args.grid or []),
                             settings=settings, workers=args.workers, metrics=list(args.metric or []),
                             engine=args.engine, address=args.address or "", threads=args.threads)
        cfg.validate(config)
    except (SweepError, cfg.ConfigError) as exc:
        return _fail(str(exc))
    Project.open(args.project).close()  # a clear message now if it is not a project
    ctx = CliContext(title=f"sweep {args.job}")
    outcome = _execute_with_ctrl_c(None, None, ctx, args.project, 1, run=lambda: execute_job(
        run_sweep, config, ctx, project_path=args.project, kind=SWEEP_KIND))
    _report_failure(outcome)
    _print_json({"job": "sweep", "run_id": outcome.run_id, "status": outcome.status,
                 "wall_seconds": round(outcome.wall_seconds, 3), "result": outcome.result})
    return {"completed": 0, "cancelled": 130}.get(outcome.status, 1)


def cmd_demo_project(args: argparse.Namespace) -> int:
    folder = ensure_demo_project(args.path, ctx=CliContext(title="demo project"))
    _print_json({"project": str(folder)})
    return 0


def cmd_prompts(args: argparse.Namespace) -> int:
    if args.prompts_command == "list":
        sets = [{"name": s.name, "title": s.title, "description": s.description, "count": s.count,
                 "categories": s.categories} for s in pr.builtin_sets()]
        for s in sets:
            cats = ", ".join(f"{k} {v}" for k, v in sorted(s["categories"].items()))
            sys.stderr.write(f"{s['name']:10s} {s['count']:4d} prompts  ({cats})\n")
        _print_json({"sets": sets})
        return 0
    if args.prompts_command == "import":
        with Project.open(args.project) as project:
            try:
                if args.builtin:
                    ids = pr.add_builtin_prompts(project, args.file, args.category or None)
                    _print_json({"set": args.file, "prompt_ids": ids, "total": len(ids)})
                    return 0
                result = pr.import_prompts(project, args.file, skip_duplicates=not args.keep_duplicates)
            except InputFileError as exc:
                return _fail(str(exc))
            except KeyError as exc:
                return _fail(str(exc.args[0]))
        _print_json({"file": str(args.file), **result.as_dict()})
        return 0
    return _fail("choose a prompts command: list or import")


def cmd_export(args: argparse.Namespace) -> int:
    if args.format == "minari":
        return _export_minari(args)
    if args.out is None:
        return _fail(f"--format {args.format} needs --out FILE")
    if args.format == "comparisons":
        return _export_comparisons(args)
    try:
        sources = trl_io.parse_sources(args.source or None)
    except ValueError as exc:
        return _fail(str(exc))
    with Project.open(args.project) as project:
        try:
            report = trl_io.export_trl(project, args.out, conversational=args.conversational, sources=sources)
        except OSError as exc:
            return _fail(f"cannot write {args.out}: {exc.strerror or exc}")
    skipped = ", ".join(f"{v} {k}" for k, v in report.skipped.items())
    sys.stderr.write(f"wrote {report.written} preference pairs to {report.path} "
                     f"({'conversational' if report.conversational else 'standard'} TRL format); "
                     f"left out (no chosen response): {skipped}\n")
    if report.written == 0:
        sys.stderr.write("warning: the project has no text comparisons with a preferred response\n")
    _print_json(report.as_dict())
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    if args.format != "trl" and args.source != "human":
        return _fail(f"--source is for --format trl; a {args.format} import keeps the sources the data carries")
    if args.format == "minari":
        return _import_minari(args)
    if args.format == "comparisons":
        return _import_comparisons(args)
    try:
        report = trl_io.import_trl(args.project, args.file, source=args.source)
    except InputFileError as exc:
        return _fail(str(exc))
    sys.stderr.write(f"imported {report.rows} rows from {report.path.name} into {report.project}: "
                     f"{report.comparisons_added} comparisons ({report.already_present} already present), "
                     f"{report.prompts_added} new prompts, {report.responses_added} new responses\n")
    if report.empty_responses:
        sys.stderr.write(f"note: {report.empty_responses} rows have an empty or whitespace-only answer "
                         "(imported as they are)\n")
    if report.skipped_rows:
        shown = "; ".join(report.skipped_rows[:5]) + (" …" if len(report.skipped_rows) > 5 else "")
        sys.stderr.write(f"note: left out {len(report.skipped_rows)} rows that prefer nothing ({shown})\n")
    _print_json(report.as_dict())
    return 0


def _export_minari(args: argparse.Namespace) -> int:
    from rlhf_core.io import minari_io  # start-up: minari pulls in gymnasium and h5py

    if not args.env_id or not args.dataset_id:
        return _fail("--format minari needs --env-id ENV and --dataset-id NAMESPACE/NAME-v0")
    with Project.open(args.project) as project:
        try:
            report = minari_io.export_minari(project, args.env_id, args.dataset_id)
        except ValueError as exc:  # MinariError, EnvError
            return _fail(str(exc))
    sys.stderr.write(f"wrote {report.episodes} trajectories ({report.steps} steps) of {report.env_id} as the Minari "
                     f"dataset {report.dataset_id} in {report.path}\n")
    _print_json(report.as_dict())
    return 0


def _import_minari(args: argparse.Namespace) -> int:
    from rlhf_core.io import minari_io  # start-up: minari pulls in gymnasium and h5py

    try:
        report = minari_io.import_minari(args.project, args.file, env_id=args.env_id or None, ranking=args.ranking)
    except minari_io.MinariError as exc:
        return _fail(str(exc))
    ranked = f", ranking {report.ranking_id} ({report.ranking})" if report.ranking_id else ""
    sys.stderr.write(f"imported {len(report.trajectory_ids)} episodes ({report.steps} steps) of {report.env_id} "
                     f"from {report.dataset_id} into {report.project}{ranked}\n")
    _print_json(report.as_dict())
    return 0


def _export_comparisons(args: argparse.Namespace) -> int:
    from rlhf_core.io import comparisons  # start-up: reads trajectories through the env modules (gymnasium)

    with Project.open(args.project) as project:
        try:
            report = comparisons.export_comparisons(project, args.out, sources=args.source or None)
        except ValueError as exc:
            return _fail(str(exc))
        except OSError as exc:
            return _fail(f"cannot write {args.out}: {exc.strerror or exc}")
    sys.stderr.write(f"wrote {report.comparisons} comparisons and {report.rankings} rankings of clips and "
                     f"trajectories to {report.path}\n")
    _print_json(report.as_dict())
    return 0


def _import_comparisons(args: argparse.Namespace) -> int:
    from rlhf_core.io import comparisons  # start-up: reads trajectories through the env modules (gymnasium)

    with Project.open(args.project) as project:
        try:
            report = comparisons.import_comparisons(project, args.file)
        except InputFileError as exc:
            return _fail(str(exc))
    sys.stderr.write(f"imported {report.comparisons_added} comparisons and {report.rankings_added} rankings "
                     f"({report.already_present} already present, {report.clips_added} new clips) from "
                     f"{Path(args.file).name}\n")
    _print_json(report.as_dict())
    return 0


def _parse_settings(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; each VALUE is read as JSON when it parses (numbers, true/false, lists), else text."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = parse_json(value)
        except InputProblem:
            out[key.strip()] = value
    return out


def cmd_export_cluster(args: argparse.Namespace) -> int:
    try:
        overrides = _parse_settings(args.set)
    except ValueError as exc:
        return _fail(str(exc))
    with Project.open(args.project) as project:
        try:
            out = ce.export_for_cluster(project, args.algo, args.out, run_id=args.run, model=args.model or "",
                                        config_overrides=overrides, include_model=args.include_model)
        except (ce.ClusterExportError, ModelError) as exc:
            return _fail(str(exc))
        except OSError as exc:
            return _fail(f"cannot write {args.out}: {exc.strerror or exc}")
    config = json.loads((out / "config.json").read_text())
    sys.stderr.write(f"wrote a {args.algo} export to {out}: {config['data']['rows']} training rows, model "
                     f"{config['model']}; run it with {out / 'launch.sh'} (see {out / 'README.md'})\n")
    _print_json({"out": str(out), "algo": args.algo, "rows": config["data"]["rows"], "model": config["model"],
                 "model_included": config["model_info"]["included"], "trainer_args": config["trainer_args"],
                 "not_translated": config["workbench"]["not_translated"],
                 "files": sorted(p.name for p in out.iterdir())})
    return 0


def cmd_import_checkpoint(args: argparse.Namespace) -> int:
    with Project.open(args.project) as project:
        try:
            cid = ce.import_checkpoint(project, args.folder, kind=args.kind, name=args.name, run_id=args.run)
        except (ce.ClusterExportError, ModelError) as exc:
            return _fail(str(exc))
        except OSError as exc:
            return _fail(f"cannot copy {args.folder}: {exc.strerror or exc}")
        row = next(c for c in project.checkpoints() if c["id"] == cid)
    sys.stderr.write(f"imported {args.folder} as checkpoint {cid} ({row['kind']}) of run {row['run_id']}\n")
    _print_json({"checkpoint_id": cid, "run_id": row["run_id"], "kind": row["kind"], "path": row["path"],
                 "step": row["step"], "meta": json.loads(row["meta_json"] or "{}")})
    return 0


def cmd_eval_text(args: argparse.Namespace) -> int:
    """``eval-text``: the ``text_eval`` job; bad inputs are refused before a run is stored."""
    flags = {f.name: getattr(args, f.name) for f in cfg.fields(TextEvalConfig)
             if getattr(args, f.name, None) is not None}
    try:
        config = cfg.from_dict(TextEvalConfig, flags)
    except cfg.ConfigError as exc:
        return _fail(f"invalid settings:\n{exc}")
    with Project.open(args.project) as project:
        try:
            resolve_inputs(config, project)
        except ValueError as exc:
            return _fail(str(exc))
    ctx = CliContext(title="eval-text")
    outcome = _execute_with_ctrl_c(get_job("text_eval"), config, ctx, args.project, config.threads)
    _report_failure(outcome)
    _print_json({"job": "text_eval", "run_id": outcome.run_id, "status": outcome.status,
                 "wall_seconds": round(outcome.wall_seconds, 3), "result": outcome.result})
    return {"completed": 0, "cancelled": 130}.get(outcome.status, 1)


#: `python -m rlhf_core demo NAME` -> the job it runs, and short flags it accepts
DEMOS = {"extrapolation": ("extrapolation_demo", {"--env": "--env-id"})}
DEMOS["ppo"] = ("ppo_demo", {})  # demo ppo --steps N --seed S --beta B [--model PATH]
DEMOS["grpo"] = ("grpo_demo", {})  # demo grpo --steps N --seed S [--model PATH]
DEMOS["cai"] = ("cai_demo", {})  # demo cai [--project P] [--model PATH] [--rl-stage dpo]


def cmd_demo(args: argparse.Namespace, rest: list[str]) -> int:
    job, aliases = DEMOS[args.name]
    rest = [aliases.get(a.split("=", 1)[0], a.split("=", 1)[0]) + ("=" + a.split("=", 1)[1] if "=" in a else "")
            if a.startswith("--") else a for a in rest]
    return cmd_run(argparse.Namespace(job=job), rest, prog=f"python -m rlhf_core demo {args.name}", flat=True)


def cmd_run(args: argparse.Namespace, rest: list[str], prog: str | None = None, flat: bool = False) -> int:
    """Run a job; ``flat`` puts the result's keys at the top level of the JSON line (demos)."""
    try:
        spec = get_job(args.job)
    except KeyError as exc:
        return _fail(str(exc.args[0]))
    config_cls = spec.config_class()
    parser = _Parser(prog=prog or f"python -m rlhf_core run {spec.name}", description=spec.description)
    parser.add_argument("--project", type=Path, help="Project folder to record the run in (optional).")
    own_threads = any(f.name == "threads" for f in cfg.fields(config_cls))  # the text trainers have a field
    if not own_threads:
        parser.add_argument("--threads", type=int, default=None, help="torch threads (default 1).")
    parser.add_argument("--config-json", type=Path, help="Read settings from a JSON file (flags override).")
    parser.add_argument("--parent-run", type=_row_id, default=None, help=argparse.SUPPRESS)  # a sweep's member
    parser.add_argument("--tensorboard", action="store_true", help="Also write the run's metrics as TensorBoard "
                        f"event files, in the run's folder under tensorboard/ (the same as {TENSORBOARD_ENV}=1).")
    cfg.add_arguments(parser, config_cls)
    job_args = parser.parse_args(rest)
    if job_args.tensorboard:
        set_tensorboard_enabled(True)
    if job_args.config_json is not None:
        try:
            base = parse_json(read_input_file(job_args.config_json, MAX_CONFIG_BYTES))
        except InputProblem as exc:
            return _fail(f"{job_args.config_json.name}: {exc}")
        if not isinstance(base, dict):
            return _fail(f"{job_args.config_json.name}: settings must be a JSON object of name: value pairs, "
                         f"got {cfg.describe_type(base)}")
    else:
        base = {}
    if not own_threads and job_args.threads is not None and not 1 <= job_args.threads <= 1024:
        return _fail("--threads must be between 1 and 1024")
    try:
        flags = {f.name: getattr(job_args, f.name) for f in cfg.fields(config_cls)
                 if getattr(job_args, f.name) is not None}
        config = cfg.from_dict(config_cls, {**base, **flags})
    except cfg.ConfigError as exc:
        return _fail(f"invalid settings:\n{exc}")
    if job_args.project is not None:
        Project.open(job_args.project).close()  # clear message now if it is not a project

    ctx = CliContext(title=spec.name)
    threads = config.threads if own_threads else job_args.threads
    outcome = _execute_with_ctrl_c(spec, config, ctx, job_args.project, threads, run=lambda: execute_job(
        spec, config, ctx, project_path=job_args.project, torch_threads=threads, parent_run_id=job_args.parent_run))
    _report_failure(outcome)
    summary = {"job": spec.name, "run_id": outcome.run_id, "status": outcome.status,
               "wall_seconds": round(outcome.wall_seconds, 3)}
    if flat and isinstance(outcome.result, dict):
        _print_json({**summary, **outcome.result})
    else:
        _print_json({**summary, "result": outcome.result})
    return {"completed": 0, "cancelled": 130}.get(outcome.status, 1)


def cmd_round(args: argparse.Namespace, rest: list[str]) -> int:
    """``round``: one round of iterated RLHF (the ``round`` job); settings not given repeat the previous
    round's; ``--continue`` finishes a round that waits for labels, as the same run."""
    parser = _Parser(prog="python -m rlhf_core round", description=get_job("round").description)
    parser.add_argument("--project", type=Path, required=True, help="Project folder.")
    parser.add_argument("--from", dest="from_policy", default=None, metavar="REF",
                        help="The policy to start from: run:ID (a round's run, or its policy step's), checkpoint:ID, "
                        "a name, or (text) a model folder; left out: round 1.")
    parser.add_argument("--continue", dest="continue_round", action="store_true",
                        help="Finish the newest round that waits for labels (or --run ID), once they are given.")
    parser.add_argument("--run", type=_row_id, default=None, help="With --continue: the round run to finish.")
    cfg.add_arguments(parser, rounds.RoundConfig)
    round_args = parser.parse_args(rest)
    given = {f.name: getattr(round_args, f.name) for f in cfg.fields(rounds.RoundConfig)
             if getattr(round_args, f.name) is not None}
    if round_args.run is not None and not round_args.continue_round:
        return _fail("--run names the round to finish with --continue; to start from a round's policy use "
                     "--from run:ID")
    with Project.open(round_args.project) as project:
        try:
            if round_args.continue_round:
                if given:
                    return _fail("--continue takes no settings: the round finishes with its own "
                                 f"(given: {', '.join('--' + k.replace('_', '-') for k in sorted(given))})")
                run_id = rounds.continuable_round(project, round_args.run)
                config = None
            else:
                config = rounds.next_round_config(project, given)
        except cfg.ConfigError as exc:
            return _fail(f"invalid settings:\n{exc}")
        except (rounds.RoundError, artefacts.ArtefactError) as exc:
            return _fail(str(exc))
    ctx = CliContext(title="round")
    if config is None:
        outcome = _execute_with_ctrl_c(None, None, ctx, round_args.project, None, run=lambda: rounds.continue_round(
            round_args.project, ctx, run_id))
    else:
        outcome = _execute_with_ctrl_c(get_job("round"), config, ctx, round_args.project, config.threads)
    _report_failure(outcome)
    result = outcome.result if isinstance(outcome.result, dict) else {}
    if result.get("status") == rounds.WAITING:
        sys.stderr.write(f"round {result.get('round')} (run {outcome.run_id}) queued {result.get('queued_pairs')} "
                         "pairs; label them in the app, then run: python -m rlhf_core round --project "
                         f"{round_args.project} --continue\n")
    _print_json({"job": "round", "run_id": outcome.run_id, "status": outcome.status,
                 "wall_seconds": round(outcome.wall_seconds, 3), "result": outcome.result})
    return {"completed": 0, "cancelled": 130}.get(outcome.status, 1)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m rlhf_core",
        description="RLHF Workbench core: projects, labels and training jobs, headless.",
    )
    parser.add_argument("--version", action="version", version=f"rlhf-workbench {__version__}")
    parser.add_argument("--tensorboard", action="store_true",
                        help=f"Every run this command stores also writes TensorBoard event files, in the run's "
                        f"folder under tensorboard/ (the same as {TENSORBOARD_ENV}=1).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("new-project", help="Create an empty project folder.")
    p.add_argument("path", type=Path)
    p.add_argument("--name", default=None)
    p = sub.add_parser("info", help="Show a project's counts, schema version and runs (JSON).")
    p.add_argument("path", type=Path)
    sub.add_parser("jobs", help="List the jobs that `run` can start.")
    p = sub.add_parser("run", help="Run a job: `run JOB [--project P] [settings]`; `run JOB --help` lists settings.",
                       add_help=False)
    p.add_argument("job")
    p = sub.add_parser("demo", help="End-to-end demos: `demo extrapolation --env Pendulum-v1 --seed 0 "
                       "[--method drex]`; `demo extrapolation --help` lists every setting.", add_help=False)
    p.add_argument("name", choices=sorted(DEMOS))
    p = sub.add_parser("metrics", help="Print a run's metrics as JSON.")
    p.add_argument("path", type=Path)
    p.add_argument("--run", type=_row_id, required=True)
    p = sub.add_parser("compare", help="Runs side by side as JSON: `compare --project P --runs 3 5 7` (settings, "
                       "marked where they differ; results' numbers; each metric's final value).")
    p.add_argument("--project", type=Path, required=True)
    p.add_argument("--runs", type=_row_id, nargs="+", required=True)
    p = sub.add_parser("export-metrics", help="A run's metrics as CSV or JSON: `export-metrics --project P --run ID "
                       "--format csv|json [--out FILE]` (stdout without --out).")
    p.add_argument("--project", type=Path, required=True, help="Project folder.")
    p.add_argument("--run", type=_row_id, required=True, help="The run whose metrics to export.")
    p.add_argument("--format", choices=list(metrics_export.FORMATS), required=True,
                   help="csv: one row per value (run,step,key,unit,value,wall_time); json: one series per key.")
    p.add_argument("--out", type=Path, default=None, help="The file to write (replaced whole); default: stdout.")
    p = sub.add_parser("report", help="A run report: `report --project P --run ID --out DIR` writes one "
                       "self-contained HTML page (plots, final metrics, settings, data counts, samples, versions) "
                       "that opens in a browser and prints to PDF (JSON last line).")
    p.add_argument("--project", type=Path, required=True, help="Project folder.")
    p.add_argument("--run", type=_row_id, required=True, help="The run to report.")
    p.add_argument("--out", type=Path, required=True, help="The folder to write run-ID-report.html into (made if "
                   "missing).")
    p = sub.add_parser("prompts", help="Prompt sets: `prompts list`; `prompts import --project P FILE` (JSONL/CSV).")
    psub = p.add_subparsers(dest="prompts_command", metavar="PROMPTS_COMMAND")
    psub.add_parser("list", help="List the built-in prompt sets (JSON).")
    pi = psub.add_parser("import", help="Add prompts from a JSONL/CSV file (or a built-in set) to a project; "
                         "a file with any bad line adds nothing.")
    pi.add_argument("--project", type=Path, required=True)
    pi.add_argument("file", help="A .jsonl or .csv file, or with --builtin the name of a built-in set.")
    pi.add_argument("--builtin", action="store_true", help="FILE names a built-in set (see `prompts list`).")
    pi.add_argument("--category", default="", help="With --builtin: only this category (comma-separated).")
    pi.add_argument("--keep-duplicates", action="store_true",
                    help="Add prompts even if the same text and category are already in the project.")
    p = sub.add_parser("export", help="Export the project's text preferences: `export --project P --format trl "
                       "--out F.jsonl [--conversational] [--source human,synthetic,ai]`; clip and trajectory labels: "
                       "`--format comparisons --out F.jsonl`; trajectories as a Minari dataset: `--format minari "
                       "--env-id ENV --dataset-id NAMESPACE/NAME-v0`.")
    p.add_argument("--project", type=Path, required=True)
    p.add_argument("--format", choices=["trl", "comparisons", "minari"], required=True,
                   help="trl: TRL preference JSONL; comparisons: clip/trajectory comparisons and rankings as JSONL; "
                   "minari: a Minari dataset in Minari's data folder (MINARI_DATASETS_PATH).")
    p.add_argument("--out", type=Path, default=None, help="trl, comparisons: the .jsonl file to write (replaced "
                   "atomically).")
    p.add_argument("--env-id", default="", help="minari: the environment whose trajectories to export.")
    p.add_argument("--dataset-id", default="", help="minari: the new dataset's id, namespace/name-vN "
                   "(minari.load_dataset finds it by this id).")
    p.add_argument("--conversational", action="store_true",
                   help="Rows as chat messages (user prompt, assistant answers) instead of plain strings.")
    p.add_argument("--source", default="", help="Only labels of these sources, comma-separated "
                   "(human, synthetic, ai, auto); default: all.")
    p = sub.add_parser("import", help="Import a TRL preference (or unpaired prompt/completion/label) JSONL "
                       "file: `import --project P --format trl F.jsonl`; clip labels: `--format comparisons F.jsonl`; "
                       "a local Minari dataset as demonstrations: `--format minari NAMESPACE/NAME-v0 [--ranking "
                       "return]`. Bad input imports nothing.")
    p.add_argument("--project", type=Path, required=True, help="Project folder (created if it does not exist; "
                   "comparisons: an existing project holding the trajectories).")
    p.add_argument("--format", choices=["trl", "comparisons", "minari"], required=True,
                   help="trl: TRL preference JSONL; comparisons: JSONL written by `export --format comparisons`; "
                   "minari: a dataset id in Minari's data folder (never downloaded).")
    p.add_argument("--ranking", choices=["none", "return", "order"], default="none",
                   help="minari: also rank the episodes for T-REX (the reward_model job's rankings source): by "
                   "return, or in the dataset's order (first = worst); default none.")
    p.add_argument("--env-id", default="", help="minari: the environment, when the dataset names none (or names "
                   "yours without its module: your_module:YourEnv-v0).")
    p.add_argument("--source", choices=["human", "synthetic", "ai", "auto"], default="human",
                   help="trl: source recorded on the imported comparisons (default human).")
    p.add_argument("file", help="The file to import (minari: the dataset id).")
    p = sub.add_parser("export-cluster", help="Export a DPO / GRPO / reward-model run for a GPU cluster (TRL under "
                       "accelerate): `export-cluster --project P --algo dpo --out DIR [--model M] [--include-model]`.")
    p.add_argument("--project", type=Path, required=True)
    p.add_argument("--algo", choices=["dpo", "grpo", "reward_model"], required=True)
    p.add_argument("--out", type=Path, required=True, help="Folder to write (new, empty, or an earlier export).")
    p.add_argument("--run", type=_row_id, default=None, help="Take the settings of this run of the project.")
    p.add_argument("--model", default="", help="Starting model: a local folder, a hub id or a text_policy checkpoint "
                   "id (default: the run's model, else the bundled SmolLM2-135M-Instruct as its hub id).")
    p.add_argument("--include-model", action="store_true", help="Copy the model folder into the export (for the "
                   "default model: the converted weights the workbench uses).")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="Override a setting (workbench or TRL name; VALUE read as JSON when it parses). Repeatable.")
    p = sub.add_parser("import-checkpoint", help="Bring a trained model folder (e.g. a cluster export's output/) into "
                       "a project: `import-checkpoint --project P --kind policy|reward_model FOLDER`.")
    p.add_argument("--project", type=Path, required=True)
    p.add_argument("--kind", choices=["policy", "reward_model"], required=True,
                   help="policy: a causal LM folder; reward_model: a TRL reward model (converted) or a workbench one.")
    p.add_argument("--name", default="", help="A name for the imported model (default: from the folder).")
    p.add_argument("--run", type=_row_id, default=None, help="Attach the checkpoint to this run instead of a new "
                   "'import' run.")
    p.add_argument("folder", type=Path)
    p = sub.add_parser("artefacts", aliases=["artifacts"], help="The project's models by name (JSON): "
                       "`artefacts --project P [--kind K]`; `--rename ID NAME` names one. Settings that take a "
                       "model accept run:ID, checkpoint:ID, a name, or a folder.")
    p.add_argument("--project", type=Path, required=True, help="Project folder.")
    p.add_argument("--kind", choices=sorted(artefacts.KIND_WORDS), default=None, help="Only artefacts of this kind.")
    p.add_argument("--rename", nargs=2, metavar=("ID", "NAME"), help="Give artefact ID this name.")
    p = sub.add_parser("resume", help="Continue a cancelled, failed or interrupted run from its last saved state "
                       "(`resume --project P --run ID`), as the same run (JSON last line).")
    p.add_argument("--project", type=Path, required=True, help="Project folder.")
    p.add_argument("--run", type=_row_id, required=True, help="The run to continue.")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: the run's setting or 1).")
    sub.add_parser("round", help="One round of iterated RLHF: `round --project P --from run:ID [--labeller "
                   "human|oracle|ai]` samples, queues pairs, labels, refits the reward model and trains the next "
                   "policy (JSON last line); `round --project P --continue` finishes a round waiting for labels; "
                   "`round --help` lists every setting.", add_help=False)
    p = sub.add_parser("sweep", help="Run a job over seeds and a grid of settings in worker processes: `sweep JOB "
                       "--project P --seeds 0 1 2 [--grid name=v1,v2] [--set name=v] [--workers N] [--engine local|ray "
                       "[--address ADDR]]`; each setting's "
                       "final metrics as IQM and mean with bootstrap 95 %% intervals (JSON last line).")
    p.add_argument("job", help="The job to sweep (see `jobs`).")
    p.add_argument("--project", type=Path, required=True, help="Project folder (the sweep and its runs are stored).")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="Seeds (default 0 1 2).")
    p.add_argument("--grid", action="append", metavar="NAME=V1,V2", help="A setting to vary (repeatable).")
    p.add_argument("--set", action="append", metavar="NAME=V", help="A setting every run shares (repeatable).")
    p.add_argument("--workers", type=int, default=0, help="Runs at once (default: one per core).")
    p.add_argument("--threads", type=int, default=0, help="Torch threads per run (default: the cores shared "
                   "among the workers).")
    p.add_argument("--metric", action="append", metavar="KEY", help="Aggregate only these metric keys.")
    p.add_argument("--engine", choices=("local", "ray"), default="local", help="local: worker processes here; "
                   "ray: Ray tasks that return their runs to this process (needs the optional extra `ray`).")
    p.add_argument("--address", default=None, metavar="ADDR", help="With --engine ray: the cluster to use "
                   "(host:6379, ray://host:10001 or auto); left out: a local Ray with the core budget.")
    p = sub.add_parser("demo-project", help="Create (or check) the built-in demo project.")
    p.add_argument("path", type=Path, nargs="?", default=None)
    p = sub.add_parser("eval-text", help="Evaluate a text policy: `eval-text --project P --policy-run ID|"
                       "--policy-folder F [--reward-run ID] [--k 8] [--heldout-tasks 16 | --prompt-source project [--category C] "
                       "[--prompt-ids 1,2]]`: pass@1, cons@k, pass@k, win rate (JSON last line).")
    p.add_argument("--project", type=Path, required=True, help="Project folder (the evaluation is stored as a run).")

    cfg.add_arguments(p, TextEvalConfig)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; every failure ends as ``error: ...`` on stderr and a non-zero exit code."""
    _setup_logging()
    try:
        return _main(argv)
    except SystemExit as exc:  # --help, --version
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    except UsageError as exc:
        return _fail(str(exc))
    except ProjectError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except (sqlite3.Error, OSError) as exc:
        friendly = friendly_db_error(exc)
        if friendly is not None:
            return _fail(str(friendly), 1)
        log.error("command %s failed:\n%s", argv, traceback.format_exc())
        if isinstance(exc, OSError) and exc.strerror:
            where = f"{exc.filename}: " if exc.filename else ""
            return _fail(f"{where}{exc.strerror}", 1)
        return _fail(f"the project database reported a problem ({exc}); details in {_log_path()}", 1)
    except Exception as exc:  # noqa: BLE001 - a person gets a sentence, the log gets the traceback

        log.error("command %s failed:\n%s", argv, traceback.format_exc())
        return _fail(f"internal error: {failure_message(exc)} (details in {_log_path()})", 70)


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command is None:
        if rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        parser.print_help()
        return 0
    if rest and args.command not in ("run", "demo", "round"):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    _check_text_args(args, skip=("file", "model", "policy_folder"))
    if args.command in ("run", "demo", "round"):
        bad = next((a for a in rest if text_problem(a)), None)
        if bad is not None:
            raise UsageError(f"the argument {bad.encode('utf-8', 'backslashreplace').decode()[:60]!r} is not valid "
                             "UTF-8 text")
    handlers = {"new-project": cmd_new_project, "info": cmd_info, "jobs": cmd_jobs,
                "metrics": cmd_metrics, "compare": cmd_compare, "demo-project": cmd_demo_project, "prompts": cmd_prompts,
                "export": cmd_export, "import": cmd_import}
    handlers.update({"export-cluster": cmd_export_cluster, "import-checkpoint": cmd_import_checkpoint})
    handlers["eval-text"] = cmd_eval_text
    handlers["artefacts"] = handlers["artifacts"] = cmd_artefacts
    handlers["resume"] = cmd_resume
    handlers["sweep"] = cmd_sweep
    handlers["export-metrics"] = cmd_export_metrics
    handlers["report"] = cmd_report
    if args.tensorboard:
        set_tensorboard_enabled(True)
    if args.command == "run":
        return cmd_run(args, rest)
    if args.command == "round":
        return cmd_round(args, rest)
    if args.command == "demo":
        return cmd_demo(args, rest)
    return handlers[args.command](args)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
