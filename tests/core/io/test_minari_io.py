"""Minari datasets: export read back by minari's own load_dataset, import back as demonstrations (equal
arrays, a T-REX ranking), bad datasets and ids refused with nothing written, the CLI."""

from __future__ import annotations

import json

import h5py
import minari
import numpy as np
import pytest

from rlhf_core.cli import main as cli_main
from rlhf_core.envs.make import close_env, make_env
from rlhf_core.envs.policies import RandomPolicy
from rlhf_core.envs.rollout import rollout
from rlhf_core.envs.storage import load_arrays, save_trajectory
from rlhf_core.io.minari_io import MinariError, export_minari, import_minari
from rlhf_core.store import Project

ENV = "CartPole-v1"
DATASET = "workbench/cartpole-random-v0"


@pytest.fixture(autouse=True)
def _minari_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    return tmp_path / "minari"


def _trajectories(project, n=4, env_id=ENV, max_steps=25):
    env = make_env(env_id, render=False)
    try:
        return [save_trajectory(project, rollout(env, RandomPolicy(env.action_space, seed=s), seed=s,
                                                 max_steps=max_steps, render=False, source={"kind": "random"}))
                for s in range(n)]
    finally:
        close_env(env)


def _state(project) -> dict:
    tables = ("items", "comparisons", "labellers", "rankings")
    counts = {t: project.conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}
    counts["files"] = sorted(p.name for p in (project.folder / "media").iterdir())
    return counts


def test_export_is_read_by_minari_and_imports_back_equal(project, tmp_path):
    ids = _trajectories(project)
    report = export_minari(project, ENV, DATASET)
    assert report.episodes == 4 and report.trajectory_ids == ids

    dataset = minari.load_dataset(DATASET)  # minari's own reader, from MINARI_DATASETS_PATH
    assert dataset.total_episodes == 4 and dataset.spec.env_spec.id == ENV
    assert dataset.total_steps == sum(project.get_item(i)["length"] for i in ids)
    metadata = list(dataset.storage.get_episode_metadata(range(4)))
    for tid, episode, meta in zip(ids, dataset.iterate_episodes(), metadata):
        ours = load_arrays(project, project.get_item(tid))
        np.testing.assert_array_equal(episode.observations, ours["observations"])
        np.testing.assert_array_equal(episode.actions, ours["actions"])
        np.testing.assert_array_equal(episode.rewards, ours["rewards"])
        assert episode.actions.dtype == np.int64  # Discrete actions as the space's dtype
        terminated = json.loads(project.get_item(tid)["meta_json"])["terminated"]
        assert episode.terminations[-1] == terminated and episode.truncations[-1] == (not terminated)
        assert not episode.terminations[:-1].any() and not episode.truncations[:-1].any()
        assert meta["workbench_item_id"] == tid and meta["seed"] == project.get_item(tid)["seed"]

    target = tmp_path / "imported.rlhf"
    back = import_minari(target, DATASET, ranking="return")
    assert back.project_created and back.env_id == ENV and len(back.trajectory_ids) == 4
    with Project.open(target) as other:
        returns = {}
        for tid, new in zip(ids, back.trajectory_ids):
            a, b = load_arrays(project, project.get_item(tid)), load_arrays(other, other.get_item(new))
            for key in a:
                np.testing.assert_array_equal(a[key], b[key])
            item = other.get_item(new)
            assert item["source"] == "import" and item["env_id"] == ENV and item["media_path"] is None
            assert json.loads(item["params_json"])["dataset_id"] == DATASET
            returns[new] = item["true_return"]
        groups = other.ranking_groups(back.ranking_id)  # worst -> best by return, equal returns tied
        flat = [returns[i] for g in groups for i in g]
        assert flat == sorted(flat) and all(len({returns[i] for i in g}) == 1 for g in groups)
        # the bc job's default demonstrations include them
        assert {t["id"] for t in other.items("trajectory") if t["source"] in ("human", "checkpoint", "import")} \
            == set(back.trajectory_ids)
        before = _state(other)
        with pytest.raises(MinariError, match="already in this project"):
            import_minari(other, DATASET)
        assert _state(other) == before


def test_bc_and_trex_train_on_an_imported_dataset(project, tmp_path):
    from rlhf_core.jobs import RecordingContext, execute_job, get_job
    from rlhf_core.trainers.control.bc import BCConfig
    from rlhf_core.trainers.control.reward_model import RewardModelConfig

    _trajectories(project, n=4)
    export_minari(project, ENV, DATASET)
    target = tmp_path / "demos.rlhf"
    back = import_minari(target, DATASET, ranking="return")
    bc = execute_job(get_job("bc"), BCConfig(env_id=ENV, epochs=2, eval_episodes=0, hidden=8), RecordingContext(),
                     project_path=target)
    assert bc.status == "completed", bc.error
    assert bc.result["demos"] == 4  # every imported episode, by the job's default selection
    trex = execute_job(get_job("reward_model"), RewardModelConfig(
        env_id=ENV, source="rankings", members=1, steps=10, snippet_pairs=20, snippet_min=2, snippet_max=4,
        hidden=8), RecordingContext(), project_path=target)
    assert trex.status == "completed", trex.error
    assert back.ranking_id is not None


def test_ranking_in_the_datasets_order(project):
    _trajectories(project, n=3)
    export_minari(project, ENV, DATASET)
    back = import_minari(project, DATASET, ranking="order")
    assert project.ranking_groups(back.ranking_id) == [[i] for i in back.trajectory_ids]
    assert project.conn.execute("SELECT source FROM rankings WHERE id = ?", [back.ranking_id]).fetchone()[0] == "auto"


@pytest.mark.parametrize("bad", ["cartpole", "ns/cartpole", "ns//cartpole-v0", "../cartpole-v0", "ns/cart pole-v0", ""])
def test_a_bad_dataset_id_writes_nothing(project, bad, _minari_folder):
    with pytest.raises(MinariError, match="is not a Minari dataset id"):
        export_minari(project, ENV, bad)
    assert not _minari_folder.exists() or not any(_minari_folder.iterdir())


def test_an_existing_dataset_is_not_overwritten(project):
    _trajectories(project, n=2)
    export_minari(project, ENV, DATASET)
    with pytest.raises(MinariError, match="already exists"):
        export_minari(project, ENV, DATASET)
    assert minari.load_dataset(DATASET).total_episodes == 2


def _write_dataset(dataset_id, obs_space, act_space, env_spec, episodes):
    """A dataset written with minari's own storage API (as another tool would)."""
    from minari.data_collector import EpisodeBuffer
    from minari.dataset.minari_storage import MinariStorage
    from minari.storage import get_dataset_path

    (get_dataset_path(dataset_id) / "data").mkdir(parents=True)
    storage = MinariStorage.new(get_dataset_path(dataset_id) / "data", observation_space=obs_space,
                                action_space=act_space, env_spec=env_spec, jpeg_encoding=False)
    storage.update_metadata({"dataset_id": dataset_id, "minari_version": minari.__version__})
    storage.update_episodes([EpisodeBuffer(observations=o, actions=a, rewards=np.ones(len(a), np.float32),
                                           terminations=np.zeros(len(a), bool), truncations=np.zeros(len(a), bool),
                                           infos={}) for o, a in episodes])
    return get_dataset_path(dataset_id) / "data"


def test_bad_datasets_are_refused_and_nothing_is_written(project, tmp_path):
    import gymnasium as gym
    from gymnasium.envs.registration import EnvSpec

    _trajectories(project, n=2)
    export_minari(project, ENV, DATASET)
    box4, box3 = gym.spaces.Box(-1, 1, (4,), np.float32), gym.spaces.Box(-1, 1, (3,), np.float32)
    episode = [(np.zeros((4, 4), np.float32), np.zeros(3, np.int64))]
    # recorded in an environment nobody registered (its entry point must never be imported)
    _write_dataset("other/unknown-env-v0", box4, gym.spaces.Discrete(2),
                   EnvSpec("NoSuchEnv-v0", entry_point="evil_module:Env"), episode)
    # no env spec, observations of another size than CartPole's
    _write_dataset("other/three-numbers-v0", box3, gym.spaces.Discrete(2), None,
                   [(np.zeros((4, 3), np.float32), np.zeros(3, np.int64))])
    # an episode without rewards
    data = _write_dataset("other/no-rewards-v0", box4, gym.spaces.Discrete(2), gym.spec(ENV), episode)
    with h5py.File(data / "main_data.hdf5", "a") as fh:
        del fh["episode_0"]["rewards"]
    # actions outside the space
    _write_dataset("other/bad-actions-v0", box4, gym.spaces.Discrete(2), gym.spec(ENV),
                   [(np.zeros((4, 4), np.float32), np.array([0, 1, 5]))])

    cases = [
        ("other/unknown-env-v0", {}, "NoSuchEnv-v0 cannot be made here"),
        ("other/three-numbers-v0", {"env_id": ENV}, "recorded in another environment"),
        ("other/three-numbers-v0", {}, "names no environment"),
        ("other/no-rewards-v0", {}, "episode 0 of other/no-rewards-v0 has no 'rewards'"),
        ("other/bad-actions-v0", {}, "outside the environment's space"),
        (DATASET, {"env_id": "Pendulum-v1"}, "recorded in CartPole-v1, not Pendulum-v1"),
        ("other/missing-v0", {}, "there is no Minari dataset other/missing-v0"),
        (DATASET, {"ranking": "sideways"}, "ranking must be one of"),
    ]
    before = _state(project)
    for dataset_id, kwargs, message in cases:
        with pytest.raises(MinariError, match=message):
            import_minari(project, dataset_id, **kwargs)
        assert _state(project) == before, dataset_id
        fresh = tmp_path / "never-made.rlhf"
        with pytest.raises(MinariError):
            import_minari(fresh, dataset_id, **kwargs)
        assert not fresh.exists()  # a project is created only for a good dataset


def test_cli_export_and_import(project, tmp_path, capsys):
    _trajectories(project, n=2)
    project_path = str(project.folder)
    assert cli_main(["export", "--project", project_path, "--format", "minari", "--env-id", ENV,
                     "--dataset-id", DATASET]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["episodes"] == 2 and out["dataset_id"] == DATASET
    target = tmp_path / "cli.rlhf"
    assert cli_main(["import", "--project", str(target), "--format", "minari", "--ranking", "return", DATASET]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(out["trajectory_ids"]) == 2 and out["ranking_id"] == 1
    assert cli_main(["export", "--project", project_path, "--format", "minari", "--env-id", ENV,
                     "--dataset-id", "no version"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: 'no version' is not a Minari dataset id") and "Traceback" not in err
    assert cli_main(["import", "--project", str(target), "--format", "minari", "nope/missing-v0"]) == 2
    assert "there is no Minari dataset nope/missing-v0" in capsys.readouterr().err
