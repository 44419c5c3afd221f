"""The text reward model: a tiny Llama (real SmolLM2 tokenizer) + scalar head, trained with Bradley-Terry."""

from __future__ import annotations

import math
import random

import pytest
import torch
import torch.nn.functional as F

from rlhf_core import config as cfg
from rlhf_core.jobs import RecordingContext, execute_job, get_job
from rlhf_core.text.pairs import TextPair
from rlhf_core.text.reward_model import format_pair_text, load_base_reward_model, load_text_reward_model, score_responses
from rlhf_core.trainers.text.reward_model import TextRewardModelConfig, evaluate_reward_pairs, pair_loss
from tests.conftest import ANSWERS, MARKER, QUESTIONS, add_marker_pairs, needs_model

pytestmark = needs_model



def _marker_project(project, n_pairs=12, seed=0):
    """``n_pairs`` comparisons; the preferred response always contains the marker word."""
    pids = add_marker_pairs(project, n_pairs, seed)
    # left out: a pair across two prompts, a skip and a both_bad label
    x = project.add_item("response", prompt_id=pids[0], text="x", model_id="m")
    y = project.add_item("response", prompt_id=pids[1], text="y", model_id="m")
    z = project.add_item("response", prompt_id=pids[0], text="z", model_id="m")
    project.add_comparison(x, y, "left", source="synthetic")
    project.add_comparison(x, z, "skip", source="synthetic")
    project.add_comparison(x, z, "both_bad", source="synthetic")


def test_loss_is_minus_log_sigmoid_of_the_score_gap_and_ties_are_half(tiny_model):
    model, tok, _ = load_base_reward_model(str(tiny_model), max_length=64, seed=3)
    model.eval()
    batch = [TextPair("Say hello.", "Hello!", "Go away.", 1.0),
             TextPair("Name a fruit.", "A rock.", "An apple.", 0.0),
             TextPair("What is 2+2?", "4", "Four.", 0.5)]
    with torch.no_grad():
        loss, left, right, mean_len = pair_loss(model, batch, tok)
        s_left = score_responses(model, tok, [p.prompt for p in batch], [p.left for p in batch], batch_size=2)
        s_right = score_responses(model, tok, [p.prompt for p in batch], [p.right for p in batch], batch_size=1)
    # the padded batch scores each text as it scores alone (last non-padding token, right padding)
    torch.testing.assert_close(left, s_left, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(right, s_right, rtol=1e-4, atol=1e-5)
    assert float((s_left - s_right).abs().min()) > 1e-4  # the scores actually differ
    by_hand = torch.stack([
        -F.logsigmoid(s_left[0] - s_right[0]),  # left preferred
        -F.logsigmoid(s_right[1] - s_left[1]),  # right preferred
        -0.5 * F.logsigmoid(s_left[2] - s_right[2]) - 0.5 * F.logsigmoid(s_right[2] - s_left[2]),  # tie
    ]).mean()
    torch.testing.assert_close(loss, by_hand, rtol=1e-4, atol=1e-5)
    assert mean_len > 10
    # the input is the model's chat template with both turns
    text = format_pair_text(tok, "Say hello.", "Hello!")
    assert "Say hello." in text and "Hello!" in text and text.index("Say hello.") < text.index("Hello!")


def test_training_learns_the_marker_and_the_folder_reloads(project, tiny_model):
    _marker_project(project)
    config = cfg.from_dict(TextRewardModelConfig, dict(model=str(tiny_model), epochs=6, batch_size=4, learning_rate=3e-3,
                                                       max_length=96, heldout_fraction=0.0, seed=0))
    # the untrained model (same seed, same head) on the same pairs
    from rlhf_core.text.pairs import text_pairs

    pairs = text_pairs(project)
    assert len(pairs) == 12 and {p.target for p in pairs} == {0.0, 1.0}
    base, base_tok, _ = load_base_reward_model(str(tiny_model), max_length=96, seed=0)
    before_loss, _ = evaluate_reward_pairs(base, pairs, base_tok)

    ctx = RecordingContext()
    out = execute_job(get_job("text_reward_model"), config, ctx, project_path=project.folder)
    assert out.status == "completed", out.error
    res = out.result
    assert res["pairs"] == 12 and res["heldout_pairs"] == 0 and res["steps"] == 18
    assert res["train_accuracy"] >= 0.9, res
    assert res["train_loss"] < before_loss - 0.2 and res["train_loss"] < math.log(2), (before_loss, res)
    _, losses = ctx.series("reward_model/loss")
    assert len(losses) == 18 and len(ctx.series("reward_model/mean_length")[1]) == 18
    assert ctx.progress_log[-1][0] == pytest.approx(1.0)

    ckpts = project.checkpoints(out.run_id)
    assert [c["kind"] for c in ckpts] == ["text_reward_model"]
    loaded, tok = load_text_reward_model(res["path"])
    prompts = [p.prompt for p in pairs]
    responses = [p.left for p in pairs] + [p.right for p in pairs]
    got = score_responses(loaded, tok, prompts * 2, responses)
    again, tok2 = load_text_reward_model(res["path"])
    torch.testing.assert_close(got, score_responses(again, tok2, prompts * 2, responses))
    marked = torch.tensor([MARKER in r for r in responses])
    assert float(got[marked].mean()) > float(got[~marked].mean())
    # every project response is scored for the reward-vs-length plot, with the same scores
    [sample] = project.samples(out.run_id, "response_scores")
    scores = sample["payload"]["scores"]
    n_responses = project.counts()["responses"]
    assert len(scores) == n_responses == res["scored_responses"]
    by_id = {s["item_id"]: s for s in scores}
    item = project.get_item(scores[0]["item_id"])
    prompt = project.conn.execute("SELECT text FROM prompts WHERE id=?", [item["prompt_id"]]).fetchone()[0]
    assert by_id[item["id"]]["reward"] == pytest.approx(float(score_responses(loaded, tok, [prompt], [item["text"]])[0]),
                                                        abs=1e-4)
    from rlhf_core.analysis.length_bias import pearson

    r = pearson([s["tokens"] for s in scores], [s["reward"] for s in scores])
    assert res["length_correlation"] == pytest.approx(r, abs=1e-4)

    # with pairs held out: the held-out accuracy is logged after every epoch and returned
    held_ctx = RecordingContext()
    held = execute_job(get_job("text_reward_model"), cfg.replace(config, heldout_fraction=0.25, epochs=2), held_ctx,
                       project_path=project.folder)
    assert held.status == "completed", held.error
    assert held.result["heldout_pairs"] == 3 and held.result["train_pairs"] == 9
    assert len(held_ctx.series("reward_model/heldout_accuracy")[1]) == 2
    assert 0.0 <= held.result["heldout_accuracy"] <= 1.0


def test_reloaded_scores_equal_the_saved_models(tmp_path, tiny_model):
    from rlhf_core.text.reward_model import save_text_reward_model

    model, tok, _ = load_base_reward_model(str(tiny_model), max_length=64, seed=1)
    with torch.no_grad():
        model.head.weight.mul_(2.0)
    model.eval()
    prompts, responses = ["Say hello.", "Name a fruit."], ["Hello!", "An apple, of course."]
    expected = score_responses(model, tok, prompts, responses)
    folder = save_text_reward_model(model, tmp_path / "rm", meta={"base_model": "tiny"})
    assert (folder / "model.safetensors").is_file() and not (folder / "reward_head.safetensors").exists()
    assert not list(folder.glob("*.bin"))
    loaded, tok2 = load_text_reward_model(folder)
    assert loaded.max_length == 64
    torch.testing.assert_close(score_responses(loaded, tok2, prompts, responses), expected)


def test_no_usable_text_comparisons_fails_with_a_clear_message(project, tiny_model):
    pid = project.add_prompt("Say hello.")
    a = project.add_item("response", prompt_id=pid, text="Hi", model_id="m")
    b = project.add_item("response", prompt_id=pid, text="Hello", model_id="m")
    project.add_comparison(a, b, "skip")
    config = cfg.from_dict(TextRewardModelConfig, dict(model=str(tiny_model)))
    out = execute_job(get_job("text_reward_model"), config, RecordingContext(), project_path=project.folder)
    assert out.status == "failed"
    assert "ValueError: No usable text comparisons" in out.error
    assert project.get_run(out.run_id)["status"] == "failed"


def test_cancel_stops_within_a_few_batches_and_saves_nothing(project, tiny_model):
    _marker_project(project)
    config = cfg.from_dict(TextRewardModelConfig, dict(model=str(tiny_model), epochs=3, batch_size=2,
                                                       max_length=64, heldout_fraction=0.0))
    ctx = RecordingContext(cancel_after_metrics=2)
    out = execute_job(get_job("text_reward_model"), config, ctx, project_path=project.folder)
    assert out.status == "cancelled"
    assert len(ctx.series("reward_model/loss")[1]) == 2  # checked before every batch
    assert project.checkpoints(out.run_id) == []


def test_length_groups_are_the_cheapest_padding_and_grouped_scores_equal_one_padded_batch(tiny_model):
    import itertools

    from rlhf_core.text.reward_model import length_groups

    def cost(groups, lengths, per_token, overhead):
        return sum(len(g) * max(lengths[i] for i in g) * per_token + overhead for g in groups)

    rng = random.Random(0)
    for _ in range(30):
        lengths = [rng.randint(1, 60) for _ in range(rng.randint(1, 7))]
        per_token, overhead = 1.0, rng.choice([0.0, 5.0, 40.0, 1e9])
        groups = length_groups(lengths, per_token, overhead)
        assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
        ordered = sorted(range(len(lengths)), key=lambda i: lengths[i])
        brute = min(cost([ordered[a:b] for a, b in zip((0,) + cuts, cuts + (len(lengths),))], lengths,
                         per_token, overhead)
                    for k in range(len(lengths)) for cuts in itertools.combinations(range(1, len(lengths)), k))
        assert cost(groups, lengths, per_token, overhead) == pytest.approx(brute)
    assert length_groups([10, 50, 11, 49], 1.0, 0.0) == [[0], [2], [3], [1]]
    assert length_groups([10, 50, 11, 49], 1.0, 1e9) == [[0, 2, 3, 1]]

    model, tok, _ = load_base_reward_model(str(tiny_model), max_length=64, seed=2)
    model.eval()
    assert model.group_overhead_flops / model.flops_per_token > 1000  # a tiny model never splits a batch
    texts = [format_pair_text(tok, q, a) for q, a in zip(QUESTIONS * 2, ANSWERS + ["Yes.", "A much longer "
                                                                                   "answer than the others."])]
    with torch.no_grad():
        enc = model.encode(texts, tok)
        padded = model(enc["input_ids"], enc["attention_mask"])
        model.group_overhead_flops = 0.0  # every distinct length on its own
        grouped = model.score(texts, tok)
    assert len(set(enc["attention_mask"].sum(dim=1).tolist())) >= 4
    torch.testing.assert_close(grouped, padded, rtol=1e-5, atol=1e-6)


def test_gradient_checkpointing_changes_no_loss(project, tiny_model):
    _marker_project(project, n_pairs=6)
    base = dict(model=str(tiny_model), epochs=1, batch_size=3, learning_rate=3e-3, max_length=64, heldout_fraction=0.0)
    series = []
    for checkpointing in (False, True):
        ctx = RecordingContext()
        config = cfg.from_dict(TextRewardModelConfig, dict(base, gradient_checkpointing=checkpointing))
        out = execute_job(get_job("text_reward_model"), config, ctx, project_path=project.folder)
        assert out.status == "completed", out.error
        series.append(ctx.series("reward_model/loss")[1])
    assert len(series[0]) == 2
    assert series[0] == pytest.approx(series[1], rel=1e-5)
    from rlhf_core.trainers.text.reward_model import set_gradient_checkpointing

    model, _, _ = load_base_reward_model(str(tiny_model), max_length=64)
    layers = model.backbone.layers
    set_gradient_checkpointing(model, True)
    assert len(layers) == 2 and all(layer.gradient_checkpointing for layer in layers)
    set_gradient_checkpointing(model, False)
    assert not any(layer.gradient_checkpointing for layer in layers)
