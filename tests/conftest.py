"""Test-wide setup: Triton runs in its CPU interpreter when no GPU is present."""

from __future__ import annotations

import os

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
