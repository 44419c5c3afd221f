"""The ``active_queries`` job: queue the pairs of a pool that the current reward model is least sure about.

Pools: the live clips of one environment, or the live text responses (pairs of responses to the same
prompt; all prompts, a built-in prompt set's, or chosen ids), optionally only the items one run made.
Pairs already waiting in the queue or already labelled are left out. Among ``queue_pairs`` x
``candidate_multiplier`` random candidate pairs (every allowed pair when there are fewer) the job queues
``queue_pairs`` by the selection of :mod:`rlhf_core.rewards.query_selection`: the members' disagreement
(variance of their P(left better)), the mean P(left) nearest 0.5 ("uncertainty"), or random.

Members: for clips, those of a control reward ensemble (``reward_checkpoint_id``); for text, K linear
heads on a text reward model's frozen backbone, each fitted to its own bootstrap of the project's text
labels (:mod:`rlhf_core.rewards.text_heads`). Each queued entry's ``reason`` holds every member's
P(left better), their variance and mean: the labelling views show it as "why this pair". Which item
goes left is random (the pool is shuffled), so a labeller's side bias does not follow item order.

Responses: the text reward model runs forward only, on ``device`` under ``precision`` (:mod:`rlhf_core.devices`;
half weights on a GPU); a device that cannot be used stops the job before anything is written.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np
import torch

from rlhf_core import devices, kinds
from rlhf_core.config import param
from rlhf_core.envs.storage import clip_observations
from rlhf_core.jobs import JobContext
from rlhf_core.labelers.text_labels import responses_by_prompt
from rlhf_core.rewards.networks import RewardEnsemble
from rlhf_core.rewards.query_selection import SELECTIONS, pick, query_score, reason, select_clip_pairs
from rlhf_core.rewards.text_heads import fit_heads, head_probs, response_features
from rlhf_core.store import SOURCES
from rlhf_core.text.pairs import text_pairs
from rlhf_core.text.prompts import builtin_set_path, load_builtin_set
from rlhf_core.text.reward_model import load_text_reward_model, resolve_reward_model

POOLS = ("clips", "responses")


@dataclass
class ActiveQueriesConfig:
    FORM_SWITCH = "pool"  # the app shows the settings whose help starts "clips:" / "responses:" for that pool only
    pool: str = param("clips", "What to compare: clips of one environment, or text responses to the same prompt.",
                      choices=POOLS)
    selection: str = param("disagreement", "Which pairs: the reward model members' disagreement (variance of their "
                           "P(left better)), uncertainty (their mean P(left) nearest 0.5) or random.",
                           choices=SELECTIONS)
    queue_pairs: int = param(20, "Queue this many pairs (fewer when the pool has fewer new pairs).", min=1,
                             max=100_000)
    candidate_multiplier: int = param(10, "Candidate pairs scored per queued pair (Christiano: about 10x); every "
                                      "new pair of the pool when it has fewer.", min=1, max=1000)
    env_id: str = param("Pendulum-v1", "clips: the environment whose clips are the pool.")
    reward_checkpoint_id: int = param(0, "clips: the reward ensemble whose members vote (0: the newest reward model "
                                      "of env_id).", min=0)
    reward_model: str = param("", "responses: the text reward model whose backbone gives the features (empty: the "
                              "project's newest).")
    prompt_set: str = param("lecture", "responses: responses to the prompts of this built-in set (generate's "
                            "default); empty: only the prompt ids below.")
    prompt_ids: list = param([], "responses: responses to these prompts too.", each="id")
    heads: int = param(5, "responses: linear heads on the reward model's backbone (the ensemble's members).", min=2,
                       max=64)
    head_steps: int = param(200, "responses: at most this many L-BFGS iterations fitting the heads to their "
                            "bootstraps of the labels.", min=0, max=100_000, advanced=True)
    label_sources: str = param("human,synthetic,ai", "responses: the text labels the heads learn from "
                               "(comma-separated).", subset_of=SOURCES)
    from_run: int = param(0, "Only items this run made (0: any run's); responses with no prompt set and no prompt "
                          "ids: every prompt that run answered.", min=0)
    priority: float = param(1.0, "Queue priority of the new pairs: the labelling views show higher first (random "
                            "pairs from rollouts have 0, the online job's 10 and more).", advanced=True)
    seed: int = param(0, "Random seed (candidates, sides, bootstraps).", min=0)
    device: str = devices.for_switch(devices.device_param(), "responses: ")
    precision: str = devices.for_switch(devices.precision_param(), "responses: ")

    def check(self) -> list[str]:
        if self.pool == "responses" and devices.spec_problem(self.device):
            return [devices.spec_problem(self.device)]
        if self.pool == "responses" and self.prompt_set.strip() and not builtin_set_path(self.prompt_set.strip()).is_file():
            return [f"prompt_set: there is no built-in prompt set {self.prompt_set.strip()!r}"]
        if self.pool == "responses" and not (self.prompt_set.strip() or self.prompt_ids or self.from_run):
            return ["choose the responses: a prompt_set, some prompt_ids or the from_run that made them"]
        if self.pool == "clips" and not self.env_id.strip():
            return ["env_id: a pool of clips needs an environment"]
        return []


def queue_active_pairs(config: ActiveQueriesConfig, ctx: JobContext) -> dict:
    where = None
    if config.pool == "responses":  # DeviceError (a sentence) before anything is written
        device = devices.resolve_device(config.device)
        where = device, devices.resolve_precision(config.precision, device)
        devices.reset_peak_memory(device)
    project = ctx.project()
    rng = np.random.default_rng(config.seed)
    t0 = time.perf_counter()
    known = _known_pairs(project)
    if config.pool == "clips":
        picked, info = _select_clips(project, config, ctx, rng, known)
    else:
        picked, info = _select_responses(project, config, ctx, rng, known, *where)
    seconds = time.perf_counter() - t0
    ctx.raise_if_cancelled()
    queued = []
    with project.db.atomic():
        for left, right, probs, extra in picked:
            why = reason(config.selection, probs, **info["reason"], **extra)
            queued.append(project.enqueue_pair(left, right, priority=config.priority, reason=why, run_id=ctx.run_id))
    ctx.progress(1.0, message=f"queued {len(queued)} pairs")
    scores = [query_score(p, "disagreement") for _, _, p, _ in picked if p]
    return {"queued": len(queued), "queue_ids": queued, "pool": config.pool, "pool_items": info["pool_items"],
            "candidates": info["candidates"], "selection": config.selection, "members": info["members"],
            "mean_disagreement": float(np.mean(scores)) if scores else None,
            "selection_seconds": round(seconds, 3), **info["result"],
            **(devices.device_record(*where) if where else {})}


def _known_pairs(project) -> set[frozenset]:
    """Pairs of items waiting in the queue or already labelled (live labels), in either order."""
    rows = project.pending_pairs(limit=10_000_000) + project.comparisons()
    return {frozenset((r["left_id"], r["right_id"])) for r in rows}


# ------------------------------------------------------------------------------------ clips
def _reward_ensemble(project, config: ActiveQueriesConfig) -> tuple[int, RewardEnsemble] | None:
    """(checkpoint id, ensemble) that votes on the clips; None when the project has none (random only)."""
    if config.reward_checkpoint_id:
        ckpt = next((c for c in project.checkpoints() if c["id"] == config.reward_checkpoint_id), None)
        if ckpt is None or ckpt["kind"] != kinds.REWARD_ENSEMBLE:
            raise ValueError(f"checkpoint {config.reward_checkpoint_id} is not a reward model of this project")
        trained_for = json.loads(ckpt["meta_json"] or "{}").get("env_id")
        if trained_for and trained_for != config.env_id:
            raise ValueError(f"checkpoint {ckpt['id']} is a reward model of {trained_for}, not {config.env_id}: "
                             f"choose one of {config.env_id}, or set env_id to {trained_for}")
    else:
        ckpt = next((c for c in reversed(project.checkpoints()) if c["kind"] == kinds.REWARD_ENSEMBLE
                     and json.loads(c["meta_json"] or "{}").get("env_id") == config.env_id), None)
        if ckpt is None:
            if config.selection == "random":
                return None
            raise ValueError(f"this project has no reward model of {config.env_id} to choose by: train one first "
                             "(job reward_model), or use selection random")
    ensemble, _ = RewardEnsemble.load(project.abspath(ckpt["path"]))
    return int(ckpt["id"]), ensemble


def _select_clips(project, config, ctx, rng, known):
    clips = [c for c in project.items("clip") if c["env_id"] == config.env_id
             and (not config.from_run or c["run_id"] == config.from_run)]
    if len(clips) < 2:
        where = f" made by run {config.from_run}" if config.from_run else ""
        raise ValueError(f"the project has {len(clips)} live clip(s) of {config.env_id}{where}; a pool needs at "
                         "least two (collect some with the rollouts job)")
    found = _reward_ensemble(project, config)
    ckpt_id, ensemble = found if found is not None else (None, None)
    clips = [clips[i] for i in rng.permutation(len(clips))]  # random sides
    with ctx.stage(0.0, 0.2):
        obs = clip_observations(project, [c["id"] for c in clips])
        observations = [obs[c["id"]] for c in clips]
    if ensemble is not None:
        width = observations[0][0].size
        wanted = int(np.prod(ensemble.spec.image_shape)) if ensemble.spec.kind == "cnn" else ensemble.spec.obs_dim
        if width != wanted:
            raise ValueError(f"the reward model reads observations of {wanted} numbers; the clips of "
                             f"{config.env_id} have {width}")
    index = {c["id"]: i for i, c in enumerate(clips)}
    exclude = [tuple(index[i] for i in pair) for pair in known if len(pair) == 2 and all(i in index for i in pair)]

    def scored(done: int, n: int) -> None:
        ctx.raise_if_cancelled()
        with ctx.stage(0.2, 1.0):
            ctx.progress(done, n, f"the reward model's returns of {done}/{n} clips")

    picked = select_clip_pairs(ensemble, observations, config.queue_pairs, config.candidate_multiplier,
                               config.selection, rng, exclude=exclude, on_batch=scored)
    members = len(ensemble.members) if ensemble is not None else 0
    n_candidates = min(config.queue_pairs * config.candidate_multiplier,
                       len(clips) * (len(clips) - 1) // 2 - len(exclude))
    info = {"pool_items": len(clips), "candidates": n_candidates, "members": members,
            "reason": {"pool": "clips", "reward_checkpoint_id": ckpt_id},
            "result": {"env_id": config.env_id, "reward_checkpoint_id": ckpt_id}}
    return [(clips[i]["id"], clips[j]["id"], probs, {}) for i, j, probs in picked], info


# ------------------------------------------------------------------------------------ text
def _prompt_ids(project, config: ActiveQueriesConfig) -> list[int] | None:
    """The prompts whose responses are the pool (None: every prompt, for a pool of one run's responses)."""
    ids = [int(p) for p in config.prompt_ids]
    name = config.prompt_set.strip()
    if name:
        wanted = {(r.text, r.category) for r in load_builtin_set(name)}
        ids += [row["id"] for row in project.prompts() if (row["text"], row["category"]) in wanted]
    return ids if (name or ids) else None


def _select_responses(project, config, ctx, rng, known, device, precision: str):
    by_prompt = responses_by_prompt(project, _prompt_ids(project, config))
    items = {i["id"]: i for i in project.items("response")}
    if config.from_run:
        by_prompt = {p: [i for i in ids if items[i]["run_id"] == config.from_run] for p, ids in by_prompt.items()}
    pool = [i for ids in by_prompt.values() for i in ids]
    new_pairs = [(a, b) for ids in by_prompt.values() for x, a in enumerate(ids) for b in ids[x + 1:]
                 if frozenset((a, b)) not in known]
    if not new_pairs:
        raise ValueError(f"the pool ({len(pool)} responses) has no pair of responses to the same prompt that is not "
                         "already queued or labelled: generate more responses (job generate) or widen the pool")
    k = min(len(new_pairs), config.queue_pairs * config.candidate_multiplier)
    chosen = sorted(rng.choice(len(new_pairs), size=k, replace=False).tolist()) if k < len(new_pairs) else range(k)
    candidates = [new_pairs[c] if rng.random() < 0.5 else new_pairs[c][::-1] for c in chosen]  # random sides
    labels = text_pairs(project, config.label_sources)
    prompts = {row["id"]: row["text"] for row in project.prompts()}
    info = {"pool_items": len(pool), "candidates": len(candidates), "members": 0,
            "reason": {"pool": "responses"}, "result": {"labels": len(labels)}}
    if config.selection != "random" and not labels:
        raise ValueError(f"the project has no text labels from {config.label_sources} for the heads to learn from: "
                         "label some pairs first (Label text), or use selection random")
    if not labels:  # random, nothing to predict with
        picks = pick([0.0] * len(candidates), config.queue_pairs, "random", rng)
        return [(*candidates[p], [], {"prompt_id": items[candidates[p][0]]["prompt_id"]}) for p in picks], info

    folder, short = resolve_reward_model(config.reward_model, project)
    ctx.log(f"features from the backbone of the text reward model {short}")
    model, tokenizer = load_text_reward_model(folder, device=device, precision=precision)
    # one feature per distinct (prompt, response): the pool's candidates and the labelled pairs
    keys: dict[tuple[str, str], int] = {}

    def row(prompt: str, text: str) -> int:
        return keys.setdefault((prompt, text), len(keys))

    item_rows = {i: row(prompts.get(items[i]["prompt_id"], ""), items[i]["text"] or "")
                 for pair in candidates for i in pair}
    label_rows = [(row(p.prompt, p.left), row(p.prompt, p.right), float(p.target)) for p in labels]
    ordered = list(keys)

    def progress(done: int, total: int) -> None:
        ctx.raise_if_cancelled()
        with ctx.stage(0.0, 0.8):
            ctx.progress(done, total, f"features of {done}/{total} responses")

    with torch.no_grad(), model.autocast():
        features = response_features(model, tokenizer, [p for p, _ in ordered], [t for _, t in ordered],
                                     on_batch=progress)
    ctx.raise_if_cancelled()
    with ctx.stage(0.8, 0.95):
        ctx.progress(0.0, message=f"fitting {config.heads} heads on {len(label_rows)} labels")
        heads = fit_heads(features, label_rows, members=config.heads, steps=config.head_steps, seed=config.seed)
    left = torch.tensor([item_rows[a] for a, _ in candidates])
    right = torch.tensor([item_rows[b] for _, b in candidates])
    probs = head_probs(heads, features[left], features[right])
    picks = pick([query_score(p, config.selection) for p in probs], config.queue_pairs, config.selection, rng)
    info.update(members=heads.members, reason={"pool": "responses", "reward_model": short, "heads": heads.members},
                result={"labels": len(label_rows), "reward_model": short, "heads": heads.members,
                        "features": len(ordered)})
    return [(*candidates[p], probs[p].tolist(), {"prompt_id": items[candidates[p][0]]["prompt_id"]})
            for p in picks], info
