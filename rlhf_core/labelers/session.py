"""Labelling sessions: what a person labelling in one view has on screen and has given, without Qt.

A view asks its session for the pair to show, hands it the keys, and gets back a :class:`Step`: the
write to run (a function of a :class:`Project`, run by the app's background writer on its own
connection, in the order submitted) and what to show at once. When the writer acks or fails a
write, the view tells the session (:meth:`PairSession.labelled`, :meth:`PairSession.failed`, ...),
which updates its state. A label counts as given once acked; a failed label's pair is waiting again.

The write functions read ids another write fills in (``Given.cid``) only when they run, so an undo
submitted before its label is acked undoes the right row: the writer runs them in order.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rlhf_core.store import Project
from rlhf_core.labelers.ai_feedback import record_review, review_count, review_pairs
from rlhf_core.labelers.text_labels import add_correction, correction_of, undo_correction

WriteFn = Callable[[Project], Any]
TIED = "Everything is tied: a ranking needs at least two groups."


class Given:
    """A label or a correction given in this session. ``cid`` is the stored id (a comparison, or the
    correction's item), set by the write in the writer thread; ``acked`` once the app reported back."""

    def __init__(self, kind: str, pair: dict | None, *, reviewing: bool = False):
        self.kind, self.pair, self.reviewing = kind, pair, reviewing
        self.cid: int | None = None
        self.acked = False


@dataclass
class Step:
    """What a session decided: ``fn(project)`` to write; ``given`` the label or correction it gives or
    undoes (``what``: ``"label"`` or ``"correction"``); ``show`` a pair to put on screen at once (an
    undone label's)."""

    fn: WriteFn
    given: Given | None = None
    show: dict | None = None
    what: str = "label"


@dataclass
class Progress:
    labelled: int = 0
    waiting: int = 0
    by_ai: int = 0
    corrections: int = 0
    reviewing: bool = False
    to_review: int = 0
    reviewed: int = 0


class ShownTime:
    """How long what is on screen (a pair, a ranking) has been in front of the person: time counts only
    while the view is visible in the active window (:meth:`set_visible`), so a pair loaded on a page
    not shown yet, or left there while the person works elsewhere, does not count the time away.
    Visible until a view says otherwise (a session without a view counts from :meth:`start`)."""

    def __init__(self, clock: Callable[[], float]):
        self.clock = clock
        self.visible = True
        self._since: float | None = None  # start of the current visible stretch
        self._before = 0.0  # seconds of the earlier visible stretches

    def start(self) -> None:
        """Something new is on screen: count from zero (from now if visible, else from when it is)."""
        self._before = 0.0
        self._since = self.clock() if self.visible else None

    def set_visible(self, visible: bool) -> None:
        visible = bool(visible)
        if visible == self.visible:
            return
        self.visible = visible
        if visible:
            self._since = self.clock()
        elif self._since is not None:
            self._before += self.clock() - self._since
            self._since = None

    def seconds(self) -> float:
        return self._before + (self.clock() - self._since if self._since is not None else 0.0)


class PairSession:
    """Pair labelling of one item kind (``"clip"`` or ``"response"``) in one open project.

    Pairs come from the queue in queue order; with ``reviewing`` (responses only) they are the AI
    labels no person has answered, oldest first. Pairs whose label is on its way to the database
    are left out of what comes next."""

    def __init__(self, project: Project, kind: str, *, clock: Callable[[], float] = time.monotonic):
        self.project, self.kind, self.clock = project, kind, clock
        self.current: dict | None = None  # the queue row (reviewing: the AI comparison) on screen
        self.shown = ShownTime(lambda: self.clock())
        self.reviewing = False
        self.given: list[Given] = []  # labels and corrections given here, newest last (the undo stack)
        self._in_flight: dict[tuple[bool, int], Given] = {}  # (reviewing, pair id) -> its label, not acked yet

    # ------------------------------------------------------------------ which pair
    def upcoming(self, limit: int = 2) -> list[dict]:
        """The next pairs to show, the first one first."""
        busy = {pid for reviewing, pid in self._in_flight if reviewing == self.reviewing}
        if self.reviewing:
            return [p for p in review_pairs(self.project, limit=limit + len(busy)) if p["id"] not in busy][:limit]
        return self.project.pending_pairs_of(self.kind, limit=limit, exclude=busy)

    def show(self, pair: dict | None) -> None:
        """``pair`` is on screen from now (its response time counts from here, while visible)."""
        self.current = pair
        if pair is not None:
            self.shown.start()

    def set_visible(self, visible: bool) -> None:
        """The view is (not) visible in the active window: the response time counts only while it is."""
        self.shown.set_visible(visible)

    def set_reviewing(self, on: bool) -> None:
        self.reviewing = bool(on)
        self.current = None

    def response_ms(self) -> int:
        """Milliseconds the pair on screen has been visible."""
        return int(self.shown.seconds() * 1000)

    # ------------------------------------------------------------------ labels
    def label(self, outcome: str, labeller: str, *, blind: bool = False) -> Step | None:
        """Label the pair on screen (reviewing: answer the AI's label) as ``labeller`` (a person's name,
        added if new). The pair is left out of :meth:`upcoming` until the write is acked or fails."""
        pair = self.current
        if pair is None:
            return None
        response_ms, reviewing = self.response_ms(), self.reviewing
        given = Given("label", pair, reviewing=reviewing)

        def write(p: Project) -> int | None:
            who = p.ensure_labeller(labeller, "human")
            if reviewing:
                given.cid = record_review(p, pair["id"], outcome, who, response_ms=response_ms, blind=blind)
            else:
                given.cid = p.claim_pair(pair["id"], outcome, labeller_id=who, source="human",
                                         response_ms=response_ms)
            return given.cid

        self._in_flight[(reviewing, pair["id"])] = given
        self.given.append(given)
        return Step(write, given)

    def labelled(self, given: Given, cid: int | None) -> None:
        """The label's write was acked; ``cid`` None: the pair was labelled elsewhere meanwhile, nothing stored."""
        given.acked = True
        self._land(given)
        if cid is None:
            self._forget(given)

    def failed(self, given: Given) -> dict | None:
        """The label's write failed (nothing stored): its pair is waiting again; returns it to show
        again when it belongs to the mode on screen."""
        given.acked = True
        self._land(given)
        self._forget(given)
        return given.pair if given.reviewing == self.reviewing else None

    def _land(self, given: Given) -> None:
        """``given`` is no longer on its way; a later label of the same pair (after an undo) still is."""
        key = (given.reviewing, given.pair["id"])
        if self._in_flight.get(key) is given:
            del self._in_flight[key]

    def undo_failed(self, given: Given | None) -> None:
        """An undo's write failed: the label (or correction) still stands, so it can be undone again."""
        if given is not None and given not in self.given:
            self.given.append(given)

    def change(self, comparison_id: int, outcome: str) -> Step:
        """Change a stored label (a new row supersedes it; the write returns the new id)."""
        mine = [g for g in self.given if g.kind == "label" and g.cid == comparison_id]

        def write(p: Project) -> int:
            new_id = p.edit_comparison(comparison_id, outcome)
            for g in mine:
                g.cid = new_id
            return new_id

        return Step(write)

    # ------------------------------------------------------------------ corrections
    def correct(self, item_id: int, text: str, labeller: str) -> Step:
        """Store ``text`` as a rewrite of response ``item_id``, preferred over every sampled response to
        its prompt; the write returns ``(new item id, comparison ids)``. Undoable once :meth:`corrected`."""
        response_ms = self.response_ms()
        given = Given("correction", self.current)

        def write(p: Project) -> tuple[int, list[int]]:
            new_id, cids = add_correction(p, item_id, text, p.ensure_labeller(labeller, "human"),
                                          response_ms=response_ms)
            given.cid = new_id
            return new_id, cids

        return Step(write, given, what="correction")

    def corrected(self, given: Given) -> None:
        given.acked = True
        self.given.append(given)

    # ------------------------------------------------------------------ undo
    def is_live(self, given: Given) -> bool:
        """Not acked yet, or acked and not undone or changed elsewhere."""
        if not given.acked:
            return True
        if given.cid is None:
            return False
        if given.kind == "correction":
            return self.project.item_is_live(given.cid)
        return self.project.comparison_is_live(given.cid)

    def undo_last(self) -> Step | None:
        """Undo the latest label or correction given here that still stands (its write may not be
        acked yet). An undone label's pair is shown again at once when it belongs to the mode on
        screen: the write reopens it right after the label (one writer, in order).

        The write returns the comparison id (None if the label stored nothing) or, for a
        correction, ``(item id, labels undone)``."""
        while self.given and not self.is_live(self.given[-1]):
            self.given.pop()
        if not self.given:
            return None
        given = self.given.pop()
        if given.kind == "correction":
            return Step(_undo_correction(lambda: given.cid), given, what="correction")

        def write(p: Project) -> int | None:
            if given.cid is not None:
                p.undo_comparison(given.cid)
            return given.cid

        show = given.pair if given.reviewing == self.reviewing else None
        return Step(write, given, show)

    def undo(self, comparison_id: int) -> Step:
        """Undo a stored label (a comparison of a correction undoes the whole correction). The write
        returns the comparison id, or ``(item id, labels undone)`` for a correction (``what``)."""
        self.given = [g for g in self.given if g.cid != comparison_id or g.kind != "label"]
        correction = correction_of(self.project, comparison_id)
        if correction is not None:
            return Step(_undo_correction(lambda: correction), what="correction")

        def write(p: Project) -> int:
            p.undo_comparison(comparison_id)
            return comparison_id

        return Step(write)

    def reopened(self, comparison_id: int) -> dict | None:
        """After an undo by id: the pair to show (its queue entry, open again), if any."""
        return None if self.reviewing else self.project.reopened_pair(comparison_id)

    def _forget(self, given: Given) -> None:
        self.given = [g for g in self.given if g is not given]

    # ------------------------------------------------------------------ what is shown
    def progress(self) -> Progress:
        """Counts for the header. Responses count answered queue entries (AI ones too; corrections
        apart); clips count every live clip label."""
        p = self.project
        if self.reviewing:
            return Progress(reviewing=True, to_review=review_count(p), reviewed=p.reviewed_ai_count())
        waiting = p.waiting_count(self.kind)
        if self.kind == "response":
            return Progress(labelled=p.answered_count(self.kind), waiting=waiting,
                            by_ai=p.answered_count(self.kind, source="ai"), corrections=p.correction_count())
        return Progress(labelled=p.comparison_count(self.kind), waiting=waiting)

    def recent(self, limit: int) -> list[dict]:
        """The newest labels of this kind, newest first (responses: not those of rankings), each with
        ``number``: its place among the labels the header's "Labelled N" counts (the newest is N), or
        None for a label that count leaves out (responses: corrections and reviews of AI labels)."""
        p = self.project
        rows = p.recent_labels(self.kind, limit, with_rankings=self.kind != "response")
        if self.kind == "response":  # the count: answered queue entries
            left, counted = p.answered_count(self.kind), (lambda r: bool(r["queued"]))
        else:  # the count: every live label of the kind
            left, counted = p.comparison_count(self.kind), (lambda r: True)
        for row in rows:
            row["number"] = left if counted(row) else None
            left -= 1 if counted(row) else 0
        return rows


def _undo_correction(item_id: Callable[[], int | None]) -> WriteFn:
    def write(p: Project) -> tuple[int, int] | None:
        ident = item_id()
        return None if ident is None else (ident, undo_correction(p, ident))

    return write


class RankingSession:
    """Ranking K items (trajectories, or the responses to one prompt) worst -> best with ties."""

    def __init__(self, project: Project, *, clock: Callable[[], float] = time.monotonic):
        self.project, self.clock = project, clock
        self.items: list[int] = []
        self.prompt_id: int | None = None
        self.shown = ShownTime(lambda: self.clock())

    def load(self, item_ids: Sequence[int], prompt_id: int | None = None) -> list[int]:
        """``item_ids`` are on screen from now (response time counts from here, while visible)."""
        self.items, self.prompt_id = list(item_ids), prompt_id
        self.shown.start()
        return self.items

    def set_visible(self, visible: bool) -> None:
        """The view is (not) visible in the active window: the response time counts only while it is."""
        self.shown.set_visible(visible)

    def load_prompt(self, prompt_id: int, rng: random.Random) -> list[int]:
        """The live responses to ``prompt_id`` in a random order (no order gives a source away)."""
        ids = self.project.response_ids(prompt_id)
        rng.shuffle(ids)
        return self.load(ids, prompt_id)

    def save(self, groups: Sequence[Sequence[int]], labeller: str) -> Step:
        """Store ``groups`` (worst -> best, ties share a group) as one ranking by ``labeller``; the write
        returns the ranking id. Raises ``ValueError`` when everything is tied."""
        if len(groups) < 2:
            raise ValueError(TIED)
        groups = [list(g) for g in groups]
        prompt_id, response_ms = self.prompt_id, int(self.shown.seconds() * 1000)

        def write(p: Project) -> int:
            return p.add_ranking(groups, labeller_id=p.ensure_labeller(labeller, "human"), source="human",
                                 prompt_id=prompt_id, response_ms=response_ms)

        return Step(write)

    @staticmethod
    def undo(ranking_id: int) -> Step:
        """Undo a ranking (kept as a deleted record, with its pairs)."""
        return Step(lambda p: p.undo_ranking(ranking_id))

    def recent(self, limit: int = 20, *, prompts_only: bool = False) -> list[dict]:
        return self.project.recent_rankings(limit, prompts_only=prompts_only)


def order_text(groups: Sequence[Sequence[int]]) -> str:
    """A ranking as ``1 < 2=3 < 4`` (worst first, ``=`` tied)."""
    return " < ".join("=".join(str(i) for i in g) for g in groups)
