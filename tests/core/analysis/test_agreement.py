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


# ------------------------------------------------------------------ more than two labellers
def test_fleiss_kappa_of_the_textbook_table():
    from rlhf_core.analysis.agreement import fleiss_kappa

    # Fleiss' kappa's worked example (Wikipedia, "Fleiss' kappa"): 10 subjects, 14 raters, 5 categories;
    # P-bar = 0.378, P_e = 0.213, kappa = 0.210
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    assert fleiss_kappa(table) == pytest.approx(0.20993, abs=5e-5)
    # by hand: 3 raters; P_i = 1, 1/3, 1/3 -> P-bar 5/9; p = 5/9, 2/9, 2/9 -> P_e 33/81; kappa = 1/4
    assert fleiss_kappa([[3, 0, 0], [2, 1, 0], [0, 1, 2]]) == pytest.approx(0.25)
    # subjects with one rating are not pairable and left out; a single category is undefined
    assert fleiss_kappa([[3, 0, 0], [2, 1, 0], [0, 1, 2], [1, 0, 0]]) == pytest.approx(0.25)
    assert fleiss_kappa([[2, 0], [3, 0]]) is None and fleiss_kappa([]) is None
    # unequal numbers of raters: P_i = (0 + 1/3), P-bar = 1/6; p = (1+2)/5, (1+1)/5 -> P_e = .52;
    # kappa = (1/6 - .52) / .48
    assert fleiss_kappa([[1, 1], [2, 1]]) == pytest.approx((1 / 6 - 0.52) / 0.48)


def test_krippendorff_alpha_nominal_with_missing_values():
    from rlhf_core.analysis.agreement import krippendorff_alpha_nominal

    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability": 4 observers, 12 units, values
    # missing; nominal alpha = 0.743
    n = None
    obs = [[1, 2, 3, 3, 2, 1, 4, 1, 2, n, n, n],
           [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, n, 3],
           [n, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, n],
           [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, n]]
    assert krippendorff_alpha_nominal(zip(*obs)) == pytest.approx(0.743, abs=5e-4)
    # by hand: units (a a) (a b) (b b -): o_aa 2, o_ab = o_ba 1, o_bb 2; n_a = n_b = 3, n = 6;
    # alpha = 1 - (n - 1) * 2 / (2 * 3 * 3) = 4/9
    assert krippendorff_alpha_nominal([["a", "a"], ["a", "b"], ["b", "b", None], ["a"]]) == pytest.approx(4 / 9)
    assert krippendorff_alpha_nominal([["a", "a"], ["a", "a"]]) is None and krippendorff_alpha_nominal([]) is None


def test_three_labellers_get_fleiss_and_krippendorff():
    # pair 1: a=L b=L c=R; pair 2: a=T b=T c=T; pair 3: a=L c=L (b did not label it)
    labels = rows(1, [L, T, L]) + rows(2, [L, T]) + rows(3, [R, T, L])
    rep = agreement_from_labels(labels, {1: "a", 2: "b", 3: "c"})
    assert rep.pairs == 3 and rep.most_labellers == 3
    # Fleiss (counts L, R, T): [2,1,0] [0,0,3] [2,0,0]: P_i = 1/3, 1, 1 -> P-bar 7/9; p = 4/8, 1/8, 3/8
    # -> P_e = 26/64; kappa = (7/9 - 13/32) / (1 - 13/32)
    assert rep.fleiss_kappa == pytest.approx((7 / 9 - 13 / 32) / (19 / 32))
    # Krippendorff: o_LL = 2/2 + 2 = 3, o_LR = o_RL = 2/2 = 1, o_TT = 6/2 = 3; n_L 4, n_R 1, n_T 3, n 8;
    # alpha = 1 - 7 * 2 / (2 * (4*1 + 4*3 + 1*3)) = 1 - 14/38
    assert rep.krippendorff_alpha == pytest.approx(1 - 14 / 38)


def test_agreement_per_guideline_version_on_clips(project):
    from rlhf_core.analysis.agreement import ALL_VERSIONS, labeller_agreement_by_guideline

    traj = project.add_item("trajectory", env_id="CartPole-v1", length=40)
    c = [project.add_item("clip", parent_id=traj, env_id="CartPole-v1", start_step=i, end_step=i + 8)
         for i in range(5)]
    ann, bob = project.ensure_labeller("ann"), project.ensure_labeller("bob")
    # under version 1 they disagree on both pairs; under version 2 they agree on both
    for (a, b), x, y, v in (((c[0], c[1]), L, R, 1), ((c[1], c[2]), T, L, 1),
                            ((c[2], c[3]), L, L, 2), ((c[3], c[4]), R, R, 2)):
        project.add_comparison(a, b, x, labeller_id=ann, guideline_version=v)
        project.add_comparison(a, b, y, labeller_id=bob, guideline_version=v)
    # an adjudication settles a disagreement: it is not a labeller's answer
    with project.db.atomic():
        adj = project.add_comparison(c[0], c[1], L, labeller_id=project.ensure_labeller("judge"), guideline_version=1)
        project.conn.execute("UPDATE comparisons SET role = 'adjudication' WHERE id = ?", [adj])
    overall = labeller_agreement(project, item_kind="clip")
    assert (overall.pairs, overall.agree, overall.comparisons) == (4, 2, 4) and set(overall.labellers) == {ann, bob}
    by = labeller_agreement_by_guideline(project, item_kind="clip")
    assert list(by) == [1, 2]
    assert (by[1].agree, by[1].comparisons, by[2].agree, by[2].comparisons) == (0, 2, 2, 2)
    # v1: ann L T, bob R L -> p_o 0, p_e = .5*.5 (L) + 0 + 0 = .25 -> kappa -1/3
    assert by[1].kappa == pytest.approx(-1 / 3) and by[2].krippendorff_alpha == pytest.approx(1.0)
    assert labeller_agreement(project, item_kind="clip", guideline_version=2).agreement == 1.0
    assert labeller_agreement(project, item_kind="clip", guideline_version=None).pairs == 0
    assert labeller_agreement(project, item_kind="clip", guideline_version=ALL_VERSIONS).pairs == 4
    assert labeller_agreement(project, item_kind="response").pairs == 0
