"""The shared text-RL pieces: batch layout, completion log-probs, KL estimators."""

from __future__ import annotations

import math

import pytest
import torch

from rlhf_core.text.rl_common import (
    build_batch,
    completion_logprobs,
    frozen_copy,
    kl_k1,
    kl_k3,
    masked_mean,
    render_chat_prompt,
    response_ids,
    sample_for_training,
    batch_from_samples,
    sequence_logprob,
    tokenize_prompts,
)
from rlhf_core.text.generation import SamplingSettings


@pytest.fixture(scope="module")
def tiny(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tiny_model
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


def test_layout_puts_every_completion_in_the_same_column():
    batch = build_batch([[5, 6, 7], [8]], [[1, 2], [3, 4, 9]], pad_token_id=0)
    assert batch.prompt_width == 3
    assert batch.input_ids.tolist() == [[5, 6, 7, 1, 2, 0], [0, 0, 8, 3, 4, 9]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 1, 0], [0, 0, 1, 1, 1, 1]]
    assert batch.position_ids.tolist()[1][2:] == [0, 1, 2, 3]
    assert batch.completion_mask.tolist() == [[1, 1, 0], [1, 1, 1]]
    assert batch.completion_lengths.tolist() == [2, 3]
    with pytest.raises(ValueError):
        build_batch([[]], [[1]], 0)


def test_logprobs_do_not_depend_on_padding_or_batch_mates(tiny):
    model, tok = tiny
    prompts = [render_chat_prompt(tok, "What is 2+2?"), render_chat_prompt(tok, "Write a very long poem about the sea.")]
    p_ids = tokenize_prompts(tok, prompts)
    c_ids = [response_ids(tok, "4", tok.eos_token_id), response_ids(tok, "The sea is wide and deep.", tok.eos_token_id)]
    with torch.no_grad():
        together, ent = completion_logprobs(model, build_batch(p_ids, c_ids, tok.pad_token_id), with_entropy=True)
        for i in range(2):
            alone, _ = completion_logprobs(model, build_batch([p_ids[i]], [c_ids[i]], tok.pad_token_id))
            n = len(c_ids[i])
            assert torch.allclose(together[i, :n], alone[0, :n], atol=1e-5)
            assert torch.all(together[i, n:] == 0)
        # by hand: the full-sequence log-softmax of the last completion token of row 0
        full = torch.tensor([p_ids[0] + c_ids[0]])
        logits = model(input_ids=full).logits[0, -2].float()
        expected = torch.log_softmax(logits, -1)[c_ids[0][-1]]
    assert math.isclose(float(together[0, len(c_ids[0]) - 1]), float(expected), abs_tol=1e-5)
    assert float(ent.max()) <= math.log(model.config.vocab_size) + 1e-4
    assert float(ent[0, len(c_ids[0]):].abs().sum()) == 0.0


def test_kl_estimators_are_zero_against_an_identical_reference_and_k3_is_nonnegative(tiny):
    model, tok = tiny
    ref = frozen_copy(model)
    assert all(not p.requires_grad for p in ref.parameters())
    prompts = [render_chat_prompt(tok, "Say hi.")] * 3
    samples = sample_for_training(model, tok, prompts, SamplingSettings(max_new_tokens=6, temperature=1.0),
                                  seeds=[1, 2, 3])
    assert len(samples) == 3 and all(1 <= len(s.completion_ids) <= 7 for s in samples)
    batch = batch_from_samples(samples, tok.pad_token_id)
    with torch.no_grad():
        logp, _ = completion_logprobs(model, batch)
        ref_logp, _ = completion_logprobs(ref, batch)
    assert float(kl_k1(logp, ref_logp).abs().max()) == 0.0
    assert float(kl_k3(logp, ref_logp).abs().max()) == 0.0
    a = torch.tensor([-1.0, -2.0, -0.5])
    b = torch.tensor([-1.5, -1.0, -0.5])
    k3 = kl_k3(a, b)
    assert torch.all(k3 >= 0) and float(k3[2]) == 0.0
    assert math.isclose(float(k3[0]), math.exp(-0.5) + 0.5 - 1, rel_tol=1e-6)
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    assert float(masked_mean(torch.tensor([[2.0, 4.0, 100.0]]), mask)) == 3.0
    assert float(sequence_logprob(torch.tensor([[-1.0, -2.0, -9.0]]), mask)) == -3.0


@pytest.mark.parametrize("lora", [0, 4])
def test_policy_reference_equals_policy_before_training_and_saves_a_loadable_folder(tiny_model, tmp_path, lora):
    from rlhf_core.text.model import load_model
    from rlhf_core.text.rl_common import load_policy, save_policy

    folder = tiny_model
    setup = load_policy(str(folder), lora_rank=lora)
    tok = setup.tokenizer
    p_ids = tokenize_prompts(tok, [render_chat_prompt(tok, "Hello")])
    batch = build_batch(p_ids, [response_ids(tok, "Hi there", tok.eos_token_id)], tok.pad_token_id)
    logp, _ = completion_logprobs(setup.model, batch)
    ref = setup.reference_logprobs(batch)
    assert float((logp - ref).abs().max()) < 1e-6
    assert logp.requires_grad and not ref.requires_grad
    if lora:
        n_train = sum(p.numel() for p in setup.trainable_parameters())
        n_all = sum(p.numel() for p in setup.model.parameters())
        assert 0 < n_train < n_all / 5
    out = save_policy(setup, tmp_path / "policy", {"steps": 0})
    again = load_model(out)
    with torch.no_grad():
        logp2, _ = completion_logprobs(again.model, batch)
    assert float((logp.detach() - logp2).abs().max()) < 1e-5
    assert not (tmp_path / "policy.partial").exists()


def test_logprobs_and_hidden_come_from_one_forward_and_match_the_plain_log_probs(tiny):
    from rlhf_core.text.rl_common import completion_logprobs_and_hidden

    model, tok = tiny
    p_ids = tokenize_prompts(tok, [render_chat_prompt(tok, "Say hi."), render_chat_prompt(tok, "Name three fruits.")])
    c_ids = [response_ids(tok, "Hi!", tok.eos_token_id), response_ids(tok, "Apple, pear, plum.", tok.eos_token_id)]
    batch = build_batch(p_ids, c_ids, tok.pad_token_id)
    with torch.no_grad():
        logp, ent, hidden = completion_logprobs_and_hidden(model, batch, with_entropy=True, temperature=0.7)
        plain, plain_ent = completion_logprobs(model, batch, with_entropy=True, temperature=0.7)
        full = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                     position_ids=batch.position_ids, output_hidden_states=True).hidden_states[-1]
    assert torch.equal(logp, plain) and torch.equal(ent, plain_ent)
    width = batch.completion_mask.shape[1]
    assert hidden.shape == (2, width, model.config.hidden_size)
    # column t is the state that predicts completion token t: the prompt's last column for t = 0
    torch.testing.assert_close(hidden, full[:, batch.prompt_width - 1:batch.prompt_width - 1 + width])
