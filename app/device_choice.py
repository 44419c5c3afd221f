"""Where text jobs run: the Device choice of Settings ▸ Preferences and the lines Help ▸ About shows.

``auto`` in a job's ``device`` setting means the default chosen here (``rlhf_core.devices.set_default_device``,
carried to job workers by ``RLHF_DEVICE``). torch is imported when the dialog opens, never at start-up.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QComboBox

from app.plain import tip

AUTO_TEXT = "auto — a GPU when torch sees one, else the CPU"


def device_choices(build: dict) -> list[tuple[str, str, bool, str]]:
    """(setting, label, enabled, tooltip) for each device: auto, cpu, cuda and each GPU torch sees; with no GPU
    the cuda entries are listed disabled and their tooltip says why."""
    gpus = list(build.get("gpus") or [])
    rows = [("auto", AUTO_TEXT, True, "Jobs whose device is auto run on the first GPU when torch sees one, "
                                      "else on the CPU."),
            ("cpu", "cpu", True, "Every job whose device is auto runs on the CPU.")]
    if gpus:
        rows.append(("cuda", "cuda — the first GPU", True, f"GPU 0: {gpus[0]}"))
        rows += [(f"cuda:{i}", f"cuda:{i} — {name}", True, f"GPU {i}: {name}") for i, name in enumerate(gpus)]
        return rows
    why = (f"torch sees no GPU here (torch build: {build.get('build', 'unknown')}). On a machine with an NVIDIA "
           "GPU install the CUDA build of torch: RLHF_TORCH=cuda scripts/setup.sh (README: which torch you get).")
    return rows + [("cuda", "cuda — no GPU", False, why), ("cuda:0", "cuda:0 — no GPU", False, why)]


class DeviceBox(QComboBox):
    """The default device for text jobs; ``value()`` is the setting (auto, cpu, cuda, cuda:N)."""

    def __init__(self, value: str, build: dict | None = None, parent=None):
        super().__init__(parent)
        if build is None:
            from rlhf_core.devices import torch_build  # start-up: imports torch, when the dialog opens

            build = torch_build()
        self.build = build
        for spec, label, enabled, tooltip in device_choices(build):
            self.addItem(label, spec)
            index = self.count() - 1
            self.setItemData(index, tip(tooltip), Qt.ItemDataRole.ToolTipRole)
            if not enabled:
                self.model().item(index).setEnabled(False)
        if self.findData(value) < 0:  # a setting from another machine (cuda:3): shown as it is
            self.addItem(f"{value} — not on this machine", value)
            self.model().item(self.count() - 1).setEnabled(False)
        self.setCurrentIndex(self.findData(value))
        self.setToolTip(tip("Where text jobs whose Device setting is auto run (each job's form can name its own "
                            "device under Advanced; the CLI takes --device auto|cpu|cuda|cuda:N). Jobs started "
                            "after the change use it."))

    def value(self) -> str:
        return str(self.currentData())

    def is_enabled(self, spec: str) -> bool:
        index = self.findData(spec)
        return index >= 0 and self.model().item(index).isEnabled()


def about_lines(settings) -> list[str]:
    """What Help ▸ About says about torch: its build, the GPUs it sees, the default device, the threads."""
    from rlhf_core.devices import DeviceError, resolve_device, torch_build  # start-up: imports torch

    build = torch_build()
    try:
        device = str(resolve_device("auto"))
    except DeviceError as exc:
        device = f"none usable: {exc}"
    gpus = ", ".join(f"{i}: {name}" for i, name in enumerate(build["gpus"])) or "none"
    return [f"torch {build['torch']} ({build['build']})",
            f"GPUs torch sees: {gpus}",
            f"Jobs set to device auto run on: {device} (Settings ▸ Preferences ▸ Device: {settings.device})",
            f"Torch threads per job: {settings.torch_threads}"]
