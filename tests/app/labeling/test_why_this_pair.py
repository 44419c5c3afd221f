""""Why this pair": an active query's reason (each reward model member's P(left better)) above the answer keys."""

from __future__ import annotations

import json

from app.labeling.common import why_text
from rlhf_core.rewards.query_selection import reason


def test_why_text_names_the_selection_and_every_members_prediction():
    assert why_text(json.dumps(reason("disagreement", [0.2, 0.7, 0.55]))) == (
        "Why this pair: the reward models disagree most here (variance 0.044); their P(left better) = 0.20, 0.70, 0.55")
    text = why_text(json.dumps(reason("uncertainty", [0.45, 0.52])))
    assert "least sure" in text and "0.48" in text and "0.45, 0.52" in text
    assert why_text(json.dumps(reason("random", [0.9, 0.1]))).endswith("random selection; the reward models' "
                                                                        "P(left better) = 0.90, 0.10")
    assert why_text(json.dumps({"selection": "random"})) == "Why this pair: random selection"
    assert why_text("{}") == why_text(None) == why_text("not json") == why_text("[1]") == ""


def test_the_text_view_shows_why_an_active_query_was_asked(qtbot, window):
    project = window.project
    pid = project.add_prompt("Name a primary colour.")
    left, right = (project.add_item("response", prompt_id=pid, text=t, model_id="tiny") for t in ("Red.", "<b>Blue</b>"))
    project.enqueue_pair(left, right, reason=reason("disagreement", [0.1, 0.8, 0.5], pool="responses", heads=3))
    view = window.text_page.pairs
    window.text_page.set_project(project)
    window.show_page("text")
    qtbot.waitUntil(lambda: view.current is not None, timeout=5000)
    assert view.why_label.isVisible() and view.why_label.text().endswith("P(left better) = 0.10, 0.80, 0.50")
    project.enqueue_pair(right, left, reason={"selection": "all", "prompt_id": pid})
    qtbot.keyClick(view, "1")
    qtbot.waitUntil(lambda: view.current is not None and view.current["left_id"] == right, timeout=5000)
    assert view.why_label.text() == "Why this pair: every pair of responses to this prompt was queued"
