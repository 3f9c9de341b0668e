"""The panel log belongs to the call writing it: panels side by side in threads of one
process, or nested in one thread, each write their own var/<mgr>.log."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from mgrhooks import Panel, logs


def make_panel(path: Path) -> Panel:
    for sub in ("etc/xml", "addon", "var"):
        (path / sub).mkdir(parents=True)
    return Panel(path)


def lines(panel: Panel) -> list[str]:
    return [line.split("] ", 1)[1] for line in (panel.root.log_file).read_text().splitlines()]


def test_two_panels_in_two_threads_each_write_their_own_log(tmp_path: Path) -> None:
    """Both threads are inside their panel's logging block at once and write in turns;
    each file gets exactly its own records, in order, none of the other's."""
    panels = {name: make_panel(tmp_path / name) for name in ("first", "second")}
    turns = threading.Barrier(2)
    failures: list[BaseException] = []

    def write(name: str) -> None:
        try:
            with panels[name].logging():
                turns.wait()
                for number in range(20):
                    logs.ACTION.info("%s %d", name, number)
                    turns.wait()
        except BaseException as exc:  # noqa: BLE001 (reported by the test)
            failures.append(exc)
            turns.abort()

    threads = [threading.Thread(target=write, args=(name,)) for name in panels]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not failures
    for name, panel in panels.items():
        assert lines(panel) == [f"action INFO {name} {number}" for number in range(20)]


def test_a_panel_logging_inside_another_gives_the_log_back(tmp_path: Path) -> None:
    outer, inner = make_panel(tmp_path / "outer"), make_panel(tmp_path / "inner")
    with outer.logging():
        logs.ACTION.info("one")
        with inner.logging():
            logs.ACTION.info("two")
        logs.ACTION.info("three")
    assert lines(outer) == ["action INFO one", "action INFO three"]
    assert lines(inner) == ["action INFO two"]


def test_the_applications_loggers_are_left_as_they_were(tmp_path: Path) -> None:
    """Writing the panel log changes nothing of the ``mgrhooks`` logger an embedding
    application configures (it lost its propagation and level before)."""
    logger = logging.getLogger("mgrhooks")
    before = (logger.level, logger.propagate, list(logger.handlers))
    with make_panel(tmp_path / "root").logging():
        logs.EXTERNAL.error("written")
    assert (logger.level, logger.propagate, list(logger.handlers)) == before
