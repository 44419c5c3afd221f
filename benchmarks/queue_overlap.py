"""What the overlap costs the labelling views: the queries behind "N waiting" and the next pair for one
labeller, and a claim, on a large queue where some entries want two answers.

A real project gets ``--entries`` clip pairs queued with ``--overlap`` of them wanting two labellers; one
labeller answers half of the queue, then (median of ``--repeats``) the per-labeller count and next pairs
for that labeller and for another one, and the same two questions asked as they were before the overlap
(an entry open while it has no answer), for comparison.

    .venv/bin/python benchmarks/queue_overlap.py [--entries 10000] [--overlap 0.3] [--repeats 21]

Prints a JSON object as its last line.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rlhf_core.store import Project  # noqa: E402

ONE_ANSWER = ("FROM pair_queue q JOIN items a ON a.id = q.left_id JOIN items b ON b.id = q.right_id WHERE "
              "q.comparison_id IS NULL AND a.kind = ? AND b.kind = ? AND a.deleted_at IS NULL AND b.deleted_at IS NULL")


def median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return round(statistics.median(times) * 1000, 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=10_000)
    ap.add_argument("--overlap", type=float, default=0.3)
    ap.add_argument("--repeats", type=int, default=21)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Project.create(Path(tmp) / "bench.rlhf") as p:
        p.set_overlap(args.overlap, 2)
        rng = random.Random(0)
        with p.db.atomic():
            traj = p.add_item("trajectory", env_id="CartPole-v1", length=9)
            clips = [p.add_item("clip", parent_id=traj, env_id="CartPole-v1", start_step=0, end_step=8)
                     for _ in range(2000)]
            queue = [p.enqueue_pair(*rng.sample(clips, 2)) for _ in range(args.entries)]
        ann, bob = p.ensure_labeller("ann"), p.ensure_labeller("bob")
        t = time.perf_counter()
        for qid in queue[: args.entries // 2]:
            p.claim_pair(qid, "left", labeller_id=ann)
        claim_ms = (time.perf_counter() - t) / (args.entries // 2) * 1000
        r = args.repeats
        result = {
            "entries": args.entries, "overlap": args.overlap,
            "wanting_two": p.conn.execute("SELECT count(*) FROM pair_queue WHERE answers_wanted = 2").fetchone()[0],
            "claim_ms": round(claim_ms, 3),
            "waiting_ms": {"answered_half": median_ms(lambda: p.waiting_count("clip", labeller_id=ann), r),
                           "another_labeller": median_ms(lambda: p.waiting_count("clip", labeller_id=bob), r),
                           "one_answer_query": median_ms(lambda: p.conn.execute(
                               f"SELECT count(*) {ONE_ANSWER}", ["clip", "clip"]).fetchone(), r)},
            "next_pairs_ms": {"answered_half": median_ms(lambda: p.pending_pairs_of("clip", 2, labeller_id=ann), r),
                              "another_labeller": median_ms(lambda: p.pending_pairs_of("clip", 2, labeller_id=bob), r),
                              "one_answer_query": median_ms(lambda: p.conn.execute(
                                  f"SELECT q.* {ONE_ANSWER} ORDER BY q.priority DESC, q.id LIMIT 2",
                                  ["clip", "clip"]).fetchall(), r)},
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
