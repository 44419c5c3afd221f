"""Import a trained model folder (a cluster export's ``output/``) into a project.

A policy (any causal-LM safetensors folder, checked by
:func:`rlhf_core.text.model.check_model_folder`) is copied as it is; a reward model trained by TRL
(``AutoModelForSequenceClassification`` with one label) already has the workbench's layout (see
:mod:`rlhf_core.text.reward_model`): it is loaded, checked and saved again with the workbench's
``reward_model.json`` and model card; a workbench reward model folder is checked and copied (one in
the earlier layout is converted in the copy, the source is left as it is). The
folder is written under a temporary name inside the project and renamed into place; the run (kind
``import``, or the given ``run_id``) and the checkpoint row are written in one transaction
afterwards, so an error leaves the project as it was. Pickle files (``training_args.bin``,
optimiser states) are never copied.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rlhf_core.io.cluster.common import (
    POLICY_KIND,
    RESULT_FILE,
    REWARD_MODEL_KIND,
    ClusterExportError,
    copy_model,
    is_export,
)
from rlhf_core.store.project import Project, utc_now
from rlhf_core.text.model import (
    CorruptModelError,
    ModelNotFoundError,
    check_model_folder,
    read_model_config,
)

IMPORT_RUN_KIND = "import"
#: the ``kind`` names import_checkpoint accepts -> the checkpoint kind it registers
IMPORT_KINDS = {"policy": POLICY_KIND, POLICY_KIND: POLICY_KIND,
                "reward_model": REWARD_MODEL_KIND, REWARD_MODEL_KIND: REWARD_MODEL_KIND}


def import_checkpoint(project: Project, folder: str | os.PathLike, *, kind: str, name: str = "",
                      run_id: int | None = None) -> int:
    """Copy a trained model folder into the project and register it; returns the checkpoint id.

    ``kind``: ``policy`` (or ``text_policy``) for a causal LM, ``reward_model`` (or
    ``text_reward_model``) for a TRL sequence-classification folder or a workbench reward model.
    Raises :class:`ClusterExportError` or a :class:`rlhf_core.text.model.ModelError` with a message
    for a person; on any error the project is unchanged.
    """
    if kind not in IMPORT_KINDS:
        raise ClusterExportError(f"kind must be policy or reward_model, not {kind!r}")
    checkpoint_kind = IMPORT_KINDS[kind]
    source = Path(folder).expanduser().absolute()
    if not source.exists():
        raise ModelNotFoundError(f"No model folder at {source}: the path does not exist.")
    if not source.is_dir():
        raise ModelNotFoundError(f"{source} is a file; choose the folder that holds config.json and the weights.")
    if is_export(source):
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
            run_dir = project.run_folder(rid, create=False)
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
    copy_model(source, payload)
    arch = ", ".join(config.get("architectures") or []) or str(config.get("model_type"))
    return {"architecture": arch, "format": "hf-causal-lm"}


def _stage_reward_model(source: Path, payload: Path, result: Mapping[str, Any]) -> dict:
    """Copy a workbench reward model, or save a TRL sequence-classification folder as one."""
    from rlhf_core.text.reward_model import (  # start-up: imports torch
        META_FILE,
        load_classifier_folder,
        load_text_reward_model,
        reward_model_card,
        save_text_reward_model,
    )

    if (source / META_FILE).is_file():  # already the workbench's format: check it loads, copy it
        model, _ = load_text_reward_model(source, convert=False)
        meta = json.loads((source / META_FILE).read_text(encoding="utf-8"))
        if int(meta.get("version", 1)) >= 2:
            copy_model(source, payload)
            return {"format": "workbench", "converted": False}
        record = {k: v for k, v in meta.items() if k not in ("format", "version", "hidden_size", "score_token")}
        save_text_reward_model(model, payload, meta={**record, "converted_from_version": 1})
        return {"format": "workbench", "converted": True}
    config = read_model_config(source)
    archs = [a for a in (config.get("architectures") or []) if isinstance(a, str)]
    model, _ = load_classifier_folder(source, max_length=_max_length(result, source))
    base = str(result.get("base_model") or config.get("_name_or_path") or "")
    meta = {"base_model": base, "converted_from": "trl", "source_architecture": archs[0]}
    trained = {k: result[k] for k in ("global_step", "train_loss", "trl_version", "max_steps") if k in result}
    card = reward_model_card(meta, job="import", config={"source": str(source), **trained},
                             training_data={"steps": result["global_step"]} if "global_step" in result else {},
                             metrics={"train_loss": result["train_loss"]}
                             if isinstance(result.get("train_loss"), (int, float)) else {},
                             tags=["reward-model", "rlhf", "trl"])
    save_text_reward_model(model, payload, meta=meta, card=card)
    return {"format": "trl-sequence-classification", "converted": True, "architecture": archs[0],
            "base_model": base}


def _max_length(result: Mapping[str, Any], source: Path) -> int:
    value = result.get("max_length")
    if isinstance(value, int) and value > 0:
        return value
    return 512
