"""A model's position limit (GPT-2's ``n_positions``): generation beyond it is refused in words, a training
job's max_length is cut to it with a sentence in the log, and a reward model never reads past it."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlhf_core import config as cfg
from rlhf_core.jobs import RecordingContext, execute_job, get_job
from rlhf_core.text.generation import SamplingSettings, generate_batch
from rlhf_core.text.model import (PositionLimitError, fit_max_length, load_model, load_tokenizer, make_tiny_model,
                                  max_positions)
from rlhf_core.text.rl_common import build_batch, completion_logprobs

LIMIT = 64
LONG_PROMPT = "Tell me everything about " + "apples and pears, " * 20  # about 85 tokens


@pytest.fixture(scope="module")
def short_gpt2(converted_model, tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("positions") / "gpt2-64", tokenizer=load_tokenizer(converted_model),
                           family="gpt2", positions=LIMIT)


def test_the_limit_is_read_from_the_config_and_max_length_is_cut_to_it(short_gpt2):
    lm = load_model(str(short_gpt2))
    assert max_positions(lm.model) == max_positions(lm.model.config) == LIMIT
    assert fit_max_length(lm.model, 32) == (32, None)
    length, sentence = fit_max_length(lm.model, 512)
    assert length == LIMIT and sentence == ("max_length 512 is more than the 64 positions this model reads: "
                                            "sequences are cut to 64 tokens.")
    assert max_positions(object()) is None and fit_max_length(object(), 512) == (512, None)


def test_generation_past_the_limit_is_refused_in_words_and_up_to_it_works(short_gpt2):
    lm = load_model(str(short_gpt2))
    prompt = lm.tokenizer(LONG_PROMPT)["input_ids"]
    assert len(prompt) > LIMIT
    with pytest.raises(PositionLimitError, match=r"^A prompt of \d+ tokens plus 4 new tokens \(max_new_tokens\) is "
                                                 r"\d+ tokens, but this model reads at most 64"):
        generate_batch(lm.model, lm.tokenizer, [LONG_PROMPT], SamplingSettings(max_new_tokens=4), [0])
    short = "Name a fruit."
    n = len(lm.tokenizer(short)["input_ids"])
    with pytest.raises(PositionLimitError):
        generate_batch(lm.model, lm.tokenizer, [short], SamplingSettings(max_new_tokens=LIMIT - n + 1), [0])
    completions, _ = generate_batch(lm.model, lm.tokenizer, [short], SamplingSettings(max_new_tokens=LIMIT - n,
                                                                                      ignore_eos=True), [0])
    assert completions[0].n_tokens == LIMIT - n  # exactly up to the last position


def test_a_training_batch_past_the_limit_is_refused_in_words(short_gpt2):
    lm = load_model(str(short_gpt2))
    pad = lm.tokenizer.pad_token_id
    fits = build_batch([[5] * 40], [[6] * 24], pad)
    logp, _ = completion_logprobs(lm.model, fits)
    assert tuple(logp.shape) == (1, 24)
    # a wide batch whose rows each fit is fine: only the longest row's positions count
    padded = build_batch([[5] * 60, [5] * 2], [[6] * 4, [6] * 30], pad)
    assert padded.input_ids.shape[1] > LIMIT
    assert tuple(completion_logprobs(lm.model, padded)[0].shape) == (2, 30)
    with pytest.raises(PositionLimitError, match=r"^A training sequence \(prompt \+ completion\) is 65 tokens"):
        completion_logprobs(lm.model, build_batch([[5] * 40], [[6] * 25], pad))


def test_sft_cuts_to_the_limit_with_a_sentence_and_generate_refuses_a_long_prompt(project, short_gpt2):
    pid = project.add_prompt(LONG_PROMPT)
    project.add_item("response", prompt_id=pid, text="Apples are round. " * 10, source="demonstration", model_id=None)
    ctx = RecordingContext()
    config = cfg.from_dict(get_job("sft").config_class(), dict(model=str(short_gpt2), steps=1, batch_size=1,
                                                               max_length=512, heldout_fraction=0.0, save=False,
                                                               device="cpu"))
    out = execute_job(get_job("sft"), config, ctx, project_path=project.folder)
    assert out.status == "completed", out.error
    assert any("sequences are cut to 64 tokens" in line for line in ctx.messages), ctx.messages

    config = cfg.from_dict(get_job("generate").config_class(), dict(model=str(short_gpt2), prompt_set="",
                                                                    prompt_ids=[pid], max_new_tokens=4))
    out = execute_job(get_job("generate"), config, RecordingContext(), project_path=project.folder)
    assert out.status == "failed" and "Traceback" not in out.message
    assert out.message.startswith("A prompt of") and "this model reads at most 64" in out.message
    assert project.items("response") and all(i["source"] == "demonstration" for i in project.items("response"))


def test_a_reward_model_on_a_short_model_never_reads_past_its_limit(short_gpt2):
    from rlhf_core.text.reward_model import load_base_reward_model, score_responses

    model, tok, _ = load_base_reward_model(str(short_gpt2), max_length=512, seed=0)
    assert model.max_length == LIMIT
    scores = score_responses(model, tok, [LONG_PROMPT], ["A long answer. " * 20])
    assert scores.shape == (1,)
