"""Test-wide setup: Triton runs in its CPU interpreter when no GPU is present."""

from __future__ import annotations

import os
from collections.abc import Iterator

import torch

# Must be set before triton is imported anywhere: @triton.jit reads it at decoration time.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Installed third-party plugins never leak into the suite; tests opt in with third_party=True.
os.environ["PREFCORE_DISABLE_PLUGIN_AUTOLOAD"] = "1"
os.environ.pop("PREFCORE_DISABLE_PLUGINS", None)

import pytest


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Test tensors are tiny: intra-op threads only add contention (10x slower on a loaded 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
