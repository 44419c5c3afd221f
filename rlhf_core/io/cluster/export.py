"""Write a run as a folder that trains with TRL 1.16 (under ``accelerate``) on any machine with the
packages of its ``requirements.txt`` (rlhf_core is NOT needed there)::

    out_dir/
        data/train.jsonl   the training data in TRL's format (see below)
        config.json        TRL argument names and values ("trainer_args"), LoRA settings ("peft"),
                           the model, the reward functions (GRPO), and the workbench's own settings
                           ("workbench": the original config and what was not translated)
        train.py           template/train.py, copied as it is: one script for all three algorithms
                           (DPOTrainer / GRPOTrainer / RewardTrainer); reads config.json;
                           ``--max-steps N``, ``--cpu``, ``--threads N``, ``--model M``, ``--output-dir D``
        launch.sh          template/launch.sh: ``accelerate launch --num_processes ${NUM_GPUS:-8} train.py "$@"``
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
weights) are written out in template/train.py, so the cluster needs nothing from the workbench;
the learned ``model`` component cannot be exported.

Settings are translated by :mod:`rlhf_core.io.cluster.translate`.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import random
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rlhf_core import __version__
from rlhf_core.config import upgrade_settings
from rlhf_core.io.cluster.common import (
    ALGOS,
    FORMAT_NAME,
    FORMAT_VERSION,
    POLICY_KIND,
    REWARD_MODEL_KIND,
    ClusterExportError,
    copy_model,
    is_export,
)
from rlhf_core.io.cluster.translate import RUN_KINDS, translate_config, trl_class_name
from rlhf_core.io.trl import export_trl, write_atomically
from rlhf_core.store.project import Project, utc_now
from rlhf_core.text import tasks
from rlhf_core.text.model import DEFAULT_MODEL_NAME, check_model_folder, ensure_default_model

HUB_DEFAULT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
#: pinned for the exported requirements.txt: trl 1.16.0 and the versions it was tested with here
REQUIREMENTS = {"trl": "1.16.0", "transformers": "5.24.0", "accelerate": "1.15.0", "datasets": "5.2.0",
                "peft": "0.21.2", "torch": "2.13.0", "safetensors": "0.8.0"}
#: the files of template/ that every export gets, unchanged (the folder is package data, not a
#: package: bundled by pyinstaller.spec, found through importlib.resources in the frozen app too)
TEMPLATE_FILES = ("train.py", "launch.sh")


def template_bytes(name: str) -> bytes:
    """The content of ``template/<name>`` (one of :data:`TEMPLATE_FILES`)."""
    if name not in TEMPLATE_FILES:
        raise ValueError(f"no template {name!r}; the templates are {', '.join(TEMPLATE_FILES)}")
    return importlib.resources.files(__package__).joinpath("template", name).read_bytes()


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
    run_config: dict[str, Any] = {}  # what the run set; the job's defaults are filled in by translate_config
    run_info: dict[str, Any] | None = None
    if run_id is not None:
        run = project.get_run(int(run_id))
        if run is None:
            raise ClusterExportError(f"the project has no run {run_id}")
        if run["kind"] not in RUN_KINDS[algo]:
            other = next((a for a, jobs in RUN_KINDS.items() if run["kind"] in jobs), None)
            raise ClusterExportError(f"run {run_id} is a {run['kind']} run, not a {algo} run"
                                     + (f"; export it with algo {other}" if other else ""))
        run_config = dict(run["config"] or {})
        run_info = {"id": run["id"], "kind": run["kind"], "status": run["status"], "name": run.get("name") or ""}
    translation = translate_config(algo, run_config, config_overrides)
    # what picks the data and the model: the run's settings over the job's defaults, then the overrides
    merged = {**translation.workbench_config, **upgrade_settings(RUN_KINDS[algo][0], config_overrides or {})}

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
                                                 partial / "model", algo)
        config = {
            "format": FORMAT_NAME, "version": FORMAT_VERSION, "algo": algo,
            "trainer": {"dpo": "trl.DPOTrainer", "grpo": "trl.GRPOTrainer",
                        "reward_model": "trl.RewardTrainer"}[algo],
            "trainer_config": f"trl.{trl_class_name(algo)}",
            "model": model_value, "model_info": model_info,
            "data": {"train": "data/train.jsonl", **data_info},
            "trainer_args": translation.trainer_args,
            "peft": translation.peft,
            "workbench": {"project": project.name, "run": run_info, "config": translation.workbench_config,
                          "overrides": dict(config_overrides or {}), "translated": translation.used,
                          "not_translated": translation.not_translated, "exported_at": utc_now(),
                          "app_version": __version__},
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
        for name in TEMPLATE_FILES:
            (partial / name).write_bytes(template_bytes(name))
            os.chmod(partial / name, 0o755)
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
        if any(out.iterdir()) and not is_export(out):
            raise ClusterExportError(f"{out} is not empty and does not hold an earlier export; choose an empty "
                                     "or new folder")
        if (out / "output").exists():
            raise ClusterExportError(f"{out} holds a trained model in output/ that a new export would delete; "
                                     "import it or move it away first, or choose another folder")


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


def _model_setting(config: Mapping[str, Any]) -> str:
    value = config.get("model")
    return str(value).strip() if isinstance(value, (str, int)) else ""


def _resolve_model(project: Project, spec: str, include: bool, target: Path, algo: str = "") -> tuple[str, dict]:
    """(what config.json names as the model, notes about it); copies the folder with ``include``. The
    reward model algo also starts from a workbench reward model (trained further by TRL)."""
    kinds_ok = (POLICY_KIND, REWARD_MODEL_KIND) if algo == "reward_model" else (POLICY_KIND,)
    spec = (spec or "").strip()
    if spec in ("", "default", DEFAULT_MODEL_NAME):
        if include:
            folder = ensure_default_model()
            copy_model(folder, target)
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
        if row["kind"] not in kinds_ok:
            raise ClusterExportError(f"checkpoint {spec} is a {row['kind']}, not a {' or a '.join(kinds_ok)}")
        spec = str(project.abspath(row["path"]))
    folder = Path(spec).expanduser()
    if folder.exists():
        folder = folder.absolute()
        if algo == "reward_model" and (folder / "reward_model.json").is_file():
            from rlhf_core.text.reward_model import load_text_reward_model  # start-up: imports torch

            load_text_reward_model(folder)  # checks it (and converts one in the earlier layout)
        else:
            check_model_folder(folder)
        if include:
            copy_model(folder, target)
            return "model", {"source": str(folder), "included": True, "note": f"{folder}, copied into model/."}
        return str(folder), {"source": str(folder), "included": False,
                             "note": "A folder on the machine that exported this run: the cluster must have it at "
                                     "the same path, or pass --model to train.py (or export with --include-model)."}
    if include:
        raise ClusterExportError(f"cannot include the model {spec!r}: no such folder on this machine")
    if spec.startswith((".", "/", "~")):
        raise ClusterExportError(f"no model folder at {folder.absolute()}")
    return spec, {"source": spec, "included": False, "note": "A Hugging Face hub id, downloaded by the cluster."}


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
                      "prompt + answer: the workbench's own reward model layout, so `--model` may also name a "
                      "workbench reward model to train further; import adds the workbench's `reward_model.json` "
                      "and model card."]
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
        "checkpoint" + (" (saved with the workbench's reward model record and model card)"
                        if kind == "reward_model" else "")
        + ".",
    ]
    return "\n".join(lines) + "\n"
