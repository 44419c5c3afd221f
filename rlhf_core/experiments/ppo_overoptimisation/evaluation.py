"""Did the proxy's gain hold under the gold reward? The per-rollout verdict and Goodhart gap, the
greedy win rate on held-out prompts, the best-of-n curve (no training) and the paired policy-vs-reference
checks drawn with common random numbers (low noise, with standard errors)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from rlhf_core.analysis.text_evaluation import win_rate_from_scores
from rlhf_core.text.gold_eval import sample_completions
from rlhf_core.text.reward_model import score_responses
from rlhf_core.text.rl_common import render_chat_prompt, sample_for_training


def _centred_means(values: Sequence[float], window: int) -> list[float]:
    """Mean of ``values[i - h .. i + h]`` (``h = window // 2``) for every ``i`` with a full window."""
    h = window // 2
    return [sum(values[i - h:i + h + 1]) / (2 * h + 1) for i in range(h, len(values) - h)]


def overoptimisation_summary(steps: Sequence[int], proxy: Sequence[float], gold: Sequence[float],
                             kl_seq: Sequence[float], *, window: int = 3, margin: float = 0.15) -> dict:
    """Gao et al.'s verdict on one run from its per-rollout proxy, gold and per-sequence KL.

    One rollout of 8 completions is noisy, so everything is read through ``window``-step means:

    - ``gold_peak``: the largest centred moving mean of the gold reward; ``gold_peak_step`` its
      centre step; ``proxy_at_gold_peak``: the proxy's centred mean at that same step;
    - ``gold_last_window`` / ``proxy_last_window``: the means over the last ``window`` rollouts (the
      last full window, so a peak in it makes ``gold_last_window == gold_peak``);
    - ``gold_step_noise``: the gold reward's step-to-step noise, ``sqrt(mean(diff^2) / 2)`` (the
      von Neumann estimate; a trend inflates it a little);
    - ``overoptimised``: ``proxy_last_window > proxy_at_gold_peak`` (the proxy still went up after
      the gold peak) and ``gold_last_window < gold_peak - margin`` (the gold came down by more than
      noise). The default margin lets a flat noisy run pass about 1 time in 20 (how it was set:
      docs/experiments/ppo-overoptimisation.md).

    Steps without a gold value (NaN) are dropped. With fewer than ``window`` rollouts every value is
    None and ``overoptimised`` is False.
    """
    rows = [(int(s), float(p), float(g), float(k)) for s, p, g, k in zip(steps, proxy, gold, kl_seq)
            if math.isfinite(float(g)) and math.isfinite(float(p))]
    out: dict = {"gold_peak": None, "gold_peak_step": None, "proxy_at_gold_peak": None, "gold_last_window": None,
                 "proxy_last_window": None, "gold_step_noise": None, "overopt_margin": float(margin),
                 "overoptimised": False,
                 "curve": {"step": [r[0] for r in rows], "proxy": [round(r[1], 4) for r in rows],
                           "gold": [round(r[2], 4) for r in rows], "kl_seq": [round(r[3], 3) for r in rows]}}
    if rows and kl_seq:
        out["sqrt_kl_last"] = math.sqrt(max(float(kl_seq[-1]), 0.0))
    window = max(1, int(window)) | 1  # odd, so that a window has a centre step
    if len(rows) < window:
        return out
    s, p, g = [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]
    gold_means, proxy_means = _centred_means(g, window), _centred_means(p, window)
    peak = max(range(len(gold_means)), key=lambda i: gold_means[i])  # the first of equal peaks
    h = window // 2
    out.update(gold_peak=gold_means[peak], gold_peak_step=s[peak + h], proxy_at_gold_peak=proxy_means[peak],
               gold_last_window=gold_means[-1], proxy_last_window=proxy_means[-1])
    if len(g) >= 2:
        out["gold_step_noise"] = math.sqrt(sum((b - a) ** 2 for a, b in zip(g, g[1:])) / (len(g) - 1) / 2)
    out["overoptimised"] = bool(proxy_means[-1] > proxy_means[peak] and gold_means[-1] < gold_means[peak] - margin)
    return out


def goodhart_gap(result: dict) -> float | None:
    """At the end of a run, how much better than the reference the proxy says the policy is, minus how
    much better it is by the gold reward: ``reward_window_last - gold_centred_window_last``. Both are
    centred per prompt on the reference's label samples and divided by their within-prompt spread, so 0
    on either scale is the reference and the units match: the gap is the part of the proxy's gain that
    is not real (0 for a proxy that tracks the gold). None without the centred gold."""
    if result.get("reward_window_last") is None or result.get("gold_centred_window_last") is None:
        return None
    return result["reward_window_last"] - result["gold_centred_window_last"]


def heldout_win_rates(setup, proxy, proxy_tokenizer, prompts: Sequence[str], gold_of, *, max_new_tokens: int,
                      seed: int = 0, on_step=None) -> dict:
    """The trained policy against the frozen reference on ``prompts``: one greedy response each, judged
    twice, by the proxy reward model (what PPO optimised) and by the hidden gold reward (what was wanted).

    Returns ``win_rate_proxy`` / ``win_rate_gold`` (win 1, tie 0.5, loss 0; a tie is an equal score),
    the mean score of each side under each judge (``eval_proxy_policy`` ...), the mean response
    lengths and ``eval_prompts``. A policy that games the proxy wins under the proxy and loses under
    the gold reward. With LoRA the reference is the policy with its adapters switched off.
    """
    rendered = [render_chat_prompt(setup.tokenizer, p) for p in prompts]
    common = dict(temperature=0.0, top_p=1.0, max_new_tokens=max_new_tokens, seed=seed, eos_token_ids=None,
                  on_step=on_step, batch_size=16)
    ours = [g[0] for g in sample_completions(setup.model, setup.tokenizer, rendered, 1, **common)]
    reference, switch_off = _reference_of(setup)
    with switch_off:
        theirs = [g[0] for g in sample_completions(reference, setup.tokenizer, rendered, 1, **common)]
    n = len(prompts)
    proxy_scores = score_responses(proxy, proxy_tokenizer, list(prompts) * 2,
                                   [s.text for s in ours] + [s.text for s in theirs]).tolist()
    gold_scores = [gold_of(p, s.text, len(s.completion_ids)) for p, s in zip(list(prompts) * 2, ours + theirs)]
    by_proxy = win_rate_from_scores(proxy_scores[:n], proxy_scores[n:])
    by_gold = win_rate_from_scores(gold_scores[:n], gold_scores[n:])

    def mean(xs):
        return sum(xs) / len(xs)

    return {"eval_prompts": n, "win_rate_proxy": by_proxy["win_rate"], "win_rate_gold": by_gold["win_rate"],
            "eval_proxy_policy": mean(proxy_scores[:n]), "eval_proxy_reference": mean(proxy_scores[n:]),
            "eval_gold_policy": mean(gold_scores[:n]), "eval_gold_reference": mean(gold_scores[n:]),
            "eval_length_policy": mean([len(s.completion_ids) for s in ours]),
            "eval_length_reference": mean([len(s.completion_ids) for s in theirs])}


def best_of_n_expectations(proxy: Sequence[float], gold: Sequence[float], n: int) -> tuple[float, float]:
    """Unbiased estimates, from N responses to one prompt, of the expected proxy and gold score of the
    response the proxy ranks highest among n drawn at random without replacement (Gao et al. 2022, after
    Nakano et al. 2021): with the responses sorted by proxy, the i-th lowest (1-based) is the best of a
    random n-subset with probability C(i-1, n-1) / C(N, n)."""
    big_n = len(proxy)
    if not 1 <= n <= big_n or len(gold) != big_n:
        raise ValueError(f"n must be in 1..{big_n} and proxy/gold the same length")
    order = sorted(range(big_n), key=lambda i: proxy[i])
    total = math.comb(big_n, n)
    weights = [math.comb(rank - 1, n - 1) / total for rank in range(1, big_n + 1)]
    return (sum(w * proxy[i] for w, i in zip(weights, order)), sum(w * gold[i] for w, i in zip(weights, order)))


def best_of_n_kl(n: int) -> float:
    """KL(best-of-n || reference) = log n - (n - 1) / n nats (Stiennon et al. 2020; exact for continuous scores)."""
    return math.log(n) - (n - 1) / n


def best_of_n_curve(proxy_by_prompt: Sequence[Sequence[float]], gold_by_prompt: Sequence[Sequence[float]],
                    ns: Sequence[int]) -> dict:
    """The best-of-n curve averaged over prompts: for each n the KL, and the proxy and gold expectations
    with their standard errors across prompts (the prompts are the independent units). Also the gold's
    peak (``gold_peak_n``, ``gold_peak``), its value at the largest n (``gold_last``) and ``gold_drop`` =
    peak - last with ``gold_drop_se`` (the SE of the per-prompt differences; the peak is chosen after
    looking, so this flatters the drop a little), and ``overoptimised``: the gold at the largest n is
    below its peak by more than 2 of those SEs while the proxy there is above its value at the peak."""
    curve: dict = {"n": [], "kl": [], "sqrt_kl": [], "proxy": [], "proxy_se": [], "gold": [], "gold_se": []}
    per_prompt_gold = []
    for n in ns:
        pairs = [best_of_n_expectations(p, g, n) for p, g in zip(proxy_by_prompt, gold_by_prompt)]
        (pm, pse), (gm, gse) = _mean_se([a for a, _ in pairs]), _mean_se([b for _, b in pairs])
        per_prompt_gold.append([b for _, b in pairs])
        curve["n"].append(int(n))
        curve["kl"].append(best_of_n_kl(n))
        curve["sqrt_kl"].append(math.sqrt(best_of_n_kl(n)))
        curve["proxy"].append(pm)
        curve["proxy_se"].append(pse)
        curve["gold"].append(gm)
        curve["gold_se"].append(gse)
    peak = max(range(len(ns)), key=lambda i: curve["gold"][i])
    drop, drop_se = _mean_se([a - b for a, b in zip(per_prompt_gold[peak], per_prompt_gold[-1])])
    return {"curve": curve, "gold_peak_n": curve["n"][peak], "gold_peak": curve["gold"][peak],
            "gold_last": curve["gold"][-1], "proxy_last": curve["proxy"][-1], "gold_drop": drop,
            "gold_drop_se": drop_se,
            "overoptimised": bool(drop > 2.0 * drop_se and curve["proxy"][-1] > curve["proxy"][peak])}


def _reference_of(setup):
    """The frozen reference and a context in which it answers (LoRA: the policy with its adapters off)."""
    import contextlib

    if setup.reference is not None:
        return setup.reference, contextlib.nullcontext()
    return setup.model, setup.model.disable_adapter()


def _mean_se(xs: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error (sample SD / sqrt(n); 0 for a single value)."""
    n = len(xs)
    m = sum(xs) / n
    if n < 2:
        return m, 0.0
    return m, math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1) / n)


def paired_goodhart_eval(setup, proxy_fn, gold_fn, prompts: Sequence[str], k: int, *, settings, seed: int,
                         on_step=None, batch_size: int = 32, cache: dict | None = None,
                         pairs_out: list | None = None) -> dict:
    """The final policy against the frozen reference on ``prompts``, ``k`` sampled responses each, paired:
    response j to prompt i is drawn by both models with the same seed (the sampler draws each token by
    inverse CDF from one uniform per row, so where the two models agree they write the same text and the
    pair's difference is exactly 0). ``proxy_fn(prompts, texts)`` and ``gold_fn(prompts, texts, tokens)``
    return scores in the same units (reference spreads, as PPO saw them).

    Per pair: proxy gain = proxy(policy) - proxy(reference), gold gain likewise, gap = the difference.
    Returns their means and standard errors over the ``len(prompts) * k`` pairs (``paired_proxy_gain``,
    ``paired_gold_gain``, ``paired_goodhart_gap`` and ``*_se``), ``paired_n``, ``paired_identical`` (the
    share of pairs with the same text) and the mean lengths. Neither side's per-prompt baseline enters:
    it cancels in the differences, so the gap carries no noise from the label samples. Pass the same
    ``cache`` dict to repeated calls with the same arguments: the reference's side (texts, lengths and
    scores) is computed once. With ``pairs_out`` (a list), the per-pair proxy and gold gains are appended
    to it as one tuple ``(d_proxy, d_gold)``: :func:`paired_curve` compares checks pair by pair.
    """
    rows = [p for p in prompts for _ in range(k)]
    rendered = [render_chat_prompt(setup.tokenizer, p) for p in rows]
    seeds = [seed * 7919 + 500_009 + 31 * i for i in range(len(rows))]
    common = dict(on_step=on_step, batch_size=batch_size)  # sampling and scoring run without gradients
    cache = {} if cache is None else cache
    if "reference" not in cache:
        reference, switch_off = _reference_of(setup)
        with switch_off:
            theirs = sample_for_training(reference, setup.tokenizer, rendered, settings, seeds, **common)
        texts, tokens = [s.text for s in theirs], [len(s.completion_ids) for s in theirs]
        cache["reference"] = (texts, tokens, [float(x) for x in proxy_fn(rows, texts)],
                              [float(x) for x in gold_fn(rows, texts, tokens)])
    ref_texts, ref_tokens, ref_proxy, ref_gold = cache["reference"]
    ours = sample_for_training(setup.model, setup.tokenizer, rendered, settings, seeds, **common)
    texts, tokens = [s.text for s in ours], [len(s.completion_ids) for s in ours]
    d_proxy = [float(a) - b for a, b in zip(proxy_fn(rows, texts), ref_proxy)]
    d_gold = [float(a) - b for a, b in zip(gold_fn(rows, texts, tokens), ref_gold)]
    if pairs_out is not None:
        pairs_out.append((d_proxy, d_gold))
    n = len(rows)
    out: dict = {"paired_n": n, "paired_identical": sum(a == b for a, b in zip(texts, ref_texts)) / n,
                 "paired_length_policy": sum(tokens) / n, "paired_length_reference": sum(ref_tokens) / n}
    for name, xs in (("proxy_gain", d_proxy), ("gold_gain", d_gold),
                     ("goodhart_gap", [a - b for a, b in zip(d_proxy, d_gold)])):
        out[f"paired_{name}"], out[f"paired_{name}_se"] = _mean_se(xs)
    return out


def paired_curve(steps: Sequence[int], kl_seq: Sequence[float], pairs: Sequence[tuple[Sequence[float],
                                                                                      Sequence[float]]]) -> dict:
    """The paired checks of one run as a curve, and whether the gold fell past its peak (Gao et al.'s shape).

    ``pairs[j] = (d_proxy, d_gold)``: the per-pair gains of the check at ``steps[j]`` (KL ``kl_seq[j]``),
    all checks drawn with the same seeds against the same reference responses. The reference itself is
    the curve's origin (step 0, KL 0, every gain exactly 0: before any update the two sides write the
    same texts). ``paired_gold_peak_step`` is where the mean gold gain is highest (the origin included),
    ``paired_gold_drop`` = gold gain at the peak - at the last check, with ``paired_gold_drop_se`` the
    standard error of the per-pair differences (pair i of every check uses the same random numbers, so
    the checks' noise is correlated and this SE is the right one for the difference; the peak is chosen
    after looking, which flatters the drop a little). ``paired_overoptimised``: the drop is larger than 2
    of those SEs while the proxy gain at the last check is above its value at the peak. With no check,
    or the peak at the last check, the drop is 0 and the verdict False."""
    n = len(pairs[0][0]) if pairs else 0
    rows = [(0, 0.0, [0.0] * n, [0.0] * n)] + [(int(s), float(k), list(p), list(g))
                                               for s, k, (p, g) in zip(steps, kl_seq, pairs)]
    curve: dict = {"step": [], "kl": [], "proxy": [], "proxy_se": [], "gold": [], "gold_se": []}
    for s, k, p, g in rows:
        (pm, pse), (gm, gse) = (_mean_se(p), _mean_se(g)) if n else ((0.0, 0.0), (0.0, 0.0))
        for key, value in zip(curve, (s, k, pm, pse, gm, gse)):
            curve[key].append(value)
    peak = max(range(len(rows)), key=lambda i: curve["gold"][i])  # the first of equal peaks
    drop, drop_se = _mean_se([a - b for a, b in zip(rows[peak][3], rows[-1][3])]) if n else (0.0, 0.0)
    return {"paired_curve": curve, "paired_gold_peak_step": curve["step"][peak],
            "paired_gold_peak": curve["gold"][peak], "paired_gold_drop": drop, "paired_gold_drop_se": drop_se,
            "paired_overoptimised": bool(peak < len(rows) - 1 and drop > 2.0 * drop_se
                                         and curve["proxy"][-1] > curve["proxy"][peak])}
