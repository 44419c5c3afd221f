"""Scale-out: export a run for a cluster (TRL under accelerate), run the exported train.py for one step
on the CPU with the tiny model, and import the trained model back (policy and reward model)."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rlhf_core.cli import main as cli_main
from rlhf_core.store import Project
from rlhf_core.io import cluster as ce
from rlhf_core.text.model import CorruptModelError, ModelNotFoundError, NotACausalLMError
from tests.conftest import needs_model

pytestmark = needs_model

PAIRS = [  # prompt, chosen, rejected
    ("Say hello.", "Hello! How can I help you today?", "Go away."),
    ("Name a fruit.", "An apple.", "A rock is a fruit."),
    ("What is a reward model?", "A network that scores a response with one number.", "No."),
]
GOLD = [("Tom has 2 apples and gets 2 more. How many apples does Tom have?", "4"),
        ("What is 3 + 4?", "7")]
OVERRIDES = {
    "dpo": {"max_length": 128, "batch_size": 2, "learning_rate": 1e-3},
    "reward_model": {"max_length": 128, "batch_size": 2, "lr": 1e-3},
    "grpo": {"prompt_source": "project", "group_size": 2, "max_new_tokens": 8, "prompts_per_step": 2},
}


def _build_project(folder: Path, *, gold: bool = True) -> Project:
    project = Project.create(folder)
    me = project.ensure_labeller("me")
    for prompt, chosen, rejected in PAIRS:
        pid = project.add_prompt(prompt)
        good = project.add_item("response", prompt_id=pid, text=chosen)
        bad = project.add_item("response", prompt_id=pid, text=rejected)
        project.add_comparison(bad, good, "right", labeller_id=me)  # the worse one on the left
    tie_prompt = project.add_prompt("Pick a colour.")
    a = project.add_item("response", prompt_id=tie_prompt, text="Blue.")
    b = project.add_item("response", prompt_id=tie_prompt, text="Green.")
    project.add_comparison(a, b, "tie", labeller_id=me)  # no chosen side: left out of TRL data
    if gold:
        for text, answer in GOLD:
            project.add_prompt(text, gold_answer=answer, category="reasoning")
    return project


def _env(tmp: Path) -> dict:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               TOKENIZERS_PARALLELISM="false", HF_HOME=str(tmp / "hf-home"), PYTHONWARNINGS="ignore")
    env.pop("PYTHONPATH", None)  # the script must not need the workbench
    return env


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model):
    """One project, its three exports, and each exported train.py run for one CPU step (in parallel)."""
    root = tmp_path_factory.mktemp("cluster")
    project = _build_project(root / "p.rlhf")
    exports = {}
    for algo in ce.ALGOS:
        exports[algo] = ce.export_for_cluster(project, algo, root / f"export-{algo}", model=str(tiny_model),
                                              config_overrides=OVERRIDES[algo], include_model=(algo == "dpo"))
    project.close()
    started = time.monotonic()
    procs = {}
    for algo, folder in exports.items():
        log = open(folder.parent / f"{algo}.log", "w")
        procs[algo] = (subprocess.Popen([sys.executable, "train.py", "--max-steps", "1", "--cpu", "--threads", "1"],
                                        cwd=folder, env=_env(root), stdout=log, stderr=subprocess.STDOUT), log)
    results = {}
    for algo, (proc, log) in procs.items():
        try:
            rc = proc.wait(timeout=400)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            rc = "timeout"
        log.close()
        results[algo] = {"rc": rc, "log": (exports[algo].parent / f"{algo}.log").read_text()[-4000:],
                         "seconds": time.monotonic() - started}
    return {"root": root, "project": root / "p.rlhf", "exports": exports, "runs": results}


def _finished(trained, algo) -> Path:
    run = trained["runs"][algo]
    assert run["rc"] == 0, f"{algo} train.py failed ({run['rc']}):\n{run['log']}"
    output = trained["exports"][algo] / "output"
    assert (output / "model.safetensors").is_file()
    assert not (output / "training_args.bin").exists()  # the pickle is removed from the final folder
    return output


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _project_state(folder: Path) -> dict:
    with Project.open(folder) as p:
        counts = {t: p.conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("runs", "checkpoints")}
    files = sorted(str(x.relative_to(folder)) for x in (folder / "checkpoints").rglob("*"))
    return {**counts, "files": files}


# ----------------------------------------------------------------------------- the exported folders
def test_dpo_export_files(trained, tiny_model):
    folder = trained["exports"]["dpo"]
    assert sorted(p.name for p in folder.iterdir() if p.name not in ("output", "checkpoints")) == [
        "README.md", "config.json", "data", "launch.sh", "model", "requirements.txt", "train.py"]
    rows = _rows(folder / "data" / "train.jsonl")
    want = {(p, c, r) for p, c, r in PAIRS}
    assert {(r["prompt"][0]["content"], r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in rows} == want
    assert all(r["prompt"][0]["role"] == "user" and r["chosen"][0]["role"] == "assistant" for r in rows)
    config = json.loads((folder / "config.json").read_text())
    assert config["algo"] == "dpo" and config["model"] == "model" and config["model_info"]["included"]
    assert config["data"]["rows"] == 3 and config["data"]["skipped"]["tie"] == 1
    args = config["trainer_args"]
    assert args["beta"] == 0.1 and args["per_device_train_batch_size"] == 2 and args["max_length"] == 128
    assert args["learning_rate"] == 1e-3 and args["report_to"] == "none"
    assert config["workbench"]["translated"]["batch_size"] == "per_device_train_batch_size"
    # the included model is a copy of the tiny model (no pickles)
    assert (folder / "model" / "model.safetensors").read_bytes() == (tiny_model / "model.safetensors").read_bytes()
    launch = (folder / "launch.sh").read_text()
    assert 'accelerate launch "${extra[@]}" --num_processes ${NUM_GPUS:-8} train.py "$@"' in launch
    assert "MACHINE_RANK" in launch and os.access(folder / "launch.sh", os.X_OK)
    assert "trl==1.16.0" in (folder / "requirements.txt").read_text().splitlines()
    readme = (folder / "README.md").read_text()
    assert "import-checkpoint --project" in readme and "--kind policy output" in readme
    assert not re.search(r"^\s*(import|from)\s+rlhf_core", (folder / "train.py").read_text(), re.M)
    subprocess.run(["bash", "-n", str(folder / "launch.sh")], check=True)


def test_grpo_export_files(trained):
    folder = trained["exports"]["grpo"]
    from rlhf_core.text.tasks import task_messages

    rows = _rows(folder / "data" / "train.jsonl")
    assert sorted(r["gold_answer"] for r in rows) == sorted(a for _, a in GOLD)  # 2 prompts: none held out
    for row in rows:
        text = next(t for t, a in GOLD if a == row["gold_answer"])
        # as the workbench's GRPO job shows it: the instruction as the system message, the worked
        # example as an earlier exchange, then the question
        assert row["prompt"] == task_messages(row["prompt"][-1]["content"], True) and len(row["prompt"]) == 4
        assert row["prompt"][0]["role"] == "system" and "<answer>" in row["prompt"][0]["content"]
        assert row["prompt"][-1]["content"].startswith(text)
    config = json.loads((folder / "config.json").read_text())
    args = config["trainer_args"]
    # TRL's batch counts completions: 2 prompts x 2 generations
    assert args["per_device_train_batch_size"] == 4 and args["num_generations"] == 2
    assert args["max_completion_length"] == 8 and args["beta"] == 0.04  # the workbench's GRPO default
    assert args["temperature"] == 0.7 and args["loss_type"] == "dapo" and args["max_steps"] == 50
    assert args["reward_weights"] == [0.5, 1.0] == config["rewards"]["weights"]
    assert config["rewards"]["functions"] == ["format_reward", "correctness_reward"]
    assert not (folder / "data" / "heldout.jsonl").exists()


def test_reward_model_export_translates_the_workbench_config(trained):
    config = json.loads((trained["exports"]["reward_model"] / "config.json").read_text())
    args = config["trainer_args"]
    # TextRewardModelConfig's defaults (epochs 2) plus the overrides (lr -> learning_rate)
    assert args["num_train_epochs"] == 2.0 and args["learning_rate"] == 1e-3 and args["max_length"] == 128
    assert args["center_rewards_coefficient"] == 0.0
    # no run and no override set heldout_fraction: a default nobody gave is not "not translated"
    assert config["workbench"]["not_translated"] == []
    assert config["workbench"]["config"]["label_sources"] == "human,synthetic,ai"


# ----------------------------------------------------------------------------- one step, then import
def test_dpo_trains_one_step_and_imports_back_as_a_policy(trained, tiny_model):
    from safetensors.torch import load_file

    from rlhf_core.text.model import load_model

    output = _finished(trained, "dpo")
    result = json.loads((output / ce.RESULT_FILE).read_text())
    assert result["global_step"] == 1 and result["algo"] == "dpo" and result["trl_version"] == "1.16.0"
    assert result["train_loss"] == pytest.approx(math.log(2), abs=1e-4)  # policy == reference at step 1
    assert result["base_model"] == str((trained["exports"]["dpo"] / "model").resolve())  # the included copy
    before = load_file(str(tiny_model / "model.safetensors"))
    after = load_file(str(output / "model.safetensors"))
    assert max(float((after[k] - before[k]).abs().max()) for k in before) > 1e-4  # the step changed weights

    with Project.open(trained["project"]) as project:
        cid = ce.import_checkpoint(project, output, kind="policy", name="dpo on cluster")
        row = next(c for c in project.checkpoints() if c["id"] == cid)
        run = project.get_run(row["run_id"])
        folder = project.abspath(row["path"])
    assert row["kind"] == "text_policy" and row["step"] == 1
    assert run["kind"] == "import" and run["status"] == "completed" and run["name"] == "dpo on cluster"
    assert folder.parent.name == f"run-{row['run_id']:05d}" and not (folder / "training_args.bin").exists()
    assert json.loads(row["meta_json"])["trained"]["algo"] == "dpo"
    loaded = load_model(folder)
    weights = dict(loaded.model.named_parameters())
    assert torch.equal(weights["model.layers.0.mlp.up_proj.weight"], after["model.layers.0.mlp.up_proj.weight"])


def test_grpo_trains_one_step_with_the_inlined_rewards(trained):
    from rlhf_core.text.model import load_model

    output = _finished(trained, "grpo")
    result = json.loads((output / ce.RESULT_FILE).read_text())
    assert result["global_step"] == 1
    logged = result["last_logged"]
    # TRL called both inlined reward functions (a random tiny model earns 0 from each)
    assert logged["rewards/format_reward/mean"] == 0.0 and logged["rewards/correctness_reward/mean"] == 0.0
    assert 1 <= logged["completions/mean_length"] <= 8  # max_completion_length
    with Project.open(trained["project"]) as project:
        cid = ce.import_checkpoint(project, output, kind="policy")
        row = next(c for c in project.checkpoints() if c["id"] == cid)
        assert project.get_run(row["run_id"])["name"] == "grpo export-grpo"
        folder = project.abspath(row["path"])
    assert load_model(folder).model.config.num_hidden_layers == 2


def test_reward_model_trains_one_step_and_converts_on_import(trained):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rlhf_core.text.reward_model import format_pair_text, load_text_reward_model, score_responses

    output = _finished(trained, "reward_model")
    result = json.loads((output / ce.RESULT_FILE).read_text())
    assert result["global_step"] == 1 and result["max_length"] == 128
    with Project.open(trained["project"]) as project:
        cid = ce.import_checkpoint(project, output, kind="reward_model")
        row = next(c for c in project.checkpoints() if c["id"] == cid)
        folder = project.abspath(row["path"])
    assert row["kind"] == "text_reward_model"
    meta = json.loads((folder / "reward_model.json").read_text())
    assert meta["converted_from"] == "trl" and meta["max_length"] == 128
    from rlhf_core.store.model_card import read_card_header

    card = read_card_header(folder)
    assert "trl" in card["tags"] and card["rlhf_workbench"]["training_data"] == {"steps": 1}
    model, tok = load_text_reward_model(folder)
    prompt, response = PAIRS[0][0], PAIRS[0][1]
    ours = float(score_responses(model, tok, [prompt], [response])[0])
    # the same number as TRL's own model on the same chat-formatted text
    trl_model = AutoModelForSequenceClassification.from_pretrained(output, num_labels=1).eval()
    trl_tok = AutoTokenizer.from_pretrained(output)
    enc = trl_tok(format_pair_text(trl_tok, prompt, response), return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        theirs = float(trl_model(**enc).logits[0, 0])
    assert abs(ours - theirs) < 1e-4, (ours, theirs)
    # a reward model that is already in the workbench's format is copied as it is
    with Project.open(trained["project"]) as project:
        again = ce.import_checkpoint(project, folder, kind="reward_model", name="copy")
        copy = project.abspath(next(c for c in project.checkpoints() if c["id"] == again)["path"])
    assert (copy / "model.safetensors").read_bytes() == (folder / "model.safetensors").read_bytes()


# ----------------------------------------------------------------------------- pieces without training
def _script_namespace() -> dict:
    namespace: dict = {"__name__": "exported_train", "__file__": "train.py"}
    exec(compile(ce.template_bytes("train.py"), "train.py", "exec"), namespace)
    return namespace


def test_inlined_rewards_equal_the_workbench_rewards():
    from rlhf_core.text import rewards

    ns = _script_namespace()
    completions = [
        "<think> 3 plus 4 is 7 </think> <answer> 7 </answer>", "  <think>x</think>\n<answer>7</answer>  ",
        "<answer>7</answer>", "<think>x</think><answer>1,000 apples</answer>", "<think>a</think><answer>3 + 4 = 7"
        "</answer> trailing", "the answer is 7", "", "<think><think>x</think><answer>7</answer>",
        "<answer>8</answer><answer>7.0</answer>", "<think>x</think> <answer> Paris </answer>", "7 = 3 + 4.",
        "<think>-2</think><answer>-2</answer>", "<answer>1e3</answer>"]
    golds = ["7", "7", "7", "1000", "7", "7", "7", "7", "7", "paris", "4", "-2", "1000"]
    metas = [{"gold_answer": g} for g in golds]
    prompts = ["q"] * len(completions)
    chat = [[{"role": "assistant", "content": c}] for c in completions]  # conversational completions
    for name, function in [("format", "format_reward"), ("format_strict", "format_strict_reward"),
                           ("correctness", "correctness_reward"), ("correctness_any", "correctness_any_reward")]:
        want = rewards.parse_reward_spec(name).evaluate(prompts, completions, metas).total
        assert ns[function](completions, gold_answer=golds) == pytest.approx(want), name
        assert ns[function](chat, gold_answer=golds) == pytest.approx(want), name
    assert len(set(rewards.parse_reward_spec("format").evaluate(prompts, completions, metas).total)) >= 3
    assert sum(ns["correctness_reward"](completions, gold_answer=golds)) >= 5  # not a vacuous comparison
    ids = [[1] * (i + 1) for i in range(len(completions))]
    metas_len = [{"completion_tokens": len(x)} for x in ids]
    assert ns["length_penalty"](completions, completion_ids=ids) == \
        rewards.parse_reward_spec("length").evaluate(prompts, completions, metas_len).total
    # a task's own expression gives its gold answer
    from rlhf_core.text.tasks import make_tasks

    task = make_tasks(1, level=3, seed=0)[0]
    assert ns["correctness_reward"]([f"<think>{task.expression}</think> <answer>{eval(task.expression)}</answer>"],
                                    gold_answer=[task.gold_answer]) == [1.0]


def test_translation_of_settings():
    t = ce.translate_config("grpo", {"learning_rate": 2e-6, "steps": 50, "group_size": 4, "prompts_per_step": 3,
                                     "beta": 0.01, "epsilon": 0.3, "scale_rewards": False, "mu": 2,
                                     "loss_aggregation": "sequence",
                                     "reward": "format_strict:0.2,correctness,length:0.001",
                                     "lora_rank": 8, "mystery": 1}, {"temperature": 0.9, "warmup_ratio": 0.1})
    a = t.trainer_args
    assert (a["learning_rate"], a["max_steps"], a["num_generations"]) == (2e-6, 50, 4)
    assert (a["beta"], a["epsilon"]) == (0.01, 0.3)
    assert a["per_device_train_batch_size"] == 12 and a["scale_rewards"] == "none" and a["num_iterations"] == 2
    assert a["loss_type"] == "grpo" and a["temperature"] == 0.9 and a["warmup_ratio"] == 0.1
    assert a["reward_weights"] == [0.2, 1.0, 0.001]
    assert t.grpo["reward_functions"] == ["format_strict_reward", "correctness_reward", "length_penalty"]
    assert set(t.grpo["reward_functions"]) <= set(_script_namespace()["REWARD_FUNCTIONS"])
    assert t.peft == {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": "all-linear",
                      "task_type": "CAUSAL_LM"}
    assert t.not_translated == ["mystery"]
    d = ce.translate_config("dpo", {"loss_type": "ipo", "steps": 0}).trainer_args
    assert d["loss_type"] == ["ipo"] and "max_steps" not in d
    with pytest.raises(ce.ClusterExportError, match="unknown setting 'bogus'"):
        ce.translate_config("dpo", {}, {"bogus": 1})
    with pytest.raises(ce.ClusterExportError, match="model cannot run on the cluster"):
        ce.translate_config("grpo", {"reward": "correctness:1,model:0.5"})
    with pytest.raises(ce.ClusterExportError, match="at least 2 generations"):
        ce.translate_config("grpo", {"num_generations": 1})
    with pytest.raises(ce.ClusterExportError, match="multiple of num_generations"):
        ce.translate_config("grpo", {"num_generations": 4}, {"per_device_train_batch_size": 6})


def test_not_translated_lists_only_the_settings_that_were_given(tmp_path):
    """The job's defaults are filled in once (translate_config): a setting with no TRL counterpart is
    listed only when the run or the overrides gave it, and a run's old field name beats the default."""
    project = _build_project(tmp_path / "p.rlhf", gold=False)
    bare = ce.export_for_cluster(project, "reward_model", tmp_path / "bare", config_overrides={"max_length": 64})
    rid = project.create_run("text_reward_model", {"heldout_fraction": 0.2, "lr": 5e-4, "epochs": 1},
                             status="completed")
    from_run = ce.export_for_cluster(project, "reward_model", tmp_path / "run", run_id=rid)
    project.close()
    bare_config = json.loads((bare / "config.json").read_text())
    assert bare_config["workbench"]["not_translated"] == []  # heldout_fraction, score_responses: defaults only
    defaults = json.loads(json.dumps(ce.workbench_defaults("reward_model"), default=str))
    assert bare_config["workbench"]["config"] == defaults  # the settings still show the defaults
    assert bare_config["trainer_args"]["max_length"] == 64 and bare_config["trainer_args"]["learning_rate"] == 1e-5
    run_config = json.loads((from_run / "config.json").read_text())
    assert run_config["workbench"]["not_translated"] == ["heldout_fraction"]
    assert run_config["workbench"]["config"] == {**defaults, "heldout_fraction": 0.2, "learning_rate": 5e-4,
                                                 "epochs": 1}
    assert run_config["trainer_args"]["learning_rate"] == 5e-4 and run_config["trainer_args"]["num_train_epochs"] == 1.0


def test_exported_scripts_are_the_template_files(tmp_path):
    """train.py and launch.sh are real files of the package's template/ folder (not a package: never
    imported), copied byte for byte and executable; train.py is valid Python."""
    template = Path(ce.__file__).parent / "template"
    assert sorted(p.name for p in template.iterdir() if p.is_file()) == sorted(ce.TEMPLATE_FILES)
    assert not (template / "__init__.py").exists()
    project = _build_project(tmp_path / "p.rlhf", gold=False)
    out = ce.export_for_cluster(project, "dpo", tmp_path / "out")
    project.close()
    for name in ce.TEMPLATE_FILES:
        assert (out / name).read_bytes() == (template / name).read_bytes() == ce.template_bytes(name), name
        assert os.access(out / name, os.X_OK), name
    compile((template / "train.py").read_text(encoding="utf-8"), str(template / "train.py"), "exec")
    assert _script_namespace()["RESULT_FILE"] == ce.RESULT_FILE  # the file import_checkpoint reads
    with pytest.raises(ValueError, match="no template 'README.md'"):
        ce.template_bytes("README.md")


def test_no_function_of_the_package_hides_a_module_it_imports():
    """A local name equal to a module imported at the top (a dict called ``kinds`` hid rlhf_core.kinds in
    import_checkpoint) makes that module unreachable in the function and misleads a reader."""
    import ast
    import importlib
    import types

    offenders, imported = [], {}
    for path in sorted(Path(ce.__file__).parent.glob("*.py")):
        tree = ast.parse(path.read_text())
        modules = imported[path.name] = set()
        for node in tree.body:
            if isinstance(node, ast.Import):
                modules |= {(a.asname or a.name).split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                parent = importlib.import_module(node.module)
                modules |= {a.asname or a.name for a in node.names
                            if isinstance(getattr(parent, a.name, None), types.ModuleType)}
        for function in ast.walk(tree):
            if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                for node in ast.walk(function):
                    name = node.id if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store) else (
                        node.arg if isinstance(node, ast.arg) else None)
                    if name in modules:
                        offenders.append(f"{path.name}:{node.lineno} {name}")
    assert "kinds" in imported["common.py"]  # the check sees ``from rlhf_core import kinds``
    assert not offenders, offenders


def test_export_uses_a_run_config_and_the_task_set(tmp_path):
    from rlhf_core.text.tasks import task_messages

    project = _build_project(tmp_path / "p.rlhf", gold=False)
    rid = project.create_run("grpo", {"seed": 3, "steps": 7, "group_size": 2, "prompts_per_step": 2,
                                      "task_level": 2, "train_tasks": 16, "heldout_tasks": 4}, status="completed")
    out = ce.export_for_cluster(project, "grpo", tmp_path / "out", run_id=rid)
    config = json.loads((out / "config.json").read_text())
    assert config["workbench"]["run"]["id"] == rid and config["trainer_args"]["max_steps"] == 7
    assert config["trainer_args"]["seed"] == 3 and config["trainer_args"]["per_device_train_batch_size"] == 4
    # the default model: the hub id of the original weights, with a note
    assert config["model"] == ce.HUB_DEFAULT_MODEL and "--include-model" in config["model_info"]["note"]
    from rlhf_core.text.tasks import task_split

    train, held = task_split(level=2, n_train=16, n_heldout=4, seed=3)  # what the workbench's job trains on
    rows, held_rows = _rows(out / "data" / "train.jsonl"), _rows(out / "data" / "heldout.jsonl")
    assert [(r["prompt"][-1]["content"], r["gold_answer"]) for r in rows] == [(t.prompt, t.gold_answer) for t in train]
    assert [r["gold_answer"] for r in held_rows] == [t.gold_answer for t in held]
    assert config["data"]["origin"].startswith("generated arithmetic tasks") and config["data"]["heldout_rows"] == 4
    # project prompts: the GRPO job's held-out split (seeded shuffle, heldout_fraction) is kept
    from rlhf_core.text.gold_eval import project_prompts

    for text, answer in GOLD * 3:
        project.add_prompt(text + " (again)", gold_answer=answer)
    out2 = ce.export_for_cluster(project, "grpo", tmp_path / "out2", config_overrides={
        "prompt_source": "project", "heldout_fraction": 0.34, "seed": 5, "few_shot": False})
    job_train, job_held = project_prompts(project, need_gold=True, heldout_fraction=0.34, seed=5)
    assert [r["prompt"] for r in _rows(out2 / "data" / "train.jsonl")] == \
        [task_messages(p.text, False) for p in job_train]
    assert [r["prompt_id"] for r in _rows(out2 / "data" / "heldout.jsonl")] == [p.meta["prompt_id"] for p in job_held]
    assert len(job_held) == 2

    with pytest.raises(ce.ClusterExportError, match="is a grpo run, not a dpo run"):
        ce.export_for_cluster(project, "dpo", tmp_path / "wrong", run_id=rid)
    # re-exporting into an earlier export replaces it; a foreign non-empty folder is refused
    again = ce.export_for_cluster(project, "dpo", out)
    assert json.loads((again / "config.json").read_text())["algo"] == "dpo" and not list(tmp_path.glob(".out.*"))
    (out / "output").mkdir()  # a trained model there is never deleted by a new export
    with pytest.raises(ce.ClusterExportError, match="holds a trained model"):
        ce.export_for_cluster(project, "dpo", out)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ce.ClusterExportError, match="not empty"):
        ce.export_for_cluster(project, "dpo", tmp_path / "other")
    empty = Project.create(tmp_path / "empty.rlhf")
    with pytest.raises(ce.ClusterExportError, match="no text comparisons"):
        ce.export_for_cluster(empty, "dpo", tmp_path / "nothing")
    assert not (tmp_path / "nothing").exists()
    empty.close()
    project.close()


def test_import_errors_leave_the_project_unchanged(tmp_path, tiny_model):
    import shutil

    project_dir = tmp_path / "p.rlhf"
    Project.create(project_dir).close()
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    data = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[: len(data) // 2])
    not_a_model = tmp_path / "notes"
    not_a_model.mkdir()
    (not_a_model / "readme.txt").write_text("hello")
    cases = [(tmp_path / "missing", "policy", ModelNotFoundError, "does not exist"),
             (not_a_model, "policy", ModelNotFoundError, "no config.json"),
             (not_a_model, "reward_model", ModelNotFoundError, "no config.json"),
             (broken, "policy", CorruptModelError, "damaged"),
             (tiny_model, "reward_model", CorruptModelError, "not a reward model"),
             (tiny_model, "value_model", ce.ClusterExportError, "policy or reward_model")]
    before = _project_state(project_dir)
    with Project.open(project_dir) as project:
        for folder, kind, error, message in cases:
            with pytest.raises(error, match=message):
                ce.import_checkpoint(project, folder, kind=kind)
        with pytest.raises(ce.ClusterExportError, match="no run 99"):
            ce.import_checkpoint(project, tiny_model, kind="policy", run_id=99)
        # the database refuses the checkpoint row after the run row and the copy: all of it is undone
        project.conn.execute("CREATE TEMP TRIGGER refuse BEFORE INSERT ON checkpoints "
                             "BEGIN SELECT RAISE(ABORT, 'disk says no'); END")
        with pytest.raises(Exception, match="disk says no"):
            ce.import_checkpoint(project, tiny_model, kind="policy")
        project.conn.execute("DROP TRIGGER refuse")
    assert _project_state(project_dir) == before
    # a reward-model folder is not a policy
    rm = tmp_path / "rm"
    from rlhf_core.text.reward_model import load_base_reward_model, save_text_reward_model

    model, _, _ = load_base_reward_model(str(tiny_model), max_length=64)
    save_text_reward_model(model, rm)
    with Project.open(project_dir) as project:
        with pytest.raises(NotACausalLMError):
            ce.import_checkpoint(project, rm, kind="policy")
    assert _project_state(project_dir) == before


def test_cli_export_and_import(tmp_path, tiny_model, capsys):
    project = _build_project(tmp_path / "p.rlhf")
    rid = project.create_run("text_reward_model", {"epochs": 1}, status="completed")
    project.close()
    out = tmp_path / "export"
    code = cli_main(["export-cluster", "--project", str(tmp_path / "p.rlhf"), "--algo", "dpo", "--out", str(out),
                     "--model", str(tiny_model), "--set", "beta=0.2", "--set", "loss_type=ipo"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["rows"] == 3 and summary["trainer_args"]["beta"] == 0.2
    assert summary["trainer_args"]["loss_type"] == ["ipo"] and "train.py" in summary["files"]
    code = cli_main(["import-checkpoint", "--project", str(tmp_path / "p.rlhf"), "--kind", "policy",
                     "--run", str(rid), "--name", "tiny", str(tiny_model)])
    assert code == 0
    imported = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert imported["run_id"] == rid and imported["kind"] == "text_policy" and imported["step"] is None
    assert (tmp_path / "p.rlhf" / imported["path"] / "model.safetensors").is_file()
    code = cli_main(["import-checkpoint", "--project", str(tmp_path / "p.rlhf"), "--kind", "policy", str(out)])
    assert code == 2 and "is a cluster export" in capsys.readouterr().err


def test_a_reward_model_export_may_start_from_a_workbench_reward_model(tmp_path, tiny_model):
    from rlhf_core.text.reward_model import load_base_reward_model, save_text_reward_model

    model, _, _ = load_base_reward_model(str(tiny_model), max_length=64)
    rm = save_text_reward_model(model, tmp_path / "rm")
    project = _build_project(tmp_path / "p.rlhf")
    try:
        out = ce.export_for_cluster(project, "reward_model", tmp_path / "export", model=str(rm), include_model=True)
        assert json.loads((out / "config.json").read_text())["model"] == "model"
        copied = json.loads((out / "model" / "config.json").read_text())
        assert copied["architectures"] == ["LlamaForSequenceClassification"]
        assert (out / "model" / "model.safetensors").read_bytes() == (rm / "model.safetensors").read_bytes()
        with pytest.raises(NotACausalLMError):  # a policy algorithm still needs a causal LM
            ce.export_for_cluster(project, "dpo", tmp_path / "export-dpo", model=str(rm))
        assert not (tmp_path / "export-dpo").exists()
    finally:
        project.close()
