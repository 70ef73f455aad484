"""Progress of a stage (warm start, preference model, training, evaluation): a bar or a few log lines.

On a terminal a stage shows a ``tqdm`` bar with its name, the step count, the rate and an
ETA. Where stderr is not a terminal (logs, CI, notebooks piping output) a bar would write
thousands of carriage returns, so the stage instead logs ten INFO lines (every tenth of its
steps) with the same figures. ``enabled=False`` (``[train] progress = false``) shows nothing.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sys
import time
from collections.abc import Mapping
from typing import Any
from typing import TextIO

logger = logging.getLogger("prefcore.progress")

SHOWN: tuple[tuple[str, str], ...] = (
    ("rewards/margins", "margin"),  # usage objectives, TRL's names
    ("rewards/accuracies", "acc"),
    ("rewards/margin", "margin"),  # reward models
    ("rewards/accuracy", "acc"),
    ("accuracy", "acc"),
)
"""Metrics shown next to the loss, as (name suffix, label); the first match per label wins."""


def _summary(metrics: Mapping[str, float]) -> str:
    shown = [f"loss {metrics['loss']:.4f}"] if "loss" in metrics else []
    labels: set[str] = set()
    for suffix, label in SHOWN:
        if label in labels:
            continue
        for name, value in metrics.items():
            if name == suffix or name.endswith("/" + suffix):
                shown.append(f"{label} {value:.3f}")
                labels.add(label)
                break
    return "  ".join(shown)


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


class StageProgress:
    """Progress of one stage over ``total`` units (steps, evaluators), starting at ``initial``.

    Arguments:
        stage: the name shown ("warm start", "training", ...).
        total: units of the whole stage.
        enabled: False shows nothing.
        initial: units already done (a resumed stage).
        unit: what a unit is called ("step").
        stream: where the bar goes (stderr); a bar is drawn only when it is a terminal.
    """

    _drawn = 0
    """Bars drawn now, process-wide: a bar inside another (evaluation during training) is not left behind."""

    def __init__(
        self,
        stage: str,
        total: int,
        *,
        enabled: bool = True,
        initial: int = 0,
        unit: str = "step",
        stream: TextIO | None = None,
    ) -> None:
        self.stage = stage
        self.total = max(int(total), 0)
        self.enabled = enabled and self.total > 0
        self.initial = initial
        self.done = initial
        self.unit = unit
        self.started = time.perf_counter()
        self._bar: Any = None
        self._redirect = contextlib.ExitStack()
        stream = stream if stream is not None else sys.stderr
        if self.enabled and _is_terminal(stream):
            from tqdm.auto import tqdm

            # A terminal that reports no size (a bare pty) would hide the bar: assume 100 x 24.
            sized = min(shutil.get_terminal_size((0, 0))) > 0
            self._bar = tqdm(
                total=self.total,
                initial=initial,
                desc=stage,
                unit=unit,
                file=stream,
                dynamic_ncols=sized,
                ncols=None if sized else 100,
                nrows=None if sized else 24,
                leave=not StageProgress._drawn,  # an evaluation inside training disappears when done
            )
            StageProgress._drawn += 1
            self._redirect.enter_context(_messages_above_the_bar())
        self._every = max(1, self.total // 10)

    def update(self, done: int, metrics: Mapping[str, float] | None = None) -> None:
        """``done`` units of the stage are finished; ``metrics`` of the last one are shown."""
        advanced, self.done = done - self.done, done
        if not self.enabled:
            return
        summary = _summary(metrics or {})
        if self._bar is not None:
            if summary:
                self._bar.set_postfix_str(summary, refresh=False)
            self._bar.update(advanced)
            return
        if done % self._every and done != self.total:
            return
        elapsed = time.perf_counter() - self.started
        rate = (done - self.initial) / elapsed if elapsed > 0 else 0.0
        eta = f", eta {_duration((self.total - done) / rate)}" if rate > 0 and done < self.total else ""
        logger.info(
            "%s: %s %d/%d (%d%%)%s%s",
            self.stage,
            self.unit,
            done,
            self.total,
            100 * done // self.total,
            eta,
            f"  {summary}" if summary else "",
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            StageProgress._drawn -= 1
        self._redirect.close()

    def __enter__(self) -> StageProgress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _messages_above_the_bar() -> contextlib.AbstractContextManager[Any]:
    """While a bar is drawn, prefcore's console log lines are printed above it instead of through it.

    Only when the ``prefcore`` logger writes to the console itself (the command line sets
    that up); otherwise its handlers are left exactly as the caller configured them.
    """
    prefcore_logger = logging.getLogger("prefcore")
    console = any(
        isinstance(handler, logging.StreamHandler)
        and not isinstance(handler, logging.FileHandler)
        and getattr(handler, "stream", None) in (sys.stderr, sys.stdout)
        for handler in prefcore_logger.handlers
    )
    if not console:
        return contextlib.nullcontext()
    from tqdm.contrib.logging import logging_redirect_tqdm

    return logging_redirect_tqdm(loggers=[prefcore_logger])


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
