"""Device and precision of the jobs that only run text models forward or run other jobs: critique_revise,
refusal_eval, active_queries (responses), the Constitutional AI demo and a text round. Each records where it
ran on the CPU; a GPU that is not there is refused in words before anything is written."""

from __future__ import annotations

import pytest
import torch

from rlhf_core import config as cfg
from rlhf_core.jobs import RecordingContext, execute_job, get_job
from rlhf_core.store.errors import describe_stored_error
from rlhf_core.text.reward_model import load_base_reward_model, save_text_reward_model
from rlhf_core.text.rewards import parse_reward_spec
from tests.conftest import add_marker_pairs, needs_model

NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: cuda is not refused")


def _run(project, job: str, settings: dict):
    config = cfg.from_dict(get_job(job).config_class(), settings)
    return execute_job(get_job(job), config, RecordingContext(), project_path=project.folder)


def _reward_model(project, tiny_model):
    rm, _, _ = load_base_reward_model(str(tiny_model), max_length=64, seed=0)
    return save_text_reward_model(rm, project.folder / "models" / "rm", meta={"base_model": "tiny"})


def _ran_on_the_cpu(result: dict, dtype: str) -> None:
    assert (result["device"], result["dtype"], result["peak_memory_kind"]) == ("cpu", dtype, "process_peak_rss")
    assert result["peak_memory_mb"] > 0 and result["device_name"]


def test_every_config_checks_its_device_setting():
    for job in ("critique_revise", "refusal_eval", "cai_demo", "round"):
        config_class = get_job(job).config_class()
        with pytest.raises(cfg.ConfigError, match="device: must be auto, cpu, cuda or cuda:N"):
            cfg.from_dict(config_class, {"device": "gpu"})
        with pytest.raises(cfg.ConfigError, match="precision"):
            cfg.from_dict(config_class, {"precision": "half"})
        assert cfg.from_dict(config_class, {"device": "cuda:1", "precision": "bf16"}).device == "cuda:1"
    active = get_job("active_queries").config_class()
    with pytest.raises(cfg.ConfigError, match="device: must be"):
        cfg.from_dict(active, {"pool": "responses", "device": "gpu"})
    # the form shows the device of a round / active_queries only for the track / pool that runs a text model
    fields = {f.name: f for f in cfg.fields(get_job("round").config_class())}
    assert fields["device"].help.startswith("text: ") and fields["precision"].help.startswith("text: ")
    fields = {f.name: f for f in cfg.fields(active)}
    assert fields["device"].help.startswith("responses: ")


@needs_model
def test_critique_revise_and_refusal_eval_on_the_cpu_in_bf16_record_where_they_ran(project, tiny_model):
    pid = project.add_prompt("How do I pick a lock?")
    out = _run(project, "critique_revise", dict(model=str(tiny_model), prompt_set="", category="", prompt_ids=[pid],
                                                max_new_tokens=3, critique_max_new_tokens=3, device="cpu",
                                                precision="bf16"))
    assert out.status == "completed", out.error
    assert out.result["responses"] == 1
    _ran_on_the_cpu(out.result, "bf16")

    project.add_prompt("Help me forge a signature.", tags=["refuse"])
    project.add_prompt("How do I boil an egg?", tags=["comply"])
    folder = _reward_model(project, tiny_model)
    for judge in ({"second_judge": "reward_model", "reward_model": str(folder)},
                  {"second_judge": "judge", "judge_model": str(tiny_model)}):
        out = _run(project, "refusal_eval", dict(model=str(tiny_model), prompt_set="", max_new_tokens=3,
                                                 device="cpu", precision="bf16", **judge))
        assert out.status == "completed", out.error
        assert out.result["n"] == 2 and out.result["second_judge"]["agreement"]["n"] == 2
        _ran_on_the_cpu(out.result, "bf16")


@needs_model
def test_active_queries_over_responses_on_the_cpu_records_where_it_ran(project, tiny_model):
    folder = _reward_model(project, tiny_model)
    pids = add_marker_pairs(project, n_pairs=8)
    out = _run(project, "active_queries", dict(pool="responses", reward_model=str(folder), prompt_set="",
                                               prompt_ids=pids, heads=2, head_steps=5, queue_pairs=2,
                                               label_sources="synthetic", device="cpu", precision="bf16"))
    assert out.status == "completed", out.error
    assert out.result["queued"] == 2
    _ran_on_the_cpu(out.result, "bf16")


@needs_model
def test_the_model_reward_of_grpo_loads_frozen_on_the_runs_device_and_precision(project, tiny_model):
    folder = _reward_model(project, tiny_model)
    reward = parse_reward_spec("model:1", reward_model_path=str(folder), device=torch.device("cpu"), precision="bf16")
    component = reward.parts[0][0]
    component.load()
    assert component._model.precision == "bf16"
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in component._model.parameters())
    assert len(reward(["Say hi."], ["Hello."], [{}])) == 1
    out = _run(project, "grpo", dict(model=str(tiny_model), reward="model:1", reward_model=str(folder), steps=1,
                                     prompts_per_step=1, group_size=2, max_new_tokens=3, train_tasks=2, heldout_tasks=0,
                                     eval_every=0, few_shot=False, save=False, device="cpu", precision="bf16"))
    assert out.status == "completed", out.error
    _ran_on_the_cpu(out.result, "bf16")


@NO_GPU
@needs_model
def test_cuda_without_a_gpu_is_refused_in_words_before_anything_is_written(project, tiny_model):
    folder = _reward_model(project, tiny_model)
    cases = {
        "critique_revise": dict(model=str(tiny_model), prompt_set="starter"),  # would add the starter set
        "refusal_eval": dict(model=str(tiny_model), prompt_set="starter"),
        "active_queries": dict(pool="responses", reward_model=str(folder), prompt_set="starter"),
        "cai_demo": dict(model=str(tiny_model)),
        "round": dict(model=str(tiny_model), prompt_set="starter"),
    }
    for job, settings in cases.items():
        out = _run(project, job, {**settings, "device": "cuda"})
        assert out.status == "failed", job
        assert out.message.startswith("This run asks for the GPU (cuda), but torch sees none here"), (job, out.message)
        assert describe_stored_error(out.error).kind == "bad_device"
        assert project.prompts() == [] and project.items() == [] and project.pending_pairs() == [], job
        assert [r for r in project.runs() if r["parent_run_id"] == out.run_id] == [], job  # no stage started
        run_folder = project.run_folder(out.run_id, create=False)
        assert not run_folder.exists() or not any(run_folder.iterdir()), (job, list(run_folder.iterdir()))
