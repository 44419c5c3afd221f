"""A labelling study in the views: the guidelines pane beside every labelling view (shown, collapsible,
edited into new versions, inert Markdown) with each label recording the version shown; the labeller
chosen in the view labels the overlap pairs blind; agreement on clips in its panel."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QApplication

from app.labeling.clip_pair_view import ClipPairView
from app.labeling.guidelines import GuidelinesDialog, GuidelinesPane
from app.labeling.ranking_view import RankingView
from app.labeling.text_pair_view import TextPairView
from app.labeling.text_rank_view import TextRankView
from app.labeling.writer import close_writer
from rlhf_core.labelers.text_labels import queue_response_pairs
from tests.app.conftest import wait_saved
from tests.app.labeling.test_labeling import fill

GUIDE = "# What better means\n\nThe pole stays **upright** longer.\n\n## Edge cases\n\n- Both fall: *tie*.\n"


@pytest.fixture
def study(project):
    yield project
    close_writer(project)  # the writer's connection goes before the project's


@pytest.fixture
def view_of(qtbot, settings, study):
    """Open a labelling view on the study's project; closed (frames still decoding dropped) at the end."""
    views = []

    def make(cls):
        view = cls(settings)
        qtbot.addWidget(view)
        view.resize(1500, 800)
        view.set_project(study)
        view.show()
        views.append(view)
        return view

    yield make
    for view in views:
        view.set_project(None)
        if hasattr(view, "frames"):
            view.frames.wait()
    qtbot.wait(20)


def versions(project) -> list[int | None]:
    return [c["guideline_version"] for c in project.comparisons()]


def test_every_labelling_view_shows_the_guidelines_and_its_labels_record_their_version(qtbot, view_of, study):
    project = study
    trajectories = fill(project, n_traj=3, pairs=3)
    pid = project.add_prompt("Name a colour.")
    for text in ("red", "blue", "green"):
        project.add_item("response", prompt_id=pid, text=text, source="generated")
    queue_response_pairs(project, seed=0)
    assert project.save_guidelines(GUIDE) == 1

    clip = view_of(ClipPairView)
    text = view_of(TextPairView)
    rank = view_of(RankingView)
    text_rank = view_of(TextRankView)
    for view in (clip, text, rank, text_rank):
        pane = view.guidelines
        assert pane.isVisible() and pane.is_open() and pane.title.text() == "Guidelines · version 1"
        assert "The pole stays upright longer." in pane.text() and "Both fall: tie." in pane.text()
        assert pane.note.text() == "Labels given here record version 1."
        assert pane.x() > view.width() // 2  # beside the view, on its right
    qtbot.keyClick(clip, Qt.Key.Key_Left)
    qtbot.keyClick(text, Qt.Key.Key_Right)
    rank.load_items(trajectories)
    rank.save()
    text_rank.load_first()
    text_rank.save()
    wait_saved(qtbot)
    assert versions(project) == [1] * 8  # a clip, a text pair, 3 + 3 pairs of two rankings
    assert [r[0] for r in project.conn.execute("SELECT guideline_version FROM rankings")] == [1, 1]

    # editing makes version 2: the pane that saved it shows it at once, the others when next shown
    clip.guidelines.save(GUIDE + "\n- One falls: the other one is better.\n")
    wait_saved(qtbot)
    assert project.guideline_version() == 2 and clip.guidelines.title.text() == "Guidelines · version 2"
    assert "One falls: the other one is better." in clip.guidelines.text()
    for view in (text, rank, text_rank):
        view.hide()
        view.show()
        assert view.guidelines.title.text() == "Guidelines · version 2"
    qtbot.keyClick(clip, Qt.Key.Key_Right)
    qtbot.keyClick(text, Qt.Key.Key_Equal)
    rank.save()
    wait_saved(qtbot)
    assert versions(project) == [1] * 8 + [2, 2, 2, 2, 2]
    assert [v["version"] for v in project.guideline_versions()] == [2, 1]  # version 1 is kept


def test_the_editor_dialog_saves_a_version_and_the_overlap(qtbot, settings, study):
    project = study
    pane = GuidelinesPane(settings)
    qtbot.addWidget(pane)
    pane.set_project(project)
    pane.show()
    assert pane.title.text() == "Guidelines" and "No guidelines yet" in pane.view.placeholderText()

    def fill_and_save():
        dialog = QApplication.activeModalWidget()
        assert isinstance(dialog, GuidelinesDialog) and "What \"better\" means" in dialog.text()  # a template
        dialog.editor.setPlainText(GUIDE)
        dialog.overlap_box.setValue(25)
        dialog.answers_box.setValue(3)
        dialog.accept()

    QTimer.singleShot(0, fill_and_save)
    assert pane.edit()
    wait_saved(qtbot)
    assert project.guideline_version() == 1 and project.overlap() == (0.25, 3)
    assert pane.title.text() == "Guidelines · version 1" and pane.show_button.text().startswith("Guidelines v1")
    # the dialog refuses to empty the guidelines (one sentence, the dialog stays open); earlier versions load
    project.save_guidelines("Version two.")
    dialog = GuidelinesDialog(project, pane)
    qtbot.addWidget(dialog)
    assert dialog.text() == "Version two." and dialog.overlap() == (0.25, 3)
    dialog.editor.setPlainText("  ")
    dialog.accept()
    assert dialog.result() != GuidelinesDialog.DialogCode.Accepted and "empty" in dialog.message.text()
    dialog.history.setCurrentIndex(dialog.history.findData(1))
    dialog.history.activated.emit(dialog.history.currentIndex())
    assert dialog.text() == GUIDE
    # a bad value from the store reaches the pane as a sentence; nothing changes
    pane.save("Version three.", (2.0, 2))
    wait_saved(qtbot)
    assert "overlap" in pane.note.text() and project.guideline_version() == 2 and project.overlap() == (0.25, 3)


def test_guidelines_are_inert_markdown_and_the_pane_collapses(qtbot, settings, study, tmp_path):
    from PySide6.QtGui import QColor, QImage

    from tests.app.test_untrusted_text import FileWatch

    project = study
    png = tmp_path / "probe.png"
    image = QImage(8, 8, QImage.Format.Format_RGB32)
    image.fill(QColor("red"))
    assert image.save(str(png), "PNG")
    watch = FileWatch(png)  # any open or read of the PNG counts from here
    url = f"file://{png}"
    project.save_guidelines(f"See [the notes]({url}) and ![a cat]({url}) or ![remote](http://example.com/x.png) "
                            f"<img src='{url}'> <b>raw</b>\n")
    pane = GuidelinesPane(settings)
    qtbot.addWidget(pane)
    pane.resize(320, 400)
    pane.set_project(project)
    pane.show()
    dialog = GuidelinesDialog(project, pane)  # its preview renders the same text
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.wait(50)  # laid out and painted
    assert watch.poll() == 0
    watch.close()
    html = pane.view.toHtml()
    assert pane.view.resources_asked == [] and "href" not in html and "<img" not in html
    text = pane.text()
    assert f"the notes ({url})" in text and f"[image: {url}]" in text
    assert "[image: http://example.com/x.png]" in text and "<b>raw</b>" in text  # HTML stays literal text
    assert dialog.preview.toPlainText() == text and dialog.preview.resources_asked == []
    assert not pane.view.textInteractionFlags() & Qt.TextInteractionFlag.LinksAccessibleByMouse
    # collapsed to a narrow strip; remembered for the next pane (another view)
    pane.set_open(False)
    assert pane.body.isHidden() and pane.show_button.isVisible() and pane.width() < 60
    other = GuidelinesPane(settings)
    qtbot.addWidget(other)
    assert not other.is_open()
    qtbot.mouseClick(pane.show_button, Qt.MouseButton.LeftButton)
    assert pane.is_open() and pane.width() > 200


def test_overlap_pairs_go_to_a_second_labeller_blind_and_agreement_shows_it(qtbot, settings, view_of, study):
    project = study
    project.set_overlap(1.0, 2)  # every pair queued from now on goes to two labellers
    fill(project, n_traj=2, pairs=2)
    settings.labeller = "ann"
    view = view_of(ClipPairView)
    assert view.labeller_box.name() == "ann"
    first = view.current
    qtbot.keyClick(view, Qt.Key.Key_Left)
    wait_saved(qtbot)
    assert view.current["id"] != first["id"] and view.progress_label.text() == "Labelled 1 · 1 waiting"
    # bob takes over at the same computer: he is shown the pair ann answered, not her answer
    view.labeller_box.choose("bob")
    assert settings.labeller == "bob"
    assert view.current["id"] == first["id"] and view.recent.count() == 0
    assert view.progress_label.text() == "Labelled 1 · 2 waiting"
    qtbot.keyClick(view, Qt.Key.Key_Right)
    wait_saved(qtbot)
    assert view.recent.count() == 1 and "· bob" in view.recent.item(0).text()
    view.labeller_box.choose("ann")
    assert view.current["id"] != first["id"] and view.recent.count() == 1 and "· ann" in view.recent.item(0).text()
    labels = {(c["labeller_id"], c["outcome"]) for c in project.comparisons()}
    assert labels == {(project.labeller_id("ann"), "left"), (project.labeller_id("bob"), "right")}
    # their agreement on clips: 0 of 1, in the clip page's agreement window
    panel = view.show_agreement().panel
    qtbot.addWidget(view.agreement_dialog)
    assert panel.kind == "clip"
    assert panel.summary.text().startswith("Agreement 0.0 % on 1 pair of clips labelled by two or more of 2 labellers")
    assert [panel.table.item(0, c).text() for c in range(4)] == ["ann", "bob", "1", "0.0 %"]
    assert panel.versions.rowCount() == 1 and panel.versions.item(0, 0).text() == "no guidelines"
    assert panel.disagreements.item(0, 1).text() == "CartPole-v1"
    a, b = sorted((first["left_id"], first["right_id"]))
    swapped = first["left_id"] != a
    assert panel.disagreements.item(0, 2).text() == (f"ann: {b if swapped else a} better · "
                                                     f"bob: {a if swapped else b} better")
