"""Prompt sets, file import (all-or-nothing, errors by line number) and prompt templates."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rlhf_core.input_files import InputFileError
from rlhf_core.text import prompts as pr
from tests.conftest import ROOT



def _prompt_count(project) -> int:
    return project.conn.execute("SELECT count(*) FROM prompts").fetchone()[0]


# ------------------------------------------------------------------------------- built-in sets
def test_lecture_set_has_the_lecture_examples():
    records = {r.key: r for r in pr.load_builtin_set("lecture")}
    assert records["lecture/tennis-balls"].gold_answer == "11"
    assert records["lecture/tennis-balls"].text.startswith("Roger has 5 tennis balls.")
    assert records["lecture/cafeteria-apples"].gold_answer == "9"
    assert "23 apples" in records["lecture/cafeteria-apples"].text
    assert "limerick" in records["lecture/limerick"].text.lower()
    assert records["lecture/rl-to-a-six-year-old"].text == "Explain reinforcement learning to a 6 year old."
    assert records["lecture/behavioral-cloning"].text == "Define behavioral cloning."
    refuse = records["lecture/break-in"]
    assert refuse.category == "harmlessness" and refuse.meta["expected"] == "refuse"


def test_starter_set_covers_every_category_with_gold_answers_for_reasoning():
    records = pr.load_builtin_set("starter")
    assert len(records) >= 100
    by_cat: dict[str, list] = {}
    for r in records:
        by_cat.setdefault(r.category, []).append(r)
    assert set(by_cat) == set(pr.CATEGORIES)
    assert all(len(v) >= 20 for v in by_cat.values())
    assert all(r.gold_answer for r in by_cat["reasoning"])
    assert {r.meta["expected"] for r in by_cat["harmlessness"]} == {"refuse", "answer"}
    assert all(r.category in r.tags for r in records)
    everything = records + pr.load_builtin_set("lecture")
    assert len({r.text for r in everything}) == len(everything)  # no prompt twice
    assert len({r.key for r in everything}) == len(everything)
    info = {s.name: s for s in pr.builtin_sets()}
    assert info["starter"].count == len(records) and info["lecture"].count == 7
    assert pr.load_builtin_set("starter", "reasoning") == by_cat["reasoning"]


def test_builtin_prompts_are_added_once(project):
    ids = pr.add_builtin_prompts(project, "lecture", "reasoning")
    assert len(ids) == 2 and _prompt_count(project) == 2
    row = project.conn.execute("SELECT * FROM prompts WHERE id=?", [ids[0]]).fetchone()
    assert row["source"] == "builtin:lecture" and row["gold_answer"] == "11"
    assert json.loads(row["meta_json"])["key"] == "lecture/tennis-balls"
    assert pr.add_builtin_prompts(project, "lecture", "reasoning") == ids  # idempotent
    all_ids = pr.add_builtin_prompts(project, "lecture")
    assert len(all_ids) == 7 and set(ids) <= set(all_ids) and _prompt_count(project) == 7
    with pytest.raises(KeyError, match="no built-in prompt set 'nope'"):
        pr.add_builtin_prompts(project, "nope")


# ------------------------------------------------------------------------------- import
def test_jsonl_import_adds_every_prompt_with_its_fields(project, tmp_path):
    f = tmp_path / "mine.jsonl"
    f.write_text(
        json.dumps({"text": "What is 6 x 7?", "category": "Reasoning", "tags": ["maths"], "gold_answer": 42}) + "\n"
        "\n"
        + json.dumps("Write a haiku about <b>bold</b> text.") + "\n"
        + json.dumps({"text": "Be nice", "tags": "a; b", "meta": {"origin": "me"}}) + "\n"
    )
    result = pr.import_prompts(project, f)
    assert len(result.added_ids) == 3 and result.total == 3
    rows = [dict(r) for r in project.conn.execute("SELECT * FROM prompts ORDER BY id")]
    assert rows[0]["category"] == "reasoning" and rows[0]["gold_answer"] == "42"
    assert json.loads(rows[0]["tags_json"]) == ["maths"] and rows[0]["source"] == "import:mine.jsonl"
    assert rows[1]["text"] == "Write a haiku about <b>bold</b> text."  # stored verbatim, never interpreted
    assert json.loads(rows[2]["tags_json"]) == ["a", "b"] and json.loads(rows[2]["meta_json"]) == {"origin": "me"}
    again = pr.import_prompts(project, f)  # same file again: nothing new
    assert again.added_ids == [] and again.existing_ids == result.added_ids == again.prompt_ids
    assert _prompt_count(project) == 3


def test_a_bad_jsonl_file_imports_nothing_and_names_each_bad_line(project, tmp_path):
    project.add_prompt("already here")
    f = tmp_path / "bad.jsonl"
    f.write_text(
        json.dumps({"text": "fine"}) + "\n"
        + '{"text": "unterminated\n'
        + json.dumps({"text": "also fine"}) + "\n"
        + json.dumps({"txt": "typo in the field name"}) + "\n"
        + json.dumps({"text": "   "}) + "\n"
        + json.dumps({"text": "x", "gold_answer": [1]}) + "\n"
        + "[1, 2]\n"
    )
    with pytest.raises(InputFileError) as info:
        pr.import_prompts(project, f)
    message = str(info.value)
    assert "nothing was imported" in message
    assert "line 2: not valid JSON" in message
    assert "line 4: unknown field(s) 'txt'" in message
    assert 'line 5: "text" must be a non-empty string' in message
    assert 'line 6: "gold_answer" must be a string or a number' in message
    assert "line 7: expected a JSON object" in message
    assert not any(p.startswith(("line 1:", "line 3:")) for p in info.value.problems)
    assert _prompt_count(project) == 1  # the good lines were not imported either


def test_non_utf8_and_empty_files(project, tmp_path):
    f = tmp_path / "latin1.jsonl"
    f.write_bytes(json.dumps({"text": "ok"}).encode() + b"\n" + '{"text": "caf\xe9"}'.encode("latin-1") + b"\n")
    with pytest.raises(InputFileError, match="line 2: not valid UTF-8"):
        pr.import_prompts(project, f)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(InputFileError, match="no prompts"):
        pr.import_prompts(project, empty)
    with pytest.raises(InputFileError, match="unsupported file type"):
        pr.import_prompts(project, tmp_path / "prompts.txt")
    assert _prompt_count(project) == 0


def test_csv_import(project, tmp_path):
    good = tmp_path / "good.csv"
    good.write_text('text,category,tags,gold_answer\n'
                    '"What is 2+2?",reasoning,maths;easy,4\n'
                    '"A prompt with a comma, and\na second line",style,,\n')
    result = pr.import_prompts(project, good)
    rows = [dict(r) for r in project.conn.execute("SELECT * FROM prompts ORDER BY id")]
    assert len(result.added_ids) == 2 and rows[0]["gold_answer"] == "4"
    assert json.loads(rows[0]["tags_json"]) == ["maths", "easy"]
    assert rows[1]["text"] == "A prompt with a comma, and\na second line" and rows[1]["gold_answer"] is None

    bad = tmp_path / "bad.csv"
    bad.write_text('text,category\n"ok",style\n"too",many,columns\n"",style\n')
    with pytest.raises(InputFileError) as info:
        pr.import_prompts(project, bad)
    assert "line 3: expected 2 columns, found 3" in str(info.value)
    assert 'line 4: "text" must be a non-empty string' in str(info.value)
    no_text = tmp_path / "no_text.csv"
    no_text.write_text("prompt,category\nhello,style\n")
    with pytest.raises(InputFileError, match="line 1: unknown column"):
        pr.import_prompts(project, no_text)
    assert _prompt_count(project) == 2


def test_cli_lists_sets_and_refuses_a_bad_file(tmp_path):
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "rlhf_core", *map(str, args)], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)

    out = cli("prompts", "list")
    assert out.returncode == 0, out.stderr
    sets = {s["name"]: s for s in json.loads(out.stdout.strip().splitlines()[-1])["sets"]}
    assert sets["lecture"]["count"] == 7 and sets["starter"]["categories"]["reasoning"] >= 20
    folder = tmp_path / "p.rlhf"
    assert cli("new-project", folder).returncode == 0
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": 3}\n')
    out = cli("prompts", "import", "--project", folder, bad)
    assert out.returncode == 2 and 'line 2: "text" must be a non-empty string' in out.stderr
    good = tmp_path / "good.jsonl"
    good.write_text('{"text": "fine"}\n{"text": "also fine", "category": "style"}\n')
    out = cli("prompts", "import", "--project", folder, good)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1])["added"] == 2
    out = cli("prompts", "import", "--project", folder, "--builtin", "lecture", "--category", "reasoning")
    assert json.loads(out.stdout.strip().splitlines()[-1])["total"] == 2
    info = json.loads(cli("info", folder).stdout.strip().splitlines()[-1])
    assert info["counts"]["prompts"] == 4  # the bad file added nothing


# ------------------------------------------------------------------------------- templates
@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


TENNIS = pr.DEFAULT_EXEMPLARS[0].question
APPLES = ("The cafeteria had 23 apples. If they used 20 to make lunch and bought 6 more, "
          "how many apples do they have?")


def test_zero_shot_uses_the_models_chat_template(tokenizer):
    text = pr.PromptTemplate().render(tokenizer, APPLES)
    assert text == ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
                    f"<|im_end|>\n<|im_start|>user\n{APPLES}<|im_end|>\n<|im_start|>assistant\n")
    custom = pr.PromptTemplate(system_prompt="You are terse.").render(tokenizer, APPLES)
    assert custom.startswith("<|im_start|>system\nYou are terse.<|im_end|>") and "SmolLM" not in custom


def test_few_shot_puts_worked_examples_first_but_never_the_question_itself(tokenizer):
    t = pr.PromptTemplate(style="few_shot")
    msgs = t.messages(APPLES)
    assert [m["role"] for m in msgs] == ["user", "assistant"] * 3 + ["user"]
    assert msgs[0]["content"] == TENNIS and msgs[1]["content"].endswith("The answer is 11.")
    own = t.messages(TENNIS)  # the tennis exemplar is dropped when it is the question
    assert TENNIS not in [m["content"] for m in own[:-1]] and len(own) == 5
    rendered = t.render(tokenizer, APPLES)
    assert rendered.count("<|im_start|>assistant\n") == 4 and rendered.endswith("<|im_start|>assistant\n")
    mine = pr.PromptTemplate(style="few_shot", exemplars=pr.parse_exemplars('[["Q1?", "A1."]]'))
    assert [m["content"] for m in mine.messages("Q2?")] == ["Q1?", "A1.", "Q2?"]
    assert mine.describe()["exemplars"] == [{"question": "Q1?", "answer": "A1."}]


def test_chain_of_thought_adds_the_trigger(tokenizer):
    t = pr.PromptTemplate(style="chain_of_thought")
    assert t.messages(APPLES)[-1]["content"] == APPLES + "\n\nLet's think step by step."
    assert "Let's think step by step.<|im_end|>\n<|im_start|>assistant\n" in t.render(tokenizer, APPLES)
    assert t.describe() == {"template": "chain_of_thought", "system_prompt": "",
                            "cot_trigger": "Let's think step by step."}


def test_templates_without_a_chat_template_fall_back_to_plain_text():
    class NoTemplate:
        chat_template = None

    text = pr.PromptTemplate(style="few_shot", system_prompt="Sys.",
                             exemplars=(pr.Exemplar("Q1?", "A1."),)).render(NoTemplate(), "Q2?")
    assert text == "Sys.\n\nQuestion: Q1?\n\nAnswer: A1.\n\nQuestion: Q2?\n\nAnswer:"


def test_bad_exemplars_and_styles_are_refused():
    assert pr.parse_exemplars("") == pr.DEFAULT_EXEMPLARS
    with pytest.raises(ValueError, match="not valid JSON"):
        pr.parse_exemplars("[{")
    with pytest.raises(ValueError, match="exemplar 2 needs a non-empty question and answer"):
        pr.parse_exemplars('[{"question": "q", "answer": "a"}, {"question": "q"}]')
    with pytest.raises(ValueError, match="template style must be one of"):
        pr.PromptTemplate(style="tree_of_thought")


def test_final_answers_are_extracted_for_gold_checks():
    assert pr.extract_final_answer("5 + 6 = 11. The answer is 11.") == "11"
    assert pr.extract_final_answer("They have 1,250 apples.") == "1250"
    assert pr.extract_final_answer("The answer is -3.5.") == "-3.5"
    assert pr.extract_final_answer("No numbers here") is None
