"""The one rule: rlhf_core (every submodule) imports with Qt, pyqtgraph and app unavailable (the import
statements themselves, function-level ones included, are checked in ``test_architecture.py``)."""

import subprocess
import sys
import textwrap

from tests.conftest import ROOT

PROBE = textwrap.dedent(
    """
    import importlib, importlib.abc, pkgutil, sys

    BLOCKED = ("PySide6", "PyQt5", "PyQt6", "PySide2", "pyqtgraph", "app", "shiboken6")

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"blocked in this test: {name}")
            return None

    sys.meta_path.insert(0, Block())
    import rlhf_core
    names = []
    for info in pkgutil.walk_packages(rlhf_core.__path__, "rlhf_core."):
        if info.name.endswith("__main__"):
            continue
        importlib.import_module(info.name)
        names.append(info.name)
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    assert not leaked, leaked
    print(len(names))
    """
)


def test_rlhf_core_imports_without_qt():
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr
    # every module was imported: store, jobs, config, cli, trainers, rewards, ...
    assert int(out.stdout.strip().splitlines()[-1]) >= 12

