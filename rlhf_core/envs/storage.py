"""Trajectories and clips in a project: arrays as compressed .npz, frames as H.264 MP4 (PyAV).

    media/traj-<uuid>.npz   observations, actions, true rewards (float32)
    media/traj-<uuid>.mp4   the rendered frames, one per state (T+1), at the env's fps

A clip is an ``items`` row of kind ``clip`` pointing at its trajectory (``parent_id``) with
``start_step``/``end_step``; its frames are decoded from the parent's video on demand.
The true return is stored in the row (``true_return``) but views hide it until asked.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import av
import numpy as np

from rlhf_core.envs.rollout import Trajectory

VIDEO_CRF = 23
KEYFRAME_INTERVAL = 60  # frames; read_video seeks to the keyframe before a clip (see write_video)
MAX_SIDE = 480  # frames larger than this are scaled down before encoding


def _even_frame(frame: np.ndarray) -> np.ndarray:
    h, w = frame.shape[:2]
    return frame[: h - h % 2, : w - w % 2]


def _downscale(frames: np.ndarray) -> np.ndarray:
    h, w = frames.shape[1:3]
    step = int(np.ceil(max(h, w) / MAX_SIDE))
    return frames[:, ::step, ::step] if step > 1 else frames


def write_video(path: str | Path, frames: np.ndarray, fps: int,
                keyframe_interval: int | None = KEYFRAME_INTERVAL) -> None:
    """Encode RGB frames [N, H, W, 3] as H.264 (yuv420p, CRF 23, a keyframe at least every
    ``keyframe_interval`` frames; None: x264's default, as in the videos of older projects).
    Written to a temp name first."""
    frames = _downscale(np.asarray(frames, dtype=np.uint8))
    path = Path(path)
    tmp = path.with_suffix(".part.mp4")
    with av.open(str(tmp), mode="w") as container:
        stream = container.add_stream("libx264", rate=int(fps))
        first = _even_frame(frames[0])
        stream.height, stream.width = first.shape[:2]
        stream.pix_fmt = "yuv420p"
        # a keyframe at least every keyframe_interval frames (x264's default is 250): read_video seeks
        # to the one before a clip instead of decoding from frame 0 (docs/performance.md, clip decoding)
        options = {"crf": str(VIDEO_CRF), "preset": "veryfast", "tune": "animation"}
        if keyframe_interval is not None:
            options["g"] = str(int(keyframe_interval))
        stream.options = options
        for frame in frames:
            packet_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(_even_frame(frame)), format="rgb24")
            for packet in stream.encode(packet_frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tmp.replace(path)


def read_video(path: str | Path, start: int = 0, end: int | None = None) -> np.ndarray:
    """Decode frames [start, end) of a video as RGB uint8 [N, H, W, 3].

    From ``start > 0`` it first seeks to the last keyframe at or before ``start`` (videos written by
    :func:`write_video` have one at least every :data:`KEYFRAME_INTERVAL` frames), so a clip late in a
    long trajectory does not decode the whole prefix; a frame's index comes from its timestamp. When
    the timestamps cannot be trusted (no rate, a frame without one, the seek landing after ``start``)
    it decodes from frame 0 and counts, as every video allows."""
    if start > 0:
        frames = _read_after_seek(str(path), start, end)
        if frames is not None:
            return frames
    return _read_from_start(path, start, end)


def _read_from_start(path: str | Path, start: int, end: int | None) -> np.ndarray:
    """Frames [start, end), decoding every frame from the first and counting them."""
    out = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for i, frame in enumerate(container.decode(stream)):
            if i < start:
                continue
            if end is not None and i >= end:
                break
            out.append(frame.to_ndarray(format="rgb24"))
    return _stack(out)


def _stack(frames: list[np.ndarray]) -> np.ndarray:
    return np.stack(frames) if frames else np.zeros((0, 0, 0, 3), dtype=np.uint8)


def _read_after_seek(path: str, start: int, end: int | None) -> np.ndarray | None:
    """Frames [start, end) found by seeking and by timestamps, or None where that cannot be trusted."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        rate, time_base = stream.average_rate, stream.time_base
        if not rate or not time_base:
            return None
        origin = stream.start_time or 0
        seconds_per_tick = float(time_base)
        container.seek(origin + int(start / float(rate) / seconds_per_tick), stream=stream, backward=True)
        stream.thread_type = "AUTO"
        out: list[np.ndarray] = []
        for n, frame in enumerate(container.decode(stream)):
            if frame.pts is None:
                return None
            index = round((frame.pts - origin) * seconds_per_tick * float(rate))
            if n == 0 and index > start:
                return None  # landed past the first frame wanted: no keyframe where one was expected
            if index < start:
                continue
            if end is not None and index >= end:
                break
            if index != start + len(out):
                return None  # a gap or a repeat: the timestamps do not count frames
            out.append(frame.to_ndarray(format="rgb24"))
    return _stack(out)


def save_trajectory(project, traj: Trajectory, *, run_id: int | None = None) -> int:
    """Store a trajectory (arrays + video) and its ``items`` row; returns the item id."""
    media = project.folder / "media"
    media.mkdir(exist_ok=True)
    stem = f"traj-{uuid.uuid4().hex[:12]}"
    data_path = media / f"{stem}.npz"
    np.savez_compressed(data_path, observations=traj.observations.astype(np.float32),
                        actions=np.asarray(traj.actions, dtype=np.float32), rewards=traj.rewards.astype(np.float32))
    video_path = None
    if traj.frames is not None and len(traj.frames):
        video_path = media / f"{stem}.mp4"
        write_video(video_path, traj.frames, traj.fps)
    return project.add_item(
        "trajectory",
        run_id=run_id,
        source=str(traj.source.get("kind", "unknown")),
        env_id=traj.env_id,
        seed=traj.seed,
        start_step=0,
        end_step=traj.length,
        length=traj.length,
        true_return=traj.true_return,
        data_path=data_path,
        media_path=video_path,
        params=traj.source,
        meta={"fps": traj.fps, "terminated": traj.terminated,
              "frame_shape": list(traj.frames.shape[1:]) if traj.frames is not None else None},
    )


def load_arrays(project, item: dict) -> dict[str, np.ndarray]:
    """Observations, actions and true rewards of a trajectory, or the slice a clip covers."""
    traj = item if item["kind"] == "trajectory" else project.get_item(item["parent_id"])
    with np.load(project.abspath(traj["data_path"])) as data:
        arrays = {k: data[k] for k in data.files}
    if item["kind"] == "clip":
        a, b = item["start_step"], item["end_step"]
        arrays = {"observations": arrays["observations"][a: b + 1], "actions": arrays["actions"][a:b],
                  "rewards": arrays["rewards"][a:b]}
    return arrays


def clip_observations(project, item_ids) -> dict[int, np.ndarray]:
    """``{item id: observations}`` (T + 1 rows) of clip items, each trajectory file read once."""
    out, trajectories = {}, {}
    for item_id in item_ids:
        if item_id in out:
            continue
        item = project.get_item(item_id)
        parent = item["parent_id"]
        if parent not in trajectories:
            trajectories[parent] = load_arrays(project, project.get_item(parent))["observations"]
        out[item_id] = trajectories[parent][item["start_step"]:item["end_step"] + 1]
    return out


def frame_source(project, item: dict) -> tuple[Path, int, int | None] | None:
    """Where an item's frames are: (video path, first frame, end frame or None), or None without a
    video. Only reads the project; the decoding (:func:`read_video`) can then run on another thread."""
    traj = item if item["kind"] == "trajectory" else project.get_item(item["parent_id"])
    if not traj.get("media_path"):
        return None
    path = Path(project.abspath(traj["media_path"]))
    if item["kind"] == "clip":
        return path, int(item["start_step"]), int(item["end_step"])
    return path, 0, None


def load_frames(project, item: dict) -> np.ndarray:
    """The frames of a trajectory (T+1) or of a clip (one per step it covers)."""
    source = frame_source(project, item)
    if source is None:
        return np.zeros((0, 0, 0, 3), dtype=np.uint8)
    return read_video(*source)


def item_fps(project, item: dict) -> int:
    import json

    traj = item if item["kind"] == "trajectory" else project.get_item(item["parent_id"])
    return int(json.loads(traj["meta_json"]).get("fps") or 30)
