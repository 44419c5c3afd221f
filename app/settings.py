"""Persistent user settings (window geometry, last/recent projects, torch threads, the default device, the
model folders a person added, and what a person set on the pages of each project: forms and view toggles,
keyed by the project's folder).

Stored in an INI file under the per-user folder (``rlhf_core.paths.user_data_dir()``), so tests
that point ``RLHF_WORKBENCH_HOME`` at a temporary folder never touch the real settings.
"""

from __future__ import annotations

import hashlib
import json
import os

from PySide6.QtCore import QByteArray, QSettings

from rlhf_core.devices import spec_problem
from rlhf_core.paths import user_data_dir
from rlhf_core.runtime import DEFAULT_TORCH_THREADS

MAX_RECENT = 8
MAX_MODEL_FOLDERS = 20


class Settings:
    def __init__(self, path: str | None = None):
        self.path = path or str(user_data_dir() / "settings.ini")
        self.qs = QSettings(self.path, QSettings.Format.IniFormat)

    # --- projects ----------------------------------------------------------------------------
    def recent_projects(self) -> list[str]:
        value = self.qs.value("projects/recent", [])
        if isinstance(value, str):
            value = [value]
        return [v for v in (value or []) if v]

    def add_recent_project(self, path: str) -> None:
        path = os.path.abspath(path)
        recent = [p for p in self.recent_projects() if p != path]
        self.qs.setValue("projects/recent", [path, *recent][:MAX_RECENT])
        self.qs.setValue("projects/last", path)
        self.qs.sync()

    def remove_recent_project(self, path: str) -> None:
        self.qs.setValue("projects/recent", [p for p in self.recent_projects() if p != path])
        self.qs.sync()

    @property
    def last_project(self) -> str | None:
        value = self.qs.value("projects/last", None)
        return str(value) if value else None

    # --- runtime -----------------------------------------------------------------------------
    @property
    def torch_threads(self) -> int:
        try:
            n = int(self.qs.value("runtime/torch_threads", DEFAULT_TORCH_THREADS))
        except (TypeError, ValueError):
            n = DEFAULT_TORCH_THREADS
        return max(1, min(n, os.cpu_count() or 1))

    @torch_threads.setter
    def torch_threads(self, n: int) -> None:
        self.qs.setValue("runtime/torch_threads", int(n))
        self.qs.sync()

    @property
    def allow_network(self) -> bool:
        """Hub downloads allowed (off by default: the workbench works offline)."""
        return str(self.qs.value("runtime/allow_network", "false")).lower() in ("true", "1")

    @allow_network.setter
    def allow_network(self, allowed: bool) -> None:
        self.qs.setValue("runtime/allow_network", "true" if allowed else "false")
        self.qs.sync()

    @property
    def tensorboard(self) -> bool:
        """Runs also write TensorBoard event files (off by default; rlhf_core.runtime.set_tensorboard_enabled)."""
        return str(self.qs.value("runtime/tensorboard", "false")).lower() in ("true", "1")

    @tensorboard.setter
    def tensorboard(self, enabled: bool) -> None:
        self.qs.setValue("runtime/tensorboard", "true" if enabled else "false")
        self.qs.sync()

    @property
    def device(self) -> str:
        """Where text jobs set to ``auto`` run (Settings ▸ Device): auto, cpu, cuda or cuda:N."""
        value = str(self.qs.value("runtime/device", "auto") or "auto").strip().lower()
        return value if spec_problem(value) is None else "auto"

    @device.setter
    def device(self, spec: str) -> None:
        self.qs.setValue("runtime/device", str(spec).strip().lower())
        self.qs.sync()

    # --- model folders a person added (the model pickers list them) ----------------------------
    def model_folders(self) -> list[str]:
        value = self.qs.value("models/folders", [])
        if isinstance(value, str):
            value = [value]
        return [str(v) for v in (value or []) if v]

    def add_model_folder(self, path: str) -> None:
        path = os.path.abspath(os.path.expanduser(path))
        folders = [p for p in self.model_folders() if p != path]
        self.qs.setValue("models/folders", [path, *folders][:MAX_MODEL_FOLDERS])
        self.qs.sync()

    def forget_model_folder(self, path: str) -> None:
        self.qs.setValue("models/folders", [p for p in self.model_folders() if p != path])
        self.qs.sync()

    @property
    def labeller(self) -> str:
        return str(self.qs.value("labelling/name", "you") or "you")

    @labeller.setter
    def labeller(self, name: str) -> None:
        self.qs.setValue("labelling/name", name)
        self.qs.sync()

    # --- window ------------------------------------------------------------------------------
    def save_window(self, geometry: QByteArray, state: QByteArray) -> None:
        self.qs.setValue("window/geometry", geometry)
        self.qs.setValue("window/state", state)
        self.qs.sync()

    def window_geometry(self) -> QByteArray | None:
        value = self.qs.value("window/geometry")
        return value if isinstance(value, QByteArray) else None

    def window_state(self) -> QByteArray | None:
        value = self.qs.value("window/state")
        return value if isinstance(value, QByteArray) else None

    # --- per project -------------------------------------------------------------------------
    @staticmethod
    def _project_key(folder: str | os.PathLike) -> str:
        # a folder's path holds "/" (a group separator here): one opaque key per project folder
        return "project_views/" + hashlib.sha1(os.path.realpath(folder).encode()).hexdigest()[:16]

    def project_views(self, folder: str | os.PathLike) -> dict:
        """What a person last set on the pages of the project in ``folder`` ({} when nothing, or unreadable)."""
        try:
            value = json.loads(str(self.qs.value(self._project_key(folder), "{}")))
        except (TypeError, ValueError):
            return {}
        return value if isinstance(value, dict) else {}

    def set_project_views(self, folder: str | os.PathLike, views: dict) -> None:
        self.qs.setValue(self._project_key(folder), json.dumps(views, sort_keys=True))
        self.qs.sync()
