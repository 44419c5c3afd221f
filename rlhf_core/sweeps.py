"""Sweeps: one job over several seeds and a grid of settings, run in worker processes, reported as the
field reports results (IQM with bootstrap 95 % intervals per setting; :mod:`rlhf_core.analysis.aggregate`).

A sweep is a run of kind ``sweep`` whose members are ordinary runs of the job with ``parent_run_id`` =
the sweep. Each member is a ``python -m rlhf_core run`` process (at most one per core, one torch thread
each unless more cores are free), which writes its own run into the project and holds its run lease, so
the app follows members live like any run started from a terminal. Cancel asks each running member to stop
(SIGINT: a cooperative cancel) and starts no more.

With ``engine="ray"`` the members are Ray tasks instead, on this machine or a cluster (``address``); the driver
imports each finished run into the project, the one writer (:mod:`rlhf_core.sweeps_ray`).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlhf_core import config as cfg
from rlhf_core.analysis.aggregate import Band, curve_band, final_value, summarise
from rlhf_core.config import param
from rlhf_core.jobs import JobCancelled, JobContext, get_job
from rlhf_core.store import Project
from rlhf_core.sweeps_ray import RayEngineError, ray_module, run_members

SWEEP_KIND = "sweep"
ENGINES = ("local", "ray")
#: jobs whose work is labels, which the Ray engine does not bring back (runs only): local engine only
LABELLING_JOBS = ("round", "cai_demo")
#: members a sweep may have (a guard against a grid typed by mistake)
MAX_MEMBERS = 500


class SweepError(ValueError):
    """A sweep that cannot be run as given; ``str(error)`` says why."""


@dataclass
class SweepConfig:
    job: str = param("synthetic_preferences", "The job to sweep (any job of `python -m rlhf_core jobs`).")
    seeds: list = param([0, 1, 2], "Seeds; each setting of the grid runs once per seed.", each="seed")
    grid: dict = field(default_factory=dict, metadata={"help": "Settings to vary: {name: [values]}.",
                                                       "label": "Grid"})
    settings: dict = field(default_factory=dict, metadata={"help": "Settings every member shares.",
                                                           "label": "Settings"})
    workers: int = param(0, "Member runs at once (0: one per core); never more than the cores.", min=0, max=256)
    threads: int = param(0, "Torch threads per member (0: the cores shared among the workers).", min=0, max=1024)
    metrics: list = param([], "Metric keys to aggregate (empty: every key the members log).", each="key")
    engine: str = param("local", "Where members run: worker processes here, or Ray tasks (here or on a cluster).",
                        choices=ENGINES)
    address: str = param("", "Ray engine: the cluster's address (empty: a local Ray with the core budget).")

    def check(self) -> list[str]:
        try:
            plan_sweep(self.job, self.seeds, self.grid, self.settings)
            check_engine(self.job, self.engine, self.address)
        except SweepError as exc:
            return [str(exc)]
        return []


@dataclass
class Member:
    settings: dict
    seed: int
    run_id: int | None = None
    status: str = "waiting"
    error: str = ""


@dataclass
class Plan:
    job: str
    members: list[Member] = field(default_factory=list)


def parse_grid(items: Sequence[str]) -> dict[str, list[str]]:
    """``["learning_rate=1e-3,1e-4", "beta=0.1"]`` -> ``{"learning_rate": ["1e-3", "1e-4"], "beta": ["0.1"]}``."""
    grid: dict[str, list[str]] = {}
    for item in items:
        name, sep, values = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not name or not values.strip():
            raise SweepError(f"{item!r}: a grid entry is NAME=V1,V2,... (e.g. learning_rate=1e-3,1e-4)")
        grid[name] = [v.strip() for v in values.split(",") if v.strip()]
    return grid


def plan_sweep(job: str, seeds: Sequence[int], grid: Mapping[str, Sequence[Any]] | None = None,
               settings: Mapping[str, Any] | None = None) -> Plan:
    """The member settings: the grid's product x the seeds, each checked against the job's config."""
    try:
        spec = get_job(job)
    except KeyError as exc:
        raise SweepError(str(exc.args[0])) from None
    config_cls = spec.config_class()
    infos = {f.name: f for f in cfg.fields(config_cls)}
    if "seed" not in infos:
        raise SweepError(f"The job {job!r} has no seed setting, so it cannot run over seeds.")
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise SweepError("Give one or more different seeds.")
    grid = dict(grid or {})
    for name in [*grid, *(settings or {})]:
        if name not in infos:
            raise SweepError(f"The job {job!r} has no setting {name!r}.")
        if name == "seed":
            raise SweepError("The seed is swept by the seeds list, not by the grid or the settings.")
    typed = {name: [_typed(infos[name], v) for v in values] for name, values in grid.items()}
    names = sorted(typed)
    points = [dict(zip(names, combo)) for combo in itertools.product(*(typed[n] for n in names))] or [{}]
    if len(points) * len(seeds) > MAX_MEMBERS:
        raise SweepError(f"The sweep would have {len(points) * len(seeds)} runs; the limit is {MAX_MEMBERS}.")
    shared = {k: _typed(infos[k], v) for k, v in (settings or {}).items()}
    plan = Plan(job)
    for point in points:
        for seed in seeds:
            member = {**shared, **point, "seed": seed}
            try:
                cfg.from_dict(config_cls, member)
            except cfg.ConfigError as exc:
                raise SweepError(f"The setting {point or shared} is not valid for {job}: {exc}") from None
            plan.members.append(Member(settings={**shared, **point}, seed=seed))
    return plan


def check_engine(job: str, engine: str, address: str = "") -> None:
    """Refuse an engine that cannot run ``job`` as asked (Ray needs its extra; labels stay local)."""
    if address and engine != "ray":
        raise SweepError("--address names a Ray cluster: use it with --engine ray.")
    if engine != "ray":
        return
    spec = get_job(job)
    if spec.group == "label" or spec.name in LABELLING_JOBS:
        raise SweepError(f"The Ray engine brings runs back, not labels: sweep {job} with the local engine.")
    try:
        ray_module()
    except RayEngineError as exc:
        raise SweepError(str(exc)) from None


def _typed(info: cfg.FieldInfo, value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        if info.type is bool:
            if value.lower() in ("true", "1", "yes"):
                return True
            if value.lower() in ("false", "0", "no"):
                return False
            raise ValueError
        if info.type is int:
            return int(value)
        if info.type is float:
            return float(value)
    except ValueError:
        raise SweepError(f"{info.name}: {value!r} is not a {info.type.__name__}") from None
    if info.type is list:
        raise SweepError(f"{info.name} is a list setting; it cannot be swept.")
    return value


def worker_count(requested: int, members: int) -> int:
    cores = os.cpu_count() or 1
    return max(1, min(requested or cores, cores, members))


def run_sweep(config: SweepConfig, ctx: JobContext) -> dict:
    """The ``sweep`` job: members as worker processes, then the aggregate per setting."""
    if ctx.project_path is None or ctx.run_id is None:
        raise SweepError("A sweep writes its member runs into a project: run it with a project.")
    plan = plan_sweep(config.job, config.seeds, config.grid, config.settings)
    check_engine(config.job, config.engine, config.address)
    workers = worker_count(config.workers, len(plan.members))
    threads = config.threads or max(1, (os.cpu_count() or 1) // workers)
    if config.engine == "ray":
        _run_on_ray(config, plan, ctx, workers, threads)
        ctx.raise_if_cancelled()
        return aggregate(ctx.project(), ctx.run_id, config.metrics)
    pending = list(plan.members)
    running: dict[subprocess.Popen, tuple[Member, Path]] = {}
    scratch = Path(tempfile.mkdtemp(prefix="sweep-"))
    done = 0
    total = len(plan.members)
    pace = SweepPace()
    last_report = 0.0
    ctx.log(f"{total} runs of {config.job}, {workers} at a time, {threads} torch thread(s) each")
    try:
        while pending or running:
            while pending and len(running) < workers and not ctx.cancelled:
                member = pending.pop(0)
                folder = scratch / f"member-{total - len(pending)}"
                proc = _start(ctx, config.job, member, threads, folder)
                running[proc] = (member, folder)
                pace.started(proc)
            for proc in [p for p in running if p.poll() is not None]:
                member, folder = running.pop(proc)
                _finish(ctx, member, proc, folder)
                pace.finished(proc)
                done += 1
                last_report = 0.0  # report the finished run now
            now = time.monotonic()
            if now - last_report >= 2.0:
                last_report = now
                ctx.progress(pace.fraction(total), message=f"{done}/{total} runs finished")
            if ctx.cancelled:
                for proc in running:
                    if proc.poll() is None:
                        proc.send_signal(signal.SIGINT)
                pending.clear()
            time.sleep(0.2)
    finally:
        for proc in running:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        shutil.rmtree(scratch, ignore_errors=True)
    ctx.raise_if_cancelled()
    return aggregate(ctx.project(), ctx.run_id, config.metrics)


class SweepPace:
    """How far a sweep is: the members started and not finished count by their time so far against the
    mean wall of the finished ones (capped below one run). Members finish in bursts when several run at once; a
    count of finished runs alone then makes the time left swing from far too long to far too short."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.starts: dict[Any, float] = {}
        self.walls: list[float] = []

    def started(self, key) -> None:
        self.starts[key] = self.clock()

    def finished(self, key) -> None:
        self.walls.append(self.clock() - self.starts.pop(key))

    def fraction(self, total: int) -> float:
        """Finished members plus the running ones' share, of ``total``."""
        done = len(self.walls)
        if not total or not done:
            return 0.0
        mean = sum(self.walls) / done
        now = self.clock()
        partial = sum(min(0.95, (now - start) / mean) for start in self.starts.values())
        return min(1.0, (done + partial) / total)


def _run_on_ray(config: SweepConfig, plan: Plan, ctx: JobContext, workers: int, threads: int) -> None:
    """Members as Ray tasks: a local Ray gets the core budget (``workers`` CPUs, ``threads`` torch threads per
    member); on a cluster Ray schedules them (one CPU each, one torch thread unless ``threads`` says more;
    ``workers``, when given, caps the tasks in flight)."""
    total, done = len(plan.members), 0
    where = f"the Ray cluster at {config.address}" if config.address else f"a local Ray with {workers} CPUs"
    ctx.log(f"{total} runs of {config.job} as Ray tasks on {where}")

    def on_done(member: Member) -> None:
        nonlocal done
        done += 1
        if member.status != "completed":
            ctx.log(f"seed {member.seed} {member.settings or ''}: {member.status} {member.error}".strip())
        ctx.progress(done, total, f"{done}/{total} runs finished")

    on_cluster = bool(config.address)
    run_members(config.job, plan.members, ctx, address=config.address, cpus=workers,
                threads=(config.threads or 1) if on_cluster else threads,
                limit=config.workers if on_cluster else 0, on_done=on_done)


def _start(ctx: JobContext, job: str, member: Member, threads: int, folder: Path) -> subprocess.Popen:
    """A member as ``python -m rlhf_core run``; its output goes to files (a pipe nobody reads could fill)."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({**member.settings, "seed": member.seed}))
    args = [sys.executable, "-m", "rlhf_core", "run", job, "--project", str(ctx.project_path),
            "--config-json", str(folder / "config.json"), "--parent-run", str(ctx.run_id)]
    if "threads" not in member.settings:
        args += ["--threads", str(threads)]
    with open(folder / "out", "w") as out, open(folder / "err", "w") as err:
        proc = subprocess.Popen(args, stdout=out, stderr=err, start_new_session=True)
    member.status = "running"
    return proc


def _finish(ctx: JobContext, member: Member, proc: subprocess.Popen, folder: Path) -> None:
    out = (folder / "out").read_text(errors="replace").strip()
    err = (folder / "err").read_text(errors="replace").strip()
    try:
        summary = json.loads(out.splitlines()[-1]) if out else {}
    except ValueError:
        summary = {}
    member.run_id = summary.get("run_id")
    member.status = summary.get("status") or ("failed" if proc.returncode else "completed")
    if member.status != "completed":
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        member.error = lines[-1] if lines else f"exit code {proc.returncode}"
        ctx.log(f"seed {member.seed} {member.settings or ''}: {member.status} {member.error}".strip())


def aggregate(project: Project, sweep_run_id: int, keys: Sequence[str] = ()) -> dict:
    """Per setting of the grid: the member runs and each metric's final value summarised over seeds."""
    members = [r for r in project.runs() if r.get("parent_run_id") == sweep_run_id]
    sweep = project.get_run(sweep_run_id) or {"config": {}}
    grid_names = sorted((sweep["config"].get("grid") or {}).keys())
    groups: dict[str, dict] = {}
    for run in members:
        point = {n: run["config"].get(n) for n in grid_names}
        label = json.dumps(point, sort_keys=True)
        group = groups.setdefault(label, {"settings": point, "runs": [], "seeds": [], "statuses": [],
                                          "_finals": {}})
        group["runs"].append(run["id"])
        group["seeds"].append(run["config"].get("seed"))
        group["statuses"].append(run["status"])
        if run["status"] != "completed":
            continue
        metrics = project.metrics(run["id"])
        for key in keys or metrics:
            value = final_value(metrics, key)
            if value is not None:
                group["_finals"].setdefault(key, []).append(value)
    out = []
    for group in groups.values():
        finals = group.pop("_finals")
        group["final"] = {k: summarise(v).as_dict() for k, v in sorted(finals.items())}
        out.append(group)
    completed = sum(s == "completed" for g in out for s in g["statuses"])
    return {"members": sum(len(g["runs"]) for g in out), "completed": completed, "groups": out}


@dataclass
class SweepGroup:
    """One setting of a sweep's grid, for one metric: its members, the summary of their final values
    (:func:`aggregate`'s, None when no member finished) and their curves as a mean with a bootstrap band."""

    settings: dict
    runs: list[int]
    seeds: list[int]
    statuses: list[str]
    summary: dict | None
    band: Band
    finals: dict[int, float]  # completed member run -> its final value

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.settings.items()) or "all runs"


@dataclass
class SweepView:
    sweep: dict  # the sweep's run row
    key: str | None  # the metric shown; None when no member logged any
    keys: list[str]  # every metric key the members log
    groups: list[SweepGroup]


def sweep_view(project: Project, sweep_id: int, key: str | None = None) -> SweepView:
    """What the app's sweep view shows for ``key`` (default: the sweep's first aggregated key, else the first
    logged): per setting the member runs, :func:`aggregate`'s summary and ``curve_band`` over the
    completed members' curves."""
    sweep = project.get_run(sweep_id)
    if sweep is None or sweep["kind"] != SWEEP_KIND:
        raise SweepError(f"Run {sweep_id} is not a sweep.")
    members = [r for r in project.runs() if r.get("parent_run_id") == sweep_id]
    keys = sorted({k for r in members if r["status"] == "completed" for k in project.metric_keys(r["id"])})
    wanted = [k for k in (sweep["config"].get("metrics") or []) if k in keys]
    if key not in keys:
        key = (wanted or keys or [None])[0]
    result = aggregate(project, sweep_id, [key] if key else [])
    status = {r["id"]: r["status"] for r in members}
    groups = []
    for group in result["groups"]:
        done = [r for r in group["runs"] if status[r] == "completed"]
        series = [project.metrics(r).get(key, ([], [])) for r in done] if key else []
        finals = {r: float(values[-1]) for r, (_, values) in zip(done, series) if len(values)}
        groups.append(SweepGroup(settings=group["settings"], runs=group["runs"], seeds=group["seeds"],
                                 statuses=group["statuses"], summary=group["final"].get(key) if key else None,
                                 band=curve_band(series), finals=finals))
    return SweepView(sweep=sweep, key=key, keys=keys, groups=groups)

