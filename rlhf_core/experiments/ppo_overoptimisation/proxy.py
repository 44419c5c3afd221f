"""The proxy reward model: every pair of the reference's responses to one prompt labelled by the gold
reward, and the Bradley-Terry fit on those labels (only the scalar head on cached features, or the
whole model)."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence

import torch

from rlhf_core.experiments.ppo_overoptimisation.config import PPODemoConfig
from rlhf_core.jobs import JobContext
from rlhf_core.rewards.bradley_terry import bradley_terry_loss, pair_accuracy
from rlhf_core.text.pairs import TextPair
from rlhf_core.text.reward_model import format_pair_text, load_base_reward_model
from rlhf_core.text.rl_common import make_optimizer
from rlhf_core.trainers.text.reward_model import evaluate_reward_pairs, train_step


def label_pairs(prompts: Sequence[str], samples, golds: Sequence[float]):
    """All pairs of responses to the same prompt, labelled by the gold reward (ties: 0.5)."""
    by_prompt: dict[int, list[int]] = {}
    for i, s in enumerate(samples):
        by_prompt.setdefault(s.prompt_index, []).append(i)
    pairs = []
    for idx, rows in sorted(by_prompt.items()):
        for a, b in itertools.combinations(rows, 2):
            ga, gb = golds[a], golds[b]
            target = 1.0 if ga > gb else 0.0 if ga < gb else 0.5
            pairs.append(TextPair(prompts[idx], samples[a].text, samples[b].text, target))
    return pairs


@torch.no_grad()
def _last_token_features(model, tokenizer, texts: Sequence[str], batch_size: int = 8) -> torch.Tensor:
    """The backbone's hidden state at each formatted text's scored token (what the scalar head reads)."""
    feats = []
    for i in range(0, len(texts), batch_size):
        enc = model.encode(texts[i:i + batch_size], tokenizer)
        out = model.backbone(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], use_cache=False)
        last = model.last_token_index(enc["input_ids"], enc["attention_mask"])
        feats.append(out.last_hidden_state[torch.arange(len(last)), last].float())
    return torch.cat(feats)


def train_proxy(config: PPODemoConfig, train_pairs, held_pairs, ctx: JobContext, model_spec: str):
    """Fit the proxy reward model on the labelled pairs: (model, tokenizer, held-out accuracy, train accuracy)."""
    model, tokenizer, _ = load_base_reward_model(model_spec, max_length=config.proxy_max_length, seed=config.seed,
                                                 ctx=ctx)
    if config.proxy_train == "full":
        model.train()
        optimiser = make_optimizer(model.parameters(), config.proxy_learning_rate)
        rng = random.Random(config.seed)
        step = 0
        for _ in range(config.proxy_epochs):
            order = list(range(len(train_pairs)))
            rng.shuffle(order)
            for b in range(0, len(order), config.proxy_batch_size):
                ctx.raise_if_cancelled()
                step += 1
                batch = [train_pairs[i] for i in order[b:b + config.proxy_batch_size]]
                ctx.metrics(step, train_step(model, optimiser, batch, tokenizer))
        model.eval()
        _, train_acc = evaluate_reward_pairs(model, train_pairs, tokenizer)
        held_acc = evaluate_reward_pairs(model, held_pairs, tokenizer)[1] if held_pairs else float("nan")
        return model, tokenizer, held_acc, train_acc
    # head only: features once, then full-batch Adam on the linear head
    model.eval()
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    everything = list(train_pairs) + list(held_pairs)
    texts = sorted({format_pair_text(tokenizer, p.prompt, r) for p in everything for r in (p.left, p.right)})
    index = {t: i for i, t in enumerate(texts)}
    ctx.raise_if_cancelled()
    feats = _last_token_features(model, tokenizer, texts)

    def columns(pairs):
        left = [index[format_pair_text(tokenizer, p.prompt, p.left)] for p in pairs]
        right = [index[format_pair_text(tokenizer, p.prompt, p.right)] for p in pairs]
        return torch.tensor(left), torch.tensor(right), torch.tensor([p.target for p in pairs])

    tl, tr, tt = columns(train_pairs)
    optimiser = torch.optim.Adam(model.head.parameters(), lr=config.proxy_learning_rate)
    log_every = max(1, config.proxy_epochs // 20)
    for step in range(1, config.proxy_epochs + 1):
        scores = model.head(feats).squeeze(-1)
        loss = bradley_terry_loss(scores[tl], scores[tr], tt)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if step % log_every == 0 or step == config.proxy_epochs:
            ctx.raise_if_cancelled()
            acc = pair_accuracy(scores[tl].detach(), scores[tr].detach(), tt)
            ctx.metrics(step, {"reward_model/loss": float(loss.detach()), "reward_model/train_accuracy": acc})
    with torch.no_grad():
        scores = model.head(feats).squeeze(-1)
        train_acc = pair_accuracy(scores[tl], scores[tr], tt)
        held_acc = float("nan")
        if held_pairs:
            hl, hr, ht = columns(held_pairs)
            held_acc = pair_accuracy(scores[hl], scores[hr], ht)
    return model, tokenizer, held_acc, train_acc
