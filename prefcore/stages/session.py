"""What surrounds the stages of a run: its folder, its lifecycle hooks and the caller's state.

A run is a library call like any other: its loggers are registered for the run only (two
runs in one process write to their own folders), a failing logger plugin is reported and
skipped, and the process's seeds, RNG states and torch thread count are the caller's again
when it returns.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
import warnings
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from prefcore.atomic import atomic_write_text
from prefcore.config import RunConfig
from prefcore.config import dump_run_config
from prefcore.engine.lifecycle import LifecycleHooks
from prefcore.errors import ConfigError
from prefcore.registry import Registry
from prefcore.settings import RunSettings

__all__ = ["RunContext", "RunHooks", "caller_state_kept", "prepare_run_dir", "transformers_quiet"]


def prepare_run_dir(config: RunConfig, settings: RunSettings, out: str | None, resume: bool) -> Path:
    """The run folder, created (or checked, on resume) with the run file saved in it.

    ``config.json`` is the snapshot a resumed run must match; ``config.toml`` is a run file
    that ``prefcore run`` reads back to repeat the run.
    """
    if out is None:
        if resume:
            raise ConfigError("--resume needs --out naming the run folder to continue.")
        out = str(Path(settings.out_dir) / time.strftime(f"{settings.name}-%Y%m%d-%H%M%S"))
    run_dir = Path(out)
    snapshot = json.dumps(config.to_dict(), sort_keys=True, default=str)
    saved = run_dir / "config.json"
    if resume:
        if not saved.exists():
            raise ConfigError(f"--resume: {run_dir} holds no run to continue (no config.json).")
        if saved.read_text(encoding="utf-8") != snapshot:
            raise ConfigError(f"--resume: the run file differs from the one {run_dir} was started with.")
    elif run_dir.exists() and any(run_dir.iterdir()):
        raise ConfigError(f"run folder {run_dir} is not empty; pass --resume to continue it or choose another --out.")
    run_dir.mkdir(parents=True, exist_ok=True)
    if not saved.exists():  # on resume it already holds this exact snapshot
        atomic_write_text(saved, snapshot)
    atomic_write_text(run_dir / "config.toml", dump_run_config(config))  # `prefcore run` reads it back
    return run_dir


class RunHooks:
    """Fires lifecycle hooks on the registry's plugin manager (loggers are ordinary plugins).

    The run's own loggers are registered under names of this run folder and unregistered by
    ``close``, so a second run on the same plugin manager writes to its own folder. Hooks
    fire implementation by implementation (``LifecycleHooks``): a failing plugin is logged
    by name and skipped, and the other listeners keep working.
    """

    def __init__(
        self,
        registry: Registry,
        run_dir: Path,
        report_to: Sequence[str] = ("tensorboard",),
        *,
        name: str | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        from prefcore.engine.lifecycle_loggers import run_loggers

        self.manager = registry.plugin_manager
        self.run_dir = run_dir
        self.lifecycle = LifecycleHooks(self.manager)
        self.loggers: list[tuple[str, Any]] = []
        for kind, plugin in run_loggers(run_dir, report_to, name=name, config=config):  # [run] report_to
            plugin_name = f"prefcore.{kind}[{run_dir}]"
            self.manager.register(plugin, name=plugin_name)
            self.loggers.append((plugin_name, plugin))

    def fire(self, hook_name: str, **kwargs: Any) -> None:
        self.lifecycle.fire(hook_name, run_dir=self.run_dir, **kwargs)

    def step_reporter(self, prefix: str = "") -> Any:
        """``on_step(step, metrics)`` for a training loop: fires ``prefcore_train_step_end``, names prefixed."""

        def on_step(step: int, metrics: Any) -> None:
            if prefix:
                metrics = {prefix + key: value for key, value in metrics.items()}
            self.fire("prefcore_train_step_end", step=step, metrics=metrics)

        return on_step

    def close(self) -> None:
        """Unregister and close this run's loggers; report plugins that kept failing."""
        for name, plugin in self.loggers:
            if self.manager.has_plugin(name):
                self.manager.unregister(name=name)
            close = getattr(plugin, "close", None)
            if callable(close):
                close()
        self.loggers.clear()
        self.lifecycle.summary()


@dataclass(frozen=True)
class RunContext:
    """What every stage of one run shares: where it writes, where it computes, whom it tells.

    ``checkpoints_existed``: the policy had checkpoints when the run started (a resumed run
    continues from them; a warm start's own checkpoints, written later, do not count).
    """

    config: RunConfig
    settings: RunSettings
    run_dir: Path
    device: torch.device
    hooks: RunHooks
    registry: Registry
    resume: bool
    checkpoints_existed: bool


@contextlib.contextmanager
def caller_state_kept() -> Iterator[None]:
    """The caller's seeds, RNG states and torch thread count are restored when the run ends.

    A run seeds ``torch`` and ``random`` and may set the thread count (``[run] threads``);
    a library call must not leave those changed behind the caller's back.
    """
    threads = torch.get_num_threads()
    python_state = random.getstate()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        random.setstate(python_state)
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


@contextlib.contextmanager
def transformers_quiet() -> Iterator[None]:
    """transformers' own progress bars and warnings stay out of the run's output, then come back.

    The run shows its own progress per stage; loading bars, "generation flags" notes and
    deprecation warnings raised inside transformers or peft would only bury it.
    """
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():  # deprecation notes of transformers and peft internals
            warnings.filterwarnings("ignore", module=r"(transformers|peft)(\.|$)")
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
