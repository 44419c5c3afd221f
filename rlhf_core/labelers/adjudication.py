"""Adjudication, without Qt: the disagreements of a project and the adjudicator's session.

A pair of items is disputed when two or more labellers gave it different answers: its live labels (role
``label``) are read as :mod:`rlhf_core.analysis.agreement` reads them (turned to the orientation lower
item id on the left, each labeller's latest label, ``skip`` and ``both_bad`` not a judgement, labels
without a labeller left out) and at least two differ. The adjudicator's decision is a new comparison
with role ``adjudication`` (:meth:`Project.add_adjudication`: labeller = the adjudicator, ``meta.adjudicates``
= every live label of the pair), which training uses instead of the disputed labels
(:func:`rlhf_core.rewards.outcomes.prefer_adjudications`).

A dispute is settled while its newest live adjudication names exactly the pair's live labels; a label
added, undone or relabelled after it opens the dispute again (shown with the earlier decision). An
adjudication of a pair whose labels changed since the view read them is refused, nothing written.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from rlhf_core.analysis.agreement import CATEGORIES, normalise
from rlhf_core.labelers.session import Given, ShownTime, Step
from rlhf_core.store import Project


@dataclass
class Dispute:
    """A disputed pair, shown with ``left_id`` (the lower item id) on the left. ``labels``: every live
    label of the pair, oldest first, each comparison row plus ``labeller`` (name) and ``shown`` (its outcome
    for this orientation). ``previous``: the newest live adjudication (given before the labels changed)."""

    left_id: int
    right_id: int
    kind: str
    labels: list[dict] = field(default_factory=list)
    previous: dict | None = None

    @property
    def key(self) -> tuple[int, int]:
        return self.left_id, self.right_id

    @property
    def label_ids(self) -> list[int]:
        return [r["id"] for r in self.labels]

    @property
    def previous_id(self) -> int | None:
        return None if self.previous is None else self.previous["id"]


def _disputed(labels: list[dict]) -> bool:
    latest: dict[int, str] = {}
    for r in labels:  # oldest first: a labeller's latest label wins
        if r["labeller_id"] is not None and r["shown"] in CATEGORIES:
            latest[r["labeller_id"]] = r["shown"]
    return len(latest) >= 2 and len(set(latest.values())) >= 2


def find_disputes(project: Project, kind: str | None = None) -> tuple[list[Dispute], int]:
    """``(open disputes, settled count)`` over live pairs of two live items (of item ``kind`` if given);
    open ones in the order of their first label."""
    sql = ("SELECT c.*, coalesce(l.name, '') AS labeller, a.kind AS item_kind FROM comparisons c "
           "JOIN items a ON a.id = c.left_id JOIN items b ON b.id = c.right_id "
           "LEFT JOIN labellers l ON l.id = c.labeller_id WHERE c.deleted_at IS NULL AND a.deleted_at IS NULL "
           "AND b.deleted_at IS NULL" + (" AND a.kind = ?" if kind else "") + " ORDER BY c.id")
    pairs: dict[tuple[int, int], Dispute] = {}
    for r in project.conn.execute(sql, [kind] if kind else []):
        row = dict(r)
        (a, b), row["shown"] = normalise(row["left_id"], row["right_id"], row["outcome"])
        dispute = pairs.setdefault((a, b), Dispute(a, b, row["item_kind"]))
        if row["role"] == "adjudication":
            dispute.previous = row  # rows come oldest first: the newest stays
        else:
            dispute.labels.append(row)
    open_, settled = [], 0
    for d in pairs.values():
        if not _disputed(d.labels):
            continue
        if d.previous is not None and sorted(json.loads(d.previous["meta_json"] or "{}").get("adjudicates", [])) \
                == sorted(d.label_ids):
            settled += 1
        else:
            open_.append(d)
    return open_, settled


def adjudicate(dispute: Dispute, outcome: str, adjudicator: str, response_ms: int | None = None,
               guideline_version: int | None = None) -> Callable[[Project], int]:
    """The write of a decision on ``dispute`` (outcome for its orientation); returns the new comparison id.
    Refused with :class:`rlhf_core.store.project.LabelChangedError` when the pair's labels changed since
    ``dispute`` was read; the adjudicator's name is added as a labeller only with the decision."""

    def write(p: Project) -> int:
        with p.write_transaction():
            labeller = p.ensure_labeller(adjudicator)
            return p.add_adjudication(dispute.left_id, dispute.right_id, outcome, labeller_id=labeller,
                                      disputed_ids=dispute.label_ids, previous_id=dispute.previous_id,
                                      response_ms=response_ms, guideline_version=guideline_version)
    return write


class AdjudicationSession:
    """What an adjudicator has on screen and has decided in one open project: the open disputes (of item
    ``kind``, or all), the one shown (``current``, timed while visible), the decisions given here (the undo
    stack). Writes are :class:`Step` s the view hands to the label writer, as in the labelling sessions."""

    def __init__(self, project: Project, kind: str | None = None, *, clock: Callable[[], float] = time.monotonic):
        self.project, self.kind, self.clock = project, kind, clock
        self.disputes: list[Dispute] = []
        self.settled = 0
        self.current: Dispute | None = None
        self.shown = ShownTime(lambda: self.clock())
        self.given: list[Given] = []  # decisions given here, newest last
        self._in_flight: set[tuple[int, int]] = set()  # pairs whose decision is on its way to the database
        self._passed: list[tuple[int, int]] = []  # pairs put back with "next", oldest first
        self.reload()

    def set_visible(self, visible: bool) -> None:
        self.shown.set_visible(visible)

    def reload(self) -> None:
        """Read the disputes again (labels may have changed anywhere)."""
        self.disputes, self.settled = find_disputes(self.project, self.kind)

    def upcoming(self) -> Dispute | None:
        """The first open dispute not on its way to the database; those passed over come last."""
        waiting = [d for d in self.disputes if d.key not in self._in_flight]
        passed = {k: i for i, k in enumerate(self._passed)}
        waiting.sort(key=lambda d: passed.get(d.key, -1))  # stable: the others keep their order
        return waiting[0] if waiting else None

    def show(self, dispute: Dispute | None) -> None:
        self.current = dispute
        self.shown.start()

    def response_ms(self) -> int:
        return int(round(self.shown.seconds() * 1000))

    def open_count(self) -> int:
        return len([d for d in self.disputes if d.key not in self._in_flight])

    def decide(self, outcome: str, adjudicator: str) -> Step | None:
        """Decide the dispute on screen (recorded under the project's newest guidelines); the next one comes
        from :meth:`upcoming`."""
        dispute = self.current
        if dispute is None:
            return None
        guideline_version = self.project.guideline_version()
        given = Given("adjudication", {"left_id": dispute.left_id, "right_id": dispute.right_id,
                                       "dispute": dispute})
        write_decision = adjudicate(dispute, outcome, adjudicator, self.response_ms(), guideline_version)

        def write(p: Project) -> int:
            given.cid = write_decision(p)
            return given.cid

        self._in_flight.add(dispute.key)
        self.current = None
        return Step(write, given)

    def decided(self, given: Given, cid: int) -> None:
        """The writer stored the decision."""
        given.acked = True
        self.given.append(given)
        self._land(given)
        self.reload()

    def failed(self, given: Given) -> None:
        """Nothing was stored (refused as stale, or the disk): the dispute is read again as it is now."""
        self._land(given)
        self.reload()

    def _land(self, given: Given) -> None:
        key = (given.pair["left_id"], given.pair["right_id"])
        self._in_flight.discard(key)
        if key in self._passed:
            self._passed.remove(key)

    def pass_over(self) -> Dispute | None:
        """Put the dispute on screen back, after the others; returns the next one."""
        if self.current is not None:
            if self.current.key in self._passed:
                self._passed.remove(self.current.key)
            self._passed.append(self.current.key)
        return self.upcoming()

    def undo_last(self) -> Step | None:
        """Undo the newest decision given here (a soft delete): its dispute opens again."""
        if not self.given:
            return None
        given = self.given.pop()

        def write(p: Project) -> int | None:
            if given.cid is None or not p.comparison_is_live(given.cid):
                return None
            p.undo_comparison(given.cid)
            return given.cid

        return Step(write, given)

    def undo_failed(self, given: Given) -> None:
        self.given.append(given)
