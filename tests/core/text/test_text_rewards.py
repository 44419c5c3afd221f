"""Rule-based text rewards (format, correctness, length), their weighted sum, and the arithmetic task set."""

from __future__ import annotations

import re

import pytest

from rlhf_core.text import rewards as rw
from rlhf_core.text import tasks as T
from tests.conftest import needs_model


def _one(component, completion, **meta):
    return component(["q"], [completion], [meta])[0]


# ------------------------------------------------------------------------------- format
@pytest.mark.parametrize("text, partial, strict", [
    ("<think>2 + 3 = 5</think><answer>5</answer>", 1.0, 1.0),
    ("  <think>\nadd them\n</think>\n\n<answer> 5 </answer>\n", 1.0, 1.0),  # whitespace around is fine
    ("<think>2 + 3</think>", 0.4, 0.0),  # two tags present once
    ("<answer>5</answer>", 0.4, 0.0),
    ("<think>a</think><answer>5</answer> and more text", 0.8, 0.0),  # text after the answer
    ("The answer is 5.", 0.0, 0.0),
    ("", 0.0, 0.0),
    ("<answer>5</answer><think>a</think>", 0.8, 0.0),  # wrong order
    ("<think>a</think><think>b</think><answer>5</answer>", 0.4, 0.0),  # repeated tags earn nothing
    ("<think>a<answer>5</answer></think>", 0.8, 0.0),  # nested
])
def test_format_reward_scores_the_layout_with_partial_credit_per_tag(text, partial, strict):
    assert _one(rw.FormatReward(), text) == pytest.approx(partial)
    assert _one(rw.FormatReward(partial=False), text) == strict


# ------------------------------------------------------------------------------- correctness
@pytest.mark.parametrize("text, gold, expected", [
    ("<think>2 + 5 = 7</think><answer>7</answer>", "7", 1.0),
    ("<answer> 7 apples </answer>", "7", 1.0),
    ("<answer>3 + 4 = 7</answer>", "7", 1.0),  # the last number inside the block
    ("<answer>7.0</answer>", "7", 1.0),  # by value
    ("<answer>1,234</answer>", "1234", 1.0),  # thousands separator
    ("<answer>-3</answer>", "-3", 1.0),
    ("<answer>17</answer>", "7", 0.0),  # no substring matches
    ("<answer>7</answer> wait, <answer>8</answer>", "7", 0.0),  # the LAST block counts
    ("<answer>8</answer> no: <answer>7</answer>", "7", 1.0),
    ("The answer is 7.", "7", 0.0),  # no answer block
    ("<answer></answer>", "7", 0.0),
    ("<answer>seven</answer>", "7", 0.0),
    ("<answer> Paris </answer>", "paris", 1.0),  # a text gold answer: case and spacing ignored
    ("<answer>7</answer>", None, 0.0),  # no gold answer
    ("<answer>7</answer>", "", 0.0),
])
def test_correctness_reads_the_last_answer_block(text, gold, expected):
    assert _one(rw.CorrectnessReward(), text, gold_answer=gold) == expected


def test_correctness_any_falls_back_to_the_last_number_only_without_an_answer_block():
    any_ = rw.CorrectnessReward(fallback_last_number=True)
    assert _one(any_, "First 3, then 3 + 4 = 7.", gold_answer="7") == 1.0
    assert _one(any_, "It is 7, no, 8.", gold_answer="7") == 0.0
    assert _one(any_, "<answer>8</answer> but really 7", gold_answer="7") == 0.0  # the block wins
    assert _one(any_, "no number at all", gold_answer="7") == 0.0


def test_length_penalty_counts_tokens_beyond_the_allowance():
    pen = rw.LengthPenalty()
    assert pen(["q", "q"], ["a b c", "x"], [{"completion_tokens": 12}, {}]) == [-12.0, -1.0]  # words without a count
    assert rw.LengthPenalty(free_tokens=10)(["q", "q"], ["", ""], [{"completion_tokens": 12},
                                                                  {"completion_tokens": 4}]) == [-2.0, 0.0]
    with pytest.raises(ValueError):
        pen(["q"], ["a", "b"], [{}, {}])


# ------------------------------------------------------------------------------- combined + spec
def test_combined_reward_is_the_weighted_sum_and_its_components_add_up():
    reward = rw.parse_reward_spec("format:0.5,correctness:1.0,length:0.001")
    assert reward.names == ["format", "correctness", "length_penalty"]
    assert reward.spec() == "format:0.5,correctness:1,length_penalty:0.001"
    completions = ["<think>2+5=7</think><answer>7</answer>", "<answer>6</answer>", "7"]
    metas = [{"gold_answer": "7", "completion_tokens": n} for n in (20, 8, 2)]
    res = reward.evaluate(["q"] * 3, completions, metas)
    expected = [0.5 * 1.0 + 1.0 - 0.020, 0.5 * 0.4 + 0.0 - 0.008, 0.0 + 0.0 - 0.002]
    assert res.total == pytest.approx(expected)
    assert res.raw["format"] == pytest.approx([1.0, 0.4, 0.0]) and res.raw["correctness"] == [1.0, 0.0, 0.0]
    for i in range(3):
        assert sum(res.sample_components(i).values()) == pytest.approx(res.total[i])
    means = res.means()
    assert set(means) == {"reward/format", "reward/correctness", "reward/length_penalty"}
    assert means["reward/format"] == pytest.approx(0.5 * 1.4 / 3)
    assert reward(["q"] * 3, completions, metas) == pytest.approx(expected)
    assert reward.needs_gold() and not rw.parse_reward_spec("format").needs_gold()


@pytest.mark.parametrize("spec, message", [
    ("", "empty"),
    ("format:0.5,bogus:1", "unknown reward 'bogus'"),
    ("format:abc", "not a number"),
    ("format:inf", "finite"),
    ("format:1,format_strict:1", "twice"),
    ("length:0.1,length_penalty:0.2", "twice"),
    ("model:1", "reward model folder"),
])
def test_bad_reward_specs_are_refused_with_the_reason(spec, message):
    with pytest.raises(ValueError, match=message):
        rw.parse_reward_spec(spec)


def test_spec_weights_default_to_one_and_names_are_case_insensitive():
    assert rw.parse_spec_items(" Format , correctness:2 ") == [("format", 1.0), ("correctness", 2.0)]


@needs_model
def test_reward_model_component_scores_like_the_saved_reward_model(tmp_path, tiny_model):
    from rlhf_core.text.reward_model import load_base_reward_model, save_text_reward_model, score_responses

    tiny = tiny_model
    model, tok, _ = load_base_reward_model(str(tiny), max_length=64, seed=3)
    folder = save_text_reward_model(model, tmp_path / "rm")
    prompts, responses = ["Say hello.", "Name a fruit."], ["Hello!", "A pear."]
    expected = score_responses(model.eval(), tok, prompts, responses).tolist()
    reward = rw.parse_reward_spec("model:2.0,length:0.5", reward_model_path=str(folder))
    res = reward.evaluate(prompts, responses, [{"completion_tokens": 3}, {"completion_tokens": 4}])
    assert res.raw["model"] == pytest.approx(expected, abs=1e-5)
    assert res.total == pytest.approx([2 * expected[0] - 1.5, 2 * expected[1] - 2.0], abs=1e-5)
    assert abs(expected[0] - expected[1]) > 1e-4  # not a constant


# ------------------------------------------------------------------------------- tasks
@pytest.mark.parametrize("level", T.LEVELS)
def test_tasks_are_deterministic_and_their_gold_answers_check_out(level):
    a = T.make_tasks(40, level, seed=5)
    assert a == T.make_tasks(40, level, seed=5)
    assert [t.question for t in a] != [t.question for t in T.make_tasks(40, level, seed=6)]
    assert len({t.question for t in a}) == 40
    for t in a:
        assert t.level == level and set(t.expression) <= set("0123456789 +-*")
        assert eval(t.expression) == t.answer  # noqa: S307 - our own generated arithmetic
        assert t.answer >= 0
        numbers = [int(n) for n in re.findall(r"\d+", t.question)]
        assert sorted(numbers) == sorted(int(n) for n in re.findall(r"\d+", t.expression))
        assert t.prompt == t.question and t.question.endswith("?")
        assert t.meta()["gold_answer"] == str(t.answer) == t.gold_answer
    ops = {1: 1, 2: 1, 3: 2, 4: 2}[level]
    assert all(sum(t.expression.count(op) for op in "+-*") == ops for t in a)


def test_level_one_is_one_small_addition_and_level_four_multiplies():
    assert all(t.expression.count("+") == 1 and t.answer <= 18 for t in T.make_tasks(30, 1, seed=0))
    assert all("*" in t.expression for t in T.make_tasks(30, 4, seed=0))


def test_split_keeps_held_out_questions_out_of_training():
    train, held = T.task_split(level=1, n_train=300, n_heldout=40, seed=2)
    assert len(train) == 300 and len(held) == 40
    assert not {t.question for t in train} & {t.question for t in held}
    assert (train, held) == T.task_split(level=1, n_train=300, n_heldout=40, seed=2)
    assert {t.key for t in held} == {f"arith-L1-s2-heldout-{i}" for i in range(40)}
    with pytest.raises(ValueError):
        T.make_tasks(5, level=7)


def test_rendered_task_prompt_has_the_instruction_and_the_worked_example_first():
    from rlhf_core.text.prompts import plain_render

    messages = T.task_messages("What is 2 + 2?")
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[0]["content"] == T.SYSTEM_PROMPT and "<answer>" in T.SYSTEM_PROMPT
    assert messages[2]["content"] == T.EXAMPLE_ANSWER and messages[3]["content"] == "What is 2 + 2?"
    assert _one(rw.FormatReward(partial=False), T.EXAMPLE_ANSWER) == 1.0
    assert _one(rw.CorrectnessReward(), T.EXAMPLE_ANSWER, gold_answer="5") == 1.0
    assert eval(T.EXAMPLE_ANSWER.split("</think>")[0].split(":")[-1].split("=")[0]) == 5  # noqa: S307
    assert T.task_messages("Q", few_shot=False, instruction=False) == [{"role": "user", "content": "Q"}]
    assert [m["role"] for m in T.task_messages("Q", few_shot=False)] == ["system", "user"]
    assert T.format_prompt(" Q? ") == "Q?\n" + T.SYSTEM_PROMPT

    class NoTemplate:
        chat_template = None

    assert T.render_task_prompt(NoTemplate(), "What is 2 + 2?") == plain_render(messages)
