"""Online preference RL with a person labelling asynchronously: PPO trains on while queries wait, a round waits
at most max_wait_seconds, refits after refit_after new labels, earlier labels seed the reward model, Cancel
works in every wait. A thread plays the person through the calls the Label clips page makes."""

import threading
import time

from rlhf_core.envs.clips import make_clips, queue_random_pairs
from rlhf_core.envs.make import close_env, make_env
from rlhf_core.envs.policies import RandomPolicy
from rlhf_core.envs.rollout import rollout
from rlhf_core.envs.storage import save_trajectory
from rlhf_core.jobs import RecordingContext, execute_job, get_job
from rlhf_core.labelers.session import PairSession
from rlhf_core.resume import load_state
from rlhf_core.store import Project
from rlhf_core.trainers.control.preference_rl import PreferenceRLConfig

ASYNC = dict(env_id="CartPole-v1", labeller="human", rounds=2, steps_per_round=256, initial_labels=4,
             labels_per_round=4, min_labels_to_start=4, clip_length=5, episodes_per_round=2, members=2,
             reward_steps=10, max_wait_seconds=0.0)


class TimedContext(RecordingContext):
    """Records when each progress report and metric call came (time.monotonic())."""

    def __init__(self):
        super().__init__()
        self.timed: list[tuple[float, str, object]] = []  # (time, "progress" | "metrics", message | (step, values))

    def _on_progress(self, fraction, message):
        super()._on_progress(fraction, message)
        self.timed.append((time.monotonic(), "progress", message))

    def _on_metrics(self, step, values):
        super()._on_metrics(step, values)
        self.timed.append((time.monotonic(), "metrics", (step, values)))


class Person(threading.Thread):
    """Answers clip pairs of the queue as the Label clips page does (a PairSession on its own connection,
    the write a ``claim_pair``), ``delay`` seconds per label, only those whose query round is in ``rounds``
    (all when None)."""

    def __init__(self, folder, *, delay=0.0, rounds=None):
        super().__init__(daemon=True)
        self.folder, self.delay, self.rounds = folder, delay, rounds
        self.stop = threading.Event()
        self.answered: list[int] = []

    def run(self):
        import json

        with Project.open(self.folder, check=False) as project:
            session = PairSession(project, "clip")
            while not self.stop.is_set():
                pending = [p for p in session.upcoming(20)
                           if self.rounds is None or json.loads(p["reason_json"]).get("round") in self.rounds]
                if not pending:
                    time.sleep(0.05)
                    continue
                session.show(pending[0])
                if self.stop.wait(self.delay):
                    break
                step = session.label("left", "tester")
                cid = step.fn(project)
                session.labelled(step.given, cid)
                self.answered.append(pending[0]["id"])


def run_in_thread(project, config, ctx):
    box = {}
    thread = threading.Thread(target=lambda: box.setdefault("out", execute_job(
        get_job("preference_rl"), config, ctx, project_path=project.folder)), daemon=True)
    thread.start()
    return thread, box


def finish(ctx, thread, person=None, timeout=60):
    """End the job and the person (a failed check must not leave them running)."""
    ctx.cancel()
    thread.join(timeout)
    if person is not None:
        person.stop.set()
        person.join(10)


def test_ppo_trains_on_while_its_queries_wait(project):
    config = PreferenceRLConfig(**{**ASYNC, "rounds": 3})
    ctx, person = TimedContext(), Person(project.folder, rounds={0})  # nobody answers the later queries
    person.start()
    thread, box = run_in_thread(project, config, ctx)
    try:
        thread.join(120)
    finally:
        finish(ctx, thread, person)
    out = box["out"]
    assert out.status == "completed", out.error
    open_entries = [q for q in project.run_queue(out.run_id) if q["outcome"] is None]
    assert len(open_entries) >= 2 and len(person.answered) == 4
    # the queries of round 1 (queued at 256) were never answered, yet PPO went on to 512 and 768
    waiting_steps, waiting = ctx.series("preferences/waiting")
    assert waiting_steps == [0, 256, 512] and waiting[0] == 0 and 0 < waiting[1] < waiting[2] == len(open_entries)
    assert ctx.series("rollout/true_return")[0] == [256, 512, 768]
    assert ctx.series("preferences/labels")[1] == [4.0, 4.0, 4.0]
    # max_wait_seconds = 0: only round 0 waited (for its first labels)
    first_ppo = next(t for t, kind, m in ctx.timed if kind == "metrics" and "rollout/true_return" in m[1])
    assert all(t < first_ppo for t, kind, m in ctx.timed if kind == "progress" and "waiting for labels" in m)
    assert out.result["labels"] == 4 and out.result["refits"] == 1


def test_a_round_with_nobody_answering_goes_on_after_max_wait_seconds(project):
    config = PreferenceRLConfig(**{**ASYNC, "max_wait_seconds": 2.0})
    ctx, person = TimedContext(), Person(project.folder, rounds={0})
    person.start()
    thread, box = run_in_thread(project, config, ctx)
    try:
        thread.join(120)
    finally:
        finish(ctx, thread, person)
    assert box["out"].status == "completed", box["out"].error
    # round 1's wait: from its first "waiting" report to the metrics logged when it ended
    after_ppo = next(i for i, (_, kind, m) in enumerate(ctx.timed)
                     if kind == "metrics" and "rollout/true_return" in m[1])
    began = next(t for t, kind, m in ctx.timed[after_ppo:] if kind == "progress" and "waiting for labels" in m)
    ended = next(t for t, kind, m in ctx.timed[after_ppo:] if kind == "metrics" and "preferences/waiting" in m[1])
    assert 1.5 <= ended - began <= 2.0 + 2.0
    assert ctx.series("preferences/waiting") == ([0, 256], [0.0, 4.0])
    assert ctx.series("rollout/true_return")[0] == [256, 512]


def test_the_reward_refits_once_refit_after_new_labels_arrived(project):
    config = PreferenceRLConfig(**{**ASYNC, "steps_per_round": 2048, "refit_after": 3})
    ctx, person = TimedContext(), Person(project.folder, delay=0.05)
    person.start()
    thread, box = run_in_thread(project, config, ctx)
    try:
        thread.join(120)
    finally:
        finish(ctx, thread, person)
    out = box["out"]
    assert out.status == "completed", out.error
    refit_steps, refits = ctx.series("preferences/refits")
    label_steps, labels = ctx.series("preferences/labels")
    assert label_steps == refit_steps
    # the first fit at 0; round 1's end (2048) had no new label yet (max_wait_seconds = 0), so no refit there;
    # the person's answers arrived while round 2's PPO trained: a refit between its updates
    assert refit_steps[:2] == [0, 2048] and refits[:2] == [1.0, 1.0] and labels[:2] == [4.0, 4.0]
    during = [i for i, s in enumerate(refit_steps) if 2048 < s <= 4096]
    assert during and refits[during[0]] == 2.0 and labels[during[0]] - 4.0 >= 3
    assert out.result["refits"] == refits[-1] and out.result["labels"] >= 7


def _earlier_labels(project):
    """Labelled clip pairs of CartPole (left, right, tie, skip, one undone) and one of Pendulum."""
    for env_id, n_pairs in (("CartPole-v1", 5), ("Pendulum-v1", 1)):
        env = make_env(env_id)
        ids = [save_trajectory(project, rollout(env, RandomPolicy(env.action_space, seed=s), seed=s, max_steps=30,
                                                source={"kind": "random"})) for s in range(2)]
        close_env(env)
        clips = make_clips(project, ids, length=8, per_trajectory=2)
        queue = queue_random_pairs(project, clips, n_pairs)
        outcomes = ["left", "right", "tie", "skip", "left"] if env_id == "CartPole-v1" else ["left"]
        cids = [project.claim_pair(q, o, source="synthetic") for q, o in zip(queue, outcomes)]
        if env_id == "CartPole-v1":
            project.undo_comparison(cids[-1])


def test_earlier_labels_of_the_env_seed_the_reward_model(project):
    _earlier_labels(project)
    # 3 earlier labels of CartPole state a preference: round 0 asks for the 2 initial_labels lacks
    config = PreferenceRLConfig(**{**ASYNC, "rounds": 1, "seed_labels": True, "initial_labels": 5,
                                   "min_labels_to_start": 3})
    ctx = RecordingContext()
    out = execute_job(get_job("preference_rl"), config, ctx, project_path=project.folder)
    assert out.status == "completed", out.error
    assert ctx.series("preferences/labels") == ([0], [3.0]) and out.result["labels"] == 3
    assert len(project.run_queue(out.run_id)) == 2
    assert any("3 earlier labels of CartPole-v1" in m for m in ctx.messages)
    # enough earlier labels: nothing asked
    again = execute_job(get_job("preference_rl"), PreferenceRLConfig(**{**ASYNC, "rounds": 1, "seed_labels": True,
                                                                       "initial_labels": 3}),
                        RecordingContext(), project_path=project.folder)
    assert again.status == "completed" and again.result["labels"] == 3 and project.run_queue(again.run_id) == []


def _cancel_when(ctx, thread, box, text, after=None):
    """Cancel once a progress report (after the ``after``-th metric call) contains ``text``; the seconds the
    job took to end."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(
            kind == "progress" and text in m for _, kind, m in ctx.timed[after or 0:]):
        time.sleep(0.05)
    cancelled = time.monotonic()
    ctx.cancel()
    thread.join(30)
    return box["out"], time.monotonic() - cancelled


def test_the_first_fit_waits_for_its_labels_and_cancel_ends_that_wait(project):
    config = PreferenceRLConfig(**{**ASYNC, "max_wait_seconds": 0.0})  # still waits: the first fit needs labels
    ctx = TimedContext()
    thread, box = run_in_thread(project, config, ctx)
    try:
        out, took = _cancel_when(ctx, thread, box, "the first reward fit needs 4 more")
    finally:
        finish(ctx, thread)
    assert out.status == "cancelled" and took < 2.0
    assert not ctx.metric_log  # no fit, no PPO


def test_cancel_during_a_rounds_wait_ends_the_run_within_two_seconds(project):
    config = PreferenceRLConfig(**{**ASYNC, "max_wait_seconds": 600.0})
    ctx, person = TimedContext(), Person(project.folder, rounds={0})
    person.start()
    thread, box = run_in_thread(project, config, ctx)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not ctx.series("rollout/true_return")[0]:
            time.sleep(0.05)
        out, took = _cancel_when(ctx, thread, box, "waiting for labels", after=len(ctx.timed))
    finally:
        finish(ctx, thread, person)
    assert out.status == "cancelled" and took < 2.0
    assert load_state(project.run_folder(out.run_id)).step == 0  # the end of round 0
    assert len([q for q in project.run_queue(out.run_id) if q["outcome"] is None]) == 4  # still queued


def test_seed_labels_without_a_project_is_one_clear_sentence():
    config = PreferenceRLConfig(**{**ASYNC, "seed_labels": True, "labeller": "synthetic"})
    out = execute_job(get_job("preference_rl"), config, RecordingContext())
    assert out.status == "failed" and "seed_labels needs a project" in out.message
