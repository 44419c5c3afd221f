"""Labeller agreement: % agreement and Cohen's kappa, checked against values worked out by hand."""

from __future__ import annotations

import math

import pytest

from rlhf_core.analysis.agreement import agreement_from_labels, cohen_kappa, labeller_agreement, normalise


def rows(labeller, outcomes, start=1, swap=()):
    """Labels of one labeller on pairs (start+2k, start+2k+1); indices in ``swap`` given the other way round."""
    out = []
    for k, o in enumerate(outcomes):
        a, b = 100 + 2 * k, 101 + 2 * k
        if k in swap:
            o = {"left": "right", "right": "left"}.get(o, o)
            a, b = b, a
        out.append({"left_id": a, "right_id": b, "outcome": o, "labeller_id": labeller})
    return out


L, R, T = "left", "right", "tie"


def test_cohen_kappa_by_hand():
    a = [L, L, L, L, L, R, R, R, T, T]
    b = [L, L, L, R, T, R, R, L, T, T]
    # p_o = 7/10; p_e = .5*.4 + .3*.3 + .2*.3 = .35; kappa = (.7 - .35) / .65 = 7/13
    assert cohen_kappa(a, b) == pytest.approx(7 / 13)
    assert cohen_kappa([L, R], [L, R]) == pytest.approx(1.0)
    assert cohen_kappa([L, L], [L, L]) is None  # p_e = 1: undefined
    assert cohen_kappa([], []) is None


def test_two_labellers_with_swapped_orientation_and_exclusions():
    a = [L, L, L, L, L, R, R, R, T, T]
    b = [L, L, L, R, T, R, R, L, T, T]
    labels = rows(1, a) + rows(2, b, swap={0, 3, 8})  # B saw some pairs the other way round
    labels += [{"left_id": 500, "right_id": 501, "outcome": "skip", "labeller_id": 1},
               {"left_id": 500, "right_id": 501, "outcome": "left", "labeller_id": 2},
               {"left_id": 100, "right_id": 101, "outcome": "left", "labeller_id": None}]
    rep = agreement_from_labels(labels, {1: "ann", 2: "bob"})
    assert rep.pairs == 10 and rep.comparisons == 10 and rep.agree == 7
    assert rep.agreement == pytest.approx(0.7)
    assert rep.kappa == pytest.approx(7 / 13)
    assert rep.excluded_labels == 1
    (pw,) = rep.pairwise
    assert (pw.name_a, pw.name_b, pw.n, pw.agree) == ("ann", "bob", 10, 7) and pw.kappa == pytest.approx(7 / 13)
    # disagreements at k = 3, 4, 7, in the normalised (smaller id first) orientation
    assert [(d.item_a, d.outcomes) for d in rep.disagreements] == [
        (106, {"ann": L, "bob": R}), (108, {"ann": L, "bob": T}), (114, {"ann": R, "bob": L})]


def test_three_labellers_pooled_agreement_and_lights_kappa():
    labels = rows(1, [L, T]) + rows(2, [L, T]) + rows(3, [R, T])
    rep = agreement_from_labels(labels, {1: "a", 2: "b", 3: "c"})
    # pair 1: a=b≠c -> 1 of 3 answer pairs agree; pair 2: 3 of 3 -> 4/6
    assert rep.pairs == 2 and (rep.agree, rep.comparisons) == (4, 6)
    kappas = {(p.name_a, p.name_b): p.kappa for p in rep.pairwise}
    # a-b: p_o 1, p_e .5 -> 1; a-c: p_o .5, p_e .25 -> 1/3; b-c the same
    assert kappas[("a", "b")] == pytest.approx(1.0)
    assert kappas[("a", "c")] == pytest.approx(1 / 3) and kappas[("b", "c")] == pytest.approx(1 / 3)
    assert rep.kappa == pytest.approx(5 / 9)
    assert len(rep.disagreements) == 1 and rep.disagreements[0].outcomes == {"a": L, "b": L, "c": R}


def test_pairs_with_one_labeller_are_ignored_and_latest_label_wins():
    labels = [
        {"id": 1, "left_id": 1, "right_id": 2, "outcome": L, "labeller_id": 1},
        {"id": 5, "left_id": 2, "right_id": 1, "outcome": L, "labeller_id": 1},  # later: 2 better
        {"id": 2, "left_id": 1, "right_id": 2, "outcome": R, "labeller_id": 2},
        {"id": 3, "left_id": 3, "right_id": 4, "outcome": L, "labeller_id": 1},  # one labeller only
    ]
    rep = agreement_from_labels(labels)
    assert rep.pairs == 1 and rep.agree == 1 and rep.disagreements == []
    assert rep.kappa is None  # both used one category only
    assert math.isnan(agreement_from_labels([]).agreement)
    assert normalise(9, 3, L) == ((3, 9), R) and normalise(9, 3, T) == ((3, 9), T)


def test_labeller_agreement_on_a_project(project):
    pid = project.add_prompt("Say hi")
    r = [project.add_item("response", prompt_id=pid, text=f"hi {i}") for i in range(3)]
    ann, bob = project.ensure_labeller("ann"), project.ensure_labeller("bob")
    project.add_comparison(r[0], r[1], L, labeller_id=ann)
    project.add_comparison(r[1], r[0], R, labeller_id=bob)  # same judgement, other orientation
    c = project.add_comparison(r[0], r[2], T, labeller_id=ann)
    project.add_comparison(r[2], r[0], L, labeller_id=bob)
    project.add_comparison(r[1], r[2], "both_bad", labeller_id=bob)
    rep = labeller_agreement(project, item_kind="response")
    assert (rep.agree, rep.comparisons) == (1, 2) and rep.excluded_labels == 1
    assert rep.disagreements[0].outcomes == {"ann": T, "bob": R}
    project.edit_comparison(c, R)  # ann changes her mind: the edit replaces the old label
    rep = labeller_agreement(project, item_kind="response")
    assert (rep.agree, rep.comparisons) == (2, 2) and rep.disagreements == []
    assert labeller_agreement(project, item_kind="clip").pairs == 0
