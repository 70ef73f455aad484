"""The built-in loggers are plain lifecycle plugins: fire the hooks, get the files."""

from __future__ import annotations

import importlib
import logging
import sys
from pathlib import Path

import pytest

from prefcore import hookimpl
from prefcore.engine.lifecycle import LifecycleHooks
from prefcore.engine.lifecycle_loggers import CSVMetricsLogger
from prefcore.engine.lifecycle_loggers import TensorBoardLogger
from prefcore.engine.lifecycle_loggers import TensorBoardUnavailableError
from prefcore.engine.metrics_log import read_metrics_csv
from prefcore.registry import PrefcorePluginManager


def test_csv_logger_writes_training_steps_and_evaluations(tmp_path: Path) -> None:
    manager = PrefcorePluginManager()
    manager.register(CSVMetricsLogger(), name="csv")
    manager.hook.prefcore_evaluation_end(run_dir=tmp_path, step=0, metrics={"win_rate/win_rate": 0.5})
    manager.hook.prefcore_train_step_end(run_dir=tmp_path, step=1, metrics={"loss": 0.7, "rewards/margin": 0.0})
    manager.hook.prefcore_train_step_end(run_dir=tmp_path, step=2, metrics={"loss": 0.6, "rewards/margin": 0.2})
    manager.hook.prefcore_evaluation_end(run_dir=tmp_path, step=2, metrics={"win_rate/win_rate": 0.75})
    assert read_metrics_csv(tmp_path / "metrics.csv") == [
        {"step": 0, "win_rate/win_rate": 0.5},
        {"step": 1, "loss": 0.7, "rewards/margin": 0.0},
        {"step": 2, "loss": 0.6, "rewards/margin": 0.2},
        {"step": 2, "win_rate/win_rate": 0.75},
    ]


def test_csv_logger_resumes_from_a_step(tmp_path: Path) -> None:
    first = CSVMetricsLogger(tmp_path)
    for step in (1, 2, 3):
        first.prefcore_train_step_end(run_dir=tmp_path, step=step, metrics={"loss": float(step)})
    resumed = CSVMetricsLogger(tmp_path, resume_from_step=2)
    resumed.prefcore_train_step_end(run_dir=tmp_path, step=3, metrics={"loss": 30.0})
    assert [row["loss"] for row in read_metrics_csv(tmp_path / "metrics.csv")] == [1, 2, 30]


def test_tensorboard_logger_is_skipped_when_tensorboard_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # makes the import fail
    assert TensorBoardLogger.if_available(tmp_path) is None
    with pytest.raises(TensorBoardUnavailableError, match="pip install tensorboard"):
        TensorBoardLogger(tmp_path)


def test_tensorboard_logger_writes_event_files(tmp_path: Path) -> None:
    importlib.import_module("tensorboard")
    logger = TensorBoardLogger(tmp_path)
    manager = PrefcorePluginManager()
    manager.register(logger, name="tensorboard")
    manager.hook.prefcore_train_step_end(run_dir=tmp_path, step=1, metrics={"loss": 0.7})
    manager.hook.prefcore_evaluation_end(run_dir=tmp_path, step=1, metrics={"win_rate/win_rate": 0.6})
    manager.hook.prefcore_run_end(run_dir=tmp_path, metrics={})
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


class _Failing:
    @hookimpl
    def prefcore_train_step_end(self, step: int) -> None:
        raise OSError(f"disk full at step {step}")


def test_a_failing_hook_implementation_is_named_once_and_the_others_still_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    manager = PrefcorePluginManager()
    manager.register(CSVMetricsLogger(tmp_path), name="csv")
    manager.register(_Failing(), name="flaky-logger")  # registered last: pluggy calls it first
    traced: list[str] = []
    manager.add_hookcall_monitoring(lambda name, impls, kwargs: traced.append(name), lambda *args: None)
    hooks = LifecycleHooks(manager)
    with caplog.at_level(logging.WARNING, logger="prefcore"):
        for step in (1, 2, 3):
            hooks.fire("prefcore_train_step_end", run_dir=tmp_path, step=step, metrics={"loss": float(step)})
        hooks.summary()
    assert [row["loss"] for row in read_metrics_csv(tmp_path / "metrics.csv")] == [1, 2, 3]
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2
    assert "'flaky-logger' failed in prefcore_train_step_end (OSError: disk full at step 1)" in messages[0]
    assert "'flaky-logger' failed 3 times" in messages[1]
    assert traced.count("prefcore_train_step_end") == 6  # every implementation's call goes through pluggy


def test_interrupts_are_not_swallowed(tmp_path: Path) -> None:
    class Interrupting:
        @hookimpl
        def prefcore_run_end(self) -> None:
            raise KeyboardInterrupt

    manager = PrefcorePluginManager()
    manager.register(Interrupting(), name="interrupting")
    with pytest.raises(KeyboardInterrupt):
        LifecycleHooks(manager).fire("prefcore_run_end", run_dir=tmp_path, metrics={})
