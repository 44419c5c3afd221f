"""The headless CLI: help, a job with a JSON last line, clear errors for bad input."""

import json
import subprocess
import sys

from tests.conftest import ROOT


def cli(*args, timeout=180):
    return subprocess.run([sys.executable, "-m", "rlhf_core", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_help_lists_commands():
    out = cli("--help")
    assert out.returncode == 0
    for command in ("new-project", "info", "jobs", "run", "metrics", "demo-project"):
        assert command in out.stdout
    jobs = cli("jobs")
    assert "synthetic_preferences" in jobs.stdout


def test_run_prints_progress_and_json_last_line(tmp_path):
    folder = tmp_path / "c.rlhf"
    assert cli("new-project", folder).returncode == 0
    out = cli("run", "synthetic_preferences", "--project", folder, "--steps", 20, "--n-pairs", 200)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["status"] == "completed" and result["run_id"] == 1
    assert "[" in out.stderr and "100.0%" in out.stderr  # the text progress bar
    info = json.loads(cli("info", folder).stdout.strip().splitlines()[-1])
    assert info["runs"][0]["status"] == "completed"
    metrics = json.loads(cli("metrics", folder, "--run", 1).stdout)
    assert metrics["metrics"]["reward_model/loss"]["steps"] == list(range(20))


def test_bad_input_gives_clear_messages(tmp_path):
    out = cli("run", "synthetic_preferences", "--lr", "-1", "--steps", "0")
    assert out.returncode == 2
    assert "learning_rate: must be greater than 0.0" in out.stderr and "steps: must be at least 1" in out.stderr
    assert "--lr is deprecated; use --learning-rate" in out.stderr  # the old flag still works
    out = cli("run", "no_such_job")
    assert out.returncode == 2 and "unknown job 'no_such_job'" in out.stderr
    (tmp_path / "x").mkdir()
    out = cli("info", tmp_path / "x")
    assert out.returncode == 2 and "not a workbench project" in out.stderr
    assert list((tmp_path / "x").iterdir()) == []


def test_demo_extrapolation_prints_the_promised_keys():
    out = cli("demo", "extrapolation", "--env", "CartPole-v1", "--seed", 1, "--learner-steps", 1024,
              "--checkpoint-every", 512, "--max-demo-return", 1000, "--ppo-steps", 1024, "--members", 1,
              "--reward-steps", 30, "--snippet-min", 5, "--snippet-max", 10, "--snippet-pairs", 100,
              "--eval-episodes", 1, "--no-video-of-policy")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    for key in ("best_demo_return", "mean_demo_return", "policy_return", "reward_correlation", "wall_seconds"):
        assert isinstance(result[key], float), key
    assert result["env_id"] == "CartPole-v1" and result["seed"] == 1 and result["status"] == "completed"


def test_demo_project_command_creates_the_same_demo_as_the_app(tmp_path):
    from rlhf_core.demo import DEMO_RUNS

    folder = tmp_path / "demo.rlhf"
    out = cli("demo-project", folder)
    assert out.returncode == 0, out.stderr
    info = json.loads(cli("info", folder).stdout.strip().splitlines()[-1])
    assert info["name"] == "Demo project" and info["counts"]["labellers"] == 2
    assert [r["kind"] for r in info["runs"]] == [name for name, _ in DEMO_RUNS]
    assert all(r["status"] == "completed" for r in info["runs"])
    assert info["counts"]["queued_pairs"] == dict(DEMO_RUNS)["rollouts"]["queue_pairs"]


def test_every_command_and_job_prints_its_help():
    from rlhf_core.cli import main
    from rlhf_core.jobs import list_jobs

    commands = ["artefacts", "resume", "sweep", "round", "export", "import", "eval-text", "prompts", "info",
                "export-metrics", "report"]
    for argv in [["--help"], *[[c, "--help"] for c in commands], *[["run", j.name, "--help"] for j in list_jobs()]]:
        assert main(argv) == 0, argv
