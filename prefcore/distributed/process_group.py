"""The process group of a torchrun launch: set up from its environment, asked for rank and size, torn down.

torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in
every worker; ``init`` reads them, so the same command runs on one node or many. The group is
created with a timeout on every collective: when a rank dies, the others fail within
``timeout_s`` instead of waiting for ever (gloo usually fails at once, on the closed socket).

``current()`` is the group the run set up (None in a single-process run): the trainers read it,
so a stage needs no extra argument to train distributed.
"""

from __future__ import annotations

import datetime
import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = [
    "Parallel",
    "barrier",
    "current",
    "init",
    "is_main",
    "launched_by_torchrun",
    "rank",
    "teardown",
    "world_size",
]

STRATEGIES: tuple[str, ...] = ("none", "ddp", "fsdp")


@dataclass(frozen=True)
class Parallel:
    """One process's place in the run and how the model is spread over the processes.

    ``strategy``: "ddp" (a replica per rank, gradients averaged) or "fsdp" (FSDP2: parameters,
    gradients and optimiser state sharded). ``mixed_precision``: "no" or "bf16" (compute in
    bf16, gradients reduced in fp32). ``cpu_offload``: FSDP2 keeps the sharded parameters on CPU.
    """

    rank: int
    world_size: int
    local_rank: int = 0
    strategy: str = "ddp"
    mixed_precision: str = "no"
    cpu_offload: bool = False
    timeout_s: float = 1800.0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def device(self) -> torch.device:
        """This rank's device: its own GPU under NCCL, else the CPU."""
        if torch.cuda.is_available() and dist.is_initialized() and dist.get_backend() == "nccl":
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")


_CURRENT: Parallel | None = None


def launched_by_torchrun() -> bool:
    """Whether this process is a worker of torchrun (or of any launcher that sets the same variables)."""
    return all(name in os.environ for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def init(
    strategy: str = "ddp",
    *,
    mixed_precision: str = "no",
    cpu_offload: bool = False,
    timeout_s: float = 1800.0,
    backend: str | None = None,
) -> Parallel:
    """Join the process group torchrun describes (idempotent) and make it ``current()``.

    The backend is NCCL when CUDA is available, else gloo; each rank takes GPU ``LOCAL_RANK``.
    """
    global _CURRENT
    if strategy not in STRATEGIES[1:]:
        raise ValueError(f"strategy must be 'ddp' or 'fsdp' to start a process group. Got {strategy!r}.")
    if not launched_by_torchrun():
        raise RuntimeError("not launched by torchrun: RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT are not all set.")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    _CURRENT = Parallel(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=local_rank,
        strategy=strategy,
        mixed_precision=mixed_precision,
        cpu_offload=cpu_offload,
        timeout_s=timeout_s,
    )
    return _CURRENT


def current() -> Parallel | None:
    """The process group this run set up with ``init``, or None in a single-process run."""
    return _CURRENT


def rank() -> int:
    return _CURRENT.rank if _CURRENT is not None else 0


def world_size() -> int:
    return _CURRENT.world_size if _CURRENT is not None else 1


def is_main() -> bool:
    """True on rank 0 and in a single-process run: the process that writes files."""
    return _CURRENT is None or _CURRENT.is_main


def barrier() -> None:
    """Wait for every rank (nothing in a single-process run)."""
    if _CURRENT is not None and dist.is_initialized():
        dist.barrier()


def teardown() -> None:
    """Leave the process group; ``current()`` is None again.

    Unreachable objects that still hold the group (a DDP reducer in a reference cycle) are collected
    first: destroyed after the group, a reducer can hang the process at exit.
    """
    global _CURRENT
    _CURRENT = None
    if dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()
