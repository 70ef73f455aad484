"""Built-in metric loggers, written as ordinary lifecycle-hook plugins.

They implement ``prefcore_train_step_end`` and ``prefcore_evaluation_end`` like any
third-party logger would (Weights & Biases, MLflow): the engine only fires hooks and never
knows who listens. Register an instance on the plugin manager to turn one on.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prefcore import hookimpl
from prefcore.engine.metrics_log import MetricsCSVWriter
from prefcore.errors import PrefcoreError


class CSVMetricsLogger:
    """Writes every training step and evaluation pass to ``<run_dir>/metrics.csv``.

    Arguments:
        run_dir: the run folder; None: whichever folder the hooks name.
        resume_from_step: on resume, the step the run restarts from; None: rows of the interrupted
            attempt are dropped kind by kind as new rows arrive (see ``MetricsCSVWriter``).
        filename: the CSV file name inside the run folder.
    """

    def __init__(
        self, run_dir: Path | None = None, *, resume_from_step: int | None = None, filename: str = "metrics.csv"
    ) -> None:
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.resume_from_step = resume_from_step
        self.filename = filename
        self._writers: dict[Path, MetricsCSVWriter] = {}

    def writer(self, run_dir: Path) -> MetricsCSVWriter:
        """The writer of ``run_dir``'s CSV file, opened (and truncated for resume) on first use."""
        path = Path(self.run_dir if self.run_dir is not None else run_dir) / self.filename
        if path not in self._writers:
            self._writers[path] = MetricsCSVWriter(path, resume_from_step=self.resume_from_step)
        return self._writers[path]

    @hookimpl
    def prefcore_train_step_end(self, run_dir: Path, step: int, metrics: Mapping[str, float]) -> None:
        self.writer(run_dir).write(step, metrics)

    @hookimpl
    def prefcore_evaluation_end(self, run_dir: Path, step: int, metrics: Mapping[str, float]) -> None:
        self.writer(run_dir).write(step, metrics)


class TensorBoardUnavailableError(PrefcoreError, ImportError):
    """TensorBoard logging was asked for but the ``tensorboard`` package is not installed."""

    def __init__(self, cause: BaseException) -> None:
        self.cause = cause
        super().__init__(
            f"TensorBoardLogger needs the 'tensorboard' package ({type(cause).__name__}: {cause}). "
            f"Install it with `pip install tensorboard`, or leave TensorBoard logging off."
        )


def _summary_writer_class() -> Any:
    try:
        return importlib.import_module("torch.utils.tensorboard").SummaryWriter
    except ImportError as exc:
        raise TensorBoardUnavailableError(exc) from exc


class TensorBoardLogger:
    """Writes training metrics as ``train/<name>`` and evaluation metrics as ``eval/<name>`` scalars.

    Event files go to ``<run_dir>/tensorboard``. Construction fails with
    ``TensorBoardUnavailableError`` when tensorboard is missing; ``if_available`` returns
    None instead, for callers that log to TensorBoard only when they can.
    """

    def __init__(self, run_dir: Path | None = None, *, subdirectory: str = "tensorboard") -> None:
        self._summary_writer_cls = _summary_writer_class()
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.subdirectory = subdirectory
        self._writers: dict[Path, Any] = {}

    @classmethod
    def if_available(
        cls, run_dir: Path | None = None, *, subdirectory: str = "tensorboard"
    ) -> TensorBoardLogger | None:
        """A logger, or None when tensorboard is not installed."""
        try:
            return cls(run_dir, subdirectory=subdirectory)
        except TensorBoardUnavailableError:
            return None

    def writer(self, run_dir: Path) -> Any:
        log_dir = Path(self.run_dir if self.run_dir is not None else run_dir) / self.subdirectory
        if log_dir not in self._writers:
            self._writers[log_dir] = self._summary_writer_cls(log_dir=str(log_dir))
        return self._writers[log_dir]

    def _log(self, run_dir: Path, group: str, step: int, metrics: Mapping[str, float]) -> Any:
        writer = self.writer(run_dir)
        for name, value in metrics.items():
            writer.add_scalar(f"{group}/{name}", float(value), global_step=step)
        return writer

    @hookimpl
    def prefcore_train_step_end(self, run_dir: Path, step: int, metrics: Mapping[str, float]) -> None:
        self._log(run_dir, "train", step, metrics)

    @hookimpl
    def prefcore_evaluation_end(self, run_dir: Path, step: int, metrics: Mapping[str, float]) -> None:
        # Evaluation passes are rare and worth seeing at once; steps flush on the writer's timer.
        self._log(run_dir, "eval", step, metrics).flush()

    def close(self) -> None:
        """Flush and close every event file (at the end of a run, also of a failed one)."""
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()

    @hookimpl
    def prefcore_run_end(self, run_dir: Path) -> None:
        self.close()
