"""``metrics.csv``: one row per metrics event, written as it arrives so a crash loses nothing.

The header is ``step`` followed by every metric name in order of first appearance. It only
grows: a row with a new metric rewrites the file under the wider header (to a temporary
file, then an atomic rename, so a reader never sees half a file); every other row is a
plain append. Training steps and evaluation passes are separate rows, each leaving the
other's columns empty.

On resume, rows logged after the checkpoint the run restarts from would duplicate the
steps about to be redone, so they are dropped: either explicitly
(``resume_from_step=k`` keeps rows with step ≤ k) or, by default, kind by kind when the
first new row of a kind arrives. A row's kind is its set of metric names (a policy step, an
evaluation pass, a reward-model step, a warm-start step), so each stage keeps its own step
count: the first new row of a kind drops the existing rows *of that kind* at or after its
step, since they belong to the interrupted attempt, and leaves every other row alone. A run
resumed from its final checkpoint therefore keeps that step's training row while its final
evaluation row is replaced.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path

from prefcore.atomic import atomic_write_text

STEP = "step"


def _format(value: float) -> str:
    value = float(value)
    return repr(value) if math.isfinite(value) else str(value)


def write_text_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``, never half written (``prefcore.atomic.atomic_write_text``)."""
    atomic_write_text(path, text)


def read_metrics_csv(path: Path) -> list[dict[str, float]]:
    """Every row of a metrics file as ``{column: value}``, empty cells left out."""
    with open(path, newline="", encoding="utf-8") as handle:
        return [
            {column: float(cell) for column, cell in row.items() if column is not None and cell not in ("", None)}
            for row in csv.DictReader(handle)
        ]


def _kind(row: Mapping[str, float]) -> frozenset[str]:
    """What a row records (a training step of one stage, an evaluation pass): its metric names."""
    return frozenset(name for name in row if name != STEP)


class MetricsCSVWriter:
    """Appends metric rows to one CSV file with a stable, growing header.

    Arguments:
        path: the CSV file (created with its folder if missing).
        resume_from_step: keep existing rows up to and including this step and drop the
            rest; None: drop existing rows at or after the step of the first new row of their
            kind (see the module docstring).
    """

    def __init__(self, path: Path, *, resume_from_step: int | None = None) -> None:
        self.path = Path(path)
        self._infer_truncation = resume_from_step is None
        self._seen_kinds: set[frozenset[str]] = set()
        self.columns: list[str] = [STEP]
        if self.path.exists():
            rows = read_metrics_csv(self.path)
            self.columns = self._read_header()
            if resume_from_step is not None:
                self._rewrite([row for row in rows if row.get(STEP, -math.inf) <= resume_from_step])

    def _read_header(self) -> list[str]:
        with open(self.path, newline="", encoding="utf-8") as handle:
            header = next(csv.reader(handle), [])
        return header if header and header[0] == STEP else [STEP, *[name for name in header if name != STEP]]

    def _rewrite(self, rows: Sequence[Mapping[str, float]]) -> None:
        """Write the whole file under the current header, atomically."""
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(self.columns)
        writer.writerows(self._cells(row) for row in rows)
        write_text_atomically(self.path, buffer.getvalue())

    def _cells(self, row: Mapping[str, float]) -> list[str]:
        cells = [_format(row[column]) if column in row else "" for column in self.columns]
        if STEP in row:
            cells[0] = str(int(row[STEP]))
        return cells

    def rows(self) -> list[dict[str, float]]:
        """Every row written so far (read back from the file)."""
        return read_metrics_csv(self.path) if self.path.exists() else []

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        """Record ``metrics`` of ``step``: an append, or a rewrite if a new metric appears."""
        row = {STEP: float(step), **{name: float(value) for name, value in metrics.items() if name != STEP}}
        kind = _kind(row)
        if self._infer_truncation and kind not in self._seen_kinds:
            self._seen_kinds.add(kind)
            existing = self.rows()
            kept = [old for old in existing if _kind(old) != kind or old.get(STEP, -math.inf) < step]
            if len(kept) != len(existing):
                self._rewrite(kept)
        new_columns = [name for name in row if name not in self.columns]
        if new_columns or not self.path.exists():
            self.columns.extend(new_columns)
            self._rewrite([*self.rows(), row])
            return
        with open(self.path, "a", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerow(self._cells(row))
