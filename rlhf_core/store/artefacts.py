"""Artefacts: what jobs produce (policies, reward models), listed and picked by name.

An artefact is a row of the ``checkpoints`` table seen through its run: its kind, a name a person can
edit (a default one is made up from the run until then), the run that made it, what it was trained on
(counts from the run's result) and one headline metric. Settings that take a model accept a reference:

- ``run:7``          the newest artefact of the wanted kind that run 7 made;
- ``checkpoint:12``  (or ``12``, as stored configs say) checkpoint 12;
- a name             an artefact's name, as listed (``artefacts`` in the CLI, the pickers in the app);
- a path             a folder or file outside the project, used as it is.

A reference to an artefact of the wrong kind is refused with a sentence that says what it is instead.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from rlhf_core import kinds

if TYPE_CHECKING:
    from rlhf_core.store.project import Project

#: what a person calls each kind
KIND_WORDS: dict[str, str] = {
    kinds.TEXT_POLICY: "text policy",
    kinds.TEXT_REWARD_MODEL: "text reward model",
    kinds.REWARD_ENSEMBLE: "control reward model",
    kinds.REWARD_MLP: "synthetic-task reward model",
    kinds.SB3_PPO: "PPO policy",
    kinds.BC_POLICY: "behavioural-cloning policy",
}

#: per kind, the metric that says how good it is (last logged value; the run's result as a fallback)
HEADLINE: dict[str, tuple[str, ...]] = {
    kinds.TEXT_POLICY: ("reward/mean", "eval/gold_accuracy"),
    kinds.TEXT_REWARD_MODEL: ("reward_model/heldout_accuracy",),
    kinds.REWARD_ENSEMBLE: ("reward_model/heldout_accuracy",),
    kinds.REWARD_MLP: ("reward_model/heldout_accuracy", "reward_model/true_correlation"),
    kinds.SB3_PPO: ("rollout/true_return", "demos/true_return"),
    kinds.BC_POLICY: ("bc/loss",),
}

#: result keys that count what an artefact was trained on
TRAINED_ON_KEYS = ("train_pairs", "heldout_pairs", "pairs", "labels", "prompts", "train_prompts", "demos",
                   "n_demos", "trajectories", "steps")

MAX_NAME_LENGTH = 80
_REFERENCE = re.compile(r"^(run|checkpoint):\s*(\d+)$", re.IGNORECASE)


class ArtefactError(ValueError):
    """A reference or a name that cannot be used; ``str(error)`` says why, for a person."""


@dataclass(frozen=True)
class Artefact:
    id: int
    kind: str
    name: str
    run_id: int | None
    run_kind: str
    step: int | None
    path: Path
    created_at: str
    trained_on: dict = field(default_factory=dict)
    headline: tuple[str, float] | None = None

    @property
    def kind_word(self) -> str:
        return KIND_WORDS.get(self.kind, self.kind)

    @property
    def reference(self) -> str:
        return f"checkpoint:{self.id}"


def default_name(kind: str, run_id: int | None, run_kind: str, step: int | None, siblings: int,
                 checkpoint_id: int) -> str:
    """``grpo run 7``, ``learner run 3 step 4000`` (when the run made several), ``checkpoint 12`` without a run."""
    if run_id is None:
        return f"{KIND_WORDS.get(kind, kind)} {checkpoint_id}"
    name = f"{run_kind or 'run'} run {run_id}"
    return f"{name} step {step}" if siblings > 1 and step is not None else (
        f"{name} #{checkpoint_id}" if siblings > 1 else name)


def list_artefacts(project: Project, kinds_wanted: Iterable[str] | None = None) -> list[Artefact]:
    """Every artefact of the project (of ``kinds_wanted`` when given), newest first."""
    wanted = tuple(kinds_wanted) if kinds_wanted is not None else None
    rows = project.conn.execute(
        "SELECT c.id, c.kind, c.name, c.run_id, c.step, c.path, c.created_at, c.meta_json, r.kind AS run_kind, "
        "r.result_json FROM checkpoints c LEFT JOIN runs r ON r.id = c.run_id ORDER BY c.id DESC").fetchall()
    per_run_kind: dict[tuple, int] = {}
    for row in rows:
        per_run_kind[(row["run_id"], row["kind"])] = per_run_kind.get((row["run_id"], row["kind"]), 0) + 1
    out = []
    for row in rows:
        if wanted is not None and row["kind"] not in wanted:
            continue
        result = _json(row["result_json"])
        siblings = per_run_kind[(row["run_id"], row["kind"])] if row["run_id"] is not None else 1
        name = row["name"] or default_name(row["kind"], row["run_id"], row["run_kind"] or "", row["step"],
                                           siblings, row["id"])
        out.append(Artefact(
            id=row["id"], kind=row["kind"], name=name, run_id=row["run_id"], run_kind=row["run_kind"] or "",
            step=row["step"], path=project.abspath(row["path"]), created_at=row["created_at"],
            trained_on={k: result[k] for k in TRAINED_ON_KEYS if isinstance(result.get(k), (int, float))},
            headline=_gold_headline(row["meta_json"], result) or _headline(project, row["kind"], row["run_id"], result)))
    return out


def _gold_headline(meta_json: str | None, result: dict) -> tuple[str, float] | None:
    """A text_reward_model run's held-out gold model (checkpoint meta role "gold") is rated by its own
    held-out accuracy, not the run's reward model's."""
    value = result.get("gold_heldout_accuracy")
    if _json(meta_json).get("role") == "gold" and isinstance(value, (int, float)):
        return "reward_model/gold_heldout_accuracy", float(value)
    return None


def _json(text: str | None) -> dict:
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _headline(project: Project, kind: str, run_id: int | None, result: dict) -> tuple[str, float] | None:
    for key in HEADLINE.get(kind, ()):
        if run_id is not None:
            row = project.conn.execute(
                "SELECT value FROM metrics WHERE run_id = ? AND key = ? AND value IS NOT NULL "
                "ORDER BY step DESC, id DESC LIMIT 1", [run_id, key]).fetchone()
            if row is not None:
                return key, float(row[0])
        short = key.rsplit("/", 1)[-1]
        if isinstance(result.get(short), (int, float)):
            return key, float(result[short])
    return None


def check_name(name: str) -> str:
    """The name as it will be stored, or :class:`ArtefactError` saying what is wrong with it."""
    name = " ".join((name or "").split())
    if not name:
        raise ArtefactError("A name cannot be empty.")
    if len(name) > MAX_NAME_LENGTH:
        raise ArtefactError(f"A name can have at most {MAX_NAME_LENGTH} characters; this one has {len(name)}.")
    if name.isdigit() or _REFERENCE.match(name):
        raise ArtefactError(f"{name!r} reads as an id; use a name with a word in it.")
    if any(ord(ch) < 32 or ch in "/\\" for ch in name):
        raise ArtefactError("A name cannot contain slashes or control characters.")
    return name


def rename_artefact(project: Project, checkpoint_id: int, name: str) -> str:
    """Give artefact ``checkpoint_id`` a name that no other artefact has (nor shows by default)."""
    name = check_name(name)
    if project.conn.execute("SELECT 1 FROM checkpoints WHERE id = ?", [checkpoint_id]).fetchone() is None:
        raise ArtefactError(f"The project has no artefact {checkpoint_id}.")
    for other in list_artefacts(project):
        if other.id != checkpoint_id and other.name.casefold() == name.casefold():
            raise ArtefactError(f"Another artefact is called {other.name!r} ({other.kind_word}, "
                                f"checkpoint {other.id}); choose another name.")
    try:
        project.conn.execute("UPDATE checkpoints SET name = ? WHERE id = ?", [name, checkpoint_id])
    except sqlite3.IntegrityError:  # another process took the name since the check above
        raise ArtefactError(f"Another artefact is called {name!r}; choose another name.") from None
    return name


def resolve(project: Project | None, reference: str, kinds_wanted: Sequence[str], *,
            allow_path: bool = True) -> Artefact | Path:
    """The artefact (or, with ``allow_path``, the outside folder/file) that ``reference`` names."""
    ref = (reference or "").strip()
    words = " or ".join(KIND_WORDS.get(k, k) for k in kinds_wanted)
    if not ref:
        raise ArtefactError(f"No {words} was given.")
    match = _REFERENCE.match(ref)
    if match or ref.isdigit():
        if project is None:
            raise ArtefactError(f"{ref!r} refers to a project's artefact (a run or checkpoint id), but no "
                                "project is open.")
        what, number = (match.group(1).lower(), int(match.group(2))) if match else ("checkpoint", int(ref))
        everything = list_artefacts(project)
        if what == "run":
            made = [a for a in everything if a.run_id == number]
            if not made:
                exists = project.conn.execute("SELECT kind FROM runs WHERE id = ?", [number]).fetchone()
                raise ArtefactError(f"Run {number} does not exist." if exists is None else
                                    f"Run {number} ({exists[0]}) saved no model.")
            fitting = [a for a in made if a.kind in kinds_wanted]
            if not fitting:
                raise ArtefactError(f"Run {number} made a {made[0].kind_word}, not a {words}.")
            return fitting[0]
        found = [a for a in everything if a.id == number]
        if not found:
            raise ArtefactError(f"The project has no checkpoint {number}.")
        return _of_kind(found[0], kinds_wanted, words)
    named = find_by_name(project, ref) if project is not None else None
    if named is not None:
        return _of_kind(named, kinds_wanted, words)
    path = Path(ref).expanduser()
    if allow_path and path.exists():
        return path
    hint = " (nor a folder)" if allow_path else ""
    raise ArtefactError(f"No {words} is called {ref!r}{hint}; the project's are listed by "
                        f"`python -m rlhf_core artefacts` and in the app's pickers.")


def is_reference(text: str) -> bool:
    """``run:N``, ``checkpoint:N`` or a bare id: text that can only mean a project's artefact."""
    text = (text or "").strip()
    return bool(_REFERENCE.match(text)) or text.isdigit()


def find_by_name(project: Project, name: str) -> Artefact | None:
    wanted = " ".join((name or "").split()).casefold()
    return next((a for a in list_artefacts(project) if a.name.casefold() == wanted), None)


def _of_kind(artefact: Artefact, kinds_wanted: Sequence[str], words: str) -> Artefact:
    if artefact.kind not in kinds_wanted:
        raise ArtefactError(f"{artefact.name!r} is a {artefact.kind_word}, not a {words}.")
    return artefact


def resolve_path(project: Project | None, reference: str, kinds_wanted: Sequence[str], *,
                 allow_path: bool = True) -> Path:
    """The folder or file of what ``reference`` names (see :func:`resolve`)."""
    found = resolve(project, reference, kinds_wanted, allow_path=allow_path)
    return found.path if isinstance(found, Artefact) else found
