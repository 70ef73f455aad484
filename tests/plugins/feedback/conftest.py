"""Small hand-made input files for the feedback-source tests."""

from __future__ import annotations

import json
from collections.abc import Callable
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def write_rows(tmp_path: Path) -> Callable[[str, Sequence[Any]], Path]:
    """Write rows as JSONL under ``tmp_path``; a row that is a string is written as that raw line."""

    def write(name: str, rows: Sequence[Any]) -> Path:
        path = tmp_path / name
        lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        return path

    return write
