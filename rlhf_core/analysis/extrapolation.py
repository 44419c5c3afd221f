"""Does the learned reward extrapolate? Predicted vs true returns, Pearson and Spearman.

T-REX's extrapolation plot: x = true return, y = predicted return, for the demonstrations and for
unseen trajectories (e.g. the trained policy's), which may lie beyond the best demonstration.
"""

from __future__ import annotations

import numpy as np


def pearson(x, y) -> float:
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 2 or x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def _ranks(a: np.ndarray) -> np.ndarray:
    order = np.argsort(a, kind="mergesort")
    ranks = np.empty(len(a), float)
    ranks[order] = np.arange(len(a), dtype=float)
    # average ranks for ties
    for v in np.unique(a):
        idx = np.where(a == v)[0]
        if len(idx) > 1:
            ranks[idx] = ranks[idx].mean()
    return ranks


def spearman(x, y) -> float:
    x, y = np.asarray(x, float), np.asarray(y, float)
    return pearson(_ranks(x), _ranks(y))


def extrapolation_report(true_demo, pred_demo, true_unseen, pred_unseen) -> dict:
    """Correlations on demos, on unseen trajectories, and how many unseen ones beat the best demo."""
    best_demo = float(np.max(true_demo)) if len(true_demo) else float("nan")
    unseen = np.asarray(true_unseen, float)
    return {
        "demo_pearson": pearson(true_demo, pred_demo),
        "demo_spearman": spearman(true_demo, pred_demo),
        "unseen_pearson": pearson(true_unseen, pred_unseen),
        "unseen_spearman": spearman(true_unseen, pred_unseen),
        "all_pearson": pearson(np.concatenate([true_demo, true_unseen]), np.concatenate([pred_demo, pred_unseen])),
        "best_demo_return": best_demo,
        "unseen_beyond_best_demo": int((unseen > best_demo).sum()),
        "n_demo": int(len(true_demo)),
        "n_unseen": int(len(unseen)),
    }
