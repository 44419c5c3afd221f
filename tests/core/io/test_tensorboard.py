"""The TensorBoard sink: event files written by our own encoder, read back with TensorBoard's own reader, equal
the project's metrics; a resumed run's file replaces what the first attempt logged after its state; a write
that fails never stops the job."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import pytest

from rlhf_core import registry
from rlhf_core.config import param
from rlhf_core.io.tensorboard import FOLDER, TensorBoardSink, crc32c, masked_crc32c
from rlhf_core.jobs import JobSpec, RecordingContext, execute_job, get_job, resume_run
from rlhf_core.runtime import TENSORBOARD_ENV, tensorboard_enabled
from rlhf_core.trainers.control.synthetic_preferences import SyntheticPreferenceConfig

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator",
                                        reason="tensorboard (a test dependency) reads the event files back")
SMALL = dict(n_items=60, n_pairs=300, steps=20, eval_every=5)


def read_scalars(folder) -> dict[str, list[tuple[int, float, float]]]:
    """{tag: [(step, value, wall time)]} as TensorBoard's own EventAccumulator reads ``folder``."""
    acc = event_accumulator.EventAccumulator(str(folder), size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    return {tag: [(e.step, e.value, e.wall_time) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def assert_same_as_project(scalars, metrics) -> None:
    assert set(scalars) == set(metrics)
    for key, (steps, values) in metrics.items():
        assert [s for s, _, _ in scalars[key]] == steps, key
        for (_, got, _), want in zip(scalars[key], values):  # simple_value is a float32
            assert (math.isnan(got) and math.isnan(want)) or got == float(np.float32(want)), (key, got, want)


def test_checksums_are_crc32c():
    assert crc32c(b"") == 0 and crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    assert crc32c(bytes(32)) == 0x8A9136AA and crc32c(b"\xff" * 32) == 0x62A8AB43  # RFC 3720 B.4
    assert masked_crc32c(b"123456789") == (((0xE3069283 >> 15) | (0xE3069283 << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def test_a_run_with_the_setting_on_reads_back_in_tensorboard_equal_to_its_metrics(project, monkeypatch):
    monkeypatch.setenv(TENSORBOARD_ENV, "1")
    assert tensorboard_enabled()
    out = execute_job(get_job("synthetic_preferences"), SyntheticPreferenceConfig(**SMALL), RecordingContext(),
                      project_path=project.folder)
    assert out.status == "completed", out.error
    folder = project.run_folder(out.run_id, create=False) / FOLDER
    assert len(list(folder.glob("events.out.tfevents.*"))) == 1
    metrics = project.metrics(out.run_id)
    assert {"reward_model/loss", "reward_model/heldout_accuracy"} <= set(metrics)
    scalars = read_scalars(folder)
    assert_same_as_project(scalars, metrics)
    run = project.get_run(out.run_id)
    walls = [w for series in scalars.values() for _, _, w in series]
    assert run["started_at"][:10] == run["finished_at"][:10] and max(walls) - min(walls) < out.wall_seconds + 1

    monkeypatch.setenv(TENSORBOARD_ENV, "0")  # off (the default): no event files
    off = execute_job(get_job("synthetic_preferences"), SyntheticPreferenceConfig(**SMALL), RecordingContext(),
                      project_path=project.folder)
    assert off.status == "completed" and not (project.run_folder(off.run_id, create=False) / FOLDER).exists()


@dataclass
class FifthsConfig:
    steps: int = param(40, "Steps.", min=1)


def save_every_fifth(config: FifthsConfig, ctx) -> dict:
    """Logs ``step`` (plus 1000 once resumed) and saves a resumable state after every fifth step only, so a cancel
    leaves steps logged after the last state (which the continuation logs again)."""
    import torch

    state = ctx.resume_from
    offset = 1000.0 if state is not None else 0.0
    for step in range(state.step + 1 if state is not None else 0, config.steps):
        ctx.raise_if_cancelled()
        ctx.metrics(step, {"test/step": step + offset})
        if step % 5 == 4:
            ctx.save_state(step, {"step": torch.tensor(step)})
    return {}


FIFTHS = JobSpec(name="test_fifths", title="Saves every fifth step", description="For the resume test.",
                 target=f"{__name__}:save_every_fifth", config=f"{__name__}:FifthsConfig")


def test_a_resumed_run_shows_the_continuations_values_after_its_state(project, monkeypatch):
    monkeypatch.setenv(TENSORBOARD_ENV, "1")
    registry.register_job(FIFTHS)
    try:
        cut = execute_job(FIFTHS, FifthsConfig(), RecordingContext(cancel_after_metrics=13),
                          project_path=project.folder)
        assert cut.status == "cancelled"  # steps 0-12 logged, the last state after step 9
        done = resume_run(project.folder, cut.run_id, RecordingContext())
    finally:
        registry._REGISTRY.pop(FIFTHS.name, None)
    assert done.status == "completed", done.error
    folder = project.run_folder(cut.run_id, create=False) / FOLDER
    assert len(list(folder.glob("events.out.tfevents.*"))) == 2  # one file per attempt, read in name order
    metrics = project.metrics(cut.run_id)
    first, continued = [float(s) for s in range(10)], [s + 1000.0 for s in range(10, 40)]
    assert metrics["test/step"] == (list(range(40)), first + continued)
    assert_same_as_project(read_scalars(folder), metrics)  # steps 10-12 of the first attempt are gone


def test_a_sink_that_cannot_write_stops_quietly_and_the_job_completes(project, monkeypatch, caplog):
    monkeypatch.setenv(TENSORBOARD_ENV, "1")
    blocked = project.run_folder(1) / FOLDER  # the first run's event folder is taken by a file
    blocked.write_text("not a folder")
    with caplog.at_level(logging.WARNING, logger="rlhf_core.io.tensorboard"):
        out = execute_job(get_job("synthetic_preferences"), SyntheticPreferenceConfig(**SMALL), RecordingContext(),
                          project_path=project.folder)
    assert out.run_id == 1 and out.status == "completed", out.error
    assert project.metrics(1)["reward_model/loss"][0] == list(range(20))
    assert blocked.read_text() == "not a folder"
    assert sum("writing stopped, the run goes on" in r.getMessage() for r in caplog.records) == 1

    sink = TensorBoardSink(blocked / "deeper")  # the sink alone: never raises, says why it stopped
    sink(0, {"train/loss": 1.0})
    sink.flush()
    sink(1, {"train/loss": 0.5})
    sink.close()
    assert sink.error and sink.path is None
