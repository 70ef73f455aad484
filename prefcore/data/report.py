"""What a reader found in a file: valid records per format, records skipped, the first errors.

A reader in ``skip_invalid`` mode never drops a record silently: every skipped record is
counted here and the first ``max_errors`` errors are kept verbatim, so a caller (and
``prefcore validate-data``) can show exactly what was left out and why.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field

from prefcore.errors import DataError


@dataclass(frozen=True)
class LoadReport:
    """The outcome of reading one file.

    ``counts`` holds valid records per format, ``skipped`` the number of invalid records
    left out, ``errors`` the first of their errors (as many as the reader was asked to keep).
    """

    source: str
    counts: Mapping[str, int]
    skipped: int
    errors: tuple[DataError, ...]

    @property
    def valid(self) -> int:
        return sum(self.counts.values())

    @property
    def total(self) -> int:
        """Every record the file holds, valid or not."""
        return self.valid + self.skipped

    @property
    def ok(self) -> bool:
        """Whether the file holds records and every one was valid."""
        return self.skipped == 0 and self.valid > 0

    def summary(self) -> str:
        """A few lines for people: totals, valid records per format, the first errors."""
        lines = [f"{self.source}: {self.total} records, {self.valid} valid, {self.skipped} invalid."]
        if self.total == 0:
            lines.append("The file holds no records: it is empty (only blank lines, an empty list or no rows).")
        if self.counts:
            width = max(len(name) for name in self.counts)
            lines += [f"  {name.ljust(width)}  {count}" for name, count in sorted(self.counts.items())]
        if self.errors:
            shown = "First error" if len(self.errors) == 1 else f"First {len(self.errors)} errors"
            lines.append(f"{shown}:")
            lines += [f"  {error}" for error in self.errors]
            if self.skipped > len(self.errors):
                lines.append(f"  ... and {self.skipped - len(self.errors)} more.")
        return "\n".join(lines)


@dataclass
class ReportBuilder:
    """Collects a ``LoadReport`` while a file is read."""

    source: str
    max_errors: int = 10
    counts: Counter[str] = field(default_factory=Counter)
    skipped: int = 0
    errors: list[DataError] = field(default_factory=list)

    def add_record(self, format: str) -> None:
        self.counts[format] += 1

    def add_error(self, error: DataError) -> None:
        self.skipped += 1
        if len(self.errors) < self.max_errors:
            self.errors.append(error)

    def build(self) -> LoadReport:
        return LoadReport(
            source=self.source,
            counts=dict(self.counts),
            skipped=self.skipped,
            errors=tuple(self.errors),
        )
