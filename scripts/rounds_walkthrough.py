"""Three control rounds and three text rounds on the demo project, from the GUI alone (run under Xvfb).

    xvfb-run -a -s "-screen 0 1920x1080x24" .venv/bin/python scripts/rounds_walkthrough.py OUT_DIR [--quick]

Drives the real window as a person would: Rounds ▸ Start round 1…, then Next round… on the round just made
(the dialog opens from its policy with its settings), three times per track; nothing is typed but the settings
a person would change in the form. Saves screenshots of the round dialog (its policy picker showing the
previous round's policy by name), the Models page and the Rounds page of each chain, and prints a JSON line
of the rounds (what the Rounds view shows) and their wall times. ``--quick`` uses tiny settings (minutes).
With ``RLHF_WORKBENCH_HOME`` of an earlier walkthrough, each track's chain goes on until it has three rounds.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RLHF_WORKBENCH_HOME", tempfile.mkdtemp(prefix="rounds-home-"))
os.environ.setdefault("QT_QPA_PLATFORM", "xcb")

CONTROL = dict(track="control", env_id="CartPole-v1", labeller="oracle", episodes=8, queue_pairs=24,
               previous_pairs=8, reward_steps=400, members=3, ppo_steps=20_000, heldout_fraction=0.2)
# the noisy (Boltzmann) teacher: two answers cut at the same length are a coin flip, not a tie DPO must drop
TEXT = dict(track="text", labeller="oracle", teacher="noisy", oracle_reward="length", prompt_set="starter",
            max_prompts=4, samples_per_prompt=4, max_new_tokens=96, policy_steps=10, algorithm="dpo", reward_epochs=2,
            heldout_fraction=0.2, previous_pairs=4)
QUICK = {"control": dict(episodes=4, queue_pairs=8, reward_steps=50, members=1, ppo_steps=2_000),
         "text": dict(max_prompts=2, samples_per_prompt=3, max_new_tokens=16, policy_steps=2, reward_epochs=1)}


def main(out: Path, quick: bool) -> dict:
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from app.main_window import MainWindow
    from app.settings import Settings

    qt = QApplication.instance() or QApplication(sys.argv)
    settings = Settings(str(Path(os.environ["RLHF_WORKBENCH_HOME"]) / "settings.ini"))
    window = MainWindow(settings, interactive=False)
    window.resize(1600, 900)
    window.show()
    window.open_demo_project()
    out.mkdir(parents=True, exist_ok=True)

    def pump(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            qt.processEvents()
            time.sleep(0.02)

    def wait_idle(limit: float = 3600.0) -> None:
        end = time.monotonic() + limit
        while time.monotonic() < end:
            pump(0.2)
            runs = window.project.runs()
            if runs and not any(r["status"] in ("queued", "running") for r in runs) and not window.runner.busy:
                return
        raise TimeoutError("the runs did not finish")

    wait_idle()  # the demo project's own first runs
    report: dict = {"rounds": [], "quick": quick}
    page = window.rounds_page
    for track, settings_ in (("control", CONTROL), ("text", TEXT)):
        values = {**settings_, **(QUICK[track] if quick else {})}
        page.refresh()  # a project that has rounds already (a walkthrough cut short): its chain goes on
        done = [row for row in page.rows if row["track"] == track and row["status"] == "completed"]
        report["rounds"] += [{"run_id": row["run_id"], "round": row["round"], "track": track, "earlier": True}
                             for row in done]
        for number in range(len(done) + 1, 4):
            window.show_page("rounds")
            pump(0.3)
            shot = out / f"round-dialog-{track}-{number}.png"

            def fill(values=values if number == 1 else {}, shot=shot):
                dialog = window.round_dialog
                for name, value in values.items():
                    dialog.form.set_value(name, value)
                pump(0.5)
                dialog.grab().save(str(shot))
                dialog.start_button.click()

            QTimer.singleShot(300, fill)
            started = time.monotonic()
            if number == 1:
                page.start_button.click()
            else:
                page.select(report["rounds"][-1]["run_id"])
                page.next_button.click()
            wait_idle()
            seconds = time.monotonic() - started
            page.refresh()
            row = page.rows[-1]
            assert row["status"] == "completed", row
            report["rounds"].append({**{k: row.get(k) for k in (
                "run_id", "chain", "round", "track", "from_name", "policy_name", "labels_added", "labels_total",
                "reward_heldout_accuracy", "heldout_pairs", "policy_reward", "gold_reward", "true_return",
                "win_by_reward_model", "win_n", "win_by_labeller", "labeller_n")}, "wall_seconds": round(seconds, 1)})
            print(json.dumps(report["rounds"][-1]), flush=True)
        page.select(report["rounds"][-1]["run_id"])
        pump(1.0)
        window.grab().save(str(out / f"rounds-{track}.png"))
    window.show_page("models")
    pump(1.0)
    window.grab().save(str(out / "models.png"))
    window.runner.shutdown(timeout=10)
    window.close()
    return report


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    result = main(Path(args[0] if args else "rounds-walkthrough"), "--quick" in sys.argv)
    print(json.dumps(result))
