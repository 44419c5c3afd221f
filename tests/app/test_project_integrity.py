"""A project too large to check on open is checked in the background, and damage is told in words."""

from __future__ import annotations

from rlhf_core.store import Project


def _damage_last_pages(folder):
    db = folder / "project.db"
    data = bytearray(db.read_bytes())  # no connection is open: safe to touch the file directly
    for off in range(len(data) - 4096 * 6, len(data) - 4096, 4096 * 2):
        data[off: off + 200] = b"\xff" * 200
    db.write_bytes(bytes(data))


def _make(folder, damaged):
    with Project.create(folder) as p:
        for i in range(300):
            p.add_prompt("prompt %d " % i * 20)
        p.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    if damaged:
        _damage_last_pages(folder)


def test_background_check_reports_damage_of_a_large_project(qtbot, window, tmp_path, monkeypatch):
    import app.main_window as mw
    from rlhf_core.store import project as project_module

    monkeypatch.setattr(mw, "QUICK_CHECK_MAX_BYTES", 0)  # every project counts as too large to check on open
    monkeypatch.setattr(project_module, "QUICK_CHECK_MAX_BYTES", 0)
    sound, damaged = tmp_path / "sound.rlhf", tmp_path / "damaged.rlhf"
    _make(sound, False)
    _make(damaged, True)
    results = []
    window.integrity_checked.connect(lambda path, problems: results.append((path, problems)))

    assert window.open_project(sound)
    qtbot.waitUntil(lambda: len(results) == 1, timeout=20_000)
    assert results[0] == (str(sound / "project.db"), [])
    assert "damaged" not in window.error_panel.text.toPlainText()

    # opens at once; reading the damaged pages for the overview fails in words, not with an exception,
    # and the check that follows in its own thread finds the damage too (told once)
    assert window.open_project(damaged)
    assert window.project.folder == damaged
    qtbot.waitUntil(lambda: len(results) == 2, timeout=20_000)
    assert results[1][0] == str(damaged / "project.db") and results[1][1]
    text = window.error_panel.text.toPlainText()
    assert text.count("The project's database is damaged") == 1
    assert "Copy the project folder somewhere safe" in text and "Traceback" not in text
