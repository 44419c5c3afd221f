import argparse
import json
from dataclasses import dataclass

import pytest

from rlhf_core import config as cfg
from rlhf_core.config import ConfigError, param
from rlhf_core.trainers.control.synthetic_preferences import SyntheticPreferenceConfig


@dataclass
class DemoConfig:
    lr: float = param(1e-3, "Learning rate.", min=0.0, min_inclusive=False)
    steps: int = param(10, "Steps.", min=1, max=100)
    mode: str = param("a", "Mode.", choices=("a", "b"))
    verbose: bool = param(False, "Talk more.")
    envs: list = param(["CartPole-v1"], "Environment ids.")


def test_every_field_of_every_registered_job_has_help_text():
    from rlhf_core.jobs import list_jobs

    for spec in list_jobs():
        for f in cfg.fields(spec.config_class()):
            assert f.help.strip(), f"{spec.name}.{f.name} has no help text"


def test_validate_lists_every_problem():
    bad = DemoConfig(lr=0.0, steps=1000, mode="c", verbose="yes")
    with pytest.raises(ConfigError) as err:
        cfg.validate(bad)
    text = str(err.value)
    assert len(err.value.problems) == 4
    assert "lr: must be greater than 0.0" in text and "steps: must be at most 100" in text
    assert "mode: must be one of" in text and "verbose: expected true/false" in text


def test_nan_and_wrong_types_rejected():
    with pytest.raises(ConfigError, match="finite"):
        cfg.validate(DemoConfig(lr=float("nan")))
    with pytest.raises(ConfigError, match="whole number"):
        cfg.validate(DemoConfig(steps=2.5))


def test_json_round_trip_and_unknown_keys():
    c = DemoConfig(lr=0.01, steps=5, mode="b", envs=["Pendulum-v1"])
    again = cfg.from_dict(DemoConfig, json.loads(cfg.to_json(c)))
    assert again == c
    assert cfg.from_dict(DemoConfig, {"lr": 1}).lr == 1.0  # int accepted for a float
    with pytest.raises(ConfigError, match="unknown setting 'stpes'"):
        cfg.from_dict(DemoConfig, {"stpes": 3})


def test_mutable_defaults_are_not_shared():
    a, b = DemoConfig(), DemoConfig()
    a.envs.append("x")
    assert b.envs == ["CartPole-v1"]


def test_cli_flags_from_config():
    parser = argparse.ArgumentParser()
    cfg.add_arguments(parser, DemoConfig)
    args = parser.parse_args(["--steps", "7", "--mode", "b", "--verbose", "--envs", "A-v0, B-v1"])
    c = cfg.from_args(DemoConfig, args)
    assert (c.steps, c.mode, c.verbose, c.envs, c.lr) == (7, "b", True, ["A-v0", "B-v1"], 1e-3)


def test_cross_field_check():
    with pytest.raises(ConfigError, match="no training pairs"):
        cfg.validate(SyntheticPreferenceConfig(n_pairs=2, heldout_fraction=0.9))


def test_list_flags_are_split_and_numbers_converted():
    import argparse

    from rlhf_core.config import add_arguments, param, parse_list

    assert parse_list("9, 10,,x,0.5") == [9, 10, "x", 0.5]

    @dataclass
    class WithList:
        ids: list = param([], "Some ids.")

    parser = argparse.ArgumentParser()
    add_arguments(parser, WithList)
    assert parser.parse_args(["--ids", "9,10"]).ids == [9, 10]


def test_old_names_belong_to_the_job_that_had_them(capsys):
    from rlhf_core.cli import main
    from rlhf_core.jobs import get_job

    bc = cfg.from_dict(get_job("bc").config_class(), {"lr": 0.01})
    assert bc.learning_rate == 0.01  # bc had `lr`
    with pytest.raises(cfg.ConfigError, match="lr"):  # dpo never had it
        cfg.from_dict(get_job("dpo").config_class(), {"lr": 0.01})
    assert main(["run", "dpo", "--project", "nowhere.rlhf", "--lr", "1e-6"]) == 2
    assert "--lr" in capsys.readouterr().err
    for job, renames in cfg.RENAMED_FIELDS.items():  # each table entry is on its job's config class
        assert cfg.old_names(get_job(job).config_class()) == renames
