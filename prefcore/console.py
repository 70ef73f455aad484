"""Command-line output: commands write their lines to a stream they are given, so tests can capture them.

Library code logs (``logging``); only the command-line entry points (``*_from_cli``) write here.
"""

from __future__ import annotations

from typing import TextIO

__all__ = ["write_line"]


def write_line(out: TextIO, text: str) -> None:
    """One line of a command's output on ``out`` (its stdout, or a test's buffer)."""
    out.write(f"{text}\n")
