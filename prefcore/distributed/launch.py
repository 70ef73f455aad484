"""``prefcore run --nproc N``: run the same command again under torchrun, N processes on this node.

For several nodes, call torchrun directly on each (``--nnodes``, ``--node_rank``,
``--rdzv_endpoint``); every worker runs ``python -m prefcore run FILE`` the same way.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence

__all__ = ["relaunch", "torchrun_command", "without_nproc"]


def without_nproc(argv: Sequence[str]) -> list[str]:
    """``argv`` less its ``--nproc N`` / ``--nproc=N``."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            kept.append(arg)
    return kept


def torchrun_command(nproc: int, argv: Sequence[str]) -> list[str]:
    """The torchrun command line that runs ``python -m prefcore ARGV`` in ``nproc`` processes."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(nproc),
        "-m",
        "prefcore",
        *without_nproc(argv),
    ]


def relaunch(nproc: int, argv: Sequence[str]) -> int:
    """Run ``torchrun_command`` and return its exit status (the first failing worker's)."""
    return subprocess.call(torchrun_command(nproc, argv))
