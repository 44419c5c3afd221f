"""Your own models: tiny GPT-2 and Qwen2 folders (real SmolLM2 tokenizer) generate, train by SFT, DPO, GRPO,
PPO, LoRA and as a reward model's backbone, each with its own chat template; the LoRA auto rule."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rlhf_core import config as cfg
from rlhf_core.jobs import RecordingContext, execute_job, get_job
from rlhf_core.text.generation import SamplingSettings, generate_batch
from rlhf_core.text.lora import (AUTO, AUTO_LORA_MIN_PARAMS, AUTO_LORA_RANK, auto_lora_rank, choose_lora,
                                 lora_target_modules, resolve_lora_rank)
from rlhf_core.text.model import load_model, load_tokenizer, make_tiny_model
from rlhf_core.text.prompts import PromptTemplate
from rlhf_core.text.rl_common import render_chat_prompt
from tests.conftest import add_marker_pairs

FAMILIES = ("gpt2", "qwen2")
LLAMA_LIKE = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def family_models(converted_model, tmp_path_factory) -> dict[str, Path]:
    """A tiny GPT-2 and a tiny Qwen2 folder, and a random-head reward model on each (GRPO's reward)."""
    from rlhf_core.text.reward_model import load_base_reward_model, save_text_reward_model

    root = tmp_path_factory.mktemp("families")
    tok = load_tokenizer(converted_model)
    out: dict[str, Path] = {}
    for family in FAMILIES:
        out[family] = make_tiny_model(root / f"tiny-{family}", tokenizer=tok, family=family)
        rm, _, _ = load_base_reward_model(str(out[family]), max_length=64, seed=0)
        out[f"{family}-rm"] = save_text_reward_model(rm, root / f"rm-{family}", meta={"base_model": "tiny"})
    return out


def _weights(folder) -> dict[str, torch.Tensor]:
    return load_file(str(Path(folder) / "model.safetensors"))


def _assert_trained_and_reloads(start: Path, saved: str | Path) -> None:
    """The saved folder has the start's tensors (no adapter leftovers), some changed, and it generates."""
    before, after = _weights(start), _weights(saved)
    assert set(after) == set(before)
    assert any(not torch.equal(before[k], after[k].to(before[k].dtype)) for k in before)
    lm = load_model(str(saved))
    prompts = [render_chat_prompt(lm.tokenizer, q) for q in ("Name a fruit.", "Say hello.")]
    completions, _ = generate_batch(lm.model, lm.tokenizer, prompts, SamplingSettings(max_new_tokens=3), [1, 2])
    assert all(1 <= c.n_tokens + (c.finish_reason == "stop") <= 3 for c in completions)


# ------------------------------------------------------------------------------- LoRA rules
def test_auto_lora_rank_thresholds_and_the_trainers_default_to_auto():
    from rlhf_core.trainers.text.dpo import DPOConfig
    from rlhf_core.trainers.text.grpo import GRPOConfig
    from rlhf_core.trainers.text.ppo import PPOTextConfig
    from rlhf_core.trainers.text.sft import SFTConfig

    assert AUTO == -1 and AUTO_LORA_RANK == 16
    assert auto_lora_rank(134_515_008) == 0 and auto_lora_rank(AUTO_LORA_MIN_PARAMS) == 0
    assert auto_lora_rank(AUTO_LORA_MIN_PARAMS + 1) == 16 and auto_lora_rank(7_000_000_000) == 16
    assert resolve_lora_rank(-1, 1_500_000_000) == 16 and resolve_lora_rank(-1, 360_000_000) == 0
    assert resolve_lora_rank(0, 1_500_000_000) == 0 and resolve_lora_rank(4, 1_000) == 4
    for config_class, base in ((SFTConfig, {}), (DPOConfig, {}), (GRPOConfig, {}), (PPOTextConfig, {"reward": "length"})):
        assert config_class().lora_rank == AUTO
        assert cfg.from_dict(config_class, {**base, "lora_rank": 8}).lora_rank == 8
        with pytest.raises(cfg.ConfigError, match="lora_rank"):
            cfg.from_dict(config_class, {**base, "lora_rank": -2})


def test_lora_targets_follow_the_family_and_never_the_output_head():
    from transformers import (GPT2Config, GPT2LMHeadModel, GPTNeoConfig, GPTNeoForCausalLM, Qwen2Config,
                              Qwen2ForCausalLM)

    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=16, n_layer=1, n_head=2, n_positions=32))
    qwen = Qwen2ForCausalLM(Qwen2Config(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=1))
    neo = GPTNeoForCausalLM(GPTNeoConfig(vocab_size=64, hidden_size=16, num_layers=1, num_heads=2,
                                         attention_types=[[["global"], 1]], max_position_embeddings=32))
    assert lora_target_modules(gpt2) == ["c_attn", "c_proj", "c_fc"]
    assert lora_target_modules(qwen) == LLAMA_LIKE
    # a family with no entry: every Linear layer of its blocks (GPT-Neo's lm_head is left out)
    assert lora_target_modules(neo) == ["c_fc", "c_proj", "k_proj", "out_proj", "q_proj", "v_proj"]
    choice = choose_lora(gpt2, 4)
    assert (choice.rank, choice.alpha, choice.enabled) == (4, 8, True)
    assert choose_lora(gpt2, AUTO).as_result() == {"lora": False, "lora_rank": 0}  # a tiny model: full fine-tune


# ------------------------------------------------------------------------------- chat templates
def test_each_model_is_prompted_with_its_own_chat_template_or_plain_text(family_models, tiny_model):
    from rlhf_core.text.reward_model import format_pair_text

    qwen = load_tokenizer(family_models["qwen2"])
    rendered = render_chat_prompt(qwen, "Name a fruit.")
    assert rendered == ("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
                        "<|im_end|>\n<|im_start|>user\nName a fruit.<|im_end|>\n<|im_start|>assistant\n")
    assert PromptTemplate().render(qwen, "Name a fruit.") == rendered
    assert render_chat_prompt(qwen, "Hi", system="Be brief.").startswith("<|im_start|>system\nBe brief.<|im_end|>")
    assert format_pair_text(qwen, "Hi", "Hello!").endswith("<|im_start|>assistant\nHello!<|im_end|>\n")
    smol = render_chat_prompt(load_tokenizer(tiny_model), "Name a fruit.")
    assert "SmolLM" in smol and "Qwen" not in smol  # the Llama folder keeps SmolLM2's template
    gpt2 = load_tokenizer(family_models["gpt2"])
    assert not gpt2.chat_template
    assert render_chat_prompt(gpt2, "Name a fruit.") == "Question: Name a fruit.\n\nAnswer:"
    assert PromptTemplate().render(gpt2, "Name a fruit.") == "Question: Name a fruit.\n\nAnswer:"
    assert format_pair_text(gpt2, "Name a fruit.", "An apple.") == "Question: Name a fruit.\n\nAnswer: An apple."


# ------------------------------------------------------------------------------- generate and train
@pytest.mark.parametrize("family", FAMILIES)
def test_a_family_generates_and_trains_by_sft_dpo_grpo_and_ppo(project, family_models, family):
    from rlhf_core.sources.generate import GenerateConfig
    from rlhf_core.trainers.text.dpo import DPOConfig
    from rlhf_core.trainers.text.grpo import GRPOConfig
    from rlhf_core.trainers.text.ppo import PPOTextConfig
    from rlhf_core.trainers.text.sft import SFTConfig

    folder = family_models[family]
    pids = add_marker_pairs(project, n_pairs=4)
    for pid, text in zip(pids, ("It copies an expert.", "A learned score.")):
        project.add_item("response", prompt_id=pid, text=text, source="demonstration", model_id=None)

    gen = execute_job(get_job("generate"), cfg.from_dict(GenerateConfig, dict(
        model=str(folder), prompt_set="", prompt_ids=pids[:2], samples_per_prompt=2, max_new_tokens=4)),
        RecordingContext(), project_path=project.folder)
    assert gen.status == "completed", gen.error
    generated = [i for i in project.items("response") if i["run_id"] == gen.run_id]
    assert len(generated) == 4 == gen.result["responses"]
    assert all(i["model_id"] == str(folder) and 0 <= i["length"] <= 4 for i in generated)

    jobs = {
        "sft": cfg.from_dict(SFTConfig, dict(model=str(folder), data="demonstrations", steps=1, batch_size=2,
                                             learning_rate=1e-2, heldout_fraction=0.0)),
        "dpo": cfg.from_dict(DPOConfig, dict(model=str(folder), label_sources="synthetic", steps=1, batch_size=4,
                                             learning_rate=1e-2, heldout_fraction=0.0, max_length=64)),
        "grpo": cfg.from_dict(GRPOConfig, dict(
            model=str(folder), steps=1, prompts_per_step=2, group_size=2, max_new_tokens=4, train_tasks=4,
            heldout_tasks=0, eval_every=0, few_shot=False, learning_rate=1e-2, reward="model:1.0",
            reward_model=str(family_models[f"{family}-rm"]))),
        "ppo_text": cfg.from_dict(PPOTextConfig, dict(
            model=str(folder), reward_model=str(family_models[f"{family}-rm"]), prompt_set="", prompt_ids=pids[:2],
            steps=1, batch_size=2, minibatch_size=2, ppo_epochs=1, max_new_tokens=3, save=True)),
    }
    for name, config in jobs.items():
        out = execute_job(get_job(name), config, RecordingContext(), project_path=project.folder)
        assert out.status == "completed", (name, out.error)
        assert out.result["steps"] == 1 and out.result["lora"] is False and out.result["lora_rank"] == 0, name
        _assert_trained_and_reloads(folder, out.result["path"])


def test_lora_on_gpt2_trains_one_step_and_saves_the_merged_model(project, family_models):
    from rlhf_core.trainers.text.sft import SFTConfig

    folder = family_models["gpt2"]
    pid = project.add_prompt("Say hello.")
    project.add_item("response", prompt_id=pid, text="Hello there friend.", source="demonstration", model_id=None)
    config = cfg.from_dict(SFTConfig, dict(model=str(folder), data="demonstrations", steps=1, batch_size=1,
                                           learning_rate=5e-2, heldout_fraction=0.0, lora_rank=4))
    out = execute_job(get_job("sft"), config, RecordingContext(), project_path=project.folder)
    assert out.status == "completed", out.error
    assert out.result["lora"] is True and out.result["lora_rank"] == 4
    saved = Path(out.result["path"])
    assert not (saved / "adapter_config.json").exists() and not any("lora" in k for k in _weights(saved))
    before, after = _weights(folder), _weights(saved)
    changed = {k.split(".")[-2] for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"c_attn", "c_proj", "c_fc"}  # only the adapted layers, merged in
    _assert_trained_and_reloads(folder, saved)


# ------------------------------------------------------------------------------- reward model
@pytest.mark.parametrize("family", FAMILIES)
def test_a_text_reward_model_on_the_family_trains_and_scores(project, family_models, family):
    from rlhf_core.text.reward_model import load_text_reward_model, score_responses
    from rlhf_core.trainers.text.reward_model import TextRewardModelConfig

    add_marker_pairs(project, n_pairs=4)
    config = cfg.from_dict(TextRewardModelConfig, dict(model=str(family_models[family]), epochs=1, batch_size=4,
                                                       learning_rate=1e-3, max_length=64, heldout_fraction=0.0))
    out = execute_job(get_job("text_reward_model"), config, RecordingContext(), project_path=project.folder)
    assert out.status == "completed", out.error
    assert out.result["steps"] == 1 and math.isfinite(out.result["train_loss"])
    model, tok = load_text_reward_model(out.result["path"])
    assert type(model.backbone).__name__ == {"gpt2": "GPT2Model", "qwen2": "Qwen2Model"}[family]
    scores = score_responses(model, tok, ["Say hello."] * 2, ["Hello there friend.", "Go away."])
    assert scores.shape == (2,) and bool(torch.isfinite(scores).all()) and float(scores[0]) != float(scores[1])
