"""Stage progress: a named bar with an ETA on a terminal, ten log lines elsewhere, nothing when off."""

from __future__ import annotations

import io
import logging
import sys

import pytest

from prefcore.engine.progress import StageProgress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_named_bar_with_an_eta() -> None:
    stream = _Terminal()
    with StageProgress("warm start", 4, stream=stream) as bar:
        for step in range(1, 5):
            bar.update(step, {"loss": 1.0 / step, "rewards/margin": 0.5})
    text = stream.getvalue()
    assert "warm start" in text and "4/4" in text
    assert "<" in text  # tqdm's elapsed<remaining: the ETA
    assert "loss 0.2500" in text and "margin 0.500" in text


def test_without_a_terminal_a_stage_logs_ten_lines(caplog: pytest.LogCaptureFixture) -> None:
    with (
        caplog.at_level(logging.INFO, logger="prefcore.progress"),
        StageProgress("training", 100, stream=io.StringIO()) as bar,
    ):
        for step in range(1, 101):
            bar.update(step, {"loss": 0.5})
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 10
    assert lines[0].startswith("training: step 10/100 (10%), eta ")
    assert lines[-1] == "training: step 100/100 (100%)  loss 0.5000"


def test_a_resumed_stage_counts_from_where_it_was(caplog: pytest.LogCaptureFixture) -> None:
    with (
        caplog.at_level(logging.INFO, logger="prefcore.progress"),
        StageProgress("training", 10, initial=8, stream=io.StringIO()) as bar,
    ):
        bar.update(9)
        bar.update(10)
    assert [record.getMessage() for record in caplog.records] == [
        "training: step 9/10 (90%), eta 0m00s",
        "training: step 10/10 (100%)",
    ]


def test_progress_off_shows_nothing(caplog: pytest.LogCaptureFixture) -> None:
    stream = _Terminal()
    with (
        caplog.at_level(logging.INFO, logger="prefcore.progress"),
        StageProgress("training", 10, enabled=False, stream=stream) as bar,
    ):
        for step in range(1, 11):
            bar.update(step, {"loss": 0.5})
    assert stream.getvalue() == "" and not caplog.records


def test_console_log_lines_go_above_a_bar_and_handlers_come_back() -> None:
    stream = _Terminal()
    prefcore_logger = logging.getLogger("prefcore")
    handler = logging.StreamHandler(sys.stderr)
    prefcore_logger.addHandler(handler)
    try:
        with StageProgress("training", 3, stream=stream):
            assert handler not in prefcore_logger.handlers  # replaced by tqdm's writer while the bar is drawn
        assert handler in prefcore_logger.handlers
        before = list(prefcore_logger.handlers)
        with StageProgress("training", 3, stream=io.StringIO()):  # no bar: nothing is touched
            assert prefcore_logger.handlers == before
    finally:
        prefcore_logger.removeHandler(handler)
