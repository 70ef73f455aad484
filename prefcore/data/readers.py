"""Reading and writing preference data files: JSONL, JSON and Parquet.

The file type comes from the extension (``.jsonl``/``.ndjson``, ``.json``, ``.parquet``);
the record format of each record from its ``"type"`` field or its field set, or from the
``format=`` argument (see ``prefcore.data.parse``). Every record keeps its provenance: the
1-based line of a JSONL file, or the 1-based record number of a JSON list or Parquet table
(``DataError.line`` carries the same number).

A bad record raises ``DataError`` naming the file, line, field and what is accepted. With
``skip_invalid=True`` bad records are left out instead, each one counted in the returned
``LoadReport``. A file that cannot be read at all (missing, unknown type, a JSON document
that does not parse) raises in both modes.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from prefcore.data.parse import check_format
from prefcore.data.parse import record_from_dict
from prefcore.data.records import RECORD_TYPES
from prefcore.data.records import PreferenceRecord
from prefcore.data.report import LoadReport
from prefcore.data.report import ReportBuilder
from prefcore.errors import DataError

_JSON_CONTAINER_KEYS = ("data", "records")
"""Keys under which a JSON object may hold its list of records (``{"data": [...]}``)."""


def load_preferences(
    path: str | os.PathLike[str],
    *,
    format: str | None = None,
    skip_invalid: bool = False,
    max_errors: int = 10,
) -> tuple[list[PreferenceRecord], LoadReport]:
    """Every record of a JSONL, JSON or Parquet file, with a report of what was read.

    ``format`` forces one record format (``"pairwise"``, ``"ranking"``, ``"scores"``,
    ``"binary"``, ``"critique"``, ``"feedback"``) instead of detecting it per record.
    Without ``skip_invalid`` the first bad record raises ``DataError``; with it, bad records
    are left out and counted in the report, which keeps the first ``max_errors`` errors.
    """
    check_format(format)
    builder = ReportBuilder(os.fspath(path), max_errors)
    records = []
    for outcome in _read_outcomes(path, format):
        if isinstance(outcome, DataError):
            if not skip_invalid:
                raise outcome
            builder.add_error(outcome)
        else:
            records.append(outcome)
            builder.add_record(outcome.format)
    return records, builder.build()


def validate_file(
    path: str | os.PathLike[str],
    *,
    format: str | None = None,
    max_errors: int = 10,
) -> LoadReport:
    """Check every record of a file without keeping them: the report of ``prefcore validate-data``."""
    check_format(format)
    builder = ReportBuilder(os.fspath(path), max_errors)
    for outcome in _read_outcomes(path, format):
        if isinstance(outcome, DataError):
            builder.add_error(outcome)
        else:
            builder.add_record(outcome.format)
    return builder.build()


def write_jsonl(records: Iterable[PreferenceRecord], path: str | os.PathLike[str]) -> int:
    """Write records as JSONL (one ``record.to_dict()`` per line); returns how many were written.

    The file appears whole or not at all: lines go to a temporary file beside the target,
    which then replaces it (``os.replace`` is atomic on one file system), so a reader
    never sees half a file and a failed write leaves an existing file untouched.
    """
    target = Path(path)
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    count = 0
    try:
        with open(temporary, "x", encoding="utf-8", newline="\n") as file:
            for record in records:
                if not isinstance(record, RECORD_TYPES):
                    raise TypeError(f"write_jsonl writes prefcore.data records, got {type(record).__name__}.")
                file.write(json.dumps(record.to_dict(), ensure_ascii=False, allow_nan=False))
                file.write("\n")
                count += 1
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    return count


def _read_outcomes(path: str | os.PathLike[str], format: str | None) -> Iterator[PreferenceRecord | DataError]:
    """Each record of the file in order, or the ``DataError`` that stands in for a bad one."""
    source = os.fspath(path)
    read_raw = _raw_reader(source)
    for line, raw in read_raw(Path(source), source):
        if isinstance(raw, DataError):
            yield raw
            continue
        try:
            yield record_from_dict(raw, format=format, source=source, line=line)
        except DataError as error:
            yield error


RawReader = Callable[[Path, str], Iterator[tuple[int, Any]]]
"""Yields ``(line, raw record)`` pairs; a raw record that could not be decoded is a ``DataError``."""


def _raw_reader(source: str) -> RawReader:
    path = Path(source)
    reader = _RAW_READERS.get(path.suffix.lower())
    if reader is None:
        raise DataError(
            f"cannot read {path.suffix or 'extension-less'!r} files. Preference data files are "
            f".jsonl (or .ndjson), .json or .parquet.",
            source=source,
        )
    if not path.is_file():
        raise DataError("no such file.", source=source)
    return reader


def _read_jsonl(path: Path, source: str) -> Iterator[tuple[int, Any]]:
    """One JSON object per line; blank lines are allowed and skipped."""
    with path.open("rb") as file:
        for line, raw_line in enumerate(file, start=1):
            try:
                text = raw_line.decode("utf-8-sig" if line == 1 else "utf-8")
            except UnicodeDecodeError as error:
                yield (
                    line,
                    DataError(f"is not UTF-8 text ({error.reason} at byte {error.start}).", source=source, line=line),
                )
                continue
            if not text.strip():
                continue
            try:
                yield line, json.loads(text)
            except json.JSONDecodeError as error:
                yield (
                    line,
                    DataError(
                        f"is not valid JSON: {error.msg} (column {error.colno}). "
                        f"Each line of a JSONL file holds one JSON object.",
                        source=source,
                        line=line,
                    ),
                )


def _read_json(path: Path, source: str) -> Iterator[tuple[int, Any]]:
    """A JSON list of objects, or an object holding that list under "data" (or "records")."""
    try:
        document = json.loads(path.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError as error:
        raise DataError(f"is not UTF-8 text ({error.reason} at byte {error.start}).", source=source) from None
    except json.JSONDecodeError as error:
        raise DataError(
            f"is not valid JSON: {error.msg} (column {error.colno}).", source=source, line=error.lineno
        ) from None
    if isinstance(document, dict):
        keys = [key for key in _JSON_CONTAINER_KEYS if isinstance(document.get(key), list)]
        if len(keys) != 1:
            raise DataError(
                "a JSON file holds a list of records, or an object with the list under 'data' or "
                f"'records'; this is an object with the keys {sorted(document)[:10]}. "
                "For one record per line use .jsonl.",
                source=source,
            )
        document = document[keys[0]]
    if not isinstance(document, list):
        raise DataError(f"a JSON file holds a list of records, got a {type(document).__name__}.", source=source)
    yield from enumerate(document, start=1)


def _read_parquet(path: Path, source: str) -> Iterator[tuple[int, Any]]:
    """Rows of a Parquet table, streamed in batches; one column per field."""
    try:
        import pyarrow.parquet as parquet
    except ImportError as error:
        raise ImportError(
            f"Reading {source} needs pyarrow, which is not installed: pip install 'prefcore[parquet]'."
        ) from error
    try:
        table = parquet.ParquetFile(path)
        index = 0
        for batch in table.iter_batches(batch_size=1024):
            for row in batch.to_pylist(maps_as_pydicts="strict"):
                index += 1
                yield index, row
    except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError, ArrowIOError an OSError
        raise DataError(f"is not a readable Parquet file: {error}", source=source) from None


_RAW_READERS: Mapping[str, RawReader] = MappingProxyType(
    {".jsonl": _read_jsonl, ".ndjson": _read_jsonl, ".json": _read_json, ".parquet": _read_parquet}
)
