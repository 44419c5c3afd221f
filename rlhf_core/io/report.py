"""A run report: one self-contained HTML page to send to a colleague or print to PDF (``report``, and
**Export report…** on the Runs page).

The page holds the run's metrics as inline SVG line plots (one per namespace and unit, as in the app), its
final metrics, settings and result, the project's data counts, a table of its stored samples, and the
versions and device of the machine that wrote it. It needs nothing else: no scripts (a Content-Security-Policy
forbids them), no external files. Every text that comes from the project (model output, prompts, settings, the
project's name) is HTML-escaped. Print CSS keeps each plot and table row on one page.
"""

from __future__ import annotations

import datetime as _dt
import html
import importlib.metadata
import json
import math
import os
import platform
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rlhf_core import __version__
from rlhf_core.io.metrics_export import MetricsExportError, write_text_atomically
from rlhf_core.metrics import METRIC_KEYS, METRIC_UNITS, colour, current_key, declared, describe, namespace, unit
from rlhf_core.registry import get_job
from rlhf_core.store import Project, describe_stored_error

MAX_SAMPLES = 100  #: samples shown (evenly spaced over the run when it stored more)
MAX_TEXT = 1500  #: characters of one sample's text shown
MAX_JSON = 400  #: characters of a list or object shown in a table cell
MAX_POINTS = 1500  #: points drawn per curve (longer series: the min and max of each bucket)
FEW_POINTS = 20  #: a curve with fewer points gets markers, as in the app
MEMBER_SHADE = 0.6  #: ensemble members: their metric's colour this far towards white, as in the app
_STATUS_COLOURS = {"completed": "#1b7f3b", "failed": "#b00020", "cancelled": "#8a6d00", "running": "#1f5fbf",
                   "queued": "#666666"}


class ReportError(ValueError):
    """A report cannot be written as asked; ``str(error)`` says why."""


def report_name(run_id: int) -> str:
    return f"run-{int(run_id)}-report.html"


def write_report(project: Project, run_id: int, out_dir: str | os.PathLike) -> Path:
    """Write run ``run_id``'s report into folder ``out_dir`` (made if missing) and return the file's path.
    An unknown run or an unusable folder is :class:`ReportError`, and nothing is written."""
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise ReportError(f"{out} is a file; give a folder for the report.")
    page = build_report(project, run_id)
    try:
        out.mkdir(parents=True, exist_ok=True)
        return write_text_atomically(out / report_name(run_id), page)
    except MetricsExportError as exc:
        raise ReportError(str(exc)) from None
    except OSError as exc:
        raise ReportError(f"Cannot write the report into {out}: {exc.strerror or exc}.") from None


# ---------------------------------------------------------------------------- numbers and text
def fmt(value: Any) -> str:
    """A number as the report shows it (6 significant digits; whole numbers in full); text as it is."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "∞" if value > 0 else "−∞"
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.6g}"
    return str(value)


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"… ({len(text) - limit:,} more characters)"


def _cell(value: Any) -> str:
    """A table cell's inner HTML for a JSON value (escaped; long text and JSON cut)."""
    if isinstance(value, str):
        return f'<span class="text">{_e(_clip(value, MAX_TEXT))}</span>'
    if value is None or isinstance(value, (bool, int, float)):
        return _e(fmt(value))
    return f'<span class="json">{_e(_clip(json.dumps(value, ensure_ascii=False, default=str), MAX_JSON))}</span>'


def _table(head: Sequence[str], rows: Iterable[str], cls: str = "") -> str:
    ths = "".join(f"<th>{_e(h)}</th>" for h in head)
    return (f'<table class="{cls}"><thead><tr>{ths}</tr></thead><tbody>' + "".join(rows) + "</tbody></table>")


# ---------------------------------------------------------------------------- SVG line plots
@dataclass
class Curve:
    """One line of a plot: ``steps`` and ``values`` (NaN: a gap), its colour and width."""

    label: str
    steps: Sequence[float]
    values: Sequence[float]
    colour: str = "#1f77b4"
    width: float = 1.5
    markers: bool | None = None  # None: markers when the curve has few points
    legend: bool = True


def _lighter(colour_hex: str, amount: float) -> str:
    rgb = [int(colour_hex[i:i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(v + (255 - v) * amount):02x}" for v in rgb)


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values (1, 2, 2.5 or 5 times a power of ten apart) covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / max(1, count)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks, i = [], 0
    while first + i * step <= hi + step * 1e-9 and i < 100:
        tick = first + i * step
        ticks.append(0.0 if abs(tick) < step * 1e-9 else tick)
        i += 1
    return ticks


def _tick_label(value: float, step: float) -> str:
    if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
        return f"{value:.3g}"
    decimals = max(0, -math.floor(math.log10(step) + 1e-9)) if step > 0 else 0
    if step > 0 and round(step / 10 ** -decimals, 6) % 1:  # 2.5 x 10^k needs one more digit
        decimals += 1
    return f"{value:.{decimals}f}"


def _downsample(xs: np.ndarray, ys: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """At most about ``limit`` points: each bucket's lowest and highest point, in step order (peaks kept; a
    bucket of only NaN stays a gap)."""
    n = len(xs)
    if n <= limit:
        return xs, ys
    buckets = max(1, limit // 2)
    size = -(-n // buckets)
    pad = buckets * size - n
    y = np.concatenate([ys, np.full(pad, np.nan)]).reshape(buckets, size)
    missing = np.isnan(y)
    low = np.where(missing, np.inf, y).argmin(axis=1)
    high = np.where(missing, -np.inf, y).argmax(axis=1)
    first, second = np.minimum(low, high), np.maximum(low, high)
    base = np.arange(buckets) * size
    index = np.stack([base + first, base + second], axis=1).ravel()
    index = index[np.r_[True, index[1:] != index[:-1]]]  # a bucket whose low is its high: once
    index = index[index < n]
    return xs[index], ys[index]


def svg_line_plot(curves: Sequence[Curve], *, y_label: str = "", x_label: str = "step", title: str = "",
                  width: int = 520, height: int = 230) -> str:
    """An SVG line plot of ``curves`` (inline in HTML: no scripts, no fonts to load). Non-finite values are
    gaps; a curve of fewer than :data:`FEW_POINTS` points gets markers."""
    left, right, top, bottom = 64, 12, 10, 38
    pw, ph = width - left - right, height - top - bottom
    data = []
    for curve in curves:
        xs = np.asarray(curve.steps, dtype=np.float64)
        ys = np.asarray(curve.values, dtype=np.float64)
        ys = np.where(np.isfinite(ys) & np.isfinite(xs), ys, np.nan)  # an infinity is a gap, like NaN
        data.append((curve, xs, ys))
    finite = [(xs[ok], ys[ok]) for _, xs, ys in data for ok in [~np.isnan(ys)] if ok.any()]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="{_e(title or y_label)}" class="plot">']
    if title:
        parts.append(f"<title>{_e(title)}</title>")
    parts.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fff" stroke="#999"/>')
    if not finite:
        parts.append(f'<text x="{left + pw / 2}" y="{top + ph / 2}" text-anchor="middle" class="note">'
                     "no finite values</text></svg>")
        return "".join(parts)
    x0, x1 = min(float(x.min()) for x, _ in finite), max(float(x.max()) for x, _ in finite)
    y0, y1 = min(float(y.min()) for _, y in finite), max(float(y.max()) for _, y in finite)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    else:  # room for the first and last markers
        pad = (x1 - x0) * 0.02
        x0, x1 = x0 - pad, x1 + pad
    if y1 == y0:
        pad = abs(y0) * 0.1 or 1.0
        y0, y1 = y0 - pad, y1 + pad
    else:
        pad = (y1 - y0) * 0.06
        y0, y1 = y0 - pad, y1 + pad

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * pw

    def py(y: float) -> float:
        return top + ph - (y - y0) / (y1 - y0) * ph

    for ticks, axis in ((nice_ticks(x0, x1, 6), "x"), (nice_ticks(y0, y1, 5), "y")):
        step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
        for t in ticks:
            label = _e(_tick_label(t, step))
            if axis == "x":
                x = px(t)
                parts.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + ph}" class="grid"/>'
                             f'<text x="{x:.1f}" y="{top + ph + 14}" text-anchor="middle">{label}</text>')
            else:
                y = py(t)
                parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" class="grid"/>'
                             f'<text x="{left - 5}" y="{y + 4:.1f}" text-anchor="end">{label}</text>')
    parts.append(f'<text x="{left + pw / 2}" y="{height - 6}" text-anchor="middle" class="axis">{_e(x_label)}</text>')
    if y_label:
        parts.append(f'<text x="14" y="{top + ph / 2}" text-anchor="middle" class="axis" '
                     f'transform="rotate(-90 14 {top + ph / 2})">{_e(y_label)}</text>')
    parts.append(f'<svg x="{left}" y="{top}" width="{pw}" height="{ph}" viewBox="{left} {top} {pw} {ph}">')
    for curve, xs, ys in data:
        xs, ys = _downsample(xs, ys, MAX_POINTS)
        segments: list[list[str]] = [[]]
        points = []
        for x, y in zip(xs.tolist(), ys.tolist()):
            if not math.isnan(y):
                point = f"{px(x):.1f},{py(y):.1f}"
                segments[-1].append(point)
                points.append(point)
            elif segments[-1]:
                segments.append([])
        colour_ = _e(curve.colour)
        for seg in segments:
            if len(seg) > 1:
                parts.append(f'<polyline points="{" ".join(seg)}" fill="none" stroke="{colour_}" '
                             f'stroke-width="{curve.width}" stroke-linejoin="round"/>')
        markers = curve.markers if curve.markers is not None else len(points) < FEW_POINTS
        if markers:
            r = 1.6 + curve.width * 0.6
            parts.extend(f'<circle cx="{p.split(",")[0]}" cy="{p.split(",")[1]}" r="{r:.1f}" fill="{colour_}"/>'
                         for p in points)
    parts.append("</svg></svg>")
    return "".join(parts)


def _legend(curves: Sequence[Curve]) -> str:
    rows = []
    for c in curves:
        if c.legend:
            rows.append(f'<li><span class="swatch" style="border-top: {max(2, round(c.width))}px solid '
                        f'{_e(c.colour)}"></span>{_e(c.label)}</li>')
    return '<ul class="legend">' + "".join(rows) + "</ul>"


# ---------------------------------------------------------------------------- the run's metrics
def _declared_groups() -> dict[tuple[str, str], int]:
    ranks: dict[tuple[str, str], int] = {}
    for key in METRIC_KEYS:
        ranks.setdefault((namespace(key), METRIC_UNITS.get(key, "")), len(ranks))
    return ranks


_GROUP_RANK = _declared_groups()
_KEY_RANK = {key: i for i, key in enumerate(METRIC_KEYS)}


def _member_template(key: str) -> str | None:
    entry = declared(current_key(key))
    return entry if entry is not None and "{k}" in entry else None


def _key_order(key: str) -> tuple:
    entry = declared(current_key(key)) or key
    digits = "".join(ch for ch in key.rsplit("/", 1)[-1].split("_", 1)[0] if ch.isdigit())
    return _KEY_RANK.get(entry, len(_KEY_RANK)), int(digits) if digits and "{k}" in entry else 0, key


def metric_groups(metrics: dict[str, tuple[list[int], list[float]]]) -> list[tuple[str, list[str]]]:
    """The plots of a run, as the app draws them: ``[(title "namespace · unit", keys)]``, namespaces in
    name order, units in declared order, keys in declared order."""
    groups: dict[tuple[str, str], list[str]] = {}
    for key in metrics:
        groups.setdefault((namespace(key), unit(key)), []).append(key)
    ordered = sorted(groups, key=lambda g: (g[0], _GROUP_RANK.get(g, len(_GROUP_RANK)), g[1]))
    return [(" · ".join(p for p in (ns, u if u != ns else "") if p), sorted(groups[(ns, u)], key=_key_order))
            for ns, u in ordered]


def _ensemble_mean(parts: list[tuple[list[int], list[float]]]) -> tuple[list[int], list[float]]:
    sums: dict[int, list[float]] = {}
    for steps, values in parts:
        for s, v in zip(steps, values):
            if math.isfinite(v):
                sums.setdefault(s, []).append(v)
    steps = sorted(sums)
    return steps, [sum(sums[s]) / len(sums[s]) for s in steps]


def _plot_curves(keys: list[str], metrics: dict[str, tuple[list[int], list[float]]]) -> list[Curve]:
    curves: list[Curve] = []
    members: dict[str, list[str]] = {}
    for key in keys:
        template = _member_template(key)
        if template is not None:
            members.setdefault(template, []).append(key)
            continue
        steps, values = metrics[key]
        curves.append(Curve(key.split("/", 1)[-1], steps, values, colour(key)))
    for template, member_keys in members.items():
        name = template.split("/", 1)[-1].replace("m{k}_", "")
        c = colour(template)
        light = _lighter(c, MEMBER_SHADE)
        for i, key in enumerate(member_keys):
            steps, values = metrics[key]
            curves.append(Curve(f"{name} (members)", steps, values, light, width=1.0, legend=i == 0,
                                markers=len(steps) < 3))
        mean_steps, mean_values = _ensemble_mean([metrics[k] for k in member_keys])
        curves.append(Curve(f"{name} (ensemble mean)", mean_steps, mean_values, c, width=2.2))
    return curves


def final_values(metrics: dict[str, tuple[list[int], list[float]]]) -> dict[str, tuple[int | None, float]]:
    """Each key's last finite value and its step ((None, NaN) when it logged none)."""
    out = {}
    for key, (steps, values) in metrics.items():
        last = next(((s, v) for s, v in zip(reversed(steps), reversed(values)) if math.isfinite(v)), None)
        out[key] = last if last is not None else (None, math.nan)
    return out


# ---------------------------------------------------------------------------- the machine
def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def versions() -> dict[str, str]:
    """The versions that matter for reproducing a run (read from the installed packages: nothing imported)."""
    return {"python": platform.python_version(), "rlhf-workbench": __version__, "torch": _version("torch"),
            "transformers": _version("transformers"), "numpy": _version("numpy"),
            "gymnasium": _version("gymnasium"), "stable-baselines3": _version("stable-baselines3")}


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _gpus() -> list[str]:
    """GPU names: from torch when a job has set CUDA up already (torch is never imported, nor CUDA started, for
    this: seconds in the GUI thread), else NVIDIA's driver files."""
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if torch.cuda.is_initialized():
                return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        except Exception:  # noqa: BLE001 - a broken driver must not break the report
            pass
    names = []
    for info in sorted(Path("/proc/driver/nvidia/gpus").glob("*/information")):
        try:
            line = next((ln for ln in info.read_text().splitlines() if ln.startswith("Model:")), "")
        except OSError:
            continue
        if line:
            names.append(line.split(":", 1)[1].strip())
    return names


def device() -> dict[str, str]:
    gpus = _gpus()
    return {"system": platform.platform(), "CPU": f"{_cpu_name()} ({os.cpu_count() or '?'} logical cores)",
            "GPU": ", ".join(gpus) if gpus else "none found"}


# ---------------------------------------------------------------------------- the page
_CSS = """
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: #1a1a1a;
       max-width: 1040px; margin: 24px auto; padding: 0 20px; background: #fff; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; border-bottom: 1px solid #ddd;
     padding-bottom: 3px; } h3 { font-size: 14px; margin: 16px 0 6px; }
.meta { color: #444; margin: 0 0 4px; } .status { font-weight: 600; } .note { color: #666; font-size: 12px; }
.failure { border-left: 4px solid #b00020; padding: 6px 10px; background: #fdf3f4; }
table { border-collapse: collapse; width: 100%; margin: 6px 0 10px; font-size: 13px; table-layout: auto; }
table.counts { width: auto; min-width: 45%; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #f3f5f7; font-weight: 600; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.kv td:first-child { width: 32%; color: #333; font-family: ui-monospace, "DejaVu Sans Mono", monospace;
                     font-size: 12px; }
.samples td { overflow-wrap: break-word; } .samples td.num { white-space: nowrap; width: 1%; }
.samples .text { display: block; min-width: 10em; }
.text { white-space: pre-wrap; } .json { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 11px;
       white-space: pre-wrap; overflow-wrap: anywhere; color: #333; }
.plots { display: grid; grid-template-columns: repeat(auto-fill, minmax(440px, 1fr)); gap: 6px 28px; }
figure { margin: 6px 0 12px; } figcaption { font-weight: 600; margin-bottom: 2px; }
svg.plot { width: 100%; height: auto; display: block; font: 11px system-ui, "DejaVu Sans", sans-serif; }
svg.plot text { fill: #333; } svg.plot text.axis { fill: #111; } svg.plot .grid { stroke: #eee; }
.legend { list-style: none; padding: 0; margin: 2px 0 0 12%; columns: 2; font-size: 12px; }
.legend li { break-inside: avoid; }
.swatch { display: inline-block; width: 22px; margin: 0 6px 3px 0; vertical-align: middle; }
footer { margin-top: 32px; color: #666; font-size: 12px; }
@page { size: A4; margin: 14mm 12mm; }
@media print {
  body { max-width: none; margin: 0; padding: 0; font-size: 10.5pt; }
  h2 { break-after: avoid; } figure, tr, .failure, .legend { break-inside: avoid; }
  .plots { display: block; } figure { max-width: 150mm; }
  thead { display: table-header-group; } table { font-size: 9pt; } .samples td { font-size: 8.5pt; }
  .json { font-size: 8pt; }
}
"""


def _section(title: str, body: str, ident: str) -> str:
    return f'<section id="{ident}"><h2>{_e(title)}</h2>{body}</section>'


def _kv_table(pairs: Iterable[tuple[str, Any]], head: tuple[str, str], cls: str = "kv") -> str:
    rows = [f'<tr data-key="{_e(k)}"><td>{_e(k)}</td><td>{_cell(v)}</td></tr>' for k, v in pairs]
    return _table(head, rows, cls) if rows else '<p class="note">None.</p>'


def _duration(run: dict) -> str:
    try:
        start = _dt.datetime.fromisoformat(run["started_at"])
        end = _dt.datetime.fromisoformat(run["finished_at"])
    except (TypeError, ValueError):
        return "—"
    seconds = (end - start).total_seconds()
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _when(stamp: str | None) -> str:
    """``2026-12-06 23:04:17`` from a stored ISO time (UTC)."""
    return stamp[:19].replace("T", " ") if stamp else "—"


def _header(project: Project, run: dict) -> str:
    try:
        title = get_job(run["kind"]).title
    except KeyError:
        title = run["kind"]
    name = run.get("name") or title
    status = run["status"]
    bits = [f'<p class="meta">Job <b>{_e(run["kind"])}</b> · status <span class="status" style="color: '
            f'{_STATUS_COLOURS.get(status, "#000")}">{_e(status)}</span> · project {_e(project.name)}</p>',
            f'<p class="meta">Created {_e(_when(run["created_at"]))} · started {_e(_when(run["started_at"]))} · '
            f'finished {_e(_when(run["finished_at"]))} (UTC) · duration {_e(_duration(run))}'
            + (f' · part of run {int(run["parent_run_id"])}' if run.get("parent_run_id") else "") + "</p>"]
    failure = describe_stored_error(run.get("error")) if status == "failed" else None
    if failure is not None:
        bits.append(f'<p class="failure">{_e(failure.what)} {_e(failure.todo)}</p>')
    return f'<header><h1>Run {int(run["id"])}: {_e(name)}</h1>{"".join(bits)}</header>'


def _final_section(metrics: dict[str, tuple[list[int], list[float]]]) -> str:
    if not metrics:
        return '<p class="note">This run logged no metrics.</p>'
    finals = final_values(metrics)
    rows = []
    for _, keys in metric_groups(metrics):
        for key in keys:
            step, value = finals[key]
            steps, values = metrics[key]
            ok = [v for v in values if math.isfinite(v)]
            rows.append(
                f'<tr data-key="{_e(key)}"><td title="{_e(describe(key))}">{_e(key)}</td><td>{_e(unit(key))}</td>'
                f'<td class="num final" data-value="{_e(repr(float(value)))}">{_e(fmt(value))}</td>'
                f'<td class="num">{_e(fmt(step))}</td>'
                f'<td class="num">{_e(fmt(min(ok)) if ok else "—")}</td>'
                f'<td class="num">{_e(fmt(max(ok)) if ok else "—")}</td>'
                f'<td class="num">{len(values)}</td></tr>')
    return _table(("metric", "unit", "final value", "at step", "min", "max", "points"), rows, "finals")


def _plots_section(metrics: dict[str, tuple[list[int], list[float]]]) -> str:
    figures = []
    for title, keys in metric_groups(metrics):
        curves = _plot_curves(keys, metrics)
        u = unit(keys[0])
        figures.append(f'<figure data-plot="{_e(title)}"><figcaption>{_e(title)}</figcaption>'
                       f"{svg_line_plot(curves, y_label=u, title=title)}{_legend(curves)}</figure>")
    return f'<div class="plots">{"".join(figures)}</div>' if figures else '<p class="note">No metrics to plot.</p>'


def _data_section(project: Project, run_id: int) -> str:
    counts = project.counts()
    sources = dict(project.conn.execute(
        "SELECT source, count(*) FROM comparisons WHERE deleted_at IS NULL GROUP BY source ORDER BY source"))
    made = dict(project.conn.execute(
        "SELECT kind, count(*) FROM items WHERE run_id = ? AND deleted_at IS NULL GROUP BY kind ORDER BY kind",
        [int(run_id)]))
    labels = [("comparisons (labels)", counts["comparisons"])]
    labels += [(f"  of them {source}", n) for source, n in sources.items()]
    labels += [("rankings", counts["rankings"]), ("pairs waiting for a label", counts["queued_pairs"])]
    items = [(k, counts[k]) for k in ("prompts", "trajectories", "clips", "responses")]
    rows = [f'<tr data-count="{_e(k.strip())}"><td>{_e(k)}</td><td class="num">{int(n)}</td></tr>'
            for k, n in labels + items]
    body = ('<p class="note">The project when this report was written.</p>'
            + _table(("in the project", "count"), rows, "counts"))
    if made:
        body += _table(("items this run made", "count"),
                       [f'<tr data-made="{_e(k)}"><td>{_e(k)}</td><td class="num">{int(n)}</td></tr>'
                        for k, n in made.items()], "counts")
    checkpoints = project.checkpoints(run_id)
    if checkpoints:
        body += _table(("checkpoint", "kind", "step", "file"), [
            f'<tr><td class="num">{int(c["id"])}</td><td>{_e(c["kind"])}</td><td class="num">{_e(fmt(c["step"]))}</td>'
            f'<td>{_e(c["path"])}</td></tr>' for c in checkpoints])
    return body


def _is_number(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float))


def _sample_columns(samples: list[tuple[Any, Any]]) -> list[str]:
    """A kind's table columns: its payloads' fields, numbers first and long texts last ([] when the payloads
    are not objects or have too many fields: one column then holds each whole payload). A ``step`` field equal
    to the sample's own step is left out."""
    if not samples or not all(isinstance(p, dict) for _, p in samples):
        return []
    columns: list[str] = []
    for _, payload in samples:
        columns.extend(k for k in payload if k not in columns)
    if all(p.get("step", step) == step for step, p in samples):
        columns = [c for c in columns if c != "step"]
    if not columns or len(columns) > 12:
        return []

    def rank(column: str) -> int:
        values = [p.get(column) for _, p in samples]
        if all(_is_number(v) for v in values):
            return 0
        return 2 if any(isinstance(v, str) and len(v) > 40 for v in values) else 1

    return sorted(columns, key=rank)


def _samples_section(project: Project, run_id: int) -> str:
    ids = [r[0] for r in project.conn.execute("SELECT id FROM samples WHERE run_id = ? ORDER BY id", [int(run_id)])]
    if not ids:
        return '<p class="note">This run stored no samples.</p>'
    if len(ids) > MAX_SAMPLES:  # evenly spaced over the run, the first and the last included
        picked = sorted({ids[round(i * (len(ids) - 1) / (MAX_SAMPLES - 1))] for i in range(MAX_SAMPLES)})
        note = (f'<p class="note">{len(picked)} of the run\'s {len(ids):,} samples, evenly spaced over the run; '
                "long texts are cut.</p>")
    else:
        picked = ids
        note = f'<p class="note">All {len(ids)} samples of the run; long texts are cut.</p>'
    marks = ",".join("?" * len(picked))
    rows = project.conn.execute(f"SELECT id, step, kind, payload_json FROM samples WHERE id IN ({marks}) ORDER BY id",
                                picked).fetchall()
    by_kind: dict[str, list[tuple[Any, Any]]] = {}
    for _, step, kind, payload_json in rows:
        try:
            payload = json.loads(payload_json)
        except ValueError:
            payload = payload_json
        by_kind.setdefault(kind, []).append((step, payload))
    parts = [note]
    for kind, samples in by_kind.items():
        columns = _sample_columns(samples)
        head = ["step", *(columns or ["sample"])]
        numeric = {c for c in columns if all(_is_number(p.get(c)) for _, p in samples)}
        body = []
        for step, payload in samples:
            cells = [payload.get(c) for c in columns] if columns else [payload]
            body.append(f'<tr><td class="num step">{_e(fmt(step))}</td>' + "".join(
                f'<td class="{"num" if c in numeric else ""}">{_cell(v)}</td>'
                for c, v in zip(columns or ["sample"], cells)) + "</tr>")
        ths = "".join(f"<th>{_e(h)}</th>" for h in head)
        parts.append(f"<h3>{_e(kind)} ({len(samples)})</h3>"
                     f'<table class="samples"><thead><tr>{ths}</tr></thead><tbody>{"".join(body)}</tbody></table>')
    return "".join(parts)


def build_report(project: Project, run_id: int) -> str:
    """Run ``run_id``'s report as one HTML page (:class:`ReportError` for an unknown run)."""
    run = project.get_run(int(run_id))
    if run is None:
        raise ReportError(f"The project {project.folder} has no run {run_id}; nothing was written.")
    metrics = project.metrics(run_id)
    written = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    result = run.get("result")
    result_pairs = list(result.items()) if isinstance(result, dict) else ([("result", result)] if result else [])
    machine = [*versions().items(), *device().items()]
    sections = [
        _header(project, run),
        _section("Final metrics", _final_section(metrics), "final-metrics"),
        _section("Metrics", _plots_section(metrics), "plots"),
        _section("Settings", (f'<p class="note">{_e(run["config_error"])}</p>' if run.get("config_error") else "")
                 + _kv_table(run["config"].items(), ("setting", "value")), "settings"),
        _section("Result", _kv_table(result_pairs, ("result", "value"), "kv result"), "result"),
        _section("Data", _data_section(project, run_id), "data"),
        _section("Samples", _samples_section(project, run_id), "samples"),
        _section("Versions and device", '<p class="note">Of the machine that wrote this report.</p>'
                 + _kv_table(machine, ("software or part", "version or name"), "kv versions"), "versions"),
    ]
    title = f"Run {int(run_id)} ({run['kind']}) — {project.name}"
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
            "img-src data:\">"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<meta name=\"generator\" content=\"rlhf-workbench {_e(__version__)}\">"
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
            + "".join(sections)
            + f"<footer>Written {_e(written)} by RLHF Workbench {_e(__version__)} from {_e(project.folder)}."
              "</footer></body></html>\n")

