"""Our text trainers against TRL 1.16's on the same batch and the same weights (trl is used by tests only).

One test per trainer; later DPO / GRPO equivalence tests belong in this file too.
"""

from __future__ import annotations

import pytest
import torch

from tests.conftest import needs_model

pytestmark = needs_model

TRL_SKIP = "trl is not installed: it is a test-only reference (pip install trl==1.16.0)"

# prompt, chosen, rejected: lengths differ within and across pairs, so right padding is exercised
TRIPLES = [
    ("Say hello.", "Hello! How can I help you today?", "Go away."),
    ("Name a fruit.", "An apple.", "A rock is a fruit, and so is a chair, a table and a very old shoe."),
    ("What is a reward model?", "A network that scores a response to a prompt with a single number.", "No."),
    ("Define behavioral cloning.", "Supervised learning of an expert's actions from its states.",
     "It is when sheep are copied."),
]


def _trl_reward_trainer(model_dir, output_dir, max_length):
    """TRL's own path: the model from a folder name (AutoModelForSequenceClassification, num_labels=1)."""
    trl = pytest.importorskip("trl", reason=TRL_SKIP)
    from datasets import Dataset

    rows = [{"prompt": [{"role": "user", "content": p}],
             "chosen": [{"role": "assistant", "content": c}],
             "rejected": [{"role": "assistant", "content": r}]} for p, c, r in TRIPLES]
    args = trl.RewardConfig(output_dir=str(output_dir), use_cpu=True, bf16=False, report_to="none",
                            max_length=max_length, seed=7, disable_tqdm=True)
    return trl.RewardTrainer(model=str(model_dir), args=args, train_dataset=Dataset.from_list(rows))


def test_reward_model_loss_matches_trl_reward_trainer(tiny_model, tmp_path):
    """Bradley-Terry loss, per-example rewards and gradients equal TRL's ``RewardTrainer.compute_loss``.

    Same batch: TRL tokenises each conversational triple with the chat template (prompt + chosen,
    prompt + rejected) and its collator puts the chosen rows first, then the rejected ones, right
    padded with the pad token; we render the same two-turn chat template to text and tokenise it
    without special tokens, left (= chosen) rows first. The token ids are asserted equal.

    Same weights: TRL builds ``LlamaForSequenceClassification`` (backbone + ``score``, a bias-free
    ``Linear(hidden, 1)``) from the folder; our backbone loads from the same folder (asserted
    equal) and our head, the same bias-free layer, takes ``score.weight``.

    Scored token: both take the rightmost token that is not the pad token (transformers' rule). With
    the chat template every turn ends with ``<|im_end|>\\n`` (SmolLM2's pad token is ``<|im_end|>``),
    so both pick the final ``\\n``; TRL's non-conversational path appends EOS (= pad here) and both
    would then score the token before it.

    Not compared (behaviour differs on purpose): TRL DROPS pairs longer than ``max_length``, we cut
    them on the right (``max_length`` here is long enough for both to keep everything, asserted);
    TRL's optional per-pair ``margin`` column has no counterpart (our labels have no strength); TRL
    has no ties (ours: soft target 0.5). ``center_rewards_coefficient`` is reproduced by
    ``pair_loss(..., center_rewards_coefficient=c)`` (the job's ``center_rewards_coefficient``) and checked below.

    Batching: TRL pads all 2B rows to the longest; we score rows in groups of similar length
    (``length_groups``; a tiny model gets one group, SmolLM2-135M several). Both ways are checked.
    """
    from rlhf_core.text.pairs import TextPair
    from rlhf_core.text.reward_model import format_pair_text, length_groups, load_base_reward_model
    from rlhf_core.trainers.text.reward_model import pair_loss

    max_length = 128
    trainer = _trl_reward_trainer(tiny_model, tmp_path / "trl-out", max_length)
    assert len(trainer.train_dataset) == len(TRIPLES)  # nothing filtered out by max_length
    trl_model = trainer.model
    assert type(trl_model).__name__ == "LlamaForSequenceClassification" and trl_model.score.bias is None

    ours, tok, _ = load_base_reward_model(str(tiny_model), max_length=max_length, seed=0)
    trl_backbone = trl_model.model.state_dict()
    ours_backbone = ours.backbone.state_dict()
    assert ours_backbone.keys() == trl_backbone.keys()
    for name, tensor in ours_backbone.items():
        assert torch.equal(tensor, trl_backbone[name]), name
    assert ours.head.bias is None  # the same bias-free score layer
    with torch.no_grad():
        ours.head.weight.copy_(trl_model.score.weight)

    # the batch exactly as TRL's collator builds it from its tokenised dataset
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(TRIPLES))])
    pairs = [TextPair(p, c, r, 1.0) for p, c, r in TRIPLES]  # left = chosen
    texts = [format_pair_text(tok, p.prompt, p.left) for p in pairs] + \
            [format_pair_text(tok, p.prompt, p.right) for p in pairs]
    enc = ours.encode(texts, tok)
    assert torch.equal(enc["input_ids"], batch["input_ids"])
    assert torch.equal(enc["attention_mask"], batch["attention_mask"])
    assert int(batch["attention_mask"].sum(dim=1).min()) < batch["input_ids"].shape[1]  # padding present
    assert int(batch["attention_mask"].sum(dim=1).max()) < max_length

    trl_model.train()
    ours.train()
    trl_loss, trl_out = trainer.compute_loss(trl_model, dict(batch), return_outputs=True)
    trl_rewards = trl_out.logits.squeeze(-1).detach()
    assert float(trl_rewards.std()) > 1e-3  # the rewards are not all alike (the check is not vacuous)
    assert trl_loss.item() == pytest.approx(
        float(-torch.nn.functional.logsigmoid(trl_rewards[:4] - trl_rewards[4:]).mean()), abs=1e-6)
    trl_loss.backward()
    trl_grads = {n: p.grad for n, p in trl_model.model.named_parameters()}
    assert float(trl_model.score.weight.grad.abs().max()) > 1e-4

    # ours as one padded batch (what this tiny model gets), then in groups of similar length
    lengths = [len(r) for r in ours.tokenize(texts, tok)]
    assert len(set(lengths)) >= 4
    for overhead, n_groups in ((float("inf"), 1), (0.0, len(set(lengths)))):
        ours.group_overhead_flops = overhead
        assert len(length_groups(lengths, ours.flops_per_token, overhead)) == n_groups
        ours.zero_grad(set_to_none=True)
        loss, left, right, mean_len = pair_loss(ours, pairs, tok)
        ours_rewards = torch.cat([left, right]).detach()
        assert abs(loss.item() - trl_loss.item()) < 1e-5, (n_groups, loss.item(), trl_loss.item())
        assert float((ours_rewards - trl_rewards).abs().max()) < 1e-5, (n_groups, ours_rewards, trl_rewards)
        assert mean_len == pytest.approx(float(batch["attention_mask"].sum()) / len(texts))
        # same gradients for every backbone tensor and the head (largest entries ~10: float32 sums of
        # differently grouped rows differ by ~1e-6)
        loss.backward()
        for name, p in ours.backbone.named_parameters():
            torch.testing.assert_close(p.grad, trl_grads[name], rtol=1e-4, atol=1e-5,
                                       msg=lambda m, name=name: f"{name}: {m}")
        torch.testing.assert_close(ours.head.weight.grad, trl_model.score.weight.grad, rtol=1e-4, atol=1e-5)

    # TRL's reward centering (Eisenstein et al. 2023): + c * mean((r_w + r_l)^2)
    trainer.args.center_rewards_coefficient = 0.01
    with torch.no_grad():
        trl_centred = trainer.compute_loss(trl_model, dict(batch))
        centred, _, _, _ = pair_loss(ours, pairs, tok, center_rewards_coefficient=0.01)
    assert abs(centred.item() - trl_centred.item()) < 1e-5, (centred.item(), trl_centred.item())
    assert abs(trl_centred.item() - trl_loss.item()) > 1e-4  # the term is not negligible here


# ------------------------------------------------------------------------------- DPO and GRPO (issue 5)
def _nudge(model, seed: int = 0, scale: float = 0.05) -> None:
    """Move every trainable weight by the same seeded noise (so the policy differs from its reference)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            p.add_(torch.randn(p.shape, generator=gen) * scale)


def _assert_same_weights(ours, theirs):
    mine = dict(ours.named_parameters())
    other = dict(theirs.named_parameters())
    assert mine.keys() == other.keys()
    for name, p in mine.items():
        assert torch.equal(p, other[name]), name


def test_dpo_loss_matches_trl_dpo_trainer(tiny_model, tmp_path):
    """Our DPO loss, implicit rewards and gradients equal TRL 1.16's ``DPOTrainer.compute_loss`` (loss "sigmoid").

    Same batch: TRL's standard (non-conversational) format with the prompt already rendered by the
    chat template (our ``render_chat_prompt``) and the response as plain text; TRL appends EOS
    (``<|im_end|>``) to each response, we append the EOS id, and the token ids are asserted equal.
    TRL right-pads ``prompt + response`` rows; we left-pad prompts and right-pad responses with
    position ids counted over real tokens, which gives the same log-probs (to float rounding).

    Same weights: both load the tiny model from its folder (TRL also loads its reference from
    there); both policies are then moved by the same seeded noise, so the log-ratios are not 0 and
    the loss is not the trivial log 2.
    """
    trl = pytest.importorskip("trl", reason=TRL_SKIP)
    from datasets import Dataset

    from rlhf_core.trainers.text.dpo import PreferencePair, dpo_loss, encode_pairs, pair_logprobs
    from rlhf_core.text.rl_common import load_policy, render_chat_prompt

    beta = 0.1
    setup = load_policy(str(tiny_model), need_reference=True)
    tok = setup.tokenizer
    pairs = [PreferencePair(p, c, r) for p, c, r in TRIPLES]
    rows = [{"prompt": render_chat_prompt(tok, p.prompt), "chosen": p.chosen, "rejected": p.rejected} for p in pairs]
    args = trl.DPOConfig(output_dir=str(tmp_path / "trl-dpo"), use_cpu=True, bf16=False, report_to="none", beta=beta,
                         max_length=1024, seed=7, disable_tqdm=True, gradient_checkpointing=False,
                         per_device_train_batch_size=len(pairs))
    trainer = trl.DPOTrainer(model=str(tiny_model), args=args, train_dataset=Dataset.from_list(rows))
    trl_model = trainer.model
    _assert_same_weights(setup.model, trl_model)
    _nudge(setup.model)
    _nudge(trl_model)
    _assert_same_weights(setup.model, trl_model)

    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(pairs))])
    prompts, completions = encode_pairs(tok, pairs, tok.eos_token_id, max_length=1024)
    for i in range(2 * len(pairs)):  # rows: chosen..., rejected... in both
        n = int(batch["attention_mask"][i].sum())
        assert batch["input_ids"][i, :n].tolist() == prompts[i] + completions[i]
        assert batch["input_ids"][i][batch["completion_mask"][i].bool()].tolist() == completions[i]

    trl_model.train()
    setup.model.train()
    trl_loss = trainer.compute_loss(trl_model, dict(batch))
    c, r, rc, rr = pair_logprobs(setup, tok, pairs, tok.eos_token_id, tok.pad_token_id, 1024)
    loss, _, rew_c, rew_r = dpo_loss(c, r, rc, rr, beta)
    assert abs(float(loss.detach()) - float(trl_loss.detach())) < 1e-5, (float(loss.detach()), float(trl_loss.detach()))
    assert abs(float(loss.detach()) - 0.6931) > 1e-3  # policy != reference: not the trivial value
    with torch.no_grad():  # the job's default forward: each prompt once for its two responses
        shared = dpo_loss(*pair_logprobs(setup, tok, pairs, tok.eos_token_id, tok.pad_token_id, 1024,
                                         shared_prompt=True), beta)[0]
    assert abs(float(shared) - float(trl_loss.detach())) < 1e-5, (float(shared), float(trl_loss.detach()))
    metrics = trainer._metrics["train"]
    assert float(rew_c.mean()) == pytest.approx(metrics["rewards/chosen"][-1], abs=1e-5)
    assert float(rew_r.mean()) == pytest.approx(metrics["rewards/rejected"][-1], abs=1e-5)
    assert float((rew_c > rew_r).float().mean()) == pytest.approx(metrics["rewards/accuracies"][-1])

    trl_loss.backward()
    loss.backward()
    theirs = dict(trl_model.named_parameters())
    for name, p in setup.model.named_parameters():  # to float32 rounding, against each tensor's own scale
        scale = float(theirs[name].grad.abs().max())
        assert float((p.grad - theirs[name].grad).abs().max()) <= 1e-4 * scale + 1e-7, name
    assert float(theirs["model.embed_tokens.weight"].grad.abs().max()) > 1e-4


@pytest.mark.parametrize("aggregation, loss_type, kl_ratio_weight",
                         [("token", "dapo", True), ("sequence", "grpo", False)])
def test_grpo_loss_matches_trl_grpo_trainer(tiny_model, tmp_path, aggregation, loss_type, kl_ratio_weight):
    """Our GRPO loss and gradients equal TRL 1.16's ``GRPOTrainer._compute_loss`` on the same batch.

    Same batch: two prompts of the same token length (TRL's forward passes no position ids, so it
    counts positions from the left edge; with no left padding both agree), G = 4 completions each:
    one sampled by our sampler at temperature 0.7 (the tiny model runs to the 12-token limit) and
    three written ones that end with the end token (so the completion mask has padding). TRL gets the same prompt/completion ids and masks,
    our advantages, and "old" log-probs = the current ones perturbed (so ratios differ from 1 and
    clipping is active on both sides) and our reference log-probs; the KL term uses beta = 0.04.
    ``loss_aggregation="token"`` is TRL's default ``loss_type="dapo"`` (normalised by the number of
    completion tokens in the batch), ``"sequence"`` is ``loss_type="grpo"``. TRL 1.16 weights the KL
    term by the ratio by default (``use_bias_correction_kl``); our ``kl_ratio_weight`` is the same
    option (off by default: DeepSeekMath's plain k3), checked both ways.
    """
    trl = pytest.importorskip("trl", reason=TRL_SKIP)
    from datasets import Dataset

    from rlhf_core.text.generation import SamplingSettings
    from rlhf_core.trainers.text.grpo import group_advantages, grpo_loss
    from rlhf_core.text.rl_common import (
        build_batch,
        completion_logprobs,
        load_policy,
        render_chat_prompt,
        response_ids,
        sample_for_training,
        tokenize_prompts,
    )

    beta, eps, temperature, G = 0.04, 0.2, 0.7, 4
    setup = load_policy(str(tiny_model), need_reference=True)
    tok = setup.tokenizer
    questions = ["What is 12 + 7?", "What is 31 + 5?"]
    rendered = [render_chat_prompt(tok, q) for q in questions]
    lengths = {len(tok(r, add_special_tokens=False)["input_ids"]) for r in rendered}
    assert len(lengths) == 1  # equal prompt lengths: no left padding

    args = trl.GRPOConfig(output_dir=str(tmp_path / "trl-grpo"), use_cpu=True, bf16=False, report_to="none",
                          beta=beta, epsilon=eps, temperature=temperature, num_generations=G,
                          per_device_train_batch_size=2 * G, max_completion_length=12, loss_type=loss_type,
                          use_bias_correction_kl=kl_ratio_weight, seed=7, disable_tqdm=True,
                          gradient_checkpointing=False)
    trainer = trl.GRPOTrainer(model=str(tiny_model), reward_funcs=lambda prompts, completions, **kw: [0.0] * len(prompts),
                              args=args, train_dataset=Dataset.from_list([{"prompt": q} for q in questions]))
    trl_model = trainer.model
    _assert_same_weights(setup.model, trl_model)
    _nudge(setup.model, seed=1, scale=0.01)
    _nudge(trl_model, seed=1, scale=0.01)

    # completions: two sampled by our sampler (the tiny model never stops: 12 tokens) and six written ones
    # that end with the end token, of different lengths (so the completion mask has padding)
    samples = sample_for_training(setup.model, tok, [rendered[0], rendered[1]],
                                  SamplingSettings(max_new_tokens=12, temperature=temperature), seeds=[0, 1])
    written = ["19", "It is 19.", "<think>12 + 7 = 19</think><answer>19</answer>", "36", "I think 35.", "Thirty-six"]
    completions = [samples[0].completion_ids] + [response_ids(tok, t, tok.eos_token_id) for t in written[:3]] + \
                  [samples[1].completion_ids] + [response_ids(tok, t, tok.eos_token_id) for t in written[3:]]
    prompt_ids = tokenize_prompts(tok, [rendered[0]] * G + [rendered[1]] * G)
    batch = build_batch(prompt_ids, [c[:12] for c in completions], tok.pad_token_id)
    assert bool(batch.attention_mask[:, :batch.prompt_width].all())
    assert 0 < float(batch.completion_mask.sum()) < batch.completion_mask.numel()  # some padding
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.0, 0.2, 0.9, 0.9, 0.0])
    advantages = group_advantages(rewards, G, scale=True)
    with torch.no_grad():
        current = completion_logprobs(setup.model, batch, temperature=temperature)[0]
        shift = torch.linspace(-0.4, 0.4, current.numel()).view_as(current)
        old = (current + shift) * batch.completion_mask
        ref = setup.reference_logprobs(batch, temperature=temperature)
    mask = batch.completion_mask
    inputs = {"prompt_ids": batch.input_ids[:, :batch.prompt_width],
              "prompt_mask": batch.attention_mask[:, :batch.prompt_width],
              "completion_ids": batch.completion_ids, "completion_mask": mask.long(),
              "advantages": advantages, "old_per_token_logps": old, "ref_per_token_logps": ref,
              "num_items_in_batch": mask.sum()}
    trainer.current_gradient_accumulation_steps = 1
    trl_model.train()
    setup.model.train()
    trl_loss = trainer._compute_loss(trl_model, inputs)
    assert float(trainer.compute_loss(trl_model, inputs).detach()) == pytest.approx(float(trl_loss.detach()))

    logp, _ = completion_logprobs(setup.model, batch, temperature=temperature)
    parts = grpo_loss(logp, old, ref, advantages, mask, epsilon=eps, beta=beta, aggregation=aggregation,
                      kl_ratio_weight=kl_ratio_weight)
    ours, theirs_loss = float(parts.loss.detach()), float(trl_loss.detach())
    assert abs(ours - theirs_loss) < 1e-5, (ours, theirs_loss)
    m = trainer._metrics["train"]
    assert 1e-3 < parts.kl_token_mean < 10.0 and 0.01 < abs(ours) < 10.0  # the KL term is neither 0 nor all
    if not kl_ratio_weight:  # TRL logs the KL as weighted in its loss
        assert parts.kl_token_mean == pytest.approx(m["kl"][-1], rel=1e-5)
    assert parts.clip_fraction == pytest.approx(m["clip_ratio/region_mean"][-1], abs=1e-6)
    assert 0.0 < parts.clip_fraction < 1.0

    trl_loss.backward()
    parts.loss.backward()
    theirs = dict(trl_model.named_parameters())
    for name, p in setup.model.named_parameters():  # float32 rounding differs (TRL's fused, chunked LM head):
        scale = float(theirs[name].grad.abs().max())  # compare against each tensor's own scale
        assert float((p.grad - theirs[name].grad).abs().max()) <= 1e-4 * scale + 1e-7, name
    assert float(theirs["model.embed_tokens.weight"].grad.abs().max()) > 1e-3
