"""The Ray engine of sweeps: each member run is a Ray task; the driver alone writes the project.

The driver takes a snapshot of the project's database (one SQLite backup, put into Ray's object store once)
and submits one task per member. A task restores the snapshot as a scratch project on its worker, so the job
reads the project's labels, prompts, items and checkpoint rows under their own ids; where the worker sees
the project folder at the same path (this machine, or storage every node mounts there), the scratch project
links the files that existed at the snapshot (weights, trajectory arrays) instead of copying them. The job
runs there as an ordinary run (``execute_job``), and the task RETURNS the run as a
:class:`~rlhf_core.store.run_copy.RunBundle`: its rows, metrics, samples, checkpoints, items and files as bytes.
The driver imports each bundle as a child run of the sweep (:func:`~rlhf_core.store.run_copy.import_run`),
so a member appears, complete, when it has finished. Cancel calls ``ray.cancel`` on every task: a running
job stops at its next step and comes back as a cancelled run; a task that had not started leaves no run.

``ray`` is an optional extra: it is imported here only, inside :func:`ray_module`, when a sweep asks for it.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import shutil
import signal
import sqlite3
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf_core import config as cfg
from rlhf_core.jobs import JobContext, execute_job, failure_message, get_job
from rlhf_core.store import Project
from rlhf_core.store.project import DB_NAME, SUBFOLDERS
from rlhf_core.store.run_copy import RunBundle, SharedIds, export_run, import_run

RAY_MISSING = ("The Ray engine needs Ray, which is not installed here: install the optional extra: "
               "pip install 'rlhf-workbench[ray]'.")
POLL_SECONDS = 0.2


class RayEngineError(ValueError):
    """Ray is missing or unreachable; ``str(error)`` says so in one sentence."""


def ray_available() -> bool:
    return importlib.util.find_spec("ray") is not None


def ray_module():
    """The ``ray`` package, or :class:`RayEngineError` saying how to install it."""
    try:
        import ray  # the optional extra: never at module level, never in the base install or the installer
    except ImportError:
        raise RayEngineError(RAY_MISSING) from None
    return ray


# ------------------------------------------------------------------------------------------ the worker side
@dataclass
class ProjectSnapshot:
    """What a member's scratch project starts from: the database, and the project's folder and top-level
    file names at that moment (to link where the worker can see them)."""

    database: bytes
    folder: str
    entries: dict[str, list[str]]
    shared: SharedIds

    @classmethod
    def of(cls, project: Project) -> ProjectSnapshot:
        # the names first: every run folder listed then has its run in the database copied after
        entries = {sub: sorted(p.name for p in (project.folder / sub).iterdir()) if (project.folder / sub).is_dir()
                   else [] for sub in SUBFOLDERS}
        memory = sqlite3.connect(":memory:")
        try:
            project.conn.backup(memory)
            shared = SharedIds.of(memory)
            data = memory.serialize()
        finally:
            memory.close()
        return cls(bytes(data), str(project.folder), entries, shared)

    def restore(self, folder: Path) -> None:
        """A scratch project at ``folder`` (a new folder): the database, and links to the project's files."""
        folder.mkdir(parents=True)
        (folder / DB_NAME).write_bytes(self.database)  # a new file nobody has open
        source = Path(self.folder)
        visible = source.is_dir()
        for sub in SUBFOLDERS:
            (folder / sub).mkdir()
            if not visible:
                continue
            for name in self.entries.get(sub, []):
                match = re.fullmatch(r"run-(\d+)", name)
                if match and int(match.group(1)) > self.shared.runs:
                    continue  # a later run's folder: the scratch project may make its own under that name
                if (source / sub / name).exists():
                    try:
                        (folder / sub / name).symlink_to(source / sub / name)
                    except OSError:  # no links here (some Windows set-ups): the job reads what the copy has
                        pass


def run_member(job: str, settings: dict, snapshot: ProjectSnapshot, threads: int) -> RunBundle:
    """One member, in a Ray worker: the job in a scratch project restored from ``snapshot``; returns its run.
    ``ray.cancel`` raises KeyboardInterrupt here: the job is cancelled at its next step and still returned."""
    try:  # a driver started in the background (nohup, `&`) passes SIGINT ignored on: ray.cancel would not land
        signal.signal(signal.SIGINT, signal.default_int_handler)
    except ValueError:  # only a process's main thread may set a handler; elsewhere it stays as inherited
        pass
    scratch = Path(tempfile.mkdtemp(prefix="rlhf-sweep-member-"))
    try:
        folder = scratch / "member.rlhf"
        snapshot.restore(folder)
        spec = get_job(job)
        config = cfg.from_dict(spec.config_class(), settings)
        own_threads = getattr(config, "threads", None)  # the text trainers have a threads setting
        ctx = JobContext()
        box: dict[str, Any] = {}
        done = threading.Event()  # not Thread.join: a KeyboardInterrupt inside join() can leave is_alive() False

        def work() -> None:
            try:
                box["outcome"] = execute_job(spec, config, ctx, project_path=folder,
                                             torch_threads=own_threads if own_threads else threads)
            finally:
                done.set()

        threading.Thread(target=work, name="sweep-member", daemon=True).start()
        try:
            while not done.wait(POLL_SECONDS):
                pass
        except KeyboardInterrupt:
            ctx.cancel()
            while not done.wait(POLL_SECONDS):
                pass
        outcome = box["outcome"]
        if outcome.run_id is None:
            raise RuntimeError(outcome.message or "the run could not be created")
        with Project.open(folder, check=False) as project:
            bundle = export_run(project, outcome.run_id, shared=snapshot.shared, inline=True)
        bundle.message = outcome.message or ""
        return bundle
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# ------------------------------------------------------------------------------------------ the driver side
def connect(address: str, cpus: int) -> bool:
    """Connect to the cluster at ``address``, or start a local Ray with ``cpus`` CPUs; False when this
    process was connected already (then it stays connected afterwards)."""
    ray = ray_module()
    if ray.is_initialized():
        return False
    try:
        if address:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        else:
            ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    except Exception as exc:  # noqa: BLE001 - Ray raises many kinds (ConnectionError, RuntimeError, ValueError)
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        raise RayEngineError(f"Could not start {where}: {failure_message(exc).splitlines()[0]}") from None
    return True


def run_members(job: str, members: Sequence[Any], ctx: JobContext, *, address: str = "", cpus: int = 1,
                threads: int = 1, limit: int = 0, on_done: Callable[[Any], None] | None = None) -> None:
    """Run ``members`` (each with ``settings``, ``seed``; their ``run_id``, ``status`` and ``error`` are set)
    as Ray tasks and import each finished run into the sweep's project as a child of ``ctx.run_id``.
    ``limit``: tasks in flight at once (0: all; Ray queues them for free CPUs)."""
    ray = ray_module()
    project = ctx.project()
    snapshot = ProjectSnapshot.of(project)
    started = connect(address, cpus)
    refs: dict[Any, Any] = {}
    finished = False
    try:
        snapshot_ref = ray.put(snapshot)
        task = ray.remote(num_cpus=1, max_retries=0)(run_member)
        pending = list(members)
        cancelling = False
        while pending or refs:
            while pending and not cancelling and (not limit or len(refs) < limit):
                member = pending.pop(0)
                refs[task.remote(job, {**member.settings, "seed": member.seed}, snapshot_ref, threads)] = member
                member.status = "running"
            ready, _ = ray.wait(list(refs), num_returns=1, timeout=POLL_SECONDS) if refs else ([], [])
            for ref in ready:
                member = refs.pop(ref)
                _land(ray, ref, member, project, ctx, job)
                if on_done is not None:
                    on_done(member)
            if ctx.cancelled and not cancelling:
                cancelling = True
                pending.clear()
                for ref in refs:
                    ray.cancel(ref)
        finished = True
    finally:
        if not finished:  # an error or a second Ctrl-C in the driver: stop the tasks at once
            for ref in refs:
                ray.cancel(ref, force=True)
        if started:
            ray.shutdown()


def _land(ray, ref, member, project: Project, ctx: JobContext, job: str) -> None:
    """A finished task: import its run; a task that failed as a task (not as a run) is stored as a failed run."""
    try:
        bundle = ray.get(ref)
    except ray.exceptions.TaskCancelledError:
        member.status = "cancelled"  # cancelled before it ran: no run, as a local member that never started
        return
    except ray.exceptions.RayError as exc:
        cause = getattr(exc, "cause", None)
        member.status = "failed"
        member.error = failure_message(cause) if isinstance(cause, BaseException) else str(exc).splitlines()[0]
        spec = get_job(job)
        config = cfg.to_dict(cfg.from_dict(spec.config_class(), {**member.settings, "seed": member.seed}))
        member.run_id = project.create_run(job, config, status="running", parent_run_id=ctx.run_id)
        project.finish_run(member.run_id, "failed", error=f"The Ray task failed: {member.error}")
        return
    member.run_id = import_run(project, bundle, parent_run_id=ctx.run_id)
    member.status = bundle.status
    member.error = bundle.message
