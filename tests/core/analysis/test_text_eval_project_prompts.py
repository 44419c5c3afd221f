"""text_eval on the project's own prompts with gold answers (prompt_source = project): a small JSONL imported
with gold answers, a tiny Llama trained here to answer "7", and pass@1 / cons@k / pass@k checked against a
hand count over the stored samples; choosing by category and ids; the answer normalisation; bad inputs."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch

from rlhf_core import config as cfg
from rlhf_core.analysis.text_evaluation import TextEvalConfig, resolve_inputs
from rlhf_core.jobs import RecordingContext, execute_job, get_job
from rlhf_core.store import Project
from rlhf_core.text.prompts import import_prompts
from rlhf_core.text.rewards import answers_match
from tests.conftest import needs_model

PROMPTS = [
    {"text": "What is 3 + 4?", "gold_answer": 7, "category": "math"},
    {"text": "How many days does a week have?", "gold_answer": "7.0", "category": "math"},
    {"text": "What is 2 + 2?", "gold_answer": "4", "category": "math"},
    {"text": "Name the capital of France.", "gold_answer": "Paris", "category": "geo"},
    {"text": "Write a haiku about rain.", "category": "style"},  # no gold answer: left out
]
ANSWER = "<answer>7</answer>"


def _import(project, tmp_path, records=PROMPTS):
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return import_prompts(project, path).prompt_ids


@pytest.fixture(scope="module")
def answers_seven(tiny_model, tmp_path_factory):
    """The tiny model trained (30 full-batch Adam steps) to answer every prompt of PROMPTS with
    ``<answer>7</answer>`` and stop: a real policy that is right on the prompts whose gold answer is 7."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhf_core.text.tasks import render_task_prompt

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    end = tok.convert_tokens_to_ids("<|im_end|>")
    target = tok(ANSWER, add_special_tokens=False).input_ids + [end]
    rows = []
    for record in PROMPTS:
        prompt = tok(render_task_prompt(tok, record["text"], False, True), add_special_tokens=False).input_ids
        rows.append((prompt + target, [-100] * len(prompt) + target))
    width = max(len(ids) for ids, _ in rows)
    ids = torch.tensor([r + [end] * (width - len(r)) for r, _ in rows])
    labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r, _ in rows])
    # the logits only where there is a target (the 49k-word head over every prompt token is most of the work)
    rows_at, cols_at = torch.nonzero(labels[:, 1:] != -100, as_tuple=True)
    wanted = labels[:, 1:][rows_at, cols_at]
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(30):
        hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
        loss = torch.nn.functional.cross_entropy(model.lm_head(hidden[rows_at, cols_at]), wanted)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert float(loss.detach()) < 0.05, float(loss.detach())
    folder = tmp_path_factory.mktemp("answers-seven") / "policy"
    model.save_pretrained(folder, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                 "generation_config.json"):
        if (tiny_model / name).is_file() and not (folder / name).is_file():
            shutil.copy(tiny_model / name, folder / name)
    return folder


# ------------------------------------------------------------------------------- by hand
def _answer(text: str) -> str | None:
    found = re.findall(r"<answer>(.*?)</answer>", text, re.DOTALL)
    return found[-1] if found else None


def _right(answer: str | None, gold: str) -> bool:
    """The documented check, written out: a numeric gold answer against the answer's last number, by value;
    else text ignoring case, spacing and end punctuation."""
    if answer is None:
        return False
    try:
        value = float(gold.replace(",", ""))
    except ValueError:
        return " ".join(answer.split()).lower().strip(" .!?") == " ".join(gold.split()).lower().strip(" .!?")
    numbers = re.findall(r"-?\d[\d,]*(?:\.\d+)?", answer)
    return bool(numbers) and float(numbers[-1].replace(",", "")) == value


def _vote(answers: list[str | None]) -> str | None:
    """Majority of the answers that hold a number (by value) or text; a tie goes to the first seen."""
    keys: list[str] = []
    for a in answers:
        if a is None or not a.strip():
            continue
        numbers = re.findall(r"-?\d[\d,]*(?:\.\d+)?", a)
        keys.append(str(float(numbers[-1].replace(",", ""))) if numbers else a.strip().lower())
    if not keys:
        return None
    best = max(keys, key=lambda k: (keys.count(k), -keys.index(k)))
    return best


def test_answer_normalisation_numbers_case_spacing_punctuation():
    assert answers_match(" 7 apples ", "7") and answers_match("7.0", 7) and answers_match("1,234", "1234")
    assert answers_match("$1,234", "$1,234") and answers_match("1234", "$1,234") and answers_match("50%", "50%")
    assert not answers_match("0.5", "50%") and not answers_match("8", "7") and not answers_match(None, "7")
    assert answers_match("  **Paris.** ", "paris") and answers_match('"Blue"', "blue")
    assert answers_match("New   York", "new york") and not answers_match("Paris, France", "Paris")
    assert not answers_match("Rome", "Paris") and not answers_match("anything", "  ")


@needs_model
def test_text_eval_on_imported_prompts_matches_a_hand_count_of_the_stored_samples(project, tmp_path, answers_seven):
    ids = _import(project, tmp_path)
    project.close()
    config = cfg.from_dict(TextEvalConfig, dict(policy_folder=str(answers_seven), prompt_source="project", k=4,
                                                temperature=1.5, max_new_tokens=8, few_shot=False, seed=2))
    ctx = RecordingContext()
    outcome = execute_job(get_job("text_eval"), config, ctx, project_path=project.folder)
    assert outcome.status == "completed", outcome.error
    res = outcome.result
    assert res["prompt_source"] == "project" and res["prompts"] == 4 and res["prompts_without_gold"] == 1
    assert res["prompt_ids"] == ids[:4] and res["task_level"] is None
    assert any("1 of the chosen prompts have no gold answer" in m for m in ctx.messages)
    with Project.open(project.folder) as p:
        rows = [s["payload"] for s in p.samples(outcome.run_id, "text_eval")]
        stored = p.metrics(outcome.run_id)
    assert [r["prompt_id"] for r in rows] == ids[:4] and [r["gold"] for r in rows] == ["7", "7.0", "4", "Paris"]
    greedy = [_right(_answer(r["greedy_response"]), r["gold"]) for r in rows]
    samples = [[_right(_answer(t), r["gold"]) for t in r["completions"]] for r in rows]
    votes = [_vote([_answer(t) for t in r["completions"]]) for r in rows]
    cons = [v is not None and _right(v, r["gold"]) for v, r in zip(votes, rows)]
    assert all(len(s) == 4 for s in samples)
    assert res["pass_at_1"] == sum(greedy) / 4 == stored["eval/pass_at_1"][1][0]
    assert res["cons_at_k"] == sum(cons) / 4 == stored["eval/cons_at_k"][1][0]
    # pass@k from exactly k samples: the unbiased estimator 1 - C(n-c, k)/C(n, k) with n = k is "any right"
    assert res["pass_at_k"] == sum(any(s) for s in samples) / 4 == stored["eval/pass_at_k"][1][0]
    assert res["sample_accuracy"] == pytest.approx(sum(map(sum, samples)) / 16)
    # the trained policy answers 7: right on the two prompts whose gold answer is 7 (7 and 7.0), wrong on 4, Paris
    assert greedy == [True, True, False, False] and ANSWER in rows[0]["greedy_response"]
    assert res["pass_at_k"] >= 0.5 and not any(samples[3])


@needs_model
def test_prompts_are_chosen_by_category_ids_and_set(project, tmp_path):
    ids = _import(project, tmp_path)
    choose = lambda **kw: resolve_inputs(cfg.from_dict(TextEvalConfig, dict(prompt_source="project", **kw)),  # noqa: E731
                                         project)
    math_only = choose(category="math")
    assert [p.meta["prompt_id"] for p in math_only.prompts] == ids[:3] and math_only.without_gold == 0
    picked = choose(prompt_ids=[ids[3], ids[4], ids[0]])
    assert [p.meta["prompt_id"] for p in picked.prompts] == [ids[3], ids[0]] and picked.without_gold == 1
    assert [p.meta["gold_answer"] for p in picked.prompts] == ["Paris", "7"]
    assert len(choose(max_prompts=2).prompts) == 2
    # a built-in set: its prompts with gold answers, read from the set (nothing is added to the project)
    before = len(project.prompts())
    starter = choose(prompt_set="starter", category="reasoning")
    assert starter.prompts and all(p.meta["gold_answer"] for p in starter.prompts)
    assert len(project.prompts()) == before


@needs_model
def test_no_prompt_with_a_gold_answer_is_refused_in_one_sentence_before_a_run_is_stored(project, tmp_path, capsys,
                                                                                       tiny_model):
    from rlhf_core.cli import main

    _import(project, tmp_path, [{"text": "Write a haiku."}, {"text": "Tell a joke.", "category": "fun"}])
    with pytest.raises(ValueError, match=r"^None of the 2 chosen prompts has a gold answer: import prompts"):
        resolve_inputs(TextEvalConfig(prompt_source="project"), project)
    with pytest.raises(ValueError, match=r"^No prompts were chosen: the project has no prompts of category math\.$"):
        resolve_inputs(TextEvalConfig(prompt_source="project", category="math"), project)
    with pytest.raises(ValueError, match=r"^The project has no prompt 999\.$"):
        resolve_inputs(TextEvalConfig(prompt_source="project", prompt_ids=[999]), project)
    project.close()
    assert main(["eval-text", "--project", str(project.folder), "--policy-folder", str(tiny_model),
                 "--prompt-source", "project"]) == 2
    err = capsys.readouterr().err
    assert "None of the 2 chosen prompts has a gold answer" in err and "Traceback" not in err
    with Project.open(project.folder) as p:
        assert p.runs() == []
    # settings that choose project prompts are refused with the tasks source, and an unknown set
    with pytest.raises(cfg.ConfigError, match="set prompt_source to project"):
        cfg.from_dict(TextEvalConfig, {"prompt_ids": [1], "category": "math"})
    with pytest.raises(cfg.ConfigError, match="no built-in prompt set 'nope'"):
        cfg.from_dict(TextEvalConfig, {"prompt_source": "project", "prompt_set": "nope"})
