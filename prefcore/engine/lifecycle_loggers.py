"""Built-in metric loggers, written as ordinary lifecycle-hook plugins.

They implement ``prefcore_train_step_end`` and ``prefcore_evaluation_end`` like any
third-party logger would (MLflow, ...): the engine only fires hooks and never knows who
listens. Register an instance on the plugin manager to turn one on; a run registers those
that ``[run] report_to`` names (``run_loggers``), the CSV file always.
"""

from __future__ import annotations

import importlib
import os
import secrets
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefcore import hookimpl
from prefcore.engine.metrics_log import MetricsCSVWriter
from prefcore.errors import PrefcoreError

__all__ = [
    "CSVMetricsLogger",
    "TensorBoardLogger",
    "TensorBoardUnavailableError",
    "WandbLogger",
    "WandbUnavailableError",
    "run_loggers",
]


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


class WandbUnavailableError(PrefcoreError, ImportError):
    """Weights & Biases logging was asked for but the ``wandb`` package is not installed."""

    def __init__(self, cause: BaseException) -> None:
        self.cause = cause
        super().__init__(
            f"WandbLogger needs the 'wandb' package ({type(cause).__name__}: {cause}). "
            f"Install it with `pip install 'prefcore[wandb]'`, or drop 'wandb' from [run] report_to."
        )


class WandbLogger:
    """Logs training metrics as ``train/<name>`` and evaluation metrics as ``eval/<name>`` to Weights & Biases.

    The wandb run starts at the first metric, in ``<run_dir>/wandb``, and ends with the prefcore run.
    wandb's own environment variables apply: ``WANDB_MODE=offline`` keeps everything on disk
    (``wandb sync`` uploads it later), ``WANDB_MODE=disabled`` turns logging off,
    ``WANDB_PROJECT`` (default ``prefcore``) and ``WANDB_ENTITY`` choose where it goes. A
    failure to reach the server is a failing listener like any other (``LifecycleHooks``):
    logged once, and the training goes on. A resumed prefcore run continues the same wandb
    run (its id is kept in ``<run_dir>/wandb_run_id``); steps replayed after the last
    checkpoint appear twice there, while ``metrics.csv`` keeps one row each.

    Each group has its own step axis (``train/step``, ``eval/step``), so the warm start's
    steps, the preference model's and the policy's may each start again at 1.

    Arguments:
        run_dir: the run folder; None: the folder the first hook names.
        name: the wandb run's display name (``[run] name``).
        config: what wandb shows as the run's config (the run file).
        project: the wandb project; None: ``WANDB_PROJECT`` or ``prefcore``.
    """

    def __init__(
        self,
        run_dir: Path | None = None,
        *,
        name: str | None = None,
        config: Mapping[str, Any] | None = None,
        project: str | None = None,
    ) -> None:
        try:
            self._wandb = importlib.import_module("wandb")
        except ImportError as exc:
            raise WandbUnavailableError(exc) from exc
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.name = name
        self.config = dict(config) if config is not None else None
        self.project = project
        self._run: Any = None

    def run(self, run_dir: Path) -> Any:
        """The wandb run, started (or resumed, with the id kept in the run folder) on first use."""
        if self._run is None:
            folder = Path(self.run_dir if self.run_dir is not None else run_dir)
            folder.mkdir(parents=True, exist_ok=True)
            id_file = folder / "wandb_run_id"
            run_id = id_file.read_text(encoding="utf-8").strip() if id_file.is_file() else secrets.token_hex(4)
            id_file.write_text(run_id, encoding="utf-8")
            run = self._wandb.init(
                project=self.project or os.environ.get("WANDB_PROJECT") or "prefcore",
                name=self.name,
                config=self.config,
                dir=str(folder),
                id=run_id,
                resume="allow",
            )
            for group in ("train", "eval"):
                run.define_metric(f"{group}/step")
                run.define_metric(f"{group}/*", step_metric=f"{group}/step")
            self._run = run
        return self._run

    def _log(self, run_dir: Path, group: str, step: int, metrics: Mapping[str, float]) -> None:
        values = {f"{group}/{name}": float(value) for name, value in metrics.items()}
        self.run(run_dir).log({**values, f"{group}/step": step})

    @hookimpl
    def prefcore_train_step_end(self, run_dir: Path, step: int, metrics: Mapping[str, float]) -> None:
        self._log(run_dir, "train", step, metrics)

    @hookimpl
    def prefcore_evaluation_end(self, run_dir: Path, step: int, metrics: Mapping[str, float]) -> None:
        self._log(run_dir, "eval", step, metrics)

    def close(self) -> None:
        """Finish the wandb run (at the end of a prefcore run, also of a failed one); safe to call twice."""
        if self._run is not None:
            run, self._run = self._run, None
            run.finish()

    @hookimpl
    def prefcore_run_end(self, run_dir: Path) -> None:
        self.close()


def run_loggers(
    run_dir: Path,
    report_to: Sequence[str] = ("tensorboard",),
    *,
    name: str | None = None,
    config: Mapping[str, Any] | None = None,
) -> list[tuple[str, Any]]:
    """``(kind, logger)`` for each logger of a run: the CSV file always, then those ``report_to`` names.

    ``tensorboard`` is skipped when the package is missing (the default asks for it
    wherever it is installed); ``wandb`` raises ``WandbUnavailableError`` then, because
    only a run file that names it asks for it (``RunSettings`` checks this before the run).
    """
    loggers: list[tuple[str, Any]] = [
        # On resume the first new row of each kind drops the older rows of that kind at or
        # after its step, so rows written after the last checkpoint are replaced, not duplicated.
        ("csv_metrics", CSVMetricsLogger(run_dir))
    ]
    if "tensorboard" in report_to:
        tensorboard = TensorBoardLogger.if_available(run_dir)
        if tensorboard is not None:
            loggers.append(("tensorboard", tensorboard))
    if "wandb" in report_to:
        loggers.append(("wandb", WandbLogger(run_dir, name=name, config=config)))
    return loggers
