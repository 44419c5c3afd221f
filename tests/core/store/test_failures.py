"""A failed job in words (``describe_failure``): each common cause gets its sentence and what to do, from the
live exception and again from the run's stored traceback (what the app reads after a restart)."""

from __future__ import annotations

import errno
import sqlite3
from dataclasses import dataclass

import pytest

from rlhf_core import config as cfg
from rlhf_core.config import param
from rlhf_core.jobs import JobCancelled, NullContext, execute_job
from rlhf_core.store import Project, describe_failure, describe_stored_error
from rlhf_core.text.model import check_model_folder
from rlhf_core.trainers.control.synthetic_preferences import SyntheticPreferenceConfig


def _raised(fn):
    try:
        fn()
    except BaseException as exc:  # noqa: BLE001 - the exception is what the test looks at
        return exc
    raise AssertionError("did not raise")


def _chained_memory_error():
    try:
        raise MemoryError()
    except MemoryError as exc:
        raise RuntimeError("the reward model could not be built") from exc


def _torch_oom():
    import torch  # the real class a CUDA run raises

    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def _torch_on_cuda():
    import torch

    torch.zeros(1, device="cuda")  # this CPU build has no CUDA: what a GPU-saved setting meets here


# (case, how it is raised, kind, words the sentence must hold)
CASES = [
    ("memory error", lambda: (_ for _ in ()).throw(MemoryError()), "out_of_memory", "ran out of memory"),
    ("cpu allocator", lambda: (_ for _ in ()).throw(RuntimeError(
        "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: not enough memory: you tried to allocate "
        "8589934592 bytes.")), "out_of_memory", "smaller settings"),
    ("chained", _chained_memory_error, "out_of_memory", "ran out of memory"),
    ("torch oom", _torch_oom, "out_of_memory", "close other programs"),
    ("no cuda", _torch_on_cuda, "no_cuda", "set its device to cpu"),
    ("disk full", lambda: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device")), "disk_full",
     "Free some space"),
    ("sqlite full", lambda: (_ for _ in ()).throw(sqlite3.OperationalError("database or disk is full")),
     "disk_full", "disk is full"),
    ("model folder", lambda: check_model_folder("/nowhere/my-model"), "model_missing", "/nowhere/my-model"),
    ("bad config", lambda: cfg.validate(SyntheticPreferenceConfig(steps=0)), "bad_config",
     "steps: must be at least 1"),
    ("missing file", lambda: open("/nowhere/prompts.jsonl"), "file_missing", "/nowhere/prompts.jsonl"),
    ("permission", lambda: (_ for _ in ()).throw(PermissionError(13, "Permission denied", "/data/x.jsonl")),
     "no_permission", "/data/x.jsonl"),
    ("locked", lambda: (_ for _ in ()).throw(sqlite3.OperationalError("database is locked")), "project_busy",
     "Close the other program"),
    ("module", lambda: __import__("no_such_module_here"), "missing_module", "no_such_module_here"),
    ("cancel", lambda: (_ for _ in ()).throw(JobCancelled("cancelled")), "cancelled", "cancelled"),
    ("ctrl-c", lambda: (_ for _ in ()).throw(KeyboardInterrupt()), "cancelled", "Ctrl+C"),
    ("other", lambda: (_ for _ in ()).throw(ValueError("deliberate failure at step 3")), "other",
     "deliberate failure at step 3."),
    ("bare key error", lambda: {}["reward"], "other", "KeyError: 'reward'."),
]


@pytest.mark.parametrize("case,raise_it,kind,words", CASES, ids=[c[0] for c in CASES])
def test_each_common_failure_has_its_sentence_and_what_to_do(case, raise_it, kind, words):
    failure = describe_failure(_raised(raise_it))
    assert failure.kind == kind, failure
    assert words in failure.sentence, failure
    assert failure.what.endswith((".", "…")) and failure.todo.endswith(".")
    assert failure.sentence == f"{failure.what} {failure.todo}"
    assert "Traceback" not in failure.sentence and "\n" not in failure.sentence


def test_a_full_disk_says_how_much_room_is_left(tmp_path):
    failure = describe_failure(OSError(errno.ENOSPC, "No space left on device"), tmp_path)
    assert failure.what.startswith("The disk is full (") and " MB free)" in failure.what


@dataclass
class RaiseConfig:
    case: str = param("other", "Which exception to raise.")


def _raise_case(config: RaiseConfig, ctx) -> None:
    ctx.raise_if_cancelled()
    raise_it = next(c[1] for c in CASES if c[0] == config.case)
    raise_it()


STORED = [c for c in CASES if c[2] != "cancelled"]


@pytest.mark.parametrize("case,raise_it,kind,words", STORED, ids=[c[0] for c in STORED])
def test_a_stored_traceback_reads_as_the_live_exception_did(project, case, raise_it, kind, words):
    """After a restart only the stored traceback is left: it gives the same sentence."""
    live = describe_failure(_raised(raise_it))
    out = execute_job(_raise_case, RaiseConfig(case=case), NullContext(), project_path=project.folder)
    assert out.status == "failed"
    stored = project.get_run(out.run_id)["error"]
    assert stored.startswith("Traceback")
    assert describe_stored_error(stored) == live


def test_stored_messages_that_are_not_tracebacks(project):
    assert describe_stored_error(None) is None and describe_stored_error("  ") is None
    run_id = project.create_run("x", {})
    project.start_run(run_id)
    project.close()  # the process that ran it is gone: its lease with it
    with Project.open(project.folder) as again:
        assert again.mark_interrupted_runs() == 1
        interrupted = describe_stored_error(again.get_run(run_id)["error"])
    assert interrupted.kind == "interrupted" and "crash.log" in interrupted.todo
    cancelled = describe_stored_error("Cancelled before it started.")
    assert cancelled.kind == "cancelled" and cancelled.what == "Cancelled before it started."
    plain = describe_stored_error("the metrics could not be saved")
    assert plain.kind == "other" and plain.what == "the metrics could not be saved."


def test_ctrl_c_in_a_job_is_stored_as_cancelled_and_still_stops_the_caller(project):
    def interrupted(config, ctx):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        execute_job(interrupted, RaiseConfig(), NullContext(), project_path=project.folder)
    run = project.runs()[-1]
    assert run["status"] == "cancelled" and describe_stored_error(run["error"]).kind == "cancelled"


def test_a_job_calling_sys_exit_fails_with_its_traceback_instead_of_ending_the_thread(project):
    def exits(config, ctx):
        raise SystemExit("a library gave up")

    out = execute_job(exits, RaiseConfig(), NullContext(), project_path=project.folder)
    assert out.status == "failed" and out.message == "a library gave up"
    run = project.get_run(out.run_id)
    assert run["status"] == "failed" and "SystemExit: a library gave up" in run["error"]
    assert describe_stored_error(run["error"]).what == "a library gave up."
