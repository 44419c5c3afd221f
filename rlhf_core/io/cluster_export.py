"""Scale-out: export a run for a GPU cluster (TRL under ``accelerate``), and import the trained model back.

:func:`export_for_cluster` writes a self-contained folder that trains with TRL 1.16 on any machine
with the packages of its ``requirements.txt`` (rlhf_core is NOT needed there)::

    out_dir/
        data/train.jsonl   the training data in TRL's format (see below)
        config.json        TRL argument names and values ("trainer_args"), LoRA settings ("peft"),
                           the model, the reward functions (GRPO), and the workbench's own settings
                           ("workbench": the original config and what was not translated)
        train.py           one script for all three algorithms (DPOTrainer / GRPOTrainer /
                           RewardTrainer); reads config.json; ``--max-steps N``, ``--cpu``,
                           ``--threads N``, ``--model M``, ``--output-dir D``
        launch.sh          ``accelerate launch --num_processes ${NUM_GPUS:-8} train.py "$@"``
                           (multi-node through NUM_MACHINES / MACHINE_RANK / MAIN_PROCESS_IP)
        requirements.txt   pinned versions (trl 1.16.0 and what it was tested with here)
        README.md          how to run it, where the model lands, how to import it back
        model/             only with ``include_model``: the starting model's folder

Data: DPO and the reward model get the project's preference pairs as TRL conversational preference
rows (:func:`rlhf_core.io.trl.export_trl`; ties, "both bad" and skips have no chosen answer
and are left out). GRPO gets conversational prompt rows with a ``gold_answer`` column, which
TRL hands to the reward functions: the project's live prompts that have a gold answer, else the
generated arithmetic task set (:mod:`rlhf_core.text.tasks`), as the workbench's GRPO job picks
them (``prompt_source``, the same held-out split, the worked example as an earlier chat turn when
``few_shot``). The rule-based rewards of :mod:`rlhf_core.text.rewards` (``format``,
``format_strict``, ``correctness``, ``correctness_any``, ``length``; the ``reward`` spec gives the
weights) are written INTO train.py, so the cluster needs nothing from the workbench; the learned
``model`` component cannot be exported.

Settings: the run's workbench config (``run_id``) over the defaults of the workbench's own job
config are translated to TRL's names (:data:`ALIASES`), then ``config_overrides`` (workbench or TRL
names) are applied. Keys that have no TRL counterpart are listed under ``workbench.not_translated``. GRPO's batch: the workbench counts prompts per step,
TRL counts completions per device, so ``per_device_train_batch_size = prompts x num_generations``.

:func:`import_checkpoint` brings a trained folder back into the project: a policy (any causal-LM
safetensors folder, checked by :func:`rlhf_core.text.model.check_model_folder`) is copied as it is;
a reward model trained by TRL (``AutoModelForSequenceClassification`` with one label) is converted
to the workbench's text reward model format (backbone + ``reward_head.safetensors`` +
``reward_model.json``, see :mod:`rlhf_core.text.reward_model`). The folder is written under a
temporary name inside the project and renamed into place; the run (kind ``import``, or the given
``run_id``) and the checkpoint row are written in one transaction afterwards, so an error leaves
the project as it was. Pickle files (``training_args.bin``, optimiser states) are never copied.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import random
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rlhf_core import __version__, kinds
from rlhf_core.config import fields as config_fields, upgrade_settings
from rlhf_core.store.project import Project, utc_now
from rlhf_core.text import tasks
from rlhf_core.text.model import (
    DEFAULT_MODEL_NAME,
    CorruptModelError,
    ModelNotFoundError,
    check_model_folder,
    check_safetensors_file,
    ensure_default_model,
    load_pretrained,
    quiet_transformers,
    read_model_config,
)
from rlhf_core.text.rewards import parse_spec_items
from rlhf_core.io.trl import export_trl, write_atomically

FORMAT_NAME = "rlhf-workbench-cluster-export"
FORMAT_VERSION = 1
ALGOS = ("dpo", "grpo", "reward_model")
HUB_DEFAULT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
IMPORT_RUN_KIND = "import"
POLICY_KIND = kinds.TEXT_POLICY
REWARD_MODEL_KIND = kinds.TEXT_REWARD_MODEL
RESULT_FILE = "workbench_result.json"  # written by train.py next to the final model
#: the workbench job whose config a run of each algorithm has (used only to find defaults)
WORKBENCH_CONFIGS = {
    "dpo": ("rlhf_core.trainers.text.dpo", "DPOConfig"),
    "grpo": ("rlhf_core.trainers.text.grpo", "GRPOConfig"),
    "reward_model": ("rlhf_core.trainers.text.reward_model", "TextRewardModelConfig"),
}
#: the kinds of workbench runs whose settings each export can take (job names in rlhf_core.registry)
RUN_KINDS = {"dpo": ("dpo",), "grpo": ("grpo", "grpo_demo"), "reward_model": ("text_reward_model",)}
#: pinned for the exported requirements.txt: trl 1.16.0 and the versions it was tested with here
REQUIREMENTS = {"trl": "1.16.0", "transformers": "5.24.0", "accelerate": "1.15.0", "datasets": "5.2.0",
                "peft": "0.21.2", "torch": "2.13.0", "safetensors": "0.8.0"}
#: files never copied by import or ``include_model``: pickles (can run code) and trainer state
_SKIP_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.pkl", "*.pickle", "*.ckpt", "checkpoint-*", ".*")

# --------------------------------------------------------------------------- settings translation
#: workbench setting (or TRL's own name) -> TRL argument, per algorithm ("*" = every algorithm). A
#: value of None means "used by the export itself" (model, data selection), not a trainer argument.
#: Old names of renamed workbench settings are read through rlhf_core.config.RENAMED_FIELDS.
ALIASES: dict[str, dict[str, str | None]] = {
    "*": {
        "learning_rate": "learning_rate",
        "steps": "max_steps", "max_steps": "max_steps",
        "epochs": "num_train_epochs", "num_train_epochs": "num_train_epochs",
        "gradient_accumulation_steps": "gradient_accumulation_steps",
        "seed": "seed", "max_grad_norm": "max_grad_norm", "weight_decay": "weight_decay",
        "warmup_ratio": "warmup_ratio", "warmup_steps": "warmup_steps", "lr_scheduler_type": "lr_scheduler_type",
        "gradient_checkpointing": "gradient_checkpointing", "logging_steps": "logging_steps",
        "model": None, "lora_rank": None, "lora_alpha": None, "lora_dropout": None, "threads": None, "save": None,
    },
    "dpo": {
        "beta": "beta", "loss_type": "loss_type", "label_smoothing": "label_smoothing",
        "max_length": "max_length", "batch_size": "per_device_train_batch_size",
        "truncation_mode": "truncation_mode", "label_sources": None,
    },
    "reward_model": {
        "max_length": "max_length", "batch_size": "per_device_train_batch_size",
        "center_rewards_coefficient": "center_rewards_coefficient", "label_sources": None,
    },
    "grpo": {
        "beta": "beta",
        "num_generations": "num_generations", "group_size": "num_generations",
        "max_new_tokens": "max_completion_length", "max_completion_length": "max_completion_length",
        "temperature": "temperature", "top_p": "top_p", "top_k": "top_k",
        "epsilon": "epsilon", "epsilon_high": "epsilon_high", "loss_type": "loss_type", "loss_aggregation": "loss_type",
        "num_iterations": "num_iterations", "mu": "num_iterations", "scale_rewards": "scale_rewards",
        "mask_truncated_completions": "mask_truncated_completions",
        # prompts per optimisation step (per device here): times num_generations = TRL's batch
        "prompts_per_step": None,
        # which prompts, and how they are shown
        "prompt_source": None, "prompt_ids": None, "task_level": None, "train_tasks": None, "heldout_tasks": None,
        "heldout_fraction": None, "max_prompts": None, "few_shot": None, "format_instruction": None,
        # the reward: a spec such as "format:0.5,correctness:1.0" (rlhf_core.text.rewards)
        "reward": None, "reward_model": None,
    },
}
COMMON_TRAINER_ARGS = {"logging_steps": 10, "save_strategy": "steps", "save_steps": 500, "save_total_limit": 2,
                       "report_to": "none"}
DEFAULT_REWARD_SPEC = "format:0.5,correctness:1.0"
#: reward spec name (rlhf_core.text.rewards) -> the function of the same rule inlined in train.py
INLINED_REWARDS = {"format": "format_reward", "format_strict": "format_strict_reward",
                   "correctness": "correctness_reward", "correctness_any": "correctness_any_reward",
                   "length": "length_penalty", "length_penalty": "length_penalty"}
#: the workbench's GRPO loss aggregation -> TRL's loss_type
LOSS_AGGREGATION = {"token": "dapo", "sequence": "grpo"}


class ClusterExportError(ValueError):
    """The export or import cannot be done; ``str(error)`` says why, for a person."""


@dataclasses.dataclass
class Translation:
    trainer_args: dict[str, Any]
    peft: dict[str, Any] | None
    workbench_config: dict[str, Any]
    used: dict[str, str]  # workbench key -> TRL key (or "export" for settings the export itself uses)
    not_translated: list[str]
    grpo: dict[str, Any] = dataclasses.field(default_factory=dict)  # prompts per step, reward weights, ...


def workbench_defaults(algo: str) -> dict[str, Any]:
    """The defaults of the workbench's own job config for ``algo``."""
    module_name, class_name = WORKBENCH_CONFIGS[algo]
    return {f.name: f.default for f in config_fields(getattr(importlib.import_module(module_name), class_name))}


def _trl_fields(algo: str) -> set[str] | None:
    """The argument names of TRL's config class for ``algo``, or None when trl is not installed here.

    Read from the source files of trl and transformers (the fields declared in the config class, in
    TRL's base config and in ``TrainingArguments``) without importing them: importing trl takes
    seconds. The workbench itself does not need trl; without it, settings are not checked here and
    a misspelt one stops train.py at its start.
    """
    import ast
    import importlib.util

    files = []
    for package, parts in (("transformers", ("training_args.py",)),
                           ("trl", ("trainer", "base_config.py")),
                           ("trl", ("trainer", {"dpo": "dpo_config.py", "grpo": "grpo_config.py",
                                                "reward_model": "reward_config.py"}[algo]))):
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            return None
        if spec is None or not spec.submodule_search_locations:
            return None
        files.append(Path(list(spec.submodule_search_locations)[0], *parts))
    names: set[str] = set()
    for path in files:
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (OSError, SyntaxError, ValueError):
            return None
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                names.update(s.target.id for s in node.body
                             if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name))
    return names or None


def translate_config(algo: str, workbench: Mapping[str, Any], overrides: Mapping[str, Any] | None = None
                     ) -> Translation:
    """Map workbench settings (+ overrides, workbench or TRL names) onto TRL's argument names; a
    setting given in neither takes the default of the workbench's job config."""
    if algo not in ALGOS:
        raise ClusterExportError(f"unknown algorithm {algo!r}; choose from {', '.join(ALGOS)}")
    aliases = {**ALIASES["*"], **ALIASES[algo]}
    trl_fields = _trl_fields(algo)
    job = RUN_KINDS[algo][0]
    workbench, overrides = upgrade_settings(job, workbench), upgrade_settings(job, overrides or {})
    given = set(workbench)
    merged = {**workbench_defaults(algo), **workbench}
    direct: dict[str, Any] = {}
    for key, value in overrides.items():
        if key in aliases:
            merged[key] = value
            given.add(key)
        elif trl_fields is None or key in trl_fields:
            direct[key] = value
        else:
            raise ClusterExportError(f"unknown setting {key!r}: neither a workbench setting of {algo} nor an "
                                     f"argument of TRL's {_trl_class_name(algo)}")
    args: dict[str, Any] = {}
    used: dict[str, str] = {}
    not_translated: list[str] = []
    for key, value in merged.items():
        if key not in aliases:
            if key in given:
                not_translated.append(key)
            continue
        target = aliases[key]
        if target is None:
            used[key] = "export"
            continue
        if value is None:
            continue
        args[target] = _convert(algo, target, value)
        used[key] = target
    # steps given: they decide the length, whatever the epochs say
    if "max_steps" in args and int(args["max_steps"]) <= 0:
        del args["max_steps"]
    grpo: dict[str, Any] = {}
    if algo == "grpo":
        prompts = int(merged["prompts_per_step"])
        generations = int(args["num_generations"])
        if generations < 2:
            raise ClusterExportError(f"GRPO needs at least 2 generations per prompt (num_generations is {generations})")
        args.setdefault("per_device_train_batch_size", prompts * generations)
        items = inlined_reward_items(str(merged.get("reward") or DEFAULT_REWARD_SPEC))
        args["reward_weights"] = [w for _, w in items]
        grpo = {"prompts_per_step": prompts, "num_generations": generations,
                "reward_spec": ",".join(f"{n}:{w:g}" for n, w in items),
                "reward_functions": [INLINED_REWARDS[n] for n, _ in items]}
    for key, value in COMMON_TRAINER_ARGS.items():
        args.setdefault(key, value)
    args.update(direct)
    if algo == "grpo" and int(args["per_device_train_batch_size"]) % int(args["num_generations"]):
        raise ClusterExportError(
            f"GRPO: per_device_train_batch_size ({args['per_device_train_batch_size']}) counts completions and "
            f"must be a multiple of num_generations ({args['num_generations']})")
    rank = int(merged.get("lora_rank") or 0)
    peft = None
    if rank > 0:
        peft = {"r": rank, "lora_alpha": int(merged.get("lora_alpha") or 2 * rank),
                "lora_dropout": float(merged.get("lora_dropout") or 0.0), "target_modules": "all-linear",
                "task_type": "SEQ_CLS" if algo == "reward_model" else "CAUSAL_LM"}
    return Translation(trainer_args=args, peft=peft, workbench_config=dict(workbench), used=used,
                       not_translated=sorted(not_translated), grpo=grpo)


def inlined_reward_items(spec: str) -> list[tuple[str, float]]:
    """``"format:0.5,correctness:1"`` -> [(name, weight)], only components that train.py has inlined."""
    try:
        items = parse_spec_items(spec)
    except ValueError as exc:
        raise ClusterExportError(f"reward: {exc}") from exc
    unsupported = [n for n, _ in items if n not in INLINED_REWARDS]
    if unsupported:
        raise ClusterExportError(
            f"the reward component(s) {', '.join(unsupported)} cannot run on the cluster (train.py inlines only "
            f"the rule-based ones: {', '.join(sorted(set(INLINED_REWARDS)))}); choose another reward, e.g. "
            f"--set reward={DEFAULT_REWARD_SPEC}")
    return items


def _trl_class_name(algo: str) -> str:
    return {"dpo": "DPOConfig", "grpo": "GRPOConfig", "reward_model": "RewardConfig"}[algo]


def _convert(algo: str, target: str, value: Any) -> Any:
    if algo == "dpo" and target == "loss_type":
        return [value] if isinstance(value, str) else list(value)
    if algo == "grpo" and target == "scale_rewards" and isinstance(value, bool):
        return "group" if value else "none"
    if algo == "grpo" and target == "loss_type":
        return LOSS_AGGREGATION.get(str(value), value)
    if target in ("max_steps", "per_device_train_batch_size", "gradient_accumulation_steps", "max_length",
                  "num_generations", "max_completion_length", "num_iterations", "top_k", "seed",
                  "warmup_steps", "logging_steps") and isinstance(value, float) and value.is_integer():
        return int(value)
    if target == "num_train_epochs":
        return float(value)
    return value


# --------------------------------------------------------------------------- export
def export_for_cluster(project: Project, algo: str, out_dir: str | os.PathLike, *, run_id: int | None = None,
                       model: str = "", config_overrides: Mapping[str, Any] | None = None,
                       include_model: bool = False, conversational: bool = True) -> Path:
    """Write a folder that trains ``algo`` with TRL on a cluster (see the module doc); returns it.

    ``out_dir`` must not exist, be empty, or hold an earlier export (which is replaced). The folder
    is built under a temporary name beside it and renamed into place.
    """
    if algo not in ALGOS:
        raise ClusterExportError(f"unknown algorithm {algo!r}; choose from {', '.join(ALGOS)}")
    out = Path(out_dir).expanduser().absolute()
    _check_target(out)
    workbench: dict[str, Any] = dict(workbench_defaults(algo))
    run_info: dict[str, Any] | None = None
    if run_id is not None:
        run = project.get_run(int(run_id))
        if run is None:
            raise ClusterExportError(f"the project has no run {run_id}")
        if run["kind"] not in RUN_KINDS[algo]:
            other = next((a for a, kinds in RUN_KINDS.items() if run["kind"] in kinds), None)
            raise ClusterExportError(f"run {run_id} is a {run['kind']} run, not a {algo} run"
                                     + (f"; export it with algo {other}" if other else ""))
        workbench.update(run["config"] or {})
        run_info = {"id": run["id"], "kind": run["kind"], "status": run["status"], "name": run.get("name") or ""}
    translation = translate_config(algo, workbench, config_overrides)
    merged = {**workbench, **upgrade_settings(RUN_KINDS[algo][0], config_overrides or {})}

    out.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        (partial / "data").mkdir()
        data_path = partial / "data" / "train.jsonl"
        if algo == "grpo":
            data_info = _write_grpo_prompts(project, merged, data_path)
        else:
            data_info = _write_preferences(project, merged, data_path, conversational)
        model_value, model_info = _resolve_model(project, model or _model_setting(merged), include_model,
                                                 partial / "model")
        config = {
            "format": FORMAT_NAME, "version": FORMAT_VERSION, "algo": algo,
            "trainer": {"dpo": "trl.DPOTrainer", "grpo": "trl.GRPOTrainer",
                        "reward_model": "trl.RewardTrainer"}[algo],
            "trainer_config": f"trl.{_trl_class_name(algo)}",
            "model": model_value, "model_info": model_info,
            "data": {"train": "data/train.jsonl", **data_info},
            "trainer_args": translation.trainer_args,
            "peft": translation.peft,
            "workbench": {"project": project.name, "run": run_info, "config": translation.workbench_config,
                          "overrides": dict(config_overrides or {}), "translated": translation.used,
                          "not_translated": translation.not_translated, "exported_at": utc_now(),
                          "app_version": _app_version()},
        }
        if algo == "grpo":
            config["rewards"] = {
                "spec": translation.grpo["reward_spec"],
                "functions": translation.grpo["reward_functions"],
                "weights": translation.trainer_args["reward_weights"],
                "rules": "the workbench's rlhf_core.text.rewards, inlined in train.py (see its docstrings)",
            }
            config["grpo"] = translation.grpo
        (partial / "config.json").write_text(json.dumps(config, indent=2, sort_keys=False, default=str) + "\n")
        (partial / "train.py").write_text(TRAIN_SCRIPT)
        (partial / "launch.sh").write_text(LAUNCH_SCRIPT)
        os.chmod(partial / "train.py", 0o755)
        os.chmod(partial / "launch.sh", 0o755)
        (partial / "requirements.txt").write_text(_requirements(translation.peft is not None))
        (partial / "README.md").write_text(_readme(config))
        os.chmod(partial, 0o755)
        _move_into_place(partial, out)
    finally:
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)
    return out


def _check_target(out: Path) -> None:
    if out.exists():
        if not out.is_dir():
            raise ClusterExportError(f"{out} is a file; choose a folder for the export")
        if any(out.iterdir()) and not _is_export(out):
            raise ClusterExportError(f"{out} is not empty and does not hold an earlier export; choose an empty "
                                     "or new folder")
        if (out / "output").exists():
            raise ClusterExportError(f"{out} holds a trained model in output/ that a new export would delete; "
                                     "import it or move it away first, or choose another folder")


def _is_export(folder: Path) -> bool:
    try:
        return json.loads((folder / "config.json").read_text()).get("format") == FORMAT_NAME
    except (OSError, ValueError, AttributeError):
        return False


def _move_into_place(partial: Path, out: Path) -> None:
    if not out.exists():
        os.replace(partial, out)
        return
    aside = out.with_name(f".{out.name}.old-{os.getpid()}")
    os.replace(out, aside)
    try:
        os.replace(partial, out)
    except OSError:
        os.replace(aside, out)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def _app_version() -> str:
    return __version__


def _model_setting(config: Mapping[str, Any]) -> str:
    value = config.get("model")
    return str(value).strip() if isinstance(value, (str, int)) else ""


def _resolve_model(project: Project, spec: str, include: bool, target: Path) -> tuple[str, dict]:
    """(what config.json names as the model, notes about it); copies the folder with ``include``."""
    spec = (spec or "").strip()
    if spec in ("", "default", DEFAULT_MODEL_NAME):
        if include:
            folder = ensure_default_model()
            _copy_model(folder, target)
            return "model", {"source": DEFAULT_MODEL_NAME, "included": True,
                             "note": "The workbench's bundled SmolLM2-135M-Instruct (its Q4_1 GGUF file de-quantised "
                                     "to bf16), copied into model/."}
        return HUB_DEFAULT_MODEL, {
            "source": DEFAULT_MODEL_NAME, "included": False,
            "note": (f"The workbench's default model is {DEFAULT_MODEL_NAME}, shipped as a 4-bit GGUF file and "
                     f"de-quantised locally. The cluster downloads the original weights ({HUB_DEFAULT_MODEL}) "
                     "from the Hugging Face hub instead: the same model before quantisation, so its outputs differ "
                     "slightly. Export with --include-model to ship the exact weights the workbench uses.")}
    if spec.isdigit():  # a checkpoint of this project
        row = next((c for c in project.checkpoints() if c["id"] == int(spec)), None)
        if row is None:
            raise ClusterExportError(f"model {spec!r} looks like a checkpoint id, but the project has no "
                                     f"checkpoint {spec}")
        if row["kind"] != POLICY_KIND:
            raise ClusterExportError(f"checkpoint {spec} is a {row['kind']}, not a {POLICY_KIND}")
        spec = str(project.abspath(row["path"]))
    folder = Path(spec).expanduser()
    if folder.exists():
        folder = folder.absolute()
        check_model_folder(folder)
        if include:
            _copy_model(folder, target)
            return "model", {"source": str(folder), "included": True, "note": f"{folder}, copied into model/."}
        return str(folder), {"source": str(folder), "included": False,
                             "note": "A folder on the machine that exported this run: the cluster must have it at "
                                     "the same path, or pass --model to train.py (or export with --include-model)."}
    if include:
        raise ClusterExportError(f"cannot include the model {spec!r}: no such folder on this machine")
    if spec.startswith((".", "/", "~")):
        raise ClusterExportError(f"no model folder at {folder.absolute()}")
    return spec, {"source": spec, "included": False, "note": "A Hugging Face hub id, downloaded by the cluster."}


def _copy_model(source: Path, target: Path) -> None:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(*_SKIP_PATTERNS), symlinks=False)


def _write_preferences(project: Project, config: Mapping[str, Any], path: Path, conversational: bool) -> dict:
    sources = config.get("label_sources") or None
    report = export_trl(project, path, conversational=conversational, sources=sources)
    if report.written == 0:
        raise ClusterExportError(
            "the project has no text comparisons with a preferred response (outcome left or right of two "
            f"responses to the same prompt; label sources {', '.join(report.sources)}): nothing to train on")
    return {"rows": report.written, "format": "TRL preference, " + ("conversational" if conversational else "standard"),
            "skipped": report.skipped, "sources": list(report.sources)}


def _write_grpo_prompts(project: Project, config: Mapping[str, Any], path: Path) -> dict:
    """Prompt rows as the workbench's GRPO job builds them (rlhf_core.trainers.text.grpo): the task set, or the
    project's prompts with a gold answer (the same held-out split), shown with the same messages."""
    source = str(config.get("prompt_source") or "tasks").strip().lower()
    if source not in ("project", "tasks"):
        raise ClusterExportError(f"prompt_source must be tasks or project, not {source!r}")
    few_shot = bool(config.get("few_shot", True))
    seed = int(config.get("seed") or 0)
    if source == "project":
        rows, held = _project_gold_prompts(project, config, seed)
        origin = "project prompts with a gold answer"
    else:
        rows, held = _task_rows(config, seed)
        origin = "generated arithmetic tasks (rlhf_core.text.tasks)"
    limit = int(config.get("max_prompts") or 0)
    if limit > 0:
        rows = rows[:limit]
    if not rows:
        raise ClusterExportError("GRPO needs training prompts with gold answers, and there are none left "
                                 "after the held-out split")
    instruction = bool(config.get("format_instruction", True))
    for row in rows + held:  # the instruction as a system message, as the GRPO job shows it
        row["prompt"] = task_messages(row["prompt"], few_shot, instruction)
    write_atomically(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    if held:
        write_atomically(path.with_name("heldout.jsonl"),
                         "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in held))
    return {"rows": len(rows), "heldout": "data/heldout.jsonl" if held else None, "heldout_rows": len(held),
            "format": "TRL prompt-only, conversational, with a gold_answer column", "origin": origin,
            "few_shot": few_shot}


def task_messages(text: str, few_shot: bool, instruction: bool = True) -> list[dict]:
    """The chat messages of one GRPO prompt, as the workbench's GRPO job shows them."""
    return tasks.task_messages(text, few_shot, instruction)


def _project_gold_prompts(project: Project, config: Mapping[str, Any], seed: int) -> tuple[list[dict], list[dict]]:
    """(train, held-out) rows of the project's prompts with a gold answer, split as the GRPO job does
    (rlhf_core.text.gold_eval.project_prompts: a seeded shuffle, ``heldout_fraction`` held out)."""
    wanted = {int(i) for i in (config.get("prompt_ids") or [])}
    items = []
    for pid, text, gold in project.conn.execute(
            "SELECT id, text, gold_answer FROM prompts WHERE deleted_at IS NULL ORDER BY id"):
        gold = None if gold is None or not str(gold).strip() else str(gold).strip()
        if gold is None or (wanted and int(pid) not in wanted):
            continue
        items.append({"prompt": text, "gold_answer": gold,
                      "prompt_id": int(pid)})
    if not items:
        raise ClusterExportError("the project has no prompts with a gold answer; import a prompt set with gold "
                                 "answers or use the generated tasks (prompt_source=tasks)")
    fraction = float(config.get("heldout_fraction") or 0.0)
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    n_held = min(int(round(len(items) * fraction)), len(items) - 1) if fraction > 0 else 0
    return [items[i] for i in order[n_held:]], [items[i] for i in order[:n_held]]


def _task_rows(config: Mapping[str, Any], seed: int) -> tuple[list[dict], list[dict]]:
    level = int(config.get("task_level") or config.get("level") or 1)
    n = int(config.get("train_tasks") or config.get("n_tasks") or 256)
    n_held = int(config.get("heldout_tasks", 32) or 0)
    train, held = tasks.task_split(level=level, n_train=n, n_heldout=n_held, seed=seed)
    return ([{"prompt": t.prompt, "gold_answer": t.gold_answer, "key": t.key} for t in train],
            [{"prompt": t.prompt, "gold_answer": t.gold_answer, "key": t.key} for t in held])


def _requirements(peft: bool) -> str:
    lines = ["# Tested together with TRL 1.16.0 (the workbench's stack). Install torch first, the build that",
             "# fits the cluster's CUDA (https://pytorch.org/get-started/locally/), then the rest:",
             "#   pip install -r requirements.txt"]
    lines += [f"{name}=={version}" for name, version in REQUIREMENTS.items()]
    if not peft:
        lines.append("# peft is needed only when config.json has LoRA settings (\"peft\")")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- import
def import_checkpoint(project: Project, folder: str | os.PathLike, *, kind: str, name: str = "",
                      run_id: int | None = None) -> int:
    """Copy a trained model folder into the project and register it; returns the checkpoint id.

    ``kind``: ``policy`` (or ``text_policy``) for a causal LM, ``reward_model`` (or
    ``text_reward_model``) for a TRL sequence-classification folder or a workbench reward model.
    Raises :class:`ClusterExportError` or a :class:`rlhf_core.text.model.ModelError` with a message
    for a person; on any error the project is unchanged.
    """
    kinds = {"policy": POLICY_KIND, POLICY_KIND: POLICY_KIND,
             "reward_model": REWARD_MODEL_KIND, REWARD_MODEL_KIND: REWARD_MODEL_KIND}
    if kind not in kinds:
        raise ClusterExportError(f"kind must be policy or reward_model, not {kind!r}")
    checkpoint_kind = kinds[kind]
    source = Path(folder).expanduser().absolute()
    if not source.exists():
        raise ModelNotFoundError(f"No model folder at {source}: the path does not exist.")
    if not source.is_dir():
        raise ModelNotFoundError(f"{source} is a file; choose the folder that holds config.json and the weights.")
    if _is_export(source):
        hint = (f" The trained model is in {source / 'output'}." if (source / "output").is_dir() else
                " Run its train.py (or launch.sh) first; the trained model lands in its output/ folder.")
        raise ClusterExportError(f"{source} is a cluster export, not a trained model.{hint}")
    if run_id is not None and project.get_run(int(run_id)) is None:
        raise ClusterExportError(f"the project has no run {run_id}")
    result = _read_result(source)
    label = name.strip() or (f"{result['algo']} {source.parent.name}" if result.get("algo") else source.name)
    staging_root = project.folder / "checkpoints"
    staging_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".import-partial-", dir=staging_root))
    final: Path | None = None
    made_dir: Path | None = None
    try:
        payload = staging / "model"
        if checkpoint_kind == POLICY_KIND:
            meta = _stage_policy(source, payload)
        else:
            meta = _stage_reward_model(source, payload, result)
        meta.update({"imported_from": str(source), "name": label, "imported_at": utc_now()})
        if result:
            meta["trained"] = {k: result[k] for k in ("algo", "base_model", "global_step", "train_loss",
                                                      "trl_version", "max_steps") if k in result}
        os.chmod(payload, 0o755)
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", label).strip("-.") or "model"
        with project.db.atomic():
            if run_id is None:
                rid = project.create_run(IMPORT_RUN_KIND, {"source": str(source), "kind": checkpoint_kind,
                                                           "name": label}, name=label or "import", status="completed")
                project.finish_run(rid, "completed", result={"checkpoint_kind": checkpoint_kind,
                                                             "source": str(source)})
            else:
                rid = int(run_id)
            run_dir = project.folder / "checkpoints" / f"run-{rid:05d}"
            if not run_dir.exists():
                run_dir.mkdir(parents=True)
                made_dir = run_dir
            final = _unique(run_dir / f"imported-{slug}")
            os.replace(payload, final)
            cid = project.add_checkpoint(rid, checkpoint_kind, final, step=_int_or_none(result.get("global_step")),
                                         meta=meta)
        return cid
    except BaseException:
        if final is not None and final.exists():
            shutil.rmtree(final, ignore_errors=True)
        if made_dir is not None:
            shutil.rmtree(made_dir, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _int_or_none(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def _unique(path: Path) -> Path:
    if not path.exists():
        return path
    n = 2
    while path.with_name(f"{path.name}-{n}").exists():
        n += 1
    return path.with_name(f"{path.name}-{n}")


def _read_result(folder: Path) -> dict:
    try:
        data = json.loads((folder / RESULT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _stage_policy(source: Path, payload: Path) -> dict:
    config = check_model_folder(source)  # config.json of a causal LM + complete safetensors weights
    if not any((source / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        raise CorruptModelError(f"{source} has no tokenizer (tokenizer.json / tokenizer_config.json); "
                                "save the tokenizer next to the model.")
    _copy_model(source, payload)
    arch = ", ".join(config.get("architectures") or []) or str(config.get("model_type"))
    return {"architecture": arch, "format": "hf-causal-lm"}


def _stage_reward_model(source: Path, payload: Path, result: Mapping[str, Any]) -> dict:
    """Copy a workbench reward model, or convert a TRL sequence-classification folder into one."""
    from rlhf_core.text.reward_model import META_FILE, load_text_reward_model  # start-up: imports torch

    if (source / META_FILE).is_file():  # already the workbench's format: check it loads, copy it
        load_text_reward_model(source)
        _copy_model(source, payload)
        return {"format": "workbench", "converted": False}
    config = read_model_config(source)
    archs = [a for a in (config.get("architectures") or []) if isinstance(a, str)]
    if not any(a.endswith("ForSequenceClassification") for a in archs):
        raise CorruptModelError(
            f"{source} holds a {', '.join(archs) or config.get('model_type')} model, not a reward model: expected a "
            "TRL reward model (a ...ForSequenceClassification with one output) or a workbench reward model folder.")
    n_labels = len(config.get("id2label") or {}) or int(config.get("num_labels", 0) or 0)
    if n_labels != 1:
        raise CorruptModelError(f"{source} is a classifier with {n_labels} outputs; a reward model has exactly one.")
    weights = sorted(source.glob("model*.safetensors"))
    if not weights:
        raise CorruptModelError(f"{source} has no safetensors weights (model.safetensors).")
    for path in weights:
        check_safetensors_file(path)
    model, tokenizer = _load_sequence_classifier(source)
    reward_model = _to_text_reward_model(model, tokenizer, max_length=_max_length(result, source))
    from rlhf_core.text.reward_model import save_text_reward_model  # start-up: imports torch

    base = str(result.get("base_model") or config.get("_name_or_path") or "")
    save_text_reward_model(reward_model, payload, meta={"base_model": base, "converted_from": "trl",
                                                         "source_architecture": archs[0]})
    return {"format": "trl-sequence-classification", "converted": True, "architecture": archs[0],
            "base_model": base}


def _max_length(result: Mapping[str, Any], source: Path) -> int:
    value = result.get("max_length")
    if isinstance(value, int) and value > 0:
        return value
    return 512


def _load_sequence_classifier(folder: Path):
    from transformers import AutoModelForSequenceClassification

    with quiet_transformers():
        return load_pretrained(folder, AutoModelForSequenceClassification, what="reward model", num_labels=1)


def _to_text_reward_model(model, tokenizer, *, max_length: int):
    """Backbone (the classifier's base model) + the one-output head as the workbench's scalar head.

    TRL scores the last token that is not the pad token; the workbench scores the last token of the
    attention mask. With a chat template that ends every turn after the end-of-turn token (SmolLM2:
    ``<|im_end|>\\n``) both pick the same token (tests/core/trainers/text/test_trl_equivalence.py).
    """
    import torch
    from torch import nn

    from rlhf_core.text.reward_model import TextRewardModel  # start-up: imports torch

    backbone = getattr(model, model.base_model_prefix, None)
    head = None
    for attr in ("score", "classifier"):
        candidate = getattr(model, attr, None)
        if isinstance(candidate, nn.Linear) and candidate.out_features == 1:
            head = candidate
            break
    if backbone is None or head is None:
        raise CorruptModelError(f"Cannot read a {type(model).__name__} as a reward model: it has no one-output "
                                "linear head on top of its transformer.")
    hidden = int(backbone.config.hidden_size)
    if head.in_features != hidden:
        raise CorruptModelError(f"The reward head reads {head.in_features} features but the transformer has {hidden}.")
    scalar = nn.Linear(hidden, 1)
    with torch.no_grad():
        scalar.weight.copy_(head.weight.float())
        if head.bias is not None:
            scalar.bias.copy_(head.bias.float())
        else:
            scalar.bias.zero_()
    return TextRewardModel(backbone, tokenizer, max_length=max_length, head=scalar)


# --------------------------------------------------------------------------- the exported files
LAUNCH_SCRIPT = r"""#!/usr/bin/env bash
# Train on this machine's GPUs: one process per GPU, launched by Hugging Face accelerate.
#
#   ./launch.sh                        # 8 GPUs (the default)
#   NUM_GPUS=4 ./launch.sh             # 4 GPUs
#   ./launch.sh --max-steps 100        # arguments after launch.sh go to train.py
#
# Multi-node: run this script on EVERY machine, with the same NUM_GPUS = the total number of GPUs
# over all machines, NUM_MACHINES = how many machines, MACHINE_RANK = 0 on the main machine and
# 1, 2, ... on the others, MAIN_PROCESS_IP = the main machine's address (reachable from all) and,
# if 29500 is taken, MAIN_PROCESS_PORT. Example for 2 machines with 8 GPUs each:
#   main:   NUM_GPUS=16 NUM_MACHINES=2 MACHINE_RANK=0 MAIN_PROCESS_IP=10.0.0.1 ./launch.sh
#   other:  NUM_GPUS=16 NUM_MACHINES=2 MACHINE_RANK=1 MAIN_PROCESS_IP=10.0.0.1 ./launch.sh
# Under SLURM, start one task per machine (srun --ntasks-per-node=1) and set MACHINE_RANK from
# $SLURM_NODEID and MAIN_PROCESS_IP from the first host of $SLURM_JOB_NODELIST.
# For models that do not fit one GPU, give accelerate a DeepSpeed ZeRO-3 or FSDP config file with
# ACCELERATE_CONFIG=path/to/config.yaml (see `accelerate config`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
extra=()
if [ -n "${ACCELERATE_CONFIG:-}" ]; then
  extra+=(--config_file "$ACCELERATE_CONFIG")
fi
if [ "${NUM_MACHINES:-1}" -gt 1 ]; then
  exec accelerate launch "${extra[@]}" --multi_gpu --num_machines "$NUM_MACHINES" \
    --machine_rank "${MACHINE_RANK:?set MACHINE_RANK (0 on the main machine)}" \
    --main_process_ip "${MAIN_PROCESS_IP:?set MAIN_PROCESS_IP (the main machine)}" \
    --main_process_port "${MAIN_PROCESS_PORT:-29500}" \
    --num_processes ${NUM_GPUS:-8} train.py "$@"
fi
exec accelerate launch "${extra[@]}" --num_processes ${NUM_GPUS:-8} train.py "$@"
"""

TRAIN_SCRIPT = r'''#!/usr/bin/env python3
"""Train a model with TRL 1.16 from an RLHF Workbench export (DPO, GRPO or a reward model).

Reads config.json beside this file: the algorithm ("algo"), the starting model ("model": a hub id
or a folder; relative paths are relative to this folder), the data ("data.train", JSON Lines in
TRL's format), TRL's arguments ("trainer_args") and optional LoRA settings ("peft").

    python train.py --cpu --max-steps 1             # a quick check on one CPU process
    accelerate launch --num_processes 8 train.py    # 8 GPUs (see launch.sh)

The final model is saved to output/ (safetensors, with its tokenizer; LoRA merged in) together with
workbench_result.json (what was trained and the last logged values). Intermediate checkpoints of
the trainer go to checkpoints/. Import output/ back into the workbench:

    python -m rlhf_core import-checkpoint --project P --kind policy output         # DPO, GRPO
    python -m rlhf_core import-checkpoint --project P --kind reward_model output   # reward model

This script needs only the packages of requirements.txt, not the workbench itself.
"""

import argparse
import json
import math
import re
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULT_FILE = "workbench_result.json"

# ----------------------------------------------------------------------------- rule-based rewards
# GRPO's rewards: the rules of the workbench's rlhf_core.text.rewards, written out here so that this
# script needs nothing from the workbench. TRL calls each with the batch's completions (strings, or
# lists of chat messages) and the dataset's other columns as keyword arguments (gold_answer).
TAGS = ("<think>", "</think>", "<answer>", "</answer>")
LAYOUT_RE = re.compile(r"\s*<think>(.*?)</think>\s*<answer>(.*?)</answer>\s*", re.DOTALL)
ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
NUMBER_RE = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def completion_text(completion):
    """The text of one completion: a string, or a list of chat messages (conversational data)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        return "".join(str(m.get("content", "")) for m in completion
                       if isinstance(m, dict) and m.get("role", "assistant") == "assistant")
    return str(completion)


def layout_score(text, partial):
    """1.0 for exactly <think>..</think> <answer>..</answer> (each tag once, only whitespace around);
    otherwise, with partial credit, 0.2 for each of the four tags that appears exactly once."""
    counts = [text.count(tag) for tag in TAGS]
    if all(c == 1 for c in counts) and LAYOUT_RE.fullmatch(text):
        return 1.0
    return 0.2 * sum(1 for c in counts if c == 1) if partial else 0.0


def last_number(text):
    """The last number in the text ("= 1,234." -> 1234.0), or None."""
    found = NUMBER_RE.findall(text)
    if not found:
        return None
    try:
        return float(found[-1].replace(",", ""))
    except ValueError:
        return None


def as_number(text):
    try:
        value = float(text.replace(",", "").strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def same_answer(answer, gold):
    """Numbers compare by value (the last number of the answer); other gold answers as text
    (case and spacing ignored)."""
    if answer is None or gold is None:
        return False
    gold_text = str(gold).strip()
    if not gold_text:
        return False
    gold_value = as_number(gold_text)
    if gold_value is not None:
        value = last_number(answer)
        return value is not None and abs(value - gold_value) <= 1e-9
    return " ".join(answer.split()).lower() == " ".join(gold_text.split()).lower()


def final_answer(text, fallback_whole_text):
    """The content of the last <answer>...</answer> block (or the whole text, or None)."""
    blocks = ANSWER_RE.findall(text)
    if blocks:
        return blocks[-1]
    return text if fallback_whole_text else None


def format_reward(completions, **kwargs):
    return [layout_score(completion_text(c), True) for c in completions]


def format_strict_reward(completions, **kwargs):
    return [layout_score(completion_text(c), False) for c in completions]


def correctness_reward(completions, gold_answer=None, **kwargs):
    golds = gold_answer if gold_answer is not None else [None] * len(completions)
    return [1.0 if same_answer(final_answer(completion_text(c), False), g) else 0.0
            for c, g in zip(completions, golds)]


def correctness_any_reward(completions, gold_answer=None, **kwargs):
    golds = gold_answer if gold_answer is not None else [None] * len(completions)
    return [1.0 if same_answer(final_answer(completion_text(c), True), g) else 0.0
            for c, g in zip(completions, golds)]


def length_penalty(completions, completion_ids=None, **kwargs):
    """Minus the completion's length in tokens (words when token ids are not given)."""
    if completion_ids is not None:
        return [-float(len(ids)) for ids in completion_ids]
    return [-float(len(completion_text(c).split())) for c in completions]


REWARD_FUNCTIONS = {f.__name__: f for f in (format_reward, format_strict_reward, correctness_reward,
                                            correctness_any_reward, length_penalty)}


# ----------------------------------------------------------------------------- set-up
def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=HERE / "config.json", help="The export's config.json.")
    parser.add_argument("--max-steps", type=int, default=None, help="Stop after this many optimisation steps.")
    parser.add_argument("--cpu", action="store_true", help="Train on the CPU (no GPU, no mixed precision).")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice).")
    parser.add_argument("--model", default=None, help="Start from this model instead of config.json's.")
    parser.add_argument("--output-dir", type=Path, default=HERE / "output", help="Where the final model goes.")
    parser.add_argument("--checkpoint-dir", type=Path, default=HERE / "checkpoints",
                        help="The trainer's own output folder (intermediate checkpoints, logs).")
    return parser.parse_args(argv)


def read_jsonl(path):
    rows = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise SystemExit(f"{path}: line {number} is not valid JSON ({exc.msg})")
    if not rows:
        raise SystemExit(f"{path} has no rows")
    return rows


def resolve_model(spec, base):
    """A folder (relative paths: to this export's folder) or a hub id."""
    candidate = Path(spec).expanduser()
    if not candidate.is_absolute() and (base / candidate).exists():
        return str((base / candidate).resolve())
    if candidate.exists():
        return str(candidate)
    if spec.startswith(("/", ".", "~")) or spec.count("/") > 1:
        raise SystemExit(f"the model folder {spec} does not exist on this machine: copy it here and pass "
                         "--model FOLDER, or export again with --include-model")
    return spec  # a hub id


def main(argv=None):
    args = parse_args(argv)
    config = json.loads(args.config.read_text(encoding="utf-8"))
    base = args.config.resolve().parent
    algo = config["algo"]
    if algo not in ("dpo", "grpo", "reward_model"):
        raise SystemExit(f"unknown algo {algo!r} in {args.config}")

    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer

    import trl

    if args.threads:
        torch.set_num_threads(args.threads)
    model_id = resolve_model(args.model or config["model"], base)
    rows = read_jsonl(base / config["data"]["train"])
    dataset = Dataset.from_list(rows)

    trainer_args = dict(config["trainer_args"])
    trainer_args["output_dir"] = str(args.checkpoint_dir)
    if args.max_steps is not None:
        trainer_args["max_steps"] = args.max_steps
    if args.cpu:
        trainer_args.update(use_cpu=True, bf16=False, fp16=False)
    peft_config = None
    if config.get("peft"):
        from peft import LoraConfig

        peft_config = LoraConfig(**config["peft"])

    config_class = {"dpo": trl.DPOConfig, "grpo": trl.GRPOConfig, "reward_model": trl.RewardConfig}[algo]
    training_args = make_config(config_class, trainer_args)  # a wrong setting stops here, before any loading

    tokenizer = AutoTokenizer.from_pretrained(model_id)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    common = dict(model=model_id, args=training_args, train_dataset=dataset, processing_class=tokenizer,
                  peft_config=peft_config)
    if algo == "dpo":
        trainer = trl.DPOTrainer(**common)
    elif algo == "grpo":
        funcs = [REWARD_FUNCTIONS[name] for name in config["rewards"]["functions"]]
        trainer = trl.GRPOTrainer(reward_funcs=funcs, **common)
    else:
        trainer = trl.RewardTrainer(**common)

    started = time.time()
    trainer.train()
    seconds = time.time() - started
    save_final(trainer, tokenizer, args.output_dir, peft_config is not None)
    if trainer.accelerator.is_main_process:
        write_result(trainer, config, model_id, args, seconds)
        print(f"saved the trained model to {args.output_dir}", flush=True)


def make_config(cls, kwargs):
    """TRL's config from config.json's trainer_args, with a clear message for a wrong one."""
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise SystemExit(f"config.json trainer_args do not fit trl.{cls.__name__}: {exc}")


def save_final(trainer, tokenizer, folder, merge_lora):
    """The final model as a plain safetensors folder with its tokenizer (LoRA merged in)."""
    folder = Path(folder)
    trainer.accelerator.wait_for_everyone()
    if merge_lora:
        model = trainer.accelerator.unwrap_model(trainer.model)
        if trainer.accelerator.is_main_process:
            merged = model.merge_and_unload()
            merged.save_pretrained(folder, safe_serialization=True)
            tokenizer.save_pretrained(folder)
    else:
        trainer.save_model(str(folder))  # every process takes part (sharded states are gathered)
    trainer.accelerator.wait_for_everyone()
    if trainer.accelerator.is_main_process:
        args_file = folder / "training_args.bin"  # a pickle: not needed to use the model
        if args_file.exists():
            args_file.unlink()


def write_result(trainer, config, model_id, args, seconds):
    history = [dict(h) for h in trainer.state.log_history]
    last = {}
    for entry in history:
        last.update({k: v for k, v in entry.items() if isinstance(v, (int, float)) and math.isfinite(v)})
    result = {
        "algo": config["algo"], "base_model": model_id, "global_step": int(trainer.state.global_step),
        "max_steps": args.max_steps, "train_loss": last.get("train_loss", last.get("loss")),
        "train_seconds": round(seconds, 2), "last_logged": last, "log_history": history[-50:],
        "max_length": config["trainer_args"].get("max_length"), "trl_version": __import__("trl").__version__,
        "world_size": trainer.accelerator.num_processes, "device": str(trainer.accelerator.device),
    }
    (Path(args.output_dir) / RESULT_FILE).write_text(json.dumps(result, indent=2, default=str) + "\n")


if __name__ == "__main__":
    sys.exit(main())
'''


def _readme(config: Mapping[str, Any]) -> str:
    algo = config["algo"]
    title = {"dpo": "DPO", "grpo": "GRPO", "reward_model": "Reward model"}[algo]
    kind = "reward_model" if algo == "reward_model" else "policy"
    args = config["trainer_args"]
    model_info = config["model_info"]
    data = config["data"]
    lines = [
        f"# {title} training exported from RLHF Workbench",
        "",
        f"Project: {config['workbench']['project']}; exported {config['workbench']['exported_at']} by RLHF "
        f"Workbench {config['workbench']['app_version']}. Trainer: `{config['trainer']}` (TRL 1.16.0).",
        "",
        "## Contents",
        f"- `data/train.jsonl`: {data['rows']} rows, {data['format']}"
        + (f" ({data['origin']})" if data.get("origin") else "") + ".",
        "- `config.json`: `trainer_args` are passed to "
        f"`{config['trainer_config']}` as they are; `peft` (LoRA) is {'set' if config.get('peft') else 'off'}; "
        "`workbench` keeps the original settings and lists those with no TRL counterpart (`not_translated`).",
        "- `train.py`: the training script (needs only `requirements.txt`, not the workbench).",
        "- `launch.sh`: `accelerate launch` on all GPUs of a machine; multi-node notes inside.",
        f"- Model: `{config['model']}`. {model_info['note']}",
        "",
        "## Run it",
        "```sh",
        "python -m venv .venv && . .venv/bin/activate",
        "pip install torch==2.13.0   # the build for the cluster's CUDA first",
        "pip install -r requirements.txt",
        "python train.py --cpu --max-steps 1     # smoke test: one step on the CPU",
        "./launch.sh                             # NUM_GPUS (default 8) processes on this machine",
        "NUM_GPUS=4 ./launch.sh --max-steps 200  # arguments after launch.sh go to train.py",
        "```",
        "Batch size: `per_device_train_batch_size` is per GPU, so the global batch is that x the number of "
        "GPUs x `gradient_accumulation_steps`. Lower it (or raise `gradient_accumulation_steps`) to keep the "
        "workbench's global batch.",
        "bf16 is on by default on GPUs (TRL's default); on GPUs without bf16 (V100, T4) set `\"bf16\": false` in "
        "`trainer_args`.",
    ]
    if algo == "grpo":
        g = config.get("grpo", {})
        lines += [
            "",
            "## GRPO specifics",
            f"- `per_device_train_batch_size` = {args['per_device_train_batch_size']} counts COMPLETIONS: "
            f"{g.get('prompts_per_step')} prompts x {args['num_generations']} generations per device and step.",
            f"- Rewards `{config['rewards']['spec']}`: the workbench's rule-based rewards, inlined in train.py as "
            f"{', '.join('`%s`' % f for f in config['rewards']['functions'])} with weights "
            f"{config['rewards']['weights']} (`format`: the `<think>...</think> <answer>...</answer>` layout, "
            "partial credit per tag; `correctness`: the last `<answer>` block's last number equals the row's "
            "`gold_answer`).",
            f"- Prompts: {data.get('origin')}" + (", with one worked example as an earlier chat turn" if
                                                 data.get("few_shot") else "") + "."
            + (f" {data['heldout_rows']} held-out prompts (not trained on, as in the workbench) are in "
               "`data/heldout.jsonl`." if data.get("heldout_rows") else ""),
            f"- KL weight `beta` = {args.get('beta')} (TRL's own default 0.0 turns the KL term and the "
            "reference model off).",
            "- Generation runs through transformers; for speed on GPUs install vLLM and add "
            "`\"use_vllm\": true, \"vllm_mode\": \"colocate\"` to `trainer_args`.",
        ]
    if algo in ("dpo", "reward_model"):
        lines += [
            "",
            "## Data",
            "Each row is one comparison whose outcome was left or right; ties, 'both bad' and skips have no "
            f"preferred answer in TRL's format and were left out ({data.get('skipped')}).",
        ]
        if algo == "reward_model":
            lines += ["TRL trains `AutoModelForSequenceClassification` (one output) on the chat-formatted "
                      "prompt + answer, which the workbench converts to its own reward model format on import."]
    lines += [
        "",
        "## The result and bringing it back",
        "The final model is written to `output/` (safetensors + tokenizer, LoRA merged in) with "
        "`output/workbench_result.json` (steps, last loss, log). Trainer checkpoints go to `checkpoints/` "
        "(every `save_steps`; delete them when done). Copy `output/` back, then:",
        "```sh",
        f"python -m rlhf_core import-checkpoint --project YOUR_PROJECT.rlhf --kind {kind} output",
        "```",
        "It is checked (config, safetensors weights, tokenizer), copied into the project as a new run of kind "
        f"`import` and registered as a `{'text_reward_model' if kind == 'reward_model' else 'text_policy'}` "
        "checkpoint" + (" (converted to the workbench's reward model format)" if kind == "reward_model" else "")
        + ".",
    ]
    return "\n".join(lines) + "\n"
