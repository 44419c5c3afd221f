"""Model cards: the ``README.md`` with a Hugging Face YAML header that every saved model carries.

The header holds the Hub's own keys (``base_model``, ``library_name``, ``pipeline_tag``, ``tags``,
``metrics`` as a list of names, ``model-index`` with the values) and an ``rlhf_workbench`` block:
version, job, run, project, what the model was trained on (counts), the final metrics and the run's
full config. The body says the same for a person and how to load the model without the workbench.

Names, prompts and paths are untrusted text: the header is written by ``yaml.safe_dump`` (quoted
and escaped as needed; read back with :func:`read_card_header`), and the body shows them as inline
text with markdown and HTML characters escaped, or inside JSON in a fenced block.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from rlhf_core import __version__

CARD_FILE = "README.md"
#: what the ``model-index`` says each kind of model was evaluated on
TASKS = {"text-classification": "Reward modelling", "text-generation": "Text generation",
         "reinforcement-learning": "Reinforcement learning"}
#: result keys that are bookkeeping, not a measure of the model
NOT_METRICS = ("checkpoint_id", "reward_checkpoint_id", "video_item", "window", "wall_seconds", "train_seconds",
               "peak_rss_mb", "consensus_k", "baseline_seconds", "lora_rank",
               "peak_memory_mb")


@dataclass
class ModelCard:
    """What a card says; :meth:`render` makes the text, :meth:`write` saves it beside the model."""

    job: str  # the registry's job name
    config: Mapping[str, Any]  # the run's full config (``rlhf_core.config.to_dict``)
    title: str = ""
    base_model: str = ""  # a Hugging Face hub id ('' for a model trained from scratch or a local folder)
    base_model_note: str = ""  # where the base model came from when it is not a hub id
    library_name: str = "transformers"
    pipeline_tag: str = ""  # text-classification, text-generation, reinforcement-learning
    tags: Sequence[str] = ()
    datasets: Sequence[str] = ()  # Hugging Face dataset ids, where the data has one
    training_data: Mapping[str, Any] = field(default_factory=dict)  # counts of what it was trained on
    metrics: Mapping[str, Any] = field(default_factory=dict)  # final metrics
    dataset_name: str = ""  # what the metrics were measured on (the env id for control)
    run_id: int | None = None
    project: str = ""
    files: Sequence[str] = ()  # the model files the card describes (control: several in one folder)
    usage: str = ""  # a code block saying how to load it without the workbench
    notes: Sequence[str] = ()

    # ---------------------------------------------------------------------------------- header
    def header(self) -> dict[str, Any]:
        """The YAML header as a dict (plain JSON-like values only)."""
        metrics = finite_metrics(self.metrics)
        out: dict[str, Any] = {}
        if is_hub_id(self.base_model):
            out["base_model"] = self.base_model
        out["library_name"] = self.library_name
        if self.pipeline_tag:
            out["pipeline_tag"] = self.pipeline_tag
        out["tags"] = list(dict.fromkeys(["rlhf-workbench", *[str(t) for t in self.tags if t]]))
        if self.datasets:
            out["datasets"] = [str(d) for d in self.datasets]
        if metrics:
            out["metrics"] = list(metrics)
            task = self.pipeline_tag or "other"
            out["model-index"] = [{
                "name": self.title or self.job,
                "results": [{
                    "task": {"type": task, "name": TASKS.get(task, task)},
                    "dataset": {"type": self.dataset_name or "rlhf-workbench-project",
                                "name": self.dataset_name or (f"{self.project} (project)" if self.project
                                                              else "the workbench project")},
                    "metrics": [{"type": k, "name": k, "value": v} for k, v in metrics.items()],
                }],
            }]
        out["rlhf_workbench"] = {
            "version": __version__,
            "job": self.job,
            "run_id": self.run_id,
            "project": self.project,
            "training_data": plain(dict(self.training_data)),
            "final_metrics": plain(dict(self.metrics)),
            "config": plain(dict(self.config)),
            "libraries": library_versions(self.library_name),
        }
        if self.files:
            out["rlhf_workbench"]["files"] = [str(f) for f in self.files]
        return out

    # ---------------------------------------------------------------------------------- text
    def render(self) -> str:
        header = yaml.safe_dump(self.header(), sort_keys=False, allow_unicode=True, default_flow_style=False,
                                width=100)
        title = self.title or f"{self.job} model"
        lines = ["---", header.rstrip("\n"), "---", "", f"# {md_text(title)}", ""]
        made = f"Trained by the `{self.job}` job of RLHF Workbench {__version__}"
        if self.run_id is not None:
            made += f" (run {self.run_id}"
            made += f" of the project {md_text(self.project)})" if self.project else ")"
        lines += [made + ".", ""]
        if is_hub_id(self.base_model):
            lines += [f"Base model: [{self.base_model}](https://huggingface.co/{self.base_model}).", ""]
        elif self.base_model_note:
            lines += [f"Base model: {md_text(self.base_model_note)}.", ""]
        if self.files:
            lines += ["Files: " + ", ".join(f"`{md_code(f)}`" for f in self.files) + ".", ""]
        for note in self.notes:
            lines += [md_text(note), ""]
        if self.usage:
            lines += ["## Use it", "", self.usage.strip("\n"), ""]
        lines += ["## Trained on", ""] + _table(self.training_data, "count") + [""]
        lines += ["## Final metrics", ""] + _table(self.metrics, "value") + [""]
        lines += ["## Config", "", "The run's full settings (`rlhf_workbench.config` in the header):", "",
                  "```json", json.dumps(plain(dict(self.config)), indent=2, sort_keys=True, ensure_ascii=True),
                  "```", ""]
        return "\n".join(lines)

    def write(self, folder: str | os.PathLike, name: str = CARD_FILE) -> Path:
        """Write the card into ``folder`` (atomically: a temporary file, then renamed)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / name
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(self.render())
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return target


# ------------------------------------------------------------------------------------ helpers
def read_card_header(path: str | os.PathLike) -> dict:
    """The YAML header of a card (``README.md`` or its folder) as a dict; ValueError if it has none."""
    path = Path(path)
    if path.is_dir():
        path = path / CARD_FILE
    text = path.read_text(encoding="utf-8")
    match = re.match(r"---\n(.*?)\n---\n", text, re.S)
    if match is None:
        raise ValueError(f"{path} has no YAML header")
    data = yaml.safe_load(match.group(1))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the YAML header is not a mapping")
    return data


_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")


def is_hub_id(text: str) -> bool:
    """Whether ``text`` has the shape of a Hugging Face hub id (``org/name``), not a local path."""
    return bool(text) and _HUB_ID.fullmatch(text) is not None and ".." not in text


def final_metrics(result: Mapping[str, Any], exclude: Sequence[str] = ()) -> dict[str, float]:
    """The numbers of a job's result that measure the model (no ids, timings or counts in ``exclude``)."""
    out = {}
    for key, value in result.items():
        if key in NOT_METRICS or key in exclude or key.endswith("_id"):
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[str(key)] = value
    return out


def finite_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value)):
            out[str(key)] = int(value) if isinstance(value, int) else float(value)
    return out


def plain(value: Any) -> Any:
    """``value`` as plain YAML/JSON types: str keys, no tuples or numpy scalars, non-finite floats as None."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    item = getattr(value, "item", None)  # numpy / torch scalars
    if callable(item):
        try:
            return plain(item())
        except (TypeError, ValueError):
            pass
    return str(value)


def library_versions(library_name: str = "") -> dict[str, str]:
    """Installed versions of the libraries a saved model depends on (read from package metadata)."""
    names = ["torch", "transformers", "safetensors"] if library_name == "transformers" else (
        ["torch", "stable-baselines3", "gymnasium"] if library_name == "stable-baselines3" else ["torch", "gymnasium"])
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~>])")


def md_text(text: Any) -> str:
    """Untrusted text as one line of markdown text: no line breaks, HTML and markdown characters escaped."""
    one_line = " ".join(str(text).split())
    escaped = one_line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(r"\\\1", escaped)


def md_code(text: Any) -> str:
    """Untrusted text for inside a `code span`: one line, no backticks."""
    return " ".join(str(text).split()).replace("`", "'")


def _table(values: Mapping[str, Any], what: str) -> list[str]:
    if not values:
        return ["(none)"]
    rows = ["| name | " + what + " |", "|---|---|"]
    for key, value in values.items():
        shown = f"{value:.6g}" if isinstance(value, float) else json.dumps(plain(value), ensure_ascii=True)
        rows.append(f"| `{md_code(key)}` | {md_text(shown)} |")
    return rows


# ------------------------------------------------------------------------------------ kinds of model
def text_policy_card(*, job: str, config: Mapping[str, Any], base_model: str = "", base_model_note: str = "",
                     run_id: int | None = None, project: str = "", training_data: Mapping[str, Any] | None = None,
                     metrics: Mapping[str, Any] | None = None, lora: bool = False) -> ModelCard:
    """A causal LM trained by a text job (sft, dpo, grpo, ppo_text): a plain transformers folder."""
    usage = ("```python\n"
             "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
             "model = AutoModelForCausalLM.from_pretrained(\"PATH/TO/THIS/FOLDER\")\n"
             "tokenizer = AutoTokenizer.from_pretrained(\"PATH/TO/THIS/FOLDER\")\n"
             "```")
    notes = ["LoRA adapters were trained and are merged into these weights."] if lora else []
    return ModelCard(job=job, config=config, title=f"{job} policy" + (f" (run {run_id})" if run_id is not None else ""),
                     base_model=base_model, base_model_note=base_model_note, library_name="transformers",
                     pipeline_tag="text-generation", tags=[job, "rlhf", "text-generation"],
                     training_data=dict(training_data or {}), metrics=dict(metrics or {}), run_id=run_id,
                     project=project, usage=usage, notes=notes)


def control_policy_card(*, job: str, config: Mapping[str, Any], env_id: str, files: Sequence[str],
                        algo: str = "PPO", run_id: int | None = None, project: str = "",
                        training_data: Mapping[str, Any] | None = None,
                        metrics: Mapping[str, Any] | None = None) -> ModelCard:
    """A control policy saved as a single file in a run folder: an SB3 ``.zip`` (PPO) or the workbench's
    behavioural-cloning network (``.pt``, a dict of a spec and tensors)."""
    first = files[-1] if files else "MODEL"
    if algo == "PPO":
        library, tags = "stable-baselines3", ["reinforcement-learning", "stable-baselines3", "deep-reinforcement-learning"]
        usage = ("```python\n"
                 "from stable_baselines3 import PPO\n\n"
                 f"model = PPO.load({json.dumps(md_code(first))})\n"
                 "```")
    else:
        library, tags = "pytorch", ["reinforcement-learning", "behavioral-cloning", "imitation-learning"]
        usage = ("```python\n"
                 "import torch\n\n"
                 f"saved = torch.load({json.dumps(md_code(first))}, weights_only=True)  # {{'spec': ..., 'state': ...}}\n"
                 "# with the workbench: rlhf_core.envs.policies.BCPolicy.load(path)\n"
                 "```")
    return ModelCard(job=job, config=config, title=f"{algo} policy for {env_id}" + (
                         f" (run {run_id})" if run_id is not None else ""),
                     library_name=library, pipeline_tag="reinforcement-learning", tags=[*tags, job, env_id],
                     training_data=dict(training_data or {}), metrics=dict(metrics or {}), dataset_name=env_id,
                     run_id=run_id, project=project, files=list(files), usage=usage)


def control_reward_card(*, job: str, config: Mapping[str, Any], env_id: str, files: Sequence[str],
                        run_id: int | None = None, project: str = "", training_data: Mapping[str, Any] | None = None,
                        metrics: Mapping[str, Any] | None = None) -> ModelCard:
    """A learned control reward (a Bradley–Terry ensemble in one safetensors file) saved in a run folder."""
    first = files[-1] if files else "reward_ensemble.safetensors"
    usage = ("```python\n"
             "import gymnasium as gym\n"
             "from rlhf_core.rewards import LearnedReward\n\n"
             f"env = LearnedReward(gym.make({json.dumps(md_code(env_id))}), {json.dumps(md_code(first))})"
             "  # reward = the learned one; info['true_reward'] keeps the env's\n"
             "```")
    return ModelCard(job=job, config=config, title=f"Learned reward for {env_id}" + (
                         f" (run {run_id})" if run_id is not None else ""),
                     library_name="pytorch", pipeline_tag="reinforcement-learning",
                     tags=["reward-model", "rlhf", "preference-learning", job, env_id],
                     training_data=dict(training_data or {}), metrics=dict(metrics or {}), dataset_name=env_id,
                     run_id=run_id, project=project, files=list(files), usage=usage)
