"""Launch the distributed tests' workers with torchrun: 2 processes on CPU (gloo), one thread each."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch.distributed as dist

WORKER = Path(__file__).parent / "dist_worker.py"
GLOO = dist.is_available() and dist.is_gloo_available()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(
    nproc: int, *args: str, cwd: Path, timeout: float = 240, module: bool = False
) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node NPROC (dist_worker.py | -m) ARGS`` from ``cwd`` (not the repository root:
    its kernels/ folder would shadow the package transformers imports)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PREFCORE_DISABLE_PLUGIN_AUTOLOAD": "1", "TRITON_INTERPRET": "1"}
    env.pop("PREFCORE_DISABLE_PLUGINS", None)
    target = ["-m", *args] if module else [str(WORKER), *args]
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(nproc),
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        *target,
    ]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
