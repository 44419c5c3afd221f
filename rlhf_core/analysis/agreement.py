"""Labeller agreement: how often two people give the same answer on the same pair, and Cohen's kappa.

Only pairs judged by at least two different labellers count. A pair is the UNORDERED pair of
items: a label given with the items the other way round is turned around first (``left`` <->
``right``), so every outcome is expressed for the orientation ``(a, b)`` with ``a < b`` (item ids):
``"left"`` means a is better, ``"right"`` means b is better, ``"tie"`` a tie.

Rules
- Categories: ``left``, ``right`` and ``tie`` (a tie is a category of its own, so "tie" vs "left"
  is a disagreement). ``skip`` and ``both_bad`` are NOT judgements of which is better and are left
  out: such a label is ignored, as if that labeller had not labelled the pair.
- Only live labels count (undone/edited rows are soft-deleted and ignored). Labels without a
  labeller are ignored. If one labeller labelled the same pair more than once (e.g. in a ranking
  and as a queued pair), the latest label (highest id) is used.
- Pairwise (labellers A and B): over the n pairs both labelled, agreement p_o = matches / n and
  Cohen's kappa = (p_o - p_e) / (1 - p_e) with p_e = sum over categories of p_A(c) * p_B(c), the
  two labellers' own category frequencies on those n pairs. Kappa is undefined (``None``) when
  p_e = 1 (both used one and the same category only).
- Overall: agreement is pooled over every pair of labellers on every pair of items (a pair of
  items judged by m labellers gives m(m-1)/2 comparisons of two answers); kappa is Light's kappa,
  the mean of the defined pairwise Cohen's kappas (with two labellers, simply their kappa).

Published reference values: InstructGPT labellers agreed 72.6 ± 1.5 %; Stiennon et al. report
73 ± 4 % researcher-researcher agreement.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations

CATEGORIES = ("left", "right", "tie")
EXCLUDED = ("skip", "both_bad")
_FLIP = {"left": "right", "right": "left", "tie": "tie"}


def normalise(left_id: int, right_id: int, outcome: str) -> tuple[tuple[int, int], str]:
    """``((a, b), outcome)`` with a < b and the outcome turned around if the items were swapped."""
    if left_id < right_id:
        return (left_id, right_id), outcome
    return (right_id, left_id), _FLIP.get(outcome, outcome)


def cohen_kappa(a: Sequence[str], b: Sequence[str], categories: Sequence[str] = CATEGORIES) -> float | None:
    """Cohen's kappa of two equally long label sequences (``None`` if undefined: p_e = 1 or no items)."""
    if len(a) != len(b):
        raise ValueError("the two label sequences must have the same length")
    n = len(a)
    if n == 0:
        return None
    p_o = sum(x == y for x, y in zip(a, b)) / n
    p_e = sum((list(a).count(c) / n) * (list(b).count(c) / n) for c in categories)
    if p_e >= 1.0 - 1e-12:
        return None
    return (p_o - p_e) / (1.0 - p_e)


@dataclass
class PairwiseAgreement:
    labeller_a: int
    labeller_b: int
    name_a: str
    name_b: str
    n: int  # pairs of items both labelled
    agree: int
    kappa: float | None

    @property
    def agreement(self) -> float:
        return self.agree / self.n if self.n else float("nan")


@dataclass
class Disagreement:
    item_a: int
    item_b: int
    outcomes: dict[str, str]  # labeller name -> outcome in the (item_a, item_b) orientation


@dataclass
class AgreementReport:
    labellers: dict[int, str]
    pairs: int  # pairs of items with >= 2 labellers
    comparisons: int  # answer pairs compared (sum over item pairs of m(m-1)/2)
    agree: int
    kappa: float | None  # Light's kappa: mean of the defined pairwise kappas
    pairwise: list[PairwiseAgreement] = field(default_factory=list)
    disagreements: list[Disagreement] = field(default_factory=list)
    excluded_labels: int = 0  # skip / both_bad labels left out

    @property
    def agreement(self) -> float:
        return self.agree / self.comparisons if self.comparisons else float("nan")


def agreement_from_labels(
    labels: Iterable[Mapping], names: Mapping[int, str] | None = None
) -> AgreementReport:
    """Agreement from label rows with ``left_id``, ``right_id``, ``outcome``, ``labeller_id`` (and
    optionally ``id``, used to keep a labeller's latest label of a pair)."""
    names = dict(names or {})
    latest: dict[tuple[int, int], dict[int, tuple[int, str]]] = {}  # pair -> labeller -> (id, outcome)
    excluded = 0
    for order, row in enumerate(labels):
        lab = row.get("labeller_id")
        if lab is None:
            continue
        if row["outcome"] in EXCLUDED:
            excluded += 1
            continue
        if row["outcome"] not in CATEGORIES:
            raise ValueError(f"unknown outcome {row['outcome']!r}")
        pair, outcome = normalise(row["left_id"], row["right_id"], row["outcome"])
        rank = row.get("id", order)
        seen = latest.setdefault(pair, {})
        if lab not in seen or seen[lab][0] <= rank:
            seen[lab] = (rank, outcome)
    multi = {pair: {lab: o for lab, (_, o) in by.items()} for pair, by in latest.items() if len(by) >= 2}
    labeller_ids = sorted({lab for by in multi.values() for lab in by})
    for lab in labeller_ids:
        names.setdefault(lab, f"labeller {lab}")

    total = agree = 0
    disagreements = []
    for (a, b), by in sorted(multi.items()):
        outs = list(by.values())
        for x, y in combinations(outs, 2):
            total += 1
            agree += x == y
        if len(set(outs)) > 1:
            disagreements.append(Disagreement(a, b, {names[lab]: by[lab] for lab in sorted(by)}))

    pairwise = []
    for la, lb in combinations(labeller_ids, 2):
        shared = [(by[la], by[lb]) for by in (multi[p] for p in sorted(multi)) if la in by and lb in by]
        if not shared:
            continue
        xa, xb = [s[0] for s in shared], [s[1] for s in shared]
        pairwise.append(PairwiseAgreement(la, lb, names[la], names[lb], len(shared),
                                          sum(x == y for x, y in shared), cohen_kappa(xa, xb)))
    kappas = [p.kappa for p in pairwise if p.kappa is not None]
    return AgreementReport(
        labellers={lab: names[lab] for lab in labeller_ids}, pairs=len(multi), comparisons=total, agree=agree,
        kappa=sum(kappas) / len(kappas) if kappas else None, pairwise=pairwise,
        disagreements=disagreements, excluded_labels=excluded,
    )


def labeller_agreement(project, *, item_kind: str | None = None, sources: Sequence[str] | None = None) -> AgreementReport:
    """Agreement over a project's live comparisons (``item_kind`` e.g. ``"response"``; ``sources``
    e.g. ``("human",)``). See the module docstring for the rules."""
    sql = ("SELECT c.id, c.left_id, c.right_id, c.outcome, c.labeller_id FROM comparisons c "
           "JOIN items i ON i.id = c.left_id WHERE c.deleted_at IS NULL AND c.labeller_id IS NOT NULL")
    args: list = []
    if item_kind:
        sql += " AND i.kind = ?"
        args.append(item_kind)
    if sources:
        sql += f" AND c.source IN ({', '.join('?' for _ in sources)})"
        args.extend(sources)
    rows = [dict(r) for r in project.conn.execute(sql + " ORDER BY c.id", args)]
    names = {r["id"]: r["name"] for r in project.conn.execute("SELECT id, name FROM labellers")}
    return agreement_from_labels(rows, names)
