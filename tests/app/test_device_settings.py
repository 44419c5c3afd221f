"""Settings ▸ Preferences ▸ Device (the default for jobs set to device auto) and Help ▸ About's torch lines."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("PySide6")
torch = pytest.importorskip("torch")
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")


@no_gpu
def test_device_choice_persists_and_sets_rlhf_device(qtbot, window, settings, monkeypatch):
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from app.main_window import MainWindow, SettingsDialog
    from app.settings import Settings
    from rlhf_core.devices import DEVICE_ENV, resolve_device

    monkeypatch.setenv(DEVICE_ENV, "auto")  # restored (unset) after the test
    dialog = SettingsDialog(settings)
    qtbot.addWidget(dialog)
    box = dialog.device
    assert box.value() == "auto"
    assert [box.itemData(i) for i in range(box.count())] == ["auto", "cpu", "cuda", "cuda:0"]
    # no GPU here: the cuda entries are listed, disabled, and say why
    assert box.is_enabled("cpu") and not box.is_enabled("cuda") and not box.is_enabled("cuda:0")
    why = box.itemData(box.findData("cuda"), 3)  # Qt.ToolTipRole
    assert "torch sees no GPU here" in why and "CPU only" in why

    chosen = {}

    def choose_cpu():
        shown = QApplication.activeModalWidget()
        assert isinstance(shown, SettingsDialog)
        shown.device.setCurrentIndex(shown.device.findData("cpu"))
        chosen["done"] = True
        shown.accept()

    QTimer.singleShot(0, choose_cpu)
    window.preferences_dialog()
    assert chosen and settings.device == "cpu" and os.environ[DEVICE_ENV] == "cpu"
    assert str(resolve_device("auto")) == "cpu"
    again = Settings(settings.path)
    assert again.device == "cpu"  # persisted

    # the next start applies it
    monkeypatch.setenv(DEVICE_ENV, "auto")
    restarted = MainWindow(again, interactive=False)
    qtbot.addWidget(restarted)
    assert os.environ[DEVICE_ENV] == "cpu"
    restarted.runner.shutdown(timeout=10)

    # a setting that is not a device reads as auto (nothing applied from it)
    again.qs.setValue("runtime/device", "gpu please")
    assert Settings(settings.path).device == "auto"


@no_gpu
def test_about_names_the_cpu_only_build_and_the_default_device(window, settings):
    text = window.about_text()
    assert f"torch {torch.__version__} (CPU only)" in text
    assert "GPUs torch sees: none" in text
    assert "Jobs set to device auto run on: cpu" in text
    assert f"Torch threads per job: {settings.torch_threads}" in text


def test_with_gpus_each_is_a_choice(qtbot):
    from app.device_choice import DeviceBox

    build = {"torch": "2.13.0+cu128", "build": "CUDA 12.8", "gpus": ["NVIDIA H100", "NVIDIA H100"]}
    box = DeviceBox("cuda:1", build)
    qtbot.addWidget(box)
    assert [box.itemData(i) for i in range(box.count())] == ["auto", "cpu", "cuda", "cuda:0", "cuda:1"]
    assert all(box.is_enabled(box.itemData(i)) for i in range(box.count()))
    assert box.value() == "cuda:1" and box.currentText() == "cuda:1 — NVIDIA H100"
    moved = DeviceBox("cuda:3", build)  # a setting from a machine with more GPUs: shown, not choosable again
    qtbot.addWidget(moved)
    assert moved.value() == "cuda:3" and not moved.is_enabled("cuda:3")
