"""The hidden gold reward: the share of the prompt's key words the response mentions, minus a length
penalty and, optionally, a repetition penalty. A programme, so that it can label pairs and be measured
on every completion without a person; it stands in for what people really want."""

from __future__ import annotations

import re

from rlhf_core.experiments.ppo_overoptimisation.config import PPODemoConfig

_WORD = re.compile(r"[a-z]+")
STOP_WORDS = frozenset("""
about above after again against also among another answer anything around because been before being
below between both briefly could describe does doing down during each either else enough every example
explain from give gives given have having here into just kind kinds know least less like list make many
more most much must name near need only other over please same should show since some something such
sure tell than that their them then there these they thing things this those through under until used
using very want what when where whether which while will with within without word words would write
your sentence sentences short simple
""".split())


def key_words(prompt: str) -> list[str]:
    """The prompt's key words: lower-case words of 4+ letters that are not stop words (in order, unique)."""
    out: list[str] = []
    for w in _WORD.findall(prompt.lower()):
        if len(w) >= 4 and w not in STOP_WORDS and w not in out:
            out.append(w)
    return out


def keyword_coverage(prompt: str, response: str) -> float:
    """Share of the prompt's key words whose first 5 letters start a word of the response (0 when none)."""
    keys = key_words(prompt)
    if not keys:
        return 0.0
    stems = {w[:5] for w in _WORD.findall(response.lower())}
    return sum(1 for k in keys if k[:5] in stems) / len(keys)


def repetition_share(response: str) -> float:
    """Share of the response's content words (4+ letters, not stop words, compared on their first 5
    letters, as key words are) that repeat an earlier content word of the same response; 0 when it has
    none. "bike bike bike bike" -> 0.75 (3 of 4 repeat); "budget rule ... budget" -> 1/3."""
    words = [w[:5] for w in _WORD.findall(response.lower()) if len(w) >= 4 and w not in STOP_WORDS]
    return (len(words) - len(set(words))) / len(words) if words else 0.0


def gold_reward(prompt: str, response: str, completion_tokens: int, *, length_limit: int = 20,
                length_weight: float = 0.03, repeat_weight: float = 0.0) -> float:
    """Keyword coverage minus ``length_weight`` per completion token beyond ``length_limit``, minus
    ``repeat_weight`` times :func:`repetition_share` (0 by default: key words and length only)."""
    gold = keyword_coverage(prompt, response) - length_weight * max(0, int(completion_tokens) - length_limit)
    return gold - repeat_weight * repetition_share(response) if repeat_weight else gold


def gold_function(config: PPODemoConfig):
    """``gold_of(prompt, response, completion_tokens)``: :func:`gold_reward` with the demo's gold settings."""
    def gold_of(prompt: str, response: str, tokens: int) -> float:
        return gold_reward(prompt, response, tokens, length_limit=config.gold_length_limit,
                           length_weight=config.gold_length_weight, repeat_weight=config.gold_repeat_weight)
    return gold_of
