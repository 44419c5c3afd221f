"""Arithmetic word problems with gold answers, generated locally: the verifiable task set for GRPO.

No public data set ships with the workbench, so the reasoning tasks that rule-based rewards need
(R1-Zero style: an exact final answer to check) are generated here from a seed. Difficulty levels:

- level 1: one addition of two numbers from 2 to 9 ("Mia has 3 apples. She gets 4 more. ...");
- level 2: one addition or subtraction, numbers up to 20 (never a negative result);
- level 3: two steps, add then take away (or the reverse), numbers up to 30;
- level 4: multi-step with a multiplication ("5 boxes of 6 pens, gives away 7": 5 * 6 - 7).

Every task stores the arithmetic ``expression`` it was built from (e.g. ``"3 + 4"``) next to its
gold ``answer`` (an int), so a test can check the answer independently (``eval`` of the
expression). :func:`task_messages` wraps a question in a chat whose system message asks the model
to reason inside ``<think>...</think>`` and give only the final number inside
``<answer>...</answer>`` (the R1-Zero format, see :mod:`rlhf_core.text.rewards`), after one worked
example.

Train / held-out: :func:`task_split` draws the two from different random streams of the same seed
and removes from the training set any question that is also held out, so a held-out accuracy is
measured on questions the policy never trained on. Everything is deterministic from
``(level, seed, n)``.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence

from rlhf_core.text.prompts import plain_render

LEVELS = (1, 2, 3, 4)

#: the instruction, given as the system message (it replaces the model's default system prompt)
SYSTEM_PROMPT = ("Solve the problem. Think inside <think> </think>, then write only the final number "
                 "inside <answer> </answer>.")

#: one worked example, shown as an earlier chat turn when ``few_shot`` is on (a name and an item
#: that the generator never uses, so it cannot be a copy of a task)
EXAMPLE_QUESTION = "Kim has 2 hats and gets 3 more. How many hats does Kim have?"
EXAMPLE_ANSWER = "<think> Kim has 2 hats and gets 3 more: 2 + 3 = 5. </think> <answer> 5 </answer>"


@dataclasses.dataclass(frozen=True)
class ArithmeticTask:
    """One word problem: the question, the prompt text, the gold answer and how it was made."""

    key: str  # stable id, e.g. "arith-L1-s0-train-3"
    level: int
    question: str  # the word problem alone
    prompt: str  # what the user turn says (the question; the instruction is the system message)
    answer: int  # the gold answer
    expression: str  # the arithmetic behind it, e.g. "3 + 4" (eval(expression) == answer)

    @property
    def gold_answer(self) -> str:
        """The gold answer as the project stores it (the ``prompts.gold_answer`` column is text)."""
        return str(self.answer)

    def meta(self) -> dict:
        """What reward functions read: ``gold_answer`` plus where the task came from."""
        return {"gold_answer": self.gold_answer, "level": self.level, "expression": self.expression,
                "key": self.key}


def format_prompt(question: str) -> str:
    """A question with the instruction in the same user turn (for tools that cannot set a system message;
    the GRPO job puts the instruction in the system message instead, see :func:`task_messages`)."""
    return f"{question.strip()}\n{SYSTEM_PROMPT}"


def task_messages(prompt: str, few_shot: bool = True, instruction: bool = True) -> list[dict]:
    """Chat messages for one prompt: the instruction as the system message, optionally the worked
    example as a first user/assistant exchange, then the prompt.

    SmolLM2-135M-Instruct almost never writes the tags from an instruction alone; one worked example
    in the conversation gets it to write them some of the time, which is what GRPO needs: a low but
    non-zero success rate within each group (level 1, 32 samples at temperature 0.7, 48 tokens:
    partial format credit 0.18 on average, the exact format 3 %, the right answer 3 %; greedy
    decoding answered 1 of 16 held-out tasks). Everything is kept short on purpose: the prompt is part
    of every training row (B x G rows per step), so its length sets most of a step's cost on a CPU
    (about 120 tokens here, against about 205 with the instruction repeated in each user turn).
    """
    messages = [{"role": "system", "content": SYSTEM_PROMPT}] if instruction else []
    if few_shot:
        messages += [{"role": "user", "content": EXAMPLE_QUESTION},
                     {"role": "assistant", "content": EXAMPLE_ANSWER}]
    return messages + [{"role": "user", "content": prompt}]


def render_task_prompt(tokenizer, prompt: str, few_shot: bool = True, instruction: bool = True) -> str:
    """The prompt rendered with the model's chat template, ending where the assistant's answer starts."""
    messages = task_messages(prompt, few_shot, instruction)
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    return plain_render(messages)


_NAMES = ("Mia", "Leo", "Ava", "Sam", "Zoe", "Ben", "Ella", "Max", "Lily", "Noah", "Ruby", "Omar",
          "Nina", "Tom", "Iris", "Kai")
_ITEMS = ("apples", "pens", "stickers", "marbles", "books", "cookies", "shells", "coins", "cards",
          "balloons", "stamps", "pencils")
_BOXES = ("boxes", "bags", "packs", "jars", "baskets")


def _who(rng: random.Random) -> tuple[str, str]:
    return rng.choice(_NAMES), rng.choice(_ITEMS)


def _level1(rng: random.Random) -> tuple[str, str, int]:
    name, item = _who(rng)
    a, b = rng.randint(2, 9), rng.randint(2, 9)
    template = rng.choice((
        "{n} has {a} {i}. {n} gets {b} more {i}. How many {i} does {n} have now?",
        "There are {a} {i} on a table. {n} puts {b} more {i} on the table. How many {i} are on the table now?",
        "{n} found {a} {i} in the morning and {b} {i} in the afternoon. How many {i} did {n} find in total?",
    ))
    return template.format(n=name, i=item, a=a, b=b), f"{a} + {b}", a + b


def _level2(rng: random.Random) -> tuple[str, str, int]:
    name, item = _who(rng)
    if rng.random() < 0.5:
        a, b = rng.randint(2, 20), rng.randint(2, 20)
        text = f"{name} has {a} {item}. A friend gives {name} {b} more. How many {item} does {name} have now?"
        return text, f"{a} + {b}", a + b
    a = rng.randint(5, 20)
    b = rng.randint(1, a - 1)
    text = f"{name} has {a} {item} and gives {b} of them away. How many {item} does {name} have left?"
    return text, f"{a} - {b}", a - b


def _level3(rng: random.Random) -> tuple[str, str, int]:
    name, item = _who(rng)
    a, b = rng.randint(5, 30), rng.randint(2, 30)
    if rng.random() < 0.5:
        c = rng.randint(1, a + b - 1)
        text = (f"{name} has {a} {item}, buys {b} more, and then gives {c} to a friend. "
                f"How many {item} does {name} have now?")
        return text, f"{a} + {b} - {c}", a + b - c
    b = rng.randint(1, a - 1)
    c = rng.randint(2, 30)
    text = (f"{name} has {a} {item}, loses {b} of them, and then finds {c} more. "
            f"How many {item} does {name} have now?")
    return text, f"{a} - {b} + {c}", a - b + c


def _level4(rng: random.Random) -> tuple[str, str, int]:
    name, item = _who(rng)
    box = rng.choice(_BOXES)
    a, b = rng.randint(2, 9), rng.randint(2, 12)
    if rng.random() < 0.5:
        c = rng.randint(1, a * b - 1)
        text = (f"{name} buys {a} {box} with {b} {item} in each, then gives away {c} {item}. "
                f"How many {item} does {name} have left?")
        return text, f"{a} * {b} - {c}", a * b - c
    c = rng.randint(1, 20)
    text = (f"{name} has {c} {item} and buys {a} {box} with {b} {item} in each. "
            f"How many {item} does {name} have in total?")
    return text, f"{c} + {a} * {b}", c + a * b


_MAKERS = {1: _level1, 2: _level2, 3: _level3, 4: _level4}


def make_tasks(n: int, level: int = 1, seed: int = 0, *, stream: str = "train",
               exclude: Sequence[str] = ()) -> list[ArithmeticTask]:
    """``n`` distinct tasks of one level from the random stream ``(level, seed, stream)``.

    Questions in ``exclude`` (and repeats) are skipped. Raises ``ValueError`` if the level cannot
    produce ``n`` distinct questions.
    """
    if level not in _MAKERS:
        raise ValueError(f"level must be one of {LEVELS}, not {level!r}")
    if n < 0:
        raise ValueError("n must be >= 0")
    rng = random.Random(f"arith|{level}|{seed}|{stream}")
    seen = set(exclude)
    tasks: list[ArithmeticTask] = []
    attempts = 0
    while len(tasks) < n:
        attempts += 1
        if attempts > 200 * (n + 10):
            raise ValueError(f"level {level} cannot produce {n} distinct questions")
        question, expression, answer = _MAKERS[level](rng)
        if question in seen:
            continue
        seen.add(question)
        tasks.append(ArithmeticTask(key=f"arith-L{level}-s{seed}-{stream}-{len(tasks)}", level=level,
                                    question=question, prompt=question, answer=int(answer),
                                    expression=expression))
    return tasks


def task_split(level: int = 1, n_train: int = 256, n_heldout: int = 32,
               seed: int = 0) -> tuple[list[ArithmeticTask], list[ArithmeticTask]]:
    """(train, held-out) tasks of one level; no held-out question appears in the training set."""
    heldout = make_tasks(n_heldout, level, seed, stream="heldout")
    train = make_tasks(n_train, level, seed, stream="train", exclude=[t.question for t in heldout])
    return train, heldout
