"""What the pipeline does differently under torchrun: join the group, check plugins, share the run folder.

``start`` reads ``[distributed]``; with a strategy and a torchrun launch it joins the process
group and checks that every rank loaded the same plugins. Rank 0 creates the run folder and
tells the others its path (``shared_run_dir``); the other ranks report to a throwaway folder,
so that metrics, reports, plots and the final model are written once, by rank 0.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from prefcore.config import RunConfig
from prefcore.config import build_config
from prefcore.distributed.fingerprint import check_same_registry
from prefcore.distributed.process_group import Parallel
from prefcore.distributed.process_group import current
from prefcore.distributed.process_group import init
from prefcore.distributed.process_group import is_main
from prefcore.distributed.process_group import launched_by_torchrun
from prefcore.distributed.process_group import teardown
from prefcore.errors import ConfigError
from prefcore.settings import DistributedConfig

__all__ = ["rank_device", "reporting_dir", "shared_run_dir", "start"]

logger = logging.getLogger("prefcore.pipeline")


def start(config: RunConfig, registry: Any) -> Parallel | None:
    """Join torchrun's process group when ``[distributed] strategy`` asks for it; None for one process."""
    section = build_config(DistributedConfig, config.section("distributed"), method="[distributed]")
    if not launched_by_torchrun():
        if section.strategy != "none":
            logger.info("[distributed] strategy = %r, but not launched by torchrun: one process", section.strategy)
        return None
    if section.strategy == "none":
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ConfigError(
                "launched by torchrun with several processes, but [distributed] strategy = 'none': each process "
                "would run the whole job. Set strategy = 'ddp' or 'fsdp'.",
                field="distributed.strategy",
            )
        return None
    parallel = init(
        section.strategy,
        mixed_precision=section.mixed_precision,
        cpu_offload=section.cpu_offload,
        timeout_s=section.timeout_s,
    )
    try:
        check_same_registry(registry)
    except ConfigError:
        teardown()
        raise
    if not parallel.is_main:  # rank 0 tells the story; the others speak up only for warnings and errors
        logging.getLogger("prefcore").setLevel(logging.WARNING)
    logger.info("distributed: %s over %d processes (rank %d)", section.strategy, parallel.world_size, parallel.rank)
    return parallel


def shared_run_dir(make: Callable[[], Path]) -> Path:
    """``make()`` on rank 0, its result on every rank; rank 0's error is raised on every rank."""
    if current() is None:
        return make()
    box: list[Any] = [None]
    if is_main():
        try:
            box[0] = ("ok", str(make()))
        except Exception as exc:  # any failure: the other ranks must not wait for a path that never comes
            box[0] = ("error", f"{type(exc).__name__}: {exc}")
            dist.broadcast_object_list(box, src=0)
            raise
    dist.broadcast_object_list(box, src=0)
    status, value = box[0]
    if status == "error":
        raise ConfigError(f"rank 0 could not prepare the run folder: {value}")
    return Path(value)


def reporting_dir(run_dir: Path) -> Path:
    """Where this rank's loggers write: the run folder on rank 0, a throwaway folder elsewhere."""
    if is_main():
        return run_dir
    return Path(tempfile.mkdtemp(prefix=f"prefcore-rank{current().rank if current() else 0}-"))


def rank_device(device: torch.device) -> torch.device:
    """Each rank's own GPU under torchrun (``cuda:LOCAL_RANK``); other devices unchanged."""
    parallel = current()
    if parallel is None or device.type != "cuda":
        return device
    return torch.device("cuda", parallel.local_rank)
