"""The main window's pages: one table, from which the window builds its pages and navigation list and
``python -m app --page`` takes its choices. Qt-free, so that ``--page`` is checked before the ~1 s of
widget imports; the classes are imported when the window is built (PyInstaller collects all of ``app``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


def _no_options(settings) -> dict[str, Any]:
    return {}


def _settings(settings) -> dict[str, Any]:
    return {"settings": settings}


@dataclass(frozen=True)
class Page:
    name: str  # `--page NAME`, MainWindow.show_page(NAME)
    title: str  # its line in the navigation list
    attr: str  # the MainWindow attribute that holds the widget
    widget: str  # "module:Class"
    options: Callable[[Any], dict[str, Any]] = field(default=_no_options)  # the class's keyword arguments, from Settings


PAGES: tuple[Page, ...] = (
    Page("project", "Project", "project_page", "app.pages.project_page:ProjectPage"),
    Page("runs", "Runs & plots", "runs_page", "app.pages.runs_page:RunsPage"),
    Page("models", "Models", "models_page", "app.pages.models_page:ModelsPage"),
    Page("rounds", "Rounds", "rounds_page", "app.pages.rounds_page:RoundsPage"),
    Page("sweeps", "Sweeps", "sweeps_page", "app.pages.sweeps_page:SweepsPage"),
    Page("clips", "Label clips", "clip_page", "app.labeling.clip_pair_view:ClipPairView", _settings),
    Page("rank", "Rank trajectories", "ranking_page", "app.labeling.ranking_view:RankingView", _settings),
    Page("demo", "Record demo", "demo_page", "app.labeling.demo_recorder:DemoRecorderView", _settings),
    Page("extrapolation", "Extrapolation", "extrapolation_page", "app.analysis.extrapolation_view:ExtrapolationView"),
    Page("generate", "Generate text", "generate_page", "app.pages.generate_page:GeneratePage"),
    Page("text", "Label text", "text_page", "app.labeling.text_pair_view:TextLabelPage", _settings),
    Page("labels", "Labels", "labels_page", "app.labeling.label_browser:LabelBrowserView"),
    Page("adjudicate", "Adjudicate", "adjudication_page", "app.labeling.adjudication_view:AdjudicationView", _settings),
    Page("text_rm", "Text reward model", "text_reward_page", "app.pages.text_reward_page:TextRewardPage",
         lambda settings: {"torch_threads": settings.torch_threads}),
    Page("text_rl", "Text RL", "text_rl_page", "app.pages.text_rl_page:TextRLPage"),
)
