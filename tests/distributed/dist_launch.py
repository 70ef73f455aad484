"""Launch the distributed tests' workers with torchrun: 2 processes on CPU (gloo), one thread each."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch.distributed as dist

from prefcore.toml_writer import dumps

WORKER = Path(__file__).parent / "dist_worker.py"
GLOO = dist.is_available() and dist.is_gloo_available()


ENV = {"OMP_NUM_THREADS": "1", "PREFCORE_DISABLE_PLUGIN_AUTOLOAD": "1", "TRITON_INTERPRET": "1"}
"""One thread per process, only the built-in plugins, Triton kernels in the interpreter."""


def run_file_on_processes(
    run_file: Mapping[str, Any], tmp_path: Path, *, out: str = "two", nproc: int = 2, timeout: float = 300
) -> Path:
    """``prefcore run job.toml --out OUT --nproc NPROC`` from ``tmp_path``, for a run file given as a dict.

    Fails the test with the end of stderr if the launch fails; returns the run folder.
    """
    job = tmp_path / "job.toml"
    job.write_text(dumps(dict(run_file)), encoding="utf-8")
    command = [sys.executable, "-m", "prefcore", "run", str(job), "--out", out, "--nproc", str(nproc)]
    env = {**os.environ, **ENV}
    launched = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert launched.returncode == 0, launched.stderr[-4000:]
    return tmp_path / out


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(
    nproc: int, *args: str, cwd: Path, timeout: float = 240, module: bool = False, script: Path = WORKER
) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node NPROC (SCRIPT | -m) ARGS`` from ``cwd`` (not the repository root:
    its kernels/ folder would shadow the package transformers imports); SCRIPT is dist_worker.py by default."""
    env = {**os.environ, **ENV}
    env.pop("PREFCORE_DISABLE_PLUGINS", None)
    target = ["-m", *args] if module else [str(script), *args]
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
