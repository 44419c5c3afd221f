"""TensorBoard event files written without TensorBoard: a run's scalar metrics, as SB3 and TRL users expect them.

An event file is a sequence of TFRecords (a little-endian u64 length, its masked CRC32C, the bytes, their
masked CRC32C), each one an ``Event`` protocol buffer, encoded here by hand: ``wall_time`` (1, double),
``step`` (2, int64), ``file_version`` (3, the first record: ``brain.Event:2``), ``summary`` (5: one
``Summary.Value`` per metric key, ``tag`` 1 and ``simple_value`` 2, a float32) and ``session_log`` (7: a START
at the step a resumed run continues from, so that TensorBoard drops what the earlier attempt logged after it).

:class:`TensorBoardSink` is the metric sink :func:`rlhf_core.jobs.execute_job` adds when the setting is on
(:func:`rlhf_core.runtime.tensorboard_enabled`). It buffers and writes every ``interval`` seconds, and it never
raises: a write that fails turns it off for the rest of the run (logged once), the job goes on.
"""

from __future__ import annotations

import logging
import math
import re
import socket
import struct
import time
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger(__name__)

FILE_VERSION = "brain.Event:2"
FILE_PREFIX = "events.out.tfevents."
FOLDER = "tensorboard"  #: the sub-folder of a run's folder that holds its event files
_SESSION_START = 1  # tensorflow.SessionLog.SessionStatus.START


def _crc32c_tables() -> list[list[int]]:
    """CRC-32C lookup tables for eight bytes at a time ("slicing by 8": 1.5x a byte-wise loop in Python)."""
    first = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1  # Castagnoli, reflected
        first.append(crc)
    tables = [first]
    for _ in range(7):
        tables.append([(c >> 8) ^ first[c & 0xFF] for c in tables[-1]])
    return tables


_T0, _T1, _T2, _T3, _T4, _T5, _T6, _T7 = _crc32c_tables()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of ``data``, the checksum TFRecord uses (zlib's crc32 is another polynomial)."""
    crc = 0xFFFFFFFF
    whole = len(data) // 8 * 8
    for a, b in struct.iter_unpack("<II", data[:whole]):
        a ^= crc
        crc = (_T7[a & 0xFF] ^ _T6[(a >> 8) & 0xFF] ^ _T5[(a >> 16) & 0xFF] ^ _T4[a >> 24]
               ^ _T3[b & 0xFF] ^ _T2[(b >> 8) & 0xFF] ^ _T1[(b >> 16) & 0xFF] ^ _T0[b >> 24])
    for byte in data[whole:]:
        crc = _T0[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked checksum: rotated right by 15 bits plus a constant (so CRCs of CRCs stay apart)."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def record(data: bytes) -> bytes:
    """``data`` framed as one TFRecord."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc32c(length)) + data + struct.pack("<I", masked_crc32c(data))


# ---------------------------------------------------------------------------- protocol buffers, by hand
def _varint(value: int) -> bytes:
    value &= 0xFFFFFFFFFFFFFFFF  # a negative int64 is its two's complement, ten bytes
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _bytes_field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


_FLOAT32_MAX = 3.4028234663852886e38
_value_heads: dict[str, bytes] = {}  # tag -> the bytes of its Summary.value field before the float


def _scalar_value_field(tag: str, value: float) -> bytes:
    """A ``Summary.value`` field: a ``Summary.Value`` of the tag and the value as float32 (inf beyond its range)."""
    head = _value_heads.get(tag)
    if head is None:
        inner = _bytes_field(1, tag.encode("utf-8", "replace")) + b"\x15"
        head = _varint(1 << 3 | 2) + _varint(len(inner) + 4) + inner
        if len(_value_heads) < 10_000:
            _value_heads[tag] = head
    v = float(value)
    if v > _FLOAT32_MAX or v < -_FLOAT32_MAX:
        v = math.copysign(math.inf, v)
    return head + struct.pack("<f", v)


def encode_event(wall_time: float, step: int, *, values: Mapping[str, float] | None = None,
                 file_version: str | None = None, session_start: bool = False) -> bytes:
    """One serialised ``Event``: a file version, a summary of scalar ``values``, or a session START."""
    out = b"\x09" + struct.pack("<d", float(wall_time)) + b"\x10" + _varint(int(step))
    if file_version is not None:
        out += _bytes_field(3, file_version.encode())
    if values:
        summary = b"".join([_scalar_value_field(str(k), v) for k, v in values.items()])
        out += _bytes_field(5, summary)
    if session_start:
        out += _bytes_field(7, b"\x08" + _varint(_SESSION_START))
    return out


# ---------------------------------------------------------------------------- writing
def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname() or "host")[:64] or "host"


def new_event_file(folder: Path) -> Path:
    """A new event file's path in ``folder``: its time stamp sorts it after every file already there
    (TensorBoard reads a folder's files in name order)."""
    stamp = int(time.time())
    for old in folder.glob(FILE_PREFIX + "*"):
        parts = old.name[len(FILE_PREFIX):].split(".", 1)
        if parts[0].isdigit():
            stamp = max(stamp, int(parts[0]) + 1)
    return folder / f"{FILE_PREFIX}{stamp:010d}.{_host()}.rlhf-workbench"


class TensorBoardSink:
    """A run's metrics as a TensorBoard event file in ``folder`` (made on the first metric).

    Called as ``sink(step, {key: value})`` like every metric sink of a job; :meth:`flush` writes what is
    buffered (also every ``interval`` seconds), :meth:`close` writes and closes. ``resume_step``: the run
    continues after this step, so the file starts with a session START at ``resume_step + 1``.
    """

    def __init__(self, folder: str | Path, *, resume_step: int | None = None, interval: float = 0.5):
        self.folder = Path(folder)
        self.resume_step = resume_step
        self.interval = interval
        self.path: Path | None = None
        self.error: str | None = None  # why it stopped writing, if it did
        self._file = None
        self._buffer: list[bytes] = []
        self._last_write = time.monotonic()

    def __call__(self, step: int, values: Mapping[str, float]) -> None:
        if self.error is not None:
            return
        try:
            self._buffer.append(record(encode_event(time.time(), step, values=values)))
            if time.monotonic() - self._last_write >= self.interval:
                self.flush()
        except Exception as exc:  # noqa: BLE001 - the event file must never stop a job
            self._give_up(exc)

    def flush(self) -> None:
        if self.error is not None or not self._buffer:
            return
        try:
            if self._file is None:
                self._open()
            data, self._buffer = b"".join(self._buffer), []
            self._file.write(data)
            self._file.flush()
            self._last_write = time.monotonic()
        except Exception as exc:  # noqa: BLE001
            self._give_up(exc)

    def close(self) -> None:
        self.flush()
        if self._file is not None:
            try:
                self._file.close()
            except Exception as exc:  # noqa: BLE001
                self._give_up(exc)
            self._file = None

    def _open(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = new_event_file(self.folder)
        self._file = open(self.path, "ab")  # noqa: SIM115 - held open for the run, closed by close()
        now = time.time()
        head = [record(encode_event(now, 0, file_version=FILE_VERSION))]
        if self.resume_step is not None:
            head.append(record(encode_event(now, self.resume_step + 1, session_start=True)))
        self._file.write(b"".join(head))

    def _give_up(self, exc: BaseException) -> None:
        self.error = f"{type(exc).__name__}: {exc}"
        self._buffer = []
        log.warning("TensorBoard event file %s: writing stopped, the run goes on (%s)",
                    self.path or self.folder, self.error)
        if self._file is not None:
            try:
                self._file.close()
            except Exception:  # noqa: BLE001
                pass
            self._file = None
