"""The run report: one self-contained HTML page whose numbers equal the run's, with model text escaped; it opens
in headless Chromium (a screenshot that is not blank, a PDF) and says in words why it cannot be written."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest

from rlhf_core.io.report import (
    MAX_POINTS,
    Curve,
    ReportError,
    build_report,
    fmt,
    metric_groups,
    report_name,
    svg_line_plot,
    write_report,
)
from tests.conftest import ROOT
from tests.core.io.runs_for_reports import HOSTILE, STEPS, make_reported_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (scripts/setup.sh "
                                    "installs it when run as root); the report is opened in a real browser")


class Page(HTMLParser):
    """The rows of every table (by section id and table class) and a count of every tag."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags: dict[str, int] = {}
        self.rows: list[dict] = []
        self.texts: list[str] = []
        self._section = self._table = ""
        self._row: dict | None = None
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags[tag] = self.tags.get(tag, 0) + 1
        if tag == "section":
            self._section = attrs.get("id", "")
        elif tag == "table":
            self._table = attrs.get("class", "")
        elif tag == "tr":
            self._row = {"section": self._section, "table": self._table, "attrs": attrs, "cells": []}
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
            self._row["cells"].append((attrs, self._cell))

    def handle_endtag(self, tag):
        if tag == "tr" and self._row is not None:
            self._row["cells"] = [(a, "".join(t).strip()) for a, t in self._row["cells"]]
            self.rows.append(self._row)
            self._row = None
        elif tag in ("td", "th"):
            self._cell = None

    def handle_data(self, data):
        self.texts.append(data)
        if self._cell is not None:
            self._cell.append(data)

    def table(self, section: str, key: str = "data-key") -> dict[str, list[tuple[dict, str]]]:
        return {r["attrs"][key]: r["cells"] for r in self.rows if r["section"] == section and key in r["attrs"]}


def last_finite(steps, values):
    for s, v in zip(reversed(steps), reversed(values)):
        if not math.isnan(v):
            return s, v
    return None, math.nan


def check_numbers(page: Page, project, run_id: int) -> None:
    """Every number the page shows about the run equals the project's."""
    metrics = project.metrics(run_id)
    finals = page.table("final-metrics")
    assert set(finals) == set(metrics)
    for key, (steps, values) in metrics.items():
        step, value = last_finite(steps, values)
        cells = finals[key]
        assert cells[0][1] == key
        assert float(cells[2][0]["data-value"]) == value and cells[2][1] == fmt(value), key
        assert cells[3][1] == fmt(step) and int(cells[6][1]) == len(steps), key
    run = project.get_run(run_id)
    settings = page.table("settings")
    assert {k: text for k, ((_, _), (_, text)) in settings.items()} == {k: fmt(v) for k, v in run["config"].items()}
    result = page.table("result")
    assert {k: text for k, ((_, _), (_, text)) in result.items()} == {k: fmt(v) for k, v in run["result"].items()}
    counts = {k: int(cells[1][1]) for k, cells in page.table("data", "data-count").items()}
    project_counts = project.counts()
    assert counts["comparisons (labels)"] == project_counts["comparisons"] == 3
    assert counts["of them synthetic"] == 2 and counts["of them human"] == 1
    for key in ("prompts", "responses", "trajectories", "clips", "rankings"):
        assert counts[key] == project_counts[key], key
    samples = [r for r in page.rows if r["section"] == "samples" and r["table"] == "samples" and r["cells"]
               and r["cells"][0][0].get("class", "").startswith("num")]
    stored = project.samples(run_id)
    assert [int(r["cells"][0][1]) for r in samples] == [s["step"] for s in stored] == [0, 10, 20]
    versions = page.table("versions")
    assert versions["python"][1][1] == ".".join(map(str, sys.version_info[:3]))
    assert {"rlhf-workbench", "torch", "transformers", "CPU", "GPU"} <= set(versions)


@pytest.fixture
def reported(project):
    return project, make_reported_run(project)


def test_the_page_holds_the_runs_numbers_and_only_escaped_model_text(reported, tmp_path):
    project, run_id = reported
    path = write_report(project, run_id, tmp_path / "made" / "here")
    assert path == tmp_path / "made" / "here" / report_name(run_id)
    text = path.read_text(encoding="utf-8")
    page = Page(text)
    check_numbers(page, project, run_id)
    # self-contained, and nothing from the run became markup: no script, image, link, frame or event handler
    assert not {"script", "img", "iframe", "link", "object", "embed"} & set(page.tags)
    assert "<script" not in text and "onerror=" not in text.replace("onerror=alert(1)&gt;", "")
    assert HOSTILE in "".join(page.texts)  # shown as the characters it holds
    assert "Content-Security-Policy" in text and not re.search(r"(src|href)\s*=\s*[\"']?(https?:|//)", text)
    # one plot per namespace and unit, as the app draws them; each an SVG that parses
    titles = [t for t, _ in metric_groups(project.metrics(run_id))]
    assert titles == ["completions · tokens", "kl · KL/token", "reward", "reward_model · nats", "train · loss"]
    figures = re.findall(r'<figure data-plot="([^"]+)">.*?(<svg .*?</svg></svg>)', text, re.S)
    assert [html_title for html_title, _ in figures] == titles
    for _, svg in figures:
        assert ET.fromstring(svg).tag == "{http://www.w3.org/2000/svg}svg"
    assert "loss (ensemble mean)" in text and "loss (members)" in text


def test_bad_requests_say_why_and_write_nothing(reported, tmp_path):
    project, run_id = reported
    with pytest.raises(ReportError, match="has no run 99"):
        write_report(project, 99, tmp_path / "new")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(ReportError, match="is a file"):
        write_report(project, run_id, blocker)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "test.rlhf"]
    project.close()
    out = subprocess.run([sys.executable, "-m", "rlhf_core", "report", "--project", str(project.folder), "--run", "99",
                          "--out", str(tmp_path / "new")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "has no run 99" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "new").exists()


def test_the_plot_draws_gaps_markers_flat_lines_and_long_series():
    long = list(range(20_000))
    svg = svg_line_plot([Curve("gappy", [0, 1, 2, 3, 4], [1.0, math.nan, 2.0, 3.0, math.inf]),
                         Curve("flat", [0, 1], [5.0, 5.0], "#d62728"),
                         Curve("long", long, [math.sin(x / 500) for x in long], "#2ca02c")], y_label="u <&>")
    root = ET.fromstring(svg)
    ns = {"s": "http://www.w3.org/2000/svg"}
    lines = root.findall(".//s:polyline", ns)
    assert len(lines) == 3  # gappy: one segment of two points (the NaN splits it); flat; long
    assert len(lines[0].get("points").split()) == 2
    assert len(lines[2].get("points").split()) <= MAX_POINTS + 2  # peaks kept, not every point
    assert len(root.findall(".//s:circle", ns)) == 3 + 2  # markers on the short curves' finite points
    assert "u <&>" in "".join(root.itertext())
    assert ET.fromstring(svg_line_plot([Curve("none", [0], [math.nan])])) is not None


@needs_chromium
def test_the_report_opens_in_chromium_and_prints_to_pdf(reported, tmp_path):
    import av

    project, run_id = reported
    path = write_report(project, run_id, tmp_path / "report")
    url = path.as_uri()
    base = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
            f"--user-data-dir={tmp_path / 'chromium'}"]

    def chromium(*args) -> subprocess.CompletedProcess:
        out = subprocess.run([*base, *args, url], capture_output=True, timeout=90)
        assert out.returncode == 0, out.stderr[-2000:]
        return out

    shot = tmp_path / "shot.png"
    chromium(f"--screenshot={shot}", "--window-size=1100,1400")
    frame = next(av.open(str(shot)).decode(video=0)).to_ndarray(format="rgb24")
    assert frame.shape == (1400, 1100, 3)
    assert frame.std() > 10 and (frame.min(axis=2) < 100).mean() > 0.005  # text and curves, not a blank page

    dom = chromium("--dump-dom").stdout.decode("utf-8")
    page = Page(dom)
    check_numbers(page, project, run_id)  # as the browser parsed it
    assert "script" not in page.tags and page.tags.get("svg", 0) >= 10

    pdf = tmp_path / "report.pdf"
    chromium(f"--print-to-pdf={pdf}", "--no-pdf-header-footer")
    data = pdf.read_bytes()
    pages = len(re.findall(rb"/Type\s*/Page(?!s)", data))
    assert data.startswith(b"%PDF") and 2 <= pages <= 12, pages
