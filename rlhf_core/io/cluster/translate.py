"""Settings translation: a workbench run's config (and overrides) onto the argument names of TRL's
DPOConfig, GRPOConfig and RewardConfig (:data:`ALIASES`).

The workbench job's defaults fill in what the run did not set; ``config_overrides`` (workbench or
TRL names) come last. Settings that were given (in the run config or the overrides) and have no TRL
counterpart are listed in :attr:`Translation.not_translated`; a default nobody set is not. GRPO's
batch: the workbench counts prompts per step, TRL counts completions per device, so
``per_device_train_batch_size = prompts x num_generations``.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rlhf_core.config import fields as config_fields, upgrade_settings
from rlhf_core.io.cluster.common import ALGOS, ClusterExportError
from rlhf_core.text.rewards import parse_spec_items

#: the workbench job whose config a run of each algorithm has (used only to find defaults)
WORKBENCH_CONFIGS = {
    "dpo": ("rlhf_core.trainers.text.dpo", "DPOConfig"),
    "grpo": ("rlhf_core.trainers.text.grpo", "GRPOConfig"),
    "reward_model": ("rlhf_core.trainers.text.reward_model", "TextRewardModelConfig"),
}
#: the kinds of workbench runs whose settings each export can take (job names in rlhf_core.registry)
RUN_KINDS = {"dpo": ("dpo",), "grpo": ("grpo", "grpo_demo"), "reward_model": ("text_reward_model",)}

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


@dataclasses.dataclass
class Translation:
    trainer_args: dict[str, Any]
    peft: dict[str, Any] | None
    workbench_config: dict[str, Any]  # the run's settings with the job's defaults filled in (no overrides)
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
    setting given in neither takes the default of the workbench's job config.

    ``workbench`` is what the run set (its stored config, old field names allowed), without the
    defaults: they are filled in here, once, so that only given settings count as not translated.
    """
    if algo not in ALGOS:
        raise ClusterExportError(f"unknown algorithm {algo!r}; choose from {', '.join(ALGOS)}")
    aliases = {**ALIASES["*"], **ALIASES[algo]}
    trl_fields = _trl_fields(algo)
    job = RUN_KINDS[algo][0]
    workbench, overrides = upgrade_settings(job, workbench), upgrade_settings(job, overrides or {})
    given = set(workbench)
    settings = {**workbench_defaults(algo), **workbench}
    merged = dict(settings)
    direct: dict[str, Any] = {}
    for key, value in overrides.items():
        if key in aliases:
            merged[key] = value
            given.add(key)
        elif trl_fields is None or key in trl_fields:
            direct[key] = value
        else:
            raise ClusterExportError(f"unknown setting {key!r}: neither a workbench setting of {algo} nor an "
                                     f"argument of TRL's {trl_class_name(algo)}")
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
    if rank < 0 and "lora_rank" not in not_translated:  # auto (by model size) has no TRL counterpart:
        not_translated.append("lora_rank")                # the cluster run is a full fine-tune
    if rank > 0:
        peft = {"r": rank, "lora_alpha": int(merged.get("lora_alpha") or 2 * rank),
                "lora_dropout": float(merged.get("lora_dropout") or 0.0), "target_modules": "all-linear",
                "task_type": "SEQ_CLS" if algo == "reward_model" else "CAUSAL_LM"}
    return Translation(trainer_args=args, peft=peft, workbench_config=settings, used=used,
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


def trl_class_name(algo: str) -> str:
    """The name of TRL's config class for ``algo``."""
    return {"dpo": "DPOConfig", "grpo": "GRPOConfig", "reward_model": "RewardConfig"}[algo]


def _convert(algo: str, target: str, value: Any) -> Any:
    """A workbench value in the form TRL's argument takes (a list of loss types, integer counts, ...)."""
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

