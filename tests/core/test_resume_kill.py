"""kill -9 of a CLI trainer mid-run, then ``resume``: the run continues from its last saved state to the
metrics of an uninterrupted run with the same seed (the deterministic trainers: every key, every step, the
values to float tolerance) or to its steps (the SB3 ones: a resumed run starts new episodes), with each
checkpoint, sample and demonstration once. The SFT case is
``tests/core/test_resume.py::test_a_killed_cli_run_resumes_from_the_command_line``."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from rlhf_core.cli import main
from rlhf_core.jobs import RecordingContext, execute_job, get_job
from rlhf_core.resume import OLD, STATE, load_state, save_state
from rlhf_core.store import Project
from tests.conftest import ROOT, add_marker_pairs, needs_model
from tests.core.test_resume import (PREFERENCE_RL, _assert_same_series, _assert_same_steps, _control_rollouts,
                                    _metrics, _trajectory_sources)

KILL_DEADLINE = 240  # seconds for the killed run to get where it is killed (CI is slow)


def _saved_state(run_folder: Path) -> dict | None:
    """The ``state.json`` of the run's newest complete state (read alone: it is polled many times a second,
    no tensors loaded); None before the first save."""
    for name in (STATE, OLD):
        try:
            return json.loads((run_folder / "resume" / name / "state.json").read_text())
        except (OSError, ValueError):  # not there, or swapped away between the look and the read
            continue
    return None


def _stored_step(project: Project, run_id: int) -> int | None:
    return project.conn.execute("SELECT MAX(step) FROM metrics WHERE run_id = ?", [run_id]).fetchone()[0]


def past_its_state(project: Project, run_id: int, state: dict) -> bool:
    """Metrics stored after the state: the kill loses stored work that the resumed run must replace."""
    stored = _stored_step(project, run_id)
    return stored is not None and stored > state["step"]


def in_its_demonstrations(project: Project, run_id: int, state: dict) -> bool:
    """The learner rolling out its checkpoints, with demonstrations stored that its state does not list."""
    return (state["extra"].get("phase") == "rollouts" and past_its_state(project, run_id, state)
            and len(project.run_items(run_id, "trajectory")) > len(state["extra"]["rollouts"]))


def after_its_checkpoint(project: Project, run_id: int, state: dict) -> bool:
    """Trained, the final checkpoint stored, the evaluation and the video still to come."""
    return bool(project.checkpoints(run_id))


Ready = Callable[[Project, int, dict], bool]


def _ready(project: Project, run_id: int, ready: Ready) -> bool:
    if project.get_run(run_id)["status"] != "running":  # finished: only the exit is left
        return False
    state = _saved_state(project.run_folder(run_id, create=False))
    return state is not None and ready(project, run_id, state)


def kill_and_resume(folder: Path, job: str, flags: list[str], capsys, ready: Ready = past_its_state
                    ) -> tuple[int, int]:
    """An uninterrupted ``run JOB`` in this process; the same run as a ``python -m rlhf_core`` process killed
    with SIGKILL once the project shows it running, with a saved state and ``ready``; then ``resume`` in
    this process. The process is frozen (SIGSTOP) while that is checked again, so the kill leaves exactly
    what the check saw (not a state saved a moment later). Returns the ids of the uninterrupted run and of
    the killed and resumed one."""
    command = ["run", job, "--project", str(folder), *flags]
    assert main(command) == 0, capsys.readouterr().err
    whole = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["run_id"]
    with Project.open(folder, check=False) as project:  # only read from while the process writes
        before = {r["id"] for r in project.runs()}
        log = folder.parent / f"{job}.stderr"  # a file, not a pipe: its progress lines never block it
        with open(log, "wb") as err:
            proc = subprocess.Popen([sys.executable, "-m", "rlhf_core", *command], cwd=ROOT,
                                    stdout=subprocess.DEVNULL, stderr=err)
        run_id, killed = None, False
        try:
            deadline = time.monotonic() + KILL_DEADLINE
            while not killed and time.monotonic() < deadline and proc.poll() is None:
                if run_id is None:
                    run_id = max({r["id"] for r in project.runs()} - before, default=None)
                if run_id is not None and _ready(project, run_id, ready):
                    proc.send_signal(signal.SIGSTOP)
                    killed = _ready(project, run_id, ready)
                    proc.send_signal(signal.SIGKILL if killed else signal.SIGCONT)  # else a save came between
                time.sleep(0.01)
        finally:
            proc.kill()
            proc.wait()
        assert killed, (f"{job} ended (exit {proc.returncode}) before it could be killed where the test wants: "
                        f"{log.read_text(errors='replace')[-2000:]}")
        assert proc.returncode == -signal.SIGKILL
        assert project.get_run(run_id)["status"] == "running"  # nobody finished it
        state = load_state(project.run_folder(run_id, create=False))
        assert state is not None, "the killed run left no state to resume from"
    assert main(["resume", "--project", str(folder), "--run", str(run_id)]) == 0, capsys.readouterr().err
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (out["run_id"], out["status"]) == (run_id, "completed")
    return whole, run_id


# ------------------------------------------------------------------------------------------ the cases
def _marker_pairs(n: int):
    def setup(project: Project, model: Path | None) -> list[str]:
        add_marker_pairs(project, n)
        return []
    return setup


def _ppo_text_reward(project: Project, model: Path | None) -> list[str]:
    """A reward model (a random head on the tiny model) and three prompts."""
    from rlhf_core.text.reward_model import load_base_reward_model, save_text_reward_model

    rm = project.folder / "models" / "rm"
    net, _, _ = load_base_reward_model(str(model), max_length=64, seed=0)
    save_text_reward_model(net, rm, meta={"base_model": "tiny"})
    pids = [project.add_prompt(t) for t in ("Say hi.", "Name a fruit.", "What is 2+2?")]
    return ["--reward-model", str(rm), "--prompt-set", "",
            "--prompt-ids", ",".join(map(str, pids))]


def _rollouts(project: Project, model: Path | None) -> list[str]:
    _control_rollouts(project)
    return []


def _rollouts_and_reward_model(project: Project, model: Path | None) -> list[str]:
    _control_rollouts(project)
    outcome = execute_job(get_job("reward_model"), get_job("reward_model").config_class()(
        env_id="CartPole-v1", source="drex", snippet_pairs=40, snippet_min=3, snippet_max=8, members=2, hidden=16,
        steps=20), RecordingContext(), project_path=project.folder)
    assert outcome.status == "completed", outcome.error
    return []


def _nothing(project: Project, model: Path | None) -> list[str]:
    return []


def _checkpoints(project: Project, run_id: int) -> list[tuple]:
    """(kind, step) of each checkpoint row of a run: a resumed run stores none twice."""
    return sorted(((c["kind"], c["step"]) for c in project.checkpoints(run_id)), key=repr)


@dataclass
class Case:
    job: str
    flags: list[str]
    setup: Callable[[Project, Path | None], list[str]] = _nothing  # the data the job needs; returns more flags
    text: bool = False  # trains the tiny model (``--model`` is added)
    exact: bool = True  # deterministic: the same metric values; else the same steps (SB3)
    ready: Ready = past_its_state  # where the kill comes
    name: str = ""  # the test id, when not the job's name


# Each run saves a state several times (--save-steps); the default kill (metrics stored past a state) comes
# inside training: the runs last long enough for a 0.5 s metrics flush to fall between two saves.
CASES = [
    Case("dpo", ["--steps", "10", "--batch-size", "2", "--max-length", "48", "--eval-every", "2", "--learning-rate",
                 "1e-3", "--seed", "3", "--no-save", "--save-steps", "3"], _marker_pairs(10), text=True),
    Case("grpo", ["--prompt-source", "tasks", "--steps", "8", "--prompts-per-step", "2", "--group-size", "2",
                  "--max-new-tokens", "4", "--train-tasks", "6", "--heldout-tasks", "2", "--eval-every", "2",
                  "--seed", "5", "--no-save", "--save-steps", "2"], text=True),
    Case("text_reward_model", ["--epochs", "2", "--batch-size", "2", "--max-length", "48", "--learning-rate", "1e-3",
                               "--heldout-fraction", "0.25", "--score-responses", "8", "--seed", "2",
                               "--save-steps", "2"], _marker_pairs(12), text=True),
    Case("ppo_text", ["--steps", "6", "--batch-size", "2", "--minibatch-size", "1", "--ppo-epochs", "2",
                      "--max-new-tokens", "4", "--reward", "model:1,length:0.01", "--beta", "0.1", "--adaptive-kl",
                      "--kl-target", "1.0", "--kl-horizon", "10.0", "--baseline-samples", "2", "--learning-rate",
                      "1e-3", "--seed", "4", "--no-save", "--save-steps", "2"], _ppo_text_reward, text=True),
    Case("reward_model", ["--env-id", "CartPole-v1", "--source", "drex", "--snippet-pairs", "60", "--snippet-min", "3",
                          "--snippet-max", "8", "--members", "2", "--hidden", "16", "--steps", "3000", "--seed", "3",
                          "--save-steps", "1000"], _rollouts),
    Case("ppo_learned", ["--env-id", "CartPole-v1", "--total-steps", "8192", "--eval-episodes", "1",
                         "--no-record-video", "--seed", "2", "--save-steps", "3072"], _rollouts_and_reward_model,
         exact=False),
    # killed between its final checkpoint and its end: the resumed run stores that checkpoint and the video once
    Case("ppo_learned", ["--env-id", "CartPole-v1", "--total-steps", "2048", "--eval-episodes", "2", "--record-video",
                         "--seed", "2", "--save-steps", "512"], _rollouts_and_reward_model, exact=False,
         ready=after_its_checkpoint, name="ppo_learned-after-training"),
    Case("preference_rl", [f"--{k.replace('_', '-')}={v}" for k, v in {**PREFERENCE_RL, "rounds": 9}.items()]
         + ["--save-steps", "1024"], exact=False),
    # killed while rolling out its checkpoints (after the PPO phase's last state): each demonstration once
    Case("learner", ["--env-id", "CartPole-v1", "--total-steps", "2048", "--checkpoint-every", "1000",
                     "--episodes-per-checkpoint", "3", "--max-steps", "50", "--record-video", "--seed", "1",
                     "--save-steps", "512"], exact=False, ready=in_its_demonstrations),
]


@pytest.mark.timeout(600)
@pytest.mark.parametrize("case", [pytest.param(c, id=c.name or c.job, marks=[needs_model] if c.text else [])
                                  for c in CASES])
def test_a_killed_cli_trainer_resumes_to_the_uninterrupted_run(case, tmp_path, request, capsys):
    model = request.getfixturevalue("tiny_model") if case.text else None
    folder = tmp_path / "p.rlhf"
    with Project.create(folder) as project:
        flags = case.setup(project, model) + case.flags + (["--model", str(model)] if case.text else [])
    whole, killed = kill_and_resume(folder, case.job, flags, capsys, case.ready)
    with Project.open(folder) as project:
        expected, got = _metrics(project, whole), _metrics(project, killed)
        if case.exact:
            _assert_same_series(expected, got)
        else:  # the same steps (none twice, none missing) to the same last one
            _assert_same_steps(expected, got)
        assert _checkpoints(project, killed) == _checkpoints(project, whole)
        assert _trajectory_sources(project, killed) == _trajectory_sources(project, whole)
        samples = [[(s["step"], s["kind"], s["payload"].get("response") if case.exact else None)
                    for s in project.samples(run)] for run in (whole, killed)]
        assert samples[0] == samples[1]  # the same samples (completions) at the same steps
        assert not list((project.run_folder(killed, create=False) / "resume").glob("state.partial-*"))


def test_a_save_clears_what_a_killed_save_left(tmp_path):
    base = tmp_path / "resume"
    save_state(tmp_path, 1, {})
    (base / "state.partial-killed").mkdir()
    (base / "state.partial-killed" / "tensors.pt").write_bytes(b"half")
    assert load_state(tmp_path).step == 1  # not read
    save_state(tmp_path, 2, {}, checkpoints=[4, 5])
    assert sorted(p.name for p in base.iterdir()) == [STATE]
    state = load_state(tmp_path)
    assert (state.step, state.checkpoints) == (2, [4, 5])
