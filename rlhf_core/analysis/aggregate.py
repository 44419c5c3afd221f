"""Aggregating runs of several seeds as the field reports them (Agarwal et al. 2021, "Deep RL at the Edge
of the Statistical Precipice"): the interquartile mean of final results with a percentile-bootstrap 95 %
confidence interval over runs, and curves as the mean with a bootstrap band."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_RESAMPLES = 2000


def iqm(values: Sequence[float]) -> float:
    """The interquartile mean: the mean of the middle 50 % (a quarter cut from each end, as
    ``scipy.stats.trim_mean(x, 0.25)``); robust to one bad seed, less noisy than the median."""
    x = np.sort(np.asarray(values, dtype=float))
    if x.size == 0:
        return math.nan
    cut = int(0.25 * x.size)
    return float(x[cut:x.size - cut].mean())


def bootstrap_ci(values: Sequence[float], statistic: Callable[[np.ndarray], float] = np.mean, *,
                 confidence: float = 0.95, resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap interval of ``statistic`` over the runs: resample runs with replacement."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, x.size, size=(resamples, x.size))
    stats = np.array([statistic(x[row]) for row in picks])
    tail = (1.0 - confidence) / 2.0
    return float(np.quantile(stats, tail)), float(np.quantile(stats, 1.0 - tail))


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    iqm: float
    iqm_low: float
    iqm_high: float
    mean_low: float
    mean_high: float

    def as_dict(self) -> dict:
        return {"n": self.n, "mean": self.mean, "iqm": self.iqm, "iqm_ci": [self.iqm_low, self.iqm_high],
                "mean_ci": [self.mean_low, self.mean_high]}


def summarise(values: Sequence[float], *, seed: int = 0, resamples: int = DEFAULT_RESAMPLES) -> Summary:
    """Final results of several runs: mean and IQM, each with its 95 % bootstrap interval."""
    x = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    mean = float(np.mean(x)) if x else math.nan
    return Summary(len(x), mean, iqm(x), *bootstrap_ci(x, lambda a: iqm(a), seed=seed, resamples=resamples),
                   *bootstrap_ci(x, np.mean, seed=seed, resamples=resamples))


@dataclass(frozen=True)
class Band:
    steps: list[int]
    mean: list[float]
    low: list[float]
    high: list[float]
    n: list[int]  # runs that logged each step


def curve_band(series: Sequence[tuple[Sequence[int], Sequence[float]]], *, seed: int = 0,
               resamples: int = 500) -> Band:
    """Curves of several runs (``[(steps, values), ...]``) as the mean per step with a 95 % bootstrap band
    over the runs that logged that step."""
    by_step: dict[int, list[float]] = {}
    for steps, values in series:
        for s, v in zip(steps, values):
            if v is not None and math.isfinite(float(v)):
                by_step.setdefault(int(s), []).append(float(v))
    out = Band([], [], [], [], [])
    for i, step in enumerate(sorted(by_step)):
        vals = by_step[step]
        low, high = bootstrap_ci(vals, np.mean, resamples=resamples, seed=seed + i)
        out.steps.append(step)
        out.mean.append(float(np.mean(vals)))
        out.low.append(low)
        out.high.append(high)
        out.n.append(len(vals))
    return out


def final_value(metrics: Mapping[str, tuple[Sequence[int], Sequence[float]]], key: str) -> float | None:
    """The last logged value of ``key`` in a run's metrics (``Project.metrics`` form)."""
    steps, values = metrics.get(key, ([], []))
    return float(values[-1]) if len(values) else None
