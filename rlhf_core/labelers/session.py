"""Labelling sessions: what a person labelling in one view has on screen and has given, without Qt.

A view asks its session for the pair to show, hands it the keys, and gets back a :class:`Step`: the
write to run (a function of a :class:`Project`, run by the app's background writer on its own
connection, in the order submitted) and what to show at once. When the writer acks or fails a
write, the view tells the session (:meth:`PairSession.labelled`, :meth:`PairSession.failed`, ...),
which updates its state. A label counts as given once acked; a failed label's pair is waiting again.
Reviewing the AI's revisions (:class:`RevisionSession`) works the same way.

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
from rlhf_core.labelers.critique_revise import review_counts, review_revision, revisions_to_review, undo_review
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
    """What a session decided: ``fn(project)`` to write; ``given`` the label, correction or review it gives or
    undoes (``what``: ``"label"``, ``"correction"`` or ``"review"``); ``show`` a pair (or revision) to put on
    screen at once (an undone label's)."""

    fn: WriteFn
    given: Given | Review | None = None
    show: dict | None = None
    what: str = "label"


#: jobs that go on training while a person answers their queue entries, and learn from the answers
LEARNS_FROM_ANSWERS = ("preference_rl",)


@dataclass
class Progress:
    labelled: int = 0
    waiting: int = 0
    by_ai: int = 0
    corrections: int = 0
    reviewing: bool = False
    to_review: int = 0
    reviewed: int = 0
    runs_waiting: tuple = ()  # (run id, job, open entries) of running LEARNS_FROM_ANSWERS jobs

    def runs_waiting_text(self) -> str:
        """A line per running job waiting for this view's labels ("" when none waits)."""
        return "\n".join(f"Run #{run_id} ({job}) is waiting for {n} of your labels — it keeps training meanwhile"
                         for run_id, job, n in self.runs_waiting)


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
    """Pair labelling of one item kind (``"clip"`` or ``"response"``) in one open project, by one
    ``labeller`` (a person's name, chosen when the session starts; :meth:`set_labeller` switches).

    Pairs come from the queue in queue order: those still wanting an answer that this labeller has not
    given (a pair of the overlap goes to several labellers, each blind to the others' answers: their
    labels of it are not in :meth:`recent`); with ``reviewing`` (responses only) they are the AI
    labels no person has answered, oldest first. Pairs whose label is on its way to the database
    are left out of what comes next. Each label records ``guideline_version``, the labelling
    guidelines shown beside the pair (the view keeps it current)."""

    def __init__(self, project: Project, kind: str, *, clock: Callable[[], float] = time.monotonic,
                 labeller: str | None = None):
        self.project, self.kind, self.clock = project, kind, clock
        self.labeller = labeller
        self.guideline_version: int | None = project.guideline_version()
        self.current: dict | None = None  # the queue row (reviewing: the AI comparison) on screen
        self.shown = ShownTime(lambda: self.clock())
        self.reviewing = False
        self.given: list[Given] = []  # labels and corrections given here, newest last (the undo stack)
        self._in_flight: dict[tuple[bool, int], Given] = {}  # (reviewing, pair id) -> its label, not acked yet

    # ------------------------------------------------------------------ who
    def set_labeller(self, name: str | None) -> None:
        """Label as ``name`` from now on (what comes next is what this labeller has not answered)."""
        self.labeller = (name or "").strip() or None

    def labeller_id(self) -> int | None:
        """The session's labeller's id (None: no labeller, or a new name not stored yet)."""
        return self.project.labeller_id(self.labeller)

    # ------------------------------------------------------------------ which pair
    def upcoming(self, limit: int = 2) -> list[dict]:
        """The next pairs to show, the first one first."""
        busy = {pid for reviewing, pid in self._in_flight if reviewing == self.reviewing}
        if self.reviewing:
            return [p for p in review_pairs(self.project, limit=limit + len(busy)) if p["id"] not in busy][:limit]
        return self.project.pending_pairs_of(self.kind, limit=limit, exclude=busy, labeller_id=self.labeller_id())

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
    def label(self, outcome: str, labeller: str | None = None, *, blind: bool = False) -> Step | None:
        """Label the pair on screen (reviewing: answer the AI's label) as ``labeller`` (a person's name,
        added if new; None: the session's). The pair is left out of :meth:`upcoming` until the write is
        acked or fails."""
        pair = self.current
        if pair is None:
            return None
        if labeller is not None:
            self.set_labeller(labeller)
        labeller = self.labeller or "you"
        response_ms, reviewing, version = self.response_ms(), self.reviewing, self.guideline_version
        given = Given("label", pair, reviewing=reviewing)

        def write(p: Project) -> int | None:
            who = p.ensure_labeller(labeller, "human")
            if reviewing:
                given.cid = record_review(p, pair["id"], outcome, who, response_ms=response_ms, blind=blind,
                                          guideline_version=version)
            else:
                given.cid = p.claim_pair(pair["id"], outcome, labeller_id=who, source="human",
                                         response_ms=response_ms, guideline_version=version)
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
        version = self.guideline_version

        def write(p: Project) -> int:
            new_id = p.edit_comparison(comparison_id, outcome, guideline_version=version)
            for g in mine:
                g.cid = new_id
            return new_id

        return Step(write)

    # ------------------------------------------------------------------ corrections
    def correct(self, item_id: int, text: str, labeller: str) -> Step:
        """Store ``text`` as a rewrite of response ``item_id``, preferred over every sampled response to
        its prompt; the write returns ``(new item id, comparison ids)``. Undoable once :meth:`corrected`."""
        response_ms, version = self.response_ms(), self.guideline_version
        given = Given("correction", self.current)

        def write(p: Project) -> tuple[int, list[int]]:
            new_id, cids = add_correction(p, item_id, text, p.ensure_labeller(labeller, "human"),
                                          response_ms=response_ms, guideline_version=version)
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
        return None if self.reviewing else self.project.reopened_pair(comparison_id, labeller_id=self.labeller_id())

    def _forget(self, given: Given) -> None:
        self.given = [g for g in self.given if g is not given]

    # ------------------------------------------------------------------ what is shown
    def progress(self) -> Progress:
        """Counts for the header. Responses count answered queue entries (AI ones too; corrections
        apart); clips count every live clip label."""
        p = self.project
        if self.reviewing:
            return Progress(reviewing=True, to_review=review_count(p), reviewed=p.reviewed_ai_count())
        waiting = p.waiting_count(self.kind, labeller_id=self.labeller_id())
        runs = tuple((r["run_id"], r["job"], r["waiting"]) for r in p.runs_waiting_for_labels(self.kind)
                     if r["job"] in LEARNS_FROM_ANSWERS)
        if self.kind == "response":
            return Progress(labelled=p.answered_count(self.kind), waiting=waiting, runs_waiting=runs,
                            by_ai=p.answered_count(self.kind, source="ai"), corrections=p.correction_count())
        return Progress(labelled=p.comparison_count(self.kind), waiting=waiting, runs_waiting=runs)

    def recent(self, limit: int) -> list[dict]:
        """The newest labels of this kind, newest first (responses: not those of rankings), each with
        ``number``: its place among the labels the header's "Labelled N" counts (the newest is N), or
        None for a label that count leaves out (responses: corrections and reviews of AI labels).
        Other labellers' answers to pairs of the overlap are left out (blind), their numbers skipped."""
        p = self.project
        me = self.labeller_id()
        rows = p.recent_labels(self.kind, limit * 4, with_rankings=self.kind != "response")
        if self.kind == "response":  # the count: answered queue entries
            left, counted = p.answered_count(self.kind), (lambda r: bool(r["queued"]))
        else:  # the count: every live label of the kind
            left, counted = p.comparison_count(self.kind), (lambda r: True)
        for row in rows:
            row["number"] = left if counted(row) else None
            left -= 1 if counted(row) else 0
        return [r for r in rows if (r["answers_wanted"] or 1) <= 1 or r["labeller_id"] == me][:limit]


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
        self.guideline_version: int | None = project.guideline_version()  # the guidelines shown (the view's)
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
        version = self.guideline_version

        def write(p: Project) -> int:
            return p.add_ranking(groups, labeller_id=p.ensure_labeller(labeller, "human"), source="human",
                                 prompt_id=prompt_id, response_ms=response_ms, guideline_version=version)

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


# ---------------------------------------------------------------------- reviewing AI revisions
class Review:
    """A verdict on an AI revision given in this session: ``result`` is what the write stored (the dict
    :func:`review_revision` returns), set in the writer thread; ``acked`` once the app reported back."""

    def __init__(self, revision: dict, decision: str):
        self.revision, self.decision = revision, decision
        self.result: dict | None = None
        self.acked = False


@dataclass
class ReviewProgress:
    position: int = 0  # the revision on screen is the position-th of ``total`` (0: none on screen)
    total: int = 0  # reviewed in this session + still waiting
    accepted: int = 0  # in the project, by anyone
    edited: int = 0
    rejected: int = 0


class RevisionSession:
    """Reviewing the AI's revisions (Constitutional AI, :mod:`rlhf_core.labelers.critique_revise`) one at a
    time: accept, edit or reject each, skip it for now, undo. Revisions come oldest first; those whose review
    is on its way to the database, and those skipped, are left out of what comes next (skipped ones come back
    when nothing else is waiting)."""

    def __init__(self, project: Project, *, clock: Callable[[], float] = time.monotonic):
        self.project, self.clock = project, clock
        self.current: dict | None = None  # the revision on screen (a row of revisions_to_review)
        self.shown = ShownTime(lambda: self.clock())
        self.given: list[Review] = []  # reviews given here, newest last (the undo stack)
        self._in_flight: dict[int, Review] = {}  # revision id -> its review, not acked yet
        self._skipped: set[int] = set()

    def upcoming(self, limit: int = 2) -> list[dict]:
        """The next revisions to show, the first one first."""
        hidden = set(self._in_flight) | self._skipped
        rows = revisions_to_review(self.project, limit + len(hidden))
        fresh = [r for r in rows if r["id"] not in hidden]
        if not fresh and self._skipped:  # only skipped ones are left: round again
            self._skipped.clear()
            fresh = [r for r in rows if r["id"] not in self._in_flight]
        return fresh[:limit]

    def show(self, revision: dict | None) -> None:
        """``revision`` is on screen from now (its response time counts from here, while visible)."""
        self.current = revision
        if revision is not None:
            self.shown.start()

    def set_visible(self, visible: bool) -> None:
        self.shown.set_visible(visible)

    def response_ms(self) -> int:
        return int(self.shown.seconds() * 1000)

    def skip(self) -> None:
        """Leave the revision on screen for later."""
        if self.current is not None:
            self._skipped.add(self.current["id"])

    def check_edit(self, text: str) -> str:
        """The edited revision, or ``ValueError`` in one sentence (nothing is written)."""
        rev = self.current
        text = text if isinstance(text, str) else ""
        if not text.strip():
            raise ValueError("The edit is empty: write the reply as it should be (or cancel the edit).")
        if rev is not None and text.strip() == (rev["revision"] or "").strip():
            raise ValueError("The edit is the AI's revision unchanged: press Enter to accept it instead.")
        if rev is not None and text.strip() == (rev["revised"] or "").strip():
            raise ValueError("The edit is the text the AI revised, unchanged: press R to reject the revision "
                             "instead.")
        return text

    def decide(self, decision: str, labeller: str, edited_text: str | None = None) -> Step | None:
        """Review the revision on screen as ``labeller`` (a person's name, added if new): ``accept``, ``edit``
        (with ``edited_text``, checked here first) or ``reject``. The write returns what
        :func:`review_revision` stored; ``given`` is the :class:`Review`."""
        rev = self.current
        if rev is None:
            return None
        if decision == "edit":
            edited_text = self.check_edit(edited_text or "")
        elif decision not in ("accept", "reject"):
            raise ValueError(f"a review is accept, edit or reject, not {decision!r}")
        response_ms = self.response_ms()
        review = Review(rev, decision)

        def write(p: Project) -> dict:
            who = p.ensure_labeller(labeller, "human")
            review.result = review_revision(p, rev["id"], decision, who, edited_text=edited_text,
                                            response_ms=response_ms)
            return review.result

        self._in_flight[rev["id"]] = review
        self._skipped.discard(rev["id"])
        self.given.append(review)
        return Step(write, review, what="review")

    def reviewed(self, review: Review) -> None:
        """The review's write was acked."""
        review.acked = True
        self._land(review)

    def failed(self, review: Review) -> dict | None:
        """The review's write failed (nothing stored): its revision waits again; returns it to show again."""
        review.acked = True
        self._land(review)
        self.given = [g for g in self.given if g is not review]
        return review.revision

    def _land(self, review: Review) -> None:
        if self._in_flight.get(review.revision["id"]) is review:
            del self._in_flight[review.revision["id"]]

    def undo_last(self) -> Step | None:
        """Take back the latest review given here (its write may not be acked yet: the writer runs the undo
        after it). The revision is shown again at once. The write returns the revision id (None when the
        review stored nothing)."""
        while self.given and self.given[-1].acked and self.given[-1].result is None:
            self.given.pop()
        if not self.given:
            return None
        review = self.given.pop()
        rev_id = review.revision["id"]

        def write(p: Project) -> int | None:
            return None if review.result is None else undo_review(p, rev_id, review.result)

        return Step(write, review, show=review.revision, what="review")

    def undo_failed(self, review: Review) -> None:
        """An undo's write failed: the review still stands, so it can be undone again."""
        if review not in self.given:
            self.given.append(review)

    def progress(self) -> ReviewProgress:
        """The header's "k of n to review": n counts the reviews given here (not undone, not failed) and the revisions still
        waiting; the one on screen is the k-th. Accepted / edited / rejected are the project's counts."""
        counts = review_counts(self.project)
        done = len(self.given)
        waiting = max(0, counts["to_review"] - len(self._in_flight))  # an in-flight one is not stored yet
        total = done + waiting
        return ReviewProgress(position=done + 1 if self.current is not None else 0, total=total,
                              accepted=counts["accepted"], edited=counts["edited"], rejected=counts["rejected"])

