"""The environments the forms offer: supported families, newest version of each, every one makeable."""

from __future__ import annotations

from rlhf_core.envs.make import close_env, make_env, supported_env_ids


def test_supported_env_ids_newest_versions_by_family():
    rows = supported_env_ids()
    ids = [env_id for env_id, _ in rows]
    assert len(ids) == len(set(ids))
    families = [family for _, family in rows]
    assert families == sorted(families, key=["classic control", "Box2D", "MuJoCo", "Atari"].index)
    assert ids[:5] == ["Acrobot-v1", "CartPole-v1", "MountainCar-v0", "MountainCarContinuous-v0", "Pendulum-v1"]
    assert {"LunarLander-v3", "HalfCheetah-v5", "Hopper-v5", "ALE/Enduro-v5"} <= set(ids)
    # old versions, mujoco-py's v2/v3, the toy-text and jax families, and the compatibility shims are left out
    assert not {"CartPole-v0", "Hopper-v4", "Hopper-v3", "FrozenLake-v1", "phys2d/CartPole-v1",
                "GymV26Environment-v0", "Pong-v4"} & set(ids)


def test_one_listed_env_of_each_family_can_be_made():
    rows = dict(supported_env_ids())
    for env_id in ("CartPole-v1", "LunarLander-v3", "HalfCheetah-v5", "ALE/Enduro-v5"):
        assert env_id in rows
        env = make_env(env_id, render=False)
        close_env(env)
