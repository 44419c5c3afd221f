"""Rounds: iterated RLHF as one job. A round starts from a policy and ends with the next one.

Text: generate K responses per prompt from the policy, queue pairs of them (new vs new, and new vs the
previous round's responses to the same prompts), label them (a simulated teacher judging by a rule reward,
an AI judge, or people), refit the text reward model on every label of the project, train the next policy
from the current one (DPO, GRPO or PPO). Control: roll the policy out, cut clips, queue pairs (new vs new and
new vs the previous round's clips), label (a B-Pref teacher or people), refit the reward ensemble, continue
PPO from the policy on the new reward.

Each step is a run of its own job whose parent (``parent_run_id``) is the round's run;
the round's cancel stops the step, and each step fills its part of the round's bar. A failed step fails
the round with the step's message. The round's result: its number in the chain (``round``), the policy it
started from and the one it made (artefact references), the step runs, labels added, the reward model's
held-out accuracy, the policy's reward (its trainer's last ``reward/mean``, or its true return), the
true return / gold reward of the sampled policy where one exists, and the win rate of the policy this
round sampled against the previous round's (by the new reward model, by people where they labelled those
pairs, and by the round's teacher or AI labeller).

With people as labellers a round stops after queueing its pairs (result ``status`` = ``waiting_for_labels``,
stored as a completed run); :func:`continue_round` finishes it as the SAME run once the pairs are labelled
(the same call also finishes a round that failed or was cancelled, from its first unfinished step). What a
round has done is kept in ``round.json`` in its run folder, written after every step.

A text round's ``device`` and ``precision`` go to every step that runs a language model (and the round's own
scoring with the new reward model); a device that cannot be used stops the round before anything is written.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import re
from dataclasses import dataclass
from itertools import combinations
from typing import Any

from rlhf_core import config as cfg
from rlhf_core import devices, kinds
from rlhf_core.config import param
from rlhf_core.jobs import ChildContext, JobCancelled, JobContext, JobOutcome, execute_job, get_job
from rlhf_core.labelers.synthetic import TEACHERS
from rlhf_core.store import Project, artefacts
from rlhf_core.text.rewards import parse_reward_spec, parse_spec_items

TRACKS = ("text", "control")
LABELLERS = ("human", "oracle", "ai")
ALGORITHMS = ("dpo", "grpo", "ppo")
POLICY_JOB = {"dpo": "dpo", "grpo": "grpo", "ppo": "ppo_text"}
WAITING = "waiting_for_labels"
STATE_FILE = "round.json"
_RUN_REF = re.compile(r"^run:\s*(\d+)$", re.IGNORECASE)


class RoundError(ValueError):
    """A round that cannot start or continue; ``str(error)`` says why, for a person."""


@dataclass
class RoundConfig:
    FORM_SWITCH = "track"  # the app shows the settings whose help starts "text:" / "control:" for that track only
    track: str = param("text", "text: responses of a language model; control: clips of a Gymnasium environment.",
                       choices=TRACKS)
    from_policy: str = param("", "The policy this round starts from: run:ID (a round's run or a trainer's), "
                             "checkpoint:ID, a name, or (text) a model folder. Empty: round 1, from `model` (text) "
                             "or a random policy (control).", label="From policy")
    labeller: str = param("oracle", "Who labels the round's pairs: human (the round queues them and waits; "
                          "`round --continue` finishes it), oracle (a simulated B-Pref teacher) or ai (text: a "
                          "language-model judge).", choices=LABELLERS)
    teacher: str = param("oracle", "oracle labeller: which B-Pref teacher (oracle: always the better one; noisy: "
                         "Boltzmann-rational, beta 1).", choices=TEACHERS)
    previous_pairs: int = param(8, "Pairs of this round's samples against the previous round's, queued to "
                                "measure the win rate (text: per prompt, at most K; control: in all).", min=0)
    seed: int = param(0, "Random seed of every step.", min=0)
    threads: int = param(1, "torch threads for every step.", min=1, max=1024)
    # text
    model: str = param("", "text: the base language model: the policy of round 1 when from_policy is empty, and "
                       "where each round's reward model starts ('' = the bundled SmolLM2-135M-Instruct).")
    prompt_set: str = param("starter", "text: built-in prompt set to sample responses for (added to the project "
                            "if needed).")
    category: str = param("", "text: only prompts of this category of the set (comma-separated; empty: all).")
    max_prompts: int = param(8, "text: at most this many prompts of the set (0: all).", min=0)
    samples_per_prompt: int = param(4, "text: K, responses sampled per prompt.", min=2, max=64,
                                    label="Samples per prompt (K)")
    pairs_per_prompt: int = param(0, "text: new-vs-new pairs queued per prompt (0: all K(K-1)/2).", min=0)
    max_new_tokens: int = param(128, "text: longest response, in tokens (responses cut at this length all score "
                                "the same by 'length': a tie).", min=1, max=4096)
    temperature: float = param(0.8, "text: sampling temperature of the responses.", min=0.0, max=5.0)
    oracle_reward: str = param("length", "text, oracle labeller: the rule reward the teacher judges by "
                               "(e.g. 'length' prefers shorter answers; 'format:0.5,correctness:1' for prompts "
                               "with gold answers).")
    judge_model: str = param("", "text, ai labeller: the judge language model ('' = the bundled model).")
    algorithm: str = param("dpo", "text: how the next policy is trained from this one.", choices=ALGORITHMS)
    policy_steps: int = param(20, "text: optimisation steps of the policy trainer.", min=1)
    reward_epochs: int = param(2, "text: passes of the reward model over all labels.", min=1)
    learning_rate: float = param(0.0, "text: learning rate of the policy trainer (0: the trainer's default).",
                                 min=0.0)
    batch_size: int = param(4, "text: pairs per step of the reward model and DPO.", min=1)
    max_length: int = param(512, "text: longest prompt + response in tokens for the reward model and DPO.", min=8)
    heldout_fraction: float = param(0.1, "Labels held out to measure the reward model's accuracy.",
                                    min=0.0, max=0.5)
    device: str = devices.for_switch(devices.device_param(), "text: ")
    precision: str = devices.for_switch(devices.precision_param(), "text: ")
    # control
    env_id: str = param("CartPole-v1", "control: Gymnasium environment id.")
    episodes: int = param(8, "control: episodes rolled out from the policy.", min=1, max=10_000)
    max_steps: int = param(0, "control: stop an episode after this many steps (0: the env's own limit).", min=0)
    clips_per_trajectory: int = param(3, "control: clips cut from each episode.", min=1)
    clip_length: int = param(0, "control: clip length in steps (0: about 1.5 s).", min=0)
    queue_pairs: int = param(24, "control: new-vs-new clip pairs queued.", min=1)
    reward_steps: int = param(800, "control: optimisation steps per reward-ensemble member.", min=10)
    members: int = param(3, "control: reward ensemble size.", min=1, max=16)
    ppo_steps: int = param(20_000, "control: PPO environment steps on the refitted reward.", min=1_000,
                           max=100_000_000)
    eval_episodes: int = param(5, "control: episodes to score the new policy on the true return.", min=1)
    positive_reward: bool = param(True, "control: PPO sees the learned reward squashed through a sigmoid, so every "
                                  "step pays (alive-bonus tasks such as CartPole: a standardised reward below 0 "
                                  "teaches it to end episodes early); off where ending early is the goal.")

    def check(self) -> list[str]:
        problems = [p for p in [devices.spec_problem(self.device)] if p]
        if self.track == "control" and self.labeller == "ai":
            problems.append("labeller: the AI labeller judges text; a control round uses oracle or human")
        if self.track == "text" and not self.prompt_set.strip():
            problems.append("prompt_set: a text round needs a prompt set")
        if self.track == "text" and self.labeller == "oracle":
            try:
                names = [name for name, _ in parse_spec_items(self.oracle_reward)]
            except ValueError as exc:
                problems.append(f"oracle_reward: {exc}")
            else:
                if "model" in names:
                    problems.append("oracle_reward: a rule reward only (the ai labeller uses a model)")
        return problems


# ---------------------------------------------------------------------------------------- the chain
def _policy_kinds(track: str) -> tuple[str, ...]:
    return (kinds.TEXT_POLICY,) if track == "text" else (kinds.SB3_PPO,)


def policy_reference(project: Project, reference: str, track: str) -> tuple[str, artefacts.Artefact | None]:
    """(reference to give the steps, the artefact or None for an outside folder) of ``reference``; ``run:ID``
    of a round run means the policy that round made. '' stays ''."""
    text = (reference or "").strip()
    if not text:
        return "", None
    match = _RUN_REF.match(text)
    if match:
        run = project.get_run(int(match.group(1)))
        if run is not None and run["kind"] == "round":
            result = run["result"] if isinstance(run["result"], dict) else {}
            if not result.get("policy"):
                why = "is waiting for labels" if result.get("status") == WAITING else f"is {run['status']}"
                raise RoundError(f"Round run {run['id']} has no policy yet: it {why}.")
            text = result["policy"]
    found = artefacts.resolve(project, text, _policy_kinds(track), allow_path=track == "text")
    if isinstance(found, artefacts.Artefact):
        return found.reference, found
    return str(found), None


def previous_round(project: Project, artefact: artefacts.Artefact | None) -> dict | None:
    """The round run that made ``artefact`` (its policy step's parent), or None."""
    if artefact is None or artefact.run_id is None:
        return None
    run = project.get_run(artefact.run_id)
    parent = project.get_run(run["parent_run_id"]) if run and run.get("parent_run_id") else None
    return parent if parent is not None and parent["kind"] == "round" else None


def track_of(project: Project, reference: str) -> str | None:
    """'text' or 'control' when ``reference`` names a project artefact of either kind (or a round run)."""
    for track in TRACKS:
        try:
            _, found = policy_reference(project, reference, track)
        except (artefacts.ArtefactError, RoundError):
            continue
        if found is not None:
            return track
    return None


def next_round_config(project: Project, settings: dict[str, Any]) -> RoundConfig:
    """The settings of a round from ``settings`` (``from_policy`` and any others given): what is not given
    comes from the previous round of the chain (so `round --from run:ID` repeats its settings), and the
    track follows the policy's kind. Bad settings raise :class:`rlhf_core.config.ConfigError`; a policy that
    cannot be used raises :class:`RoundError` / :class:`~rlhf_core.store.artefacts.ArtefactError`."""
    settings = dict(settings)
    reference = str(settings.get("from_policy") or "").strip()
    base: dict[str, Any] = {}
    if reference:
        track = settings.get("track") or track_of(project, reference) or "text"
        _, found = policy_reference(project, reference, track)
        previous = previous_round(project, found)
        if previous is not None:
            base = dict(previous["config"])
        base["track"] = track
    config = cfg.from_dict(RoundConfig, {**base, **settings})
    policy_reference(project, config.from_policy, config.track)  # a clear sentence now for a bad reference
    return config


# ---------------------------------------------------------------------------------------- continuing
def read_state(project: Project, run_id: int) -> dict | None:
    path = project.run_folder(run_id, create=False) / STATE_FILE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def _write_state(project: Project, run_id: int, state: dict) -> None:
    path = project.run_folder(run_id) / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def open_queue(project: Project, queue_ids: list[int]) -> int:
    """How many of these queue entries still wait for a label (entries whose items were deleted do not)."""
    if not queue_ids:
        return 0
    marks = ",".join("?" * len(queue_ids))
    return project.conn.execute(
        f"SELECT count(*) FROM pair_queue q JOIN items a ON a.id = q.left_id JOIN items b ON b.id = q.right_id "
        f"WHERE q.id IN ({marks}) AND q.comparison_id IS NULL AND a.deleted_at IS NULL AND b.deleted_at IS NULL",
        list(queue_ids)).fetchone()[0]


def continuable_round(project: Project, run_id: int | None = None) -> int:
    """The round run that :func:`continue_round` would finish (``run_id``, else the newest round waiting for
    labels), or :class:`RoundError` saying why none can be."""
    if run_id is None:
        waiting = [r for r in project.runs("round") if r["status"] == "completed"
                   and isinstance(r["result"], dict) and r["result"].get("status") == WAITING]
        if not waiting:
            raise RoundError("No round is waiting for labels; start one with `round --project P --from REF`.")
        run_id = waiting[-1]["id"]
    run = project.get_run(run_id)
    if run is None or run["kind"] != "round":
        raise RoundError(f"Run {run_id} is not a round." if run else f"Run {run_id} does not exist.")
    state = read_state(project, run_id)
    waiting = run["status"] == "completed" and isinstance(run["result"], dict) and \
        run["result"].get("status") == WAITING
    if run["status"] in ("queued", "running"):
        raise RoundError(f"Round run {run_id} is {run['status']}: wait for it to finish.")
    if state is None:
        raise RoundError(f"Round run {run_id} has no steps to continue (it is {run['status']} and stopped before "
                         "its first step); start a new round.")
    if run["status"] == "completed" and not waiting:
        raise RoundError(f"Round run {run_id} is completed: nothing is left to do.")
    if state.get("labeller") == "human" and state.get("queue_ids") is not None:
        left = open_queue(project, state["queue_ids"])
        if left:
            what = "Label text" if state.get("track") == "text" else "Label clips"
            raise RoundError(f"Round {state.get('round')} (run {run_id}) still waits for {left} of its "
                             f"{len(state['queue_ids'])} pairs to be labelled (in the app: {what}).")
    return int(run_id)


def continue_round(project_path: str | os.PathLike, ctx: JobContext, run_id: int | None = None, *,
                   torch_threads: int | None = None) -> JobOutcome:
    """Finish a round that waits for labels (or stopped on a failure or Cancel) as the same run: the steps it
    has done are kept, the rest run now."""
    with Project.open(project_path) as project:
        project.mark_interrupted_runs()
        run_id = continuable_round(project, run_id)
        config = cfg.from_dict(RoundConfig, project.get_run(run_id)["config"], strict=False)
    return execute_job(get_job("round"), config, ctx, project_path=project_path, run_id=run_id,
                       torch_threads=torch_threads or config.threads)


# ---------------------------------------------------------------------------------------- steps
class _Round:
    def __init__(self, config: RoundConfig, ctx: JobContext):
        self.config, self.ctx = config, ctx
        self.project = ctx.project()
        self.run_id = int(ctx.run_id)

    # --- bookkeeping ---------------------------------------------------------------------
    def save(self) -> None:
        _write_state(self.project, self.run_id, self.state)

    def done(self, step: str) -> dict | None:
        """The result of ``step`` when an earlier call of this round finished it."""
        run_id = self.state["runs"].get(step)
        run = self.project.get_run(run_id) if run_id else None
        return run["result"] if run is not None and run["status"] == "completed" else None

    def step(self, step: str, job: str, settings: dict[str, Any], lo: float, hi: float) -> dict:
        """Run ``job`` as a child run of the round (skipped when done before); its result. A job with a
        ``device`` setting gets the round's ``device`` and ``precision``."""
        earlier = self.done(step)
        if earlier is not None:
            return earlier
        spec = get_job(job)
        if {"device", "precision"} <= {f.name for f in dataclasses.fields(spec.config_class())}:
            settings = {"device": self.config.device, "precision": self.config.precision, **settings}
        config = cfg.from_dict(spec.config_class(), settings)
        child = self.project.create_run(job, cfg.to_dict(config), parent_run_id=self.run_id)
        self.state["runs"][step] = child
        self.save()
        outcome = execute_job(spec, config, ChildContext(self.ctx, lo, hi, step), project_path=self.project.folder,
                              run_id=child, torch_threads=self.config.threads)
        if outcome.status == "cancelled":
            raise JobCancelled("cancelled")
        if outcome.status != "completed":
            raise RoundError(f"The round's {step} step (run {child}, {job}) failed: {outcome.message}")
        return outcome.result if isinstance(outcome.result, dict) else {}

    def queue(self, pairs: list[tuple[int, int]], kind: str, rng: random.Random) -> list[int]:
        """Queue ``pairs`` (each side shown left at random) as the round's; returns the queue ids."""
        ids = []
        with self.project.db.atomic():
            for a, b in pairs:
                left, right = (a, b) if rng.random() < 0.5 else (b, a)
                reason = {"selection": "random", "round": self.state["round"], "pairs": kind}
                prompt_id = self.project.get_item(a)["prompt_id"]
                if prompt_id is not None:
                    reason["prompt_id"] = prompt_id
                ids.append(self.project.enqueue_pair(left, right, run_id=self.run_id, reason=reason))
        return ids

    # --- the round -----------------------------------------------------------------------
    def start(self) -> None:
        config = self.config
        reference, found = policy_reference(self.project, config.from_policy, config.track)
        previous = previous_round(self.project, found)
        previous_state = (read_state(self.project, previous["id"]) or previous["result"] or {}) if previous else None
        number = int(previous_state.get("round", 0)) + 1 if previous_state else 1
        self.state = {"round": number, "track": config.track, "labeller": config.labeller, "status": "running",
                      "from_policy": reference, "previous_round_run": previous["id"] if previous else None,
                      "runs": {}, "queue_ids": None, "previous_pairs": [], "policy": None}
        self.previous_state = previous_state

    def run(self) -> dict:
        self.device, self.precision = None, "float32"
        if self.config.track == "text":  # DeviceError (a sentence) before anything is written
            self.device = devices.resolve_device(self.config.device)
            self.precision = devices.resolve_precision(self.config.precision, self.device)
        state = read_state(self.project, self.run_id)
        if state is None:
            self.start()
        else:  # continuing: what was done stays
            self.state = state
            previous = self.state.get("previous_round_run")
            self.previous_state = read_state(self.project, previous) if previous else None
        self.state["status"] = "running"
        self.save()
        if self.config.track == "text":
            self.text_round()
        else:
            self.control_round()
        self.ctx.progress(1.0, message="round done" if self.state["status"] == "completed" else "waiting for labels")
        return self.result()

    def result(self) -> dict:
        keep = ("round", "track", "status", "labeller", "from_policy", "policy", "previous_round_run", "runs",
                "queued_pairs", "waiting_pairs", "labels_added", "labels_total", "reward_model",
                "reward_heldout_accuracy", "policy_reward", "sampled_reward", "gold_reward", "true_return",
                "win_rate_vs_previous")
        return {k: self.state.get(k) for k in keep if k in self.state}

    def wait_or_label(self, label_step: tuple[str, dict] | None, lo: float, hi: float) -> bool:
        """Label the round's pairs (False when people label them and they are not all labelled yet)."""
        queue_ids = self.state["queue_ids"]
        if self.config.labeller == "human":
            left = open_queue(self.project, queue_ids)
            if left:
                self.state.update(status=WAITING, waiting_pairs=left)
                self.save()
                what = "Label text" if self.config.track == "text" else "Label clips"
                self.ctx.log(f"Round {self.state['round']} queued {len(queue_ids)} pairs: label them (in the app: "
                             f"{what}), then continue the round (`python -m rlhf_core round --project P --continue`).")
                return False
        elif label_step is not None:
            job, settings = label_step
            self.step("label", job, {**settings, "queued_by_run": self.run_id, "max_pairs": max(1, len(queue_ids))},
                      lo, hi)
        self.state["waiting_pairs"] = 0
        self.state["labels_added"] = len(queue_ids) - open_queue(self.project, queue_ids)
        return True

    def finish_policy(self) -> None:
        artefact = artefacts.resolve(self.project, f"run:{self.state['runs']['policy']}",
                                     _policy_kinds(self.config.track), allow_path=False)
        self.state["policy"] = artefact.reference
        self.state["status"] = "completed"
        self.save()

    # --- text ----------------------------------------------------------------------------
    def text_round(self) -> None:
        c = self.config
        policy = self.state["from_policy"] or c.model
        rng = random.Random(f"{c.seed}:{self.run_id}")
        self.step("generate", "generate", {
            "model": policy, "prompt_set": c.prompt_set, "category": c.category, "max_prompts": c.max_prompts,
            "samples_per_prompt": c.samples_per_prompt, "max_new_tokens": c.max_new_tokens,
            "temperature": c.temperature, "seed": c.seed}, 0.0, 0.25)
        new = _responses_by_prompt(self.project, self.state["runs"]["generate"])
        if self.state["queue_ids"] is None:
            pairs = []
            for ids in new.values():
                candidates = list(combinations(ids, 2))
                if c.pairs_per_prompt and len(candidates) > c.pairs_per_prompt:
                    candidates = sorted(rng.sample(candidates, c.pairs_per_prompt))
                pairs += candidates
            queue_ids = self.queue(pairs, "new vs new", rng)
            versus = []
            old_run = (self.previous_state or {}).get("runs", {}).get("generate")
            old = _responses_by_prompt(self.project, old_run) if old_run else {}
            for prompt_id, ids in new.items():
                versus += list(zip(ids, old.get(prompt_id, [])))[: c.previous_pairs]
            queue_ids += self.queue(versus, "new vs previous", rng)
            self.state.update(queue_ids=queue_ids, previous_pairs=versus, queued_pairs=len(queue_ids))
            self.save()
        label = None
        if c.labeller == "oracle":
            label = ("label_pairs", {"teacher": c.teacher, "text_reward": c.oracle_reward, "seed": c.seed})
        elif c.labeller == "ai":
            label = ("ai_labels", {"method": "judge", "judge_model": c.judge_model, "seed": c.seed})
        if not self.wait_or_label(label, 0.25, 0.35):
            return
        reward = self.step("reward_model", "text_reward_model", {
            "model": c.model, "epochs": c.reward_epochs, "batch_size": c.batch_size, "max_length": c.max_length,
            "heldout_fraction": c.heldout_fraction, "seed": c.seed}, 0.35, 0.6)
        self.state.update(reward_model=f"checkpoint:{reward['checkpoint_id']}", labels_total=reward.get("pairs"),
                          reward_heldout_accuracy=reward.get("heldout_accuracy"))
        with self.ctx.stage(0.6, 0.65):
            self.ctx.progress(0.0, message="scoring the responses with the new reward model")
            self.text_evaluation(reward["path"], new)
        self.save()
        rm_folder = reward["path"]
        common = {"model": policy, "seed": c.seed, "threads": c.threads, "max_new_tokens": c.max_new_tokens}
        if c.algorithm == "dpo":
            settings = {"model": policy, "seed": c.seed, "threads": c.threads, "steps": c.policy_steps,
                        "batch_size": c.batch_size, "max_length": c.max_length,
                        "heldout_fraction": c.heldout_fraction}
        elif c.algorithm == "grpo":
            settings = {**common, "prompt_source": "project", "few_shot": False, "format_instruction": False,
                        "reward": "model:1", "reward_model": rm_folder, "steps": c.policy_steps,
                        "group_size": c.samples_per_prompt, "temperature": max(c.temperature, 0.1),
                        "heldout_fraction": c.heldout_fraction, "eval_every": 0}
        else:
            settings = {**common, "reward_model": rm_folder, "prompt_set": c.prompt_set, "category": c.category,
                        "max_prompts": c.max_prompts, "steps": c.policy_steps}
        settings["save"] = True
        if c.learning_rate:
            settings["learning_rate"] = c.learning_rate
        self.step("policy", POLICY_JOB[c.algorithm], settings, 0.65, 1.0)
        self.state["policy_reward"] = _last_metric(self.project, self.state["runs"]["policy"], "reward/mean")
        self.finish_policy()

    def text_evaluation(self, reward_folder: str, new: dict[int, list[int]]) -> None:
        """The sampled policy's mean reward (new reward model) and gold reward (the teacher's rule), and its
        win rate against the previous round's responses."""
        from rlhf_core.text.reward_model import load_text_reward_model, score_responses  # start-up: imports torch

        project, c = self.project, self.config
        items = {i: project.get_item(i) for ids in new.values() for i in ids}
        items.update({i: project.get_item(i) for pair in self.state["previous_pairs"] for i in pair})
        prompts = {pid: project.conn.execute("SELECT text, gold_answer FROM prompts WHERE id = ?", [pid]).fetchone()
                   for pid in {item["prompt_id"] for item in items.values()}}
        order = list(items)
        asked = {i: prompts[items[i]["prompt_id"]]["text"] for i in order}
        model, tokenizer = load_text_reward_model(reward_folder, device=self.device, precision=self.precision)
        scores = score_responses(model, tokenizer, [asked[i] for i in order], [items[i]["text"] or "" for i in order],
                                 batch_size=c.batch_size).tolist() if order else []
        score = dict(zip(order, scores))
        sampled = [i for ids in new.values() for i in ids]
        self.state["sampled_reward"] = _mean([score[i] for i in sampled])
        if c.labeller == "oracle" and sampled:  # the teacher's rule is the gold reward of this round
            gold = parse_reward_spec(c.oracle_reward).evaluate(
                [asked[i] for i in sampled], [items[i]["text"] or "" for i in sampled],
                [{"completion_tokens": items[i]["length"],
                  "gold_answer": prompts[items[i]["prompt_id"]]["gold_answer"]} for i in sampled])
            self.state["gold_reward"] = _mean(gold.total)
        self.state["win_rate_vs_previous"] = self.win_rates(score)

    # --- control -------------------------------------------------------------------------
    def control_round(self) -> None:
        from rlhf_core.envs.clips import queue_random_pairs  # start-up: imports PyAV (video)

        c = self.config
        rng = random.Random(f"{c.seed}:{self.run_id}")
        reference = self.state["from_policy"]
        checkpoint_id = int(reference.split(":", 1)[1]) if reference else 0
        rolled = self.step("rollouts", "rollouts", {
            "env_id": c.env_id, "policy": "checkpoint" if checkpoint_id else "random", "checkpoint_id": checkpoint_id,
            "episodes": c.episodes, "max_steps": c.max_steps, "seed": c.seed, "record_video": True,
            "clips_per_trajectory": c.clips_per_trajectory, "clip_length": c.clip_length, "queue_pairs": 0}, 0.0, 0.3)
        returns = list(rolled.get("mean_return_by_epsilon", {}).values())
        self.state["true_return"] = returns[0] if returns else None
        clips = [r["id"] for r in self.project.run_items(self.state["runs"]["rollouts"], "clip")]
        if self.state["queue_ids"] is None:
            queue_ids = []
            if len(clips) >= 2:
                queue_ids = queue_random_pairs(self.project, clips, c.queue_pairs, seed=rng.randrange(2 ** 31),
                                               run_id=self.run_id)
            old_run = (self.previous_state or {}).get("runs", {}).get("rollouts")
            old = [r["id"] for r in self.project.run_items(old_run, "clip")] if old_run else []
            mine, theirs = clips[:], old[:]
            rng.shuffle(mine)
            rng.shuffle(theirs)
            versus = list(zip(mine, theirs))[: c.previous_pairs]
            queue_ids += self.queue(versus, "new vs previous", rng)
            self.state.update(queue_ids=queue_ids, previous_pairs=versus, queued_pairs=len(queue_ids))
            self.save()
        label = ("label_pairs", {"teacher": c.teacher, "seed": c.seed}) if c.labeller == "oracle" else None
        if not self.wait_or_label(label, 0.3, 0.35):
            return
        reward = self.step("reward_model", "reward_model", {
            "env_id": c.env_id, "source": "comparisons", "members": c.members, "steps": c.reward_steps,
            "heldout_fraction": c.heldout_fraction, "seed": c.seed}, 0.35, 0.5)
        self.state.update(reward_model=f"checkpoint:{reward['checkpoint_id']}", labels_total=reward.get("pairs"),
                          reward_heldout_accuracy=reward.get("heldout_accuracy"))
        self.state["win_rate_vs_previous"] = self.win_rates(self.clip_scores(reward["checkpoint_id"]))
        self.save()
        trained = self.step("policy", "ppo_learned", {
            "env_id": c.env_id, "reward_checkpoint_id": reward["checkpoint_id"], "total_steps": c.ppo_steps,
            "eval_episodes": c.eval_episodes, "record_video": False, "seed": c.seed, "init_policy": reference,
            "positive_reward": c.positive_reward},
            0.5, 1.0)
        self.state["policy_reward"] = trained.get("true_return_mean")
        self.finish_policy()

    def clip_scores(self, checkpoint_id: int) -> dict[int, float]:
        """The new reward model's predicted return (raw, as it was fitted) of each clip of the new-vs-previous
        pairs."""
        from rlhf_core.envs.storage import load_arrays  # start-up: imports PyAV (video)
        from rlhf_core.rewards.networks import RewardEnsemble  # start-up: imports torch
        from rlhf_core.rewards.training import predicted_returns  # start-up: imports torch

        row = next(r for r in self.project.checkpoints(self.state["runs"]["reward_model"])
                   if r["id"] == checkpoint_id)
        ensemble, _ = RewardEnsemble.load(self.project.abspath(row["path"]))
        items = sorted({i for pair in self.state["previous_pairs"] for i in pair})
        returns = predicted_returns(ensemble, [load_arrays(self.project, self.project.get_item(i))["observations"]
                                               for i in items])
        return {i: float(r) for i, r in zip(items, returns)}

    # --- win rate ------------------------------------------------------------------------
    def win_rates(self, score: dict[int, float]) -> dict:
        """This round's samples against the previous round's: by the reward model's scores, by people's
        labels and by the round's teacher or AI labeller, where they labelled the pairs (a tie counts half)."""
        pairs = [tuple(p) for p in self.state["previous_pairs"]]
        by_model = [_won(score[new], score[old]) for new, old in pairs if new in score and old in score]
        out = {"by_reward_model": _mean(by_model), "n": len(by_model)}
        for key, sources in (("people", ("human",)), ("labeller", ("synthetic", "ai"))):
            wins = []
            for new, old in pairs:
                outcome = _label_of(self.project, new, old, sources)
                if outcome is not None:
                    wins.append(outcome)
            out[f"by_{key}"], out[f"{key}_n"] = _mean(wins), len(wins)
        return out


def _won(new: float, old: float) -> float:
    return 1.0 if new > old else 0.5 if new == old else 0.0


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _label_of(project: Project, new: int, old: int, sources: tuple[str, ...]) -> float | None:
    """1 / 0.5 / 0 for the newest live label of (new, old) from ``sources`` saying new / tie / old; None
    without one (or for a skip)."""
    marks = ",".join("?" * len(sources))
    row = project.conn.execute(
        f"SELECT left_id, outcome FROM comparisons WHERE deleted_at IS NULL AND source IN ({marks}) AND "
        "((left_id = ? AND right_id = ?) OR (left_id = ? AND right_id = ?)) ORDER BY id DESC LIMIT 1",
        [*sources, new, old, old, new]).fetchone()
    if row is None or row["outcome"] not in ("left", "right", "tie"):
        return None
    if row["outcome"] == "tie":
        return 0.5
    winner_is_left = row["outcome"] == "left"
    return 1.0 if winner_is_left == (row["left_id"] == new) else 0.0


def _responses_by_prompt(project: Project, run_id: int) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for item in project.run_items(run_id, "response"):
        out.setdefault(item["prompt_id"], []).append(item["id"])
    return out


def _last_metric(project: Project, run_id: int, key: str) -> float | None:
    _, values = project.metrics(run_id).get(key, ([], []))
    value = values[-1] if values else None
    return None if value is None or not math.isfinite(value) else float(value)


def run_round(config: RoundConfig, ctx: JobContext) -> dict:
    """One round (module doc); continues the round's own earlier call when it stopped before its end."""
    if ctx.project_path is None or ctx.run_id is None:
        raise RoundError("A round stores its steps as runs of a project: run it with a project.")
    return _Round(config, ctx).run()


def round_runs(project: Project) -> list[dict]:
    """Every round of the project, oldest first, each with its state (what it has done so far)."""
    return [{**r, "state": read_state(project, r["id"]) or {}} for r in project.runs("round")]



def chains(project: Project) -> dict[int, int]:
    """Each round run's chain: the run id of the first round it descends from (``previous_round_run`` links)."""
    states = {r["id"]: r["state"] for r in round_runs(project)}
    out: dict[int, int] = {}
    for run_id in states:
        seen, first = set(), run_id
        while True:
            previous = (states.get(first) or {}).get("previous_round_run")
            if previous is None or previous not in states or previous in seen:
                break
            seen.add(first)
            first = previous
        out[run_id] = first
    return out


def round_rows(project: Project) -> list[dict]:
    """What the Rounds view shows, one dict per round run (oldest first): its chain, number, status (waiting
    for labels, failed, ...), the policy it started from and made (artefact names), labels added and in all,
    the reward model's held-out accuracy and its n, policy reward, sampled/gold/true return, win rates."""
    names = {a.reference: a.name for a in artefacts.list_artefacts(project)}
    chain_of = chains(project)
    rows = []
    for run in round_runs(project):
        state = run["state"] or {}
        result = run["result"] if isinstance(run["result"], dict) else {}
        merged = {**state, **{k: v for k, v in result.items() if v is not None}}
        status = run["status"]
        if status == "completed" and merged.get("status") == WAITING:
            status = WAITING
            merged["waiting_pairs"] = open_queue(project, state.get("queue_ids") or [])  # now, not when it stopped
        heldout_pairs = None
        reward_run = (merged.get("runs") or {}).get("reward_model")
        if reward_run:
            reward = project.get_run(reward_run)
            if reward is not None and isinstance(reward["result"], dict):
                heldout_pairs = reward["result"].get("heldout_pairs")
        config = run["config"] or {}
        track = merged.get("track") or config.get("track") or "text"
        win = merged.get("win_rate_vs_previous") or {}
        rows.append({
            "run_id": run["id"], "chain": chain_of.get(run["id"], run["id"]), "round": merged.get("round"),
            "track": track, "status": status, "labeller": merged.get("labeller") or config.get("labeller"),
            "algorithm": config.get("algorithm") if track == "text" else "ppo",
            "from_policy": merged.get("from_policy") or "",
            "from_name": names.get(merged.get("from_policy") or "", merged.get("from_policy") or ""),
            "policy": merged.get("policy"), "policy_name": names.get(merged.get("policy") or "", merged.get("policy")),
            "queued_pairs": merged.get("queued_pairs"), "waiting_pairs": merged.get("waiting_pairs"),
            "labels_added": merged.get("labels_added"), "labels_total": merged.get("labels_total"),
            "reward_heldout_accuracy": merged.get("reward_heldout_accuracy"), "heldout_pairs": heldout_pairs,
            "policy_reward": merged.get("policy_reward"), "sampled_reward": merged.get("sampled_reward"),
            "gold_reward": merged.get("gold_reward"), "true_return": merged.get("true_return"),
            "win_by_reward_model": win.get("by_reward_model"), "win_n": win.get("n"),
            "win_by_people": win.get("by_people"), "people_n": win.get("people_n"),
            "win_by_labeller": win.get("by_labeller"), "labeller_n": win.get("labeller_n"),
            "started_at": run.get("started_at"), "error": run.get("error"),
        })
    return rows
