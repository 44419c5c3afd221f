"""Labeller agreement on pairs of clips, responses or trajectories: how often people give the same answer
on the same pair, Cohen's kappa per pair of labellers, Fleiss' kappa and Krippendorff's alpha over all.

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
- For any number of labellers, over the pairs of items with two or more answers: Fleiss' kappa
  (Fleiss 1971; a pair of items answered by n_i labellers adds P_i = (sum_j n_ij^2 - n_i) /
  (n_i (n_i - 1)), the share of its answer pairs that agree; p_j is category j's share of all
  answers; kappa = (mean P_i - sum p_j^2) / (1 - sum p_j^2); with the same n everywhere this is
  Fleiss' own formula) and Krippendorff's alpha for nominal data (Krippendorff 2011: from the
  coincidence matrix, alpha = 1 - (n - 1) * sum_{c != k} o_ck / sum_{c != k} n_c n_k; missing answers
  are simply absent). Both are undefined (``None``) when every answer is the same category.
- Per guideline version: only labels given under that version of the labelling guidelines count
  (``guideline_version`` of each label; None: given with no guidelines). Adjudications (role
  ``adjudication``) are not a labeller's independent answer and are left out.

Published reference values: InstructGPT labellers agreed 72.6 ± 1.5 %; Stiennon et al. report
73 ± 4 % researcher-researcher agreement.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations

CATEGORIES = ("left", "right", "tie")
EXCLUDED = ("skip", "both_bad")
_FLIP = {"left": "right", "right": "left", "tie": "tie"}
ALL_VERSIONS = "all"  # every label, whatever guidelines it was given under
#: item kinds whose pairs are labelled: clips (Label clips), responses (Label text), trajectories (rankings)
ITEM_KINDS = ("clip", "response", "trajectory")


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


def fleiss_kappa(table: Sequence[Sequence[int]]) -> float | None:
    """Fleiss' kappa of a subjects x categories table of counts (how many raters put subject i in
    category j); subjects with fewer than two ratings are left out, the others may have different
    numbers of raters (see the module docstring). ``None`` when undefined (no subject, or one category)."""
    rows = [[int(c) for c in row] for row in table if sum(row) >= 2]
    if any(c < 0 for row in rows for c in row):
        raise ValueError("counts must not be negative")
    if not rows:
        return None
    p_bar = sum((sum(c * c for c in row) - sum(row)) / (sum(row) * (sum(row) - 1)) for row in rows) / len(rows)
    total = sum(sum(row) for row in rows)
    p_e = sum((sum(col) / total) ** 2 for col in zip(*rows))
    if p_e >= 1.0 - 1e-12:
        return None
    return (p_bar - p_e) / (1.0 - p_e)


def krippendorff_alpha_nominal(units: Iterable[Iterable[Hashable | None]]) -> float | None:
    """Krippendorff's alpha for nominal values: each unit is the values its coders gave (``None`` or a
    shorter list: missing); units with fewer than two values are not pairable and left out. ``None``
    when undefined (no pairable unit, or one value only)."""
    o: Counter = Counter()  # coincidences (c, k), both orders
    for unit in units:
        values = [v for v in unit if v is not None]
        m = len(values)
        if m < 2:
            continue
        for i, c in enumerate(values):
            for j, k in enumerate(values):
                if i != j:
                    o[(c, k)] += 1.0 / (m - 1)
    n_c: Counter = Counter()
    for (c, _k), v in o.items():
        n_c[c] += v
    n = sum(n_c.values())
    disagree_o = sum(v for (c, k), v in o.items() if c != k)
    disagree_e = sum(n_c[c] * n_c[k] for c in n_c for k in n_c if c != k)
    if n <= 1 or disagree_e <= 1e-12:
        return None
    return 1.0 - (n - 1) * disagree_o / disagree_e


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
    fleiss_kappa: float | None = None  # over every labeller (pairs of items with >= 2 answers)
    krippendorff_alpha: float | None = None  # nominal, over every labeller
    most_labellers: int = 0  # the most labellers that answered one pair of items

    @property
    def agreement(self) -> float:
        return self.agree / self.comparisons if self.comparisons else float("nan")


def agreement_from_labels(
    labels: Iterable[Mapping], names: Mapping[int, str] | None = None, *,
    guideline_version: int | None | str = ALL_VERSIONS,
) -> AgreementReport:
    """Agreement from label rows with ``left_id``, ``right_id``, ``outcome``, ``labeller_id`` (and
    optionally ``id``, used to keep a labeller's latest label of a pair, and ``guideline_version``:
    with ``guideline_version`` other than :data:`ALL_VERSIONS`, only the labels given under it)."""
    names = dict(names or {})
    latest: dict[tuple[int, int], dict[int, tuple[int, str]]] = {}  # pair -> labeller -> (id, outcome)
    excluded = 0
    for order, row in enumerate(labels):
        lab = row.get("labeller_id")
        if lab is None:
            continue
        if guideline_version != ALL_VERSIONS and row.get("guideline_version") != guideline_version:
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
    answers = [list(by.values()) for _pair, by in sorted(multi.items())]
    return AgreementReport(
        labellers={lab: names[lab] for lab in labeller_ids}, pairs=len(multi), comparisons=total, agree=agree,
        kappa=sum(kappas) / len(kappas) if kappas else None, pairwise=pairwise,
        disagreements=disagreements, excluded_labels=excluded,
        fleiss_kappa=fleiss_kappa([[outs.count(c) for c in CATEGORIES] for outs in answers]),
        krippendorff_alpha=krippendorff_alpha_nominal(answers),
        most_labellers=max((len(outs) for outs in answers), default=0),
    )


def agreement_by_guideline(labels: Iterable[Mapping], names: Mapping[int, str] | None = None
                           ) -> dict[int | None, AgreementReport]:
    """One report per guidelines version the labels were given under (None: no guidelines), oldest first."""
    labels = list(labels)
    versions = sorted({row.get("guideline_version") for row in labels if row.get("labeller_id") is not None},
                      key=lambda v: (v is not None, v or 0))
    return {v: agreement_from_labels(labels, names, guideline_version=v) for v in versions}


def labeller_agreement(project, *, item_kind: str | None = None, sources: Sequence[str] | None = None,
                       guideline_version: int | None | str = ALL_VERSIONS) -> AgreementReport:
    """Agreement over a project's live comparisons (``item_kind`` e.g. ``"response"`` or ``"clip"``;
    ``sources`` e.g. ``("human",)``; ``guideline_version``: only labels given under it). See the module
    docstring for the rules."""
    rows, names = _labels(project, item_kind, sources)
    return agreement_from_labels(rows, names, guideline_version=guideline_version)


def labeller_agreement_by_guideline(project, *, item_kind: str | None = None,
                                    sources: Sequence[str] | None = None) -> dict[int | None, AgreementReport]:
    """:func:`labeller_agreement` per guidelines version (None: labels given with no guidelines)."""
    rows, names = _labels(project, item_kind, sources)
    return agreement_by_guideline(rows, names)


def _labels(project, item_kind: str | None, sources: Sequence[str] | None) -> tuple[list[dict], dict[int, str]]:
    """Live labels by a labeller (not adjudications) of items of ``item_kind`` from ``sources``; labeller names."""
    sql = ("SELECT c.id, c.left_id, c.right_id, c.outcome, c.labeller_id, c.guideline_version FROM comparisons c "
           "JOIN items i ON i.id = c.left_id WHERE c.deleted_at IS NULL AND c.labeller_id IS NOT NULL "
           "AND c.role = 'label'")
    args: list = []
    if item_kind:
        sql += " AND i.kind = ?"
        args.append(item_kind)
    if sources:
        sql += f" AND c.source IN ({', '.join('?' for _ in sources)})"
        args.extend(sources)
    rows = [dict(r) for r in project.conn.execute(sql + " ORDER BY c.id", args)]
    names = {r["id"]: r["name"] for r in project.conn.execute("SELECT id, name FROM labellers")}
    return rows, names
