"""What the side-by-side CPU benchmarks share: each configuration in a fresh interpreter, and its peak RSS.

A configuration measured in the parent would inherit the other tool's imports, caches and
memory; running each in its own process keeps timings and peaks its own.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

__all__ = ["peak_rss_bytes", "run_child"]


def peak_rss_bytes() -> int:
    """This process's peak resident memory (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_child(script: str, name: str, settings: Any, threads: int, **env: str) -> dict[str, Any]:
    """``script --child NAME SETTINGS_JSON`` in a fresh interpreter with ``threads`` threads; its last output line."""
    command = [sys.executable, str(Path(script).resolve()), "--child", name, json.dumps(asdict(settings))]
    environment = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), **env)
    done = subprocess.run(
        command, capture_output=True, text=True, env=environment, check=False, cwd=tempfile.gettempdir()
    )
    if done.returncode:
        raise RuntimeError(f"{name} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
