"""Two labellers on one project at the same time (two app windows, or the app and a CLI labeller): two
processes, each with its own connection, write labels, answer the same queue and relabel their own labels
at once. Nothing is lost, no queue entry is answered twice, and nobody sees "database is locked"."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from rlhf_core.store import Project

from tests.conftest import ROOT

N = 120  # labels per process

_LABELLER = """
import json, os, sys, time
from rlhf_core.labelers import browse
from rlhf_core.store import Project
folder, name, n, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
p = Project.open(folder, check=False)
labeller = p.ensure_labeller(name)
items = [r[0] for r in p.conn.execute("SELECT id FROM items ORDER BY id")]
queue = [r[0] for r in p.conn.execute("SELECT id FROM pair_queue ORDER BY id")]
print("ready", flush=True)
while not os.path.exists(go):
    time.sleep(0.002)
claimed, relabelled = [], 0
for i in range(n):
    cid = p.add_comparison(items[i % len(items)], items[(i + 1) % len(items)], "left", labeller_id=labeller,
                           response_ms=i)
    if i % 10 == 0:  # a relabel checks and writes under the write lock
        browse.relabel(cid, "tie")(p)
        relabelled += 1
    if i < len(queue):
        got = p.claim_pair(queue[i], "right", labeller_id=labeller)
        if got is not None:
            claimed.append(queue[i])
p.close()
print(json.dumps({"claimed": claimed, "relabelled": relabelled}))
"""


def test_two_processes_labelling_at_once_lose_nothing(tmp_path):
    folder = tmp_path / "study.rlhf"
    with Project.create(folder) as project:
        pid = project.add_prompt("Name a fruit.")
        items = [project.add_item("response", prompt_id=pid, text=f"answer {i}") for i in range(6)]
        queue = [project.enqueue_pair(items[i % 6], items[(i + 2) % 6]) for i in range(40)]
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", _LABELLER, str(folder), name, str(N), str(go)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name in ("alice", "bob")]
    try:
        for proc in procs:  # both connected before either writes
            assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        go.touch()
        results = []
        deadline = time.monotonic() + 120
        for proc in procs:
            out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            assert proc.returncode == 0, err
            assert "locked" not in err and "Traceback" not in err, err
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    claimed = results[0]["claimed"] + results[1]["claimed"]
    assert sorted(claimed) == queue  # every entry answered, by exactly one of them
    relabelled = sum(r["relabelled"] for r in results)
    with Project.open(folder) as project:
        rows = project.comparisons(include_deleted=True)
        assert len(rows) == 2 * N + relabelled + len(queue)
        live = project.comparisons()
        by_name = {l["id"]: l["name"] for l in project.labellers()}
        for name in ("alice", "bob"):
            mine = [c for c in live if by_name[c["labeller_id"]] == name and c["outcome"] != "right"]
            assert len(mine) == N  # each of its N labels, once (every tenth relabelled as a tie)
            assert sorted(c["response_ms"] for c in mine if c["outcome"] == "left") == [
                i for i in range(N) if i % 10]
        answers = project.conn.execute("SELECT queue_id, count(*) FROM queue_answers GROUP BY queue_id").fetchall()
        assert sorted(q for q, n in answers if n == 1) == queue
        assert project.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
