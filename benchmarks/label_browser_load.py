"""How long the Labels page takes to show N labels, and a filter or a sort of them.

A real project gets ``--labels`` comparisons of text responses (4 labellers, 3 outcomes, two guideline
versions, a tenth relabelled so that the "all" view has history to compute), then, offscreen, with the
median of ``--repeats``: the query alone (``browse.query_labels``), the page's ``set_project`` (choices,
query, model reset, the first label's pair and history), a labeller filter, and a sort by labeller.

    .venv/bin/python benchmarks/label_browser_load.py [--labels 10000 100000] [--repeats 5]

Prints a JSON object as its last line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rlhf_core.labelers import browse  # noqa: E402
from rlhf_core.labelers.browse import LabelFilter  # noqa: E402
from rlhf_core.store import Project  # noqa: E402


def fill(project: Project, n: int) -> None:
    pid = project.add_prompt("Name a fruit.")
    items = [project.add_item("response", prompt_id=pid, text=f"answer {i}") for i in range(100)]
    people = [project.ensure_labeller(name) for name in ("ann", "ben", "cat", "dan")]
    with project.db.atomic():
        for i in range(n):
            a, b = items[i % 100], items[(i * 7 + 3) % 100]
            cid = project.add_comparison(a, b if b != a else items[(i + 1) % 100], ("left", "right", "tie")[i % 3],
                                         labeller_id=people[i % 4], response_ms=i % 5000,
                                         guideline_version=1 + (i * 2 >= n))
            if i % 10 == 0:
                project.edit_comparison(cid, "tie")


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QApplication

    from app.labeling.label_browser import LabelBrowserView

    app = QApplication.instance() or QApplication([])
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.labels:
            project = Project.create(Path(tmp) / f"labels-{n}.rlhf")
            fill(project, n)
            view = LabelBrowserView()
            view.resize(1280, 800)
            view.show()
            app.processEvents()
            query = median_seconds(lambda: browse.query_labels(project, LabelFilter(status="all")), args.repeats)
            shown = median_seconds(lambda: (view.set_project(project), app.processEvents()), args.repeats)
            rows = view.model.rowCount()

            def by_labeller() -> None:
                view.labeller_box.setCurrentIndex(1)
                app.processEvents()
                view.labeller_box.setCurrentIndex(0)
                app.processEvents()

            filtered = median_seconds(by_labeller, args.repeats) / 2
            sort = median_seconds(lambda: (view.table.sortByColumn(5, Qt.SortOrder.AscendingOrder),
                                           view.table.sortByColumn(0, Qt.SortOrder.DescendingOrder),
                                           app.processEvents()), args.repeats) / 2
            results.append({"labels": n, "rows_shown": rows, "query_all_s": round(query, 4),
                            "set_project_s": round(shown, 4), "filter_s": round(filtered, 4),
                            "sort_s": round(sort, 4)})
            print(results[-1], flush=True)
            view.set_project(None)
            view.deleteLater()
            project.close()
    print(json.dumps({"benchmark": "label_browser_load", "repeats": args.repeats, "results": results}))


if __name__ == "__main__":
    main()
