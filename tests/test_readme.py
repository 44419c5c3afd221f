"""The README's Layout section matches the tree: every folder it names exists, and every package folder and
module of ``rlhf_core`` (and every folder of ``app``) is named in it."""

from __future__ import annotations

import re
import subprocess

from tests.conftest import ROOT


def _layout() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Layout", 1)[1]
    return section.split("```", 2)[1]


def _words(text: str) -> set[str]:
    return set(re.findall(r"[A-Za-z_][\w.]*/?", text))


def _tracked_top_level() -> set[str]:
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    return {f.split("/", 1)[0] + "/" for f in files if "/" in f and not f.startswith(".")}


def test_every_top_level_folder_is_in_the_layout_and_exists():
    layout = _layout()
    named = {line.split()[0] for line in layout.splitlines() if line and not line.startswith(" ")}
    folders = {n for n in named if n.endswith("/")}
    assert _tracked_top_level() <= folders, _tracked_top_level() - folders
    assert all((ROOT / f).is_dir() for f in folders), [f for f in folders if not (ROOT / f).is_dir()]


def test_every_rlhf_core_module_and_app_folder_is_named():
    layout = _layout()
    core = layout.split("rlhf_core/", 1)[1].split("\ntests/", 1)[0]
    blocks: dict[str, str] = {}
    current = ""
    for line in core.splitlines()[1:]:
        match = re.match(r"  (\w+)/\s", line)
        if match:
            current = match.group(1)
        blocks[current] = blocks.get(current, "") + line + "\n"
    package = ROOT / "rlhf_core"
    folders = {p.name for p in package.iterdir() if (p / "__init__.py").is_file()}
    assert folders == set(blocks) - {""}, (folders ^ (set(blocks) - {""}))
    assert {p.stem for p in package.glob("*.py")} - {"__init__", "__main__"} <= _words(blocks[""]) | {
        w.removesuffix(".py") for w in _words(blocks[""])}
    for folder in folders:
        words = {w.rstrip("/").removesuffix(".py") for w in _words(blocks[folder])}
        modules = {p.stem for p in (package / folder).rglob("*.py") if p.stem != "__init__"} | {
            p.name for p in (package / folder).iterdir() if (p / "__init__.py").is_file()}
        inner = {p.name for p in (package / folder).iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
        for sub in inner:  # a package named as a whole (``cluster/``) covers its own modules
            if sub in words:
                modules -= {p.stem for p in (package / folder / sub).rglob("*.py")}
        assert modules <= words, f"rlhf_core/{folder}: not in the README layout: {sorted(modules - words)}"
    app_text = layout.split("app/", 1)[1].split("\nrlhf_core/", 1)[0]
    app_folders = {p.name + "/" for p in (ROOT / "app").iterdir() if (p / "__init__.py").is_file()}
    assert app_folders <= _words(app_text), app_folders - _words(app_text)
