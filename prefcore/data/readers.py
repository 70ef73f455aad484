"""Reading and writing preference data files: JSONL, JSON and Parquet.

The file type comes from the extension (``.jsonl``/``.ndjson``, ``.json``, ``.parquet``);
the record format of each record from its ``"type"`` field or its field set, or from the
``format=`` argument (see ``prefcore.data.parse``). Every record keeps its provenance: the
1-based line of a JSONL file, or the 1-based record number of a JSON list or Parquet table
(``DataError.line`` carries the same number).

A bad record raises ``DataError`` naming the file, line, field and what is accepted. With
``skip_invalid=True`` bad records are left out instead, each one counted in the returned
``LoadReport``. A file that cannot be read at all (missing, unknown type, a JSON document
that does not parse, no valid record) raises in both modes.

Nothing hostile gets through as another exception or passes silently: JSON nested deeper
than ``MAX_DEPTH``, ints too long to read, repeated keys in an object, repeated keys of a
Parquet map, repeated Parquet column names, bytes that are not UTF-8 and lone surrogates
each give a ``DataError`` naming the file, line and field (see ``prefcore.data._json``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from prefcore.atomic import atomic_file
from prefcore.data._checks import MAX_DEPTH
from prefcore.data._checks import describe
from prefcore.data._json import TreeError
from prefcore.data._json import check_tree
from prefcore.data._json import decode
from prefcore.data._json import field_name
from prefcore.data._json import tree_error
from prefcore.data.parse import DEMONSTRATION
from prefcore.data.parse import check_format
from prefcore.data.parse import read_record
from prefcore.data.records import RECORD_TYPES
from prefcore.data.records import BinaryLabel
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
    ``"binary"``, ``"critique"``, ``"feedback"``, ``"demonstration"``) instead of detecting
    it per record. Without ``skip_invalid`` the first bad record raises ``DataError``; with
    it, bad records are left out and counted in the report, which keeps the first
    ``max_errors`` errors. A file without a single valid record raises in both modes:
    there is nothing to train on, and an empty file is most often the wrong file.
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
            kind, record = outcome
            records.append(record)
            builder.add_record(kind)
    report = builder.build()
    if not records:
        raise _no_records(report)
    return records, report


def read_demonstrations(
    path: str | os.PathLike[str],
    *,
    skip_invalid: bool = False,
    max_errors: int = 10,
) -> tuple[list[BinaryLabel], LoadReport]:
    """The SFT demonstrations of a JSONL, JSON or Parquet file, for a warm start or ``sft``.

    Accepts TRL's SFT layouts: ``{"messages": [...]}`` (the trailing assistant turns are the
    completion, the turns before them the prompt) and ``{"prompt": ..., "completion": ...}``
    with text or message lists, plus binary records labelled true (what ``write_jsonl``
    writes for a demonstration). Each comes back as ``BinaryLabel(label=True)``, the
    engine's form of a completion to imitate, with file and line in its provenance.
    Errors and ``skip_invalid`` work as in ``load_preferences``.
    """
    records, report = load_preferences(path, format=DEMONSTRATION, skip_invalid=skip_invalid, max_errors=max_errors)
    return [record for record in records if isinstance(record, BinaryLabel)], report


def validate_file(
    path: str | os.PathLike[str],
    *,
    format: str | None = None,
    max_errors: int = 10,
) -> LoadReport:
    """Check every record of a file without keeping them: the report of ``prefcore validate-data``.

    A file without records gives a report that is not ``ok``.
    """
    check_format(format)
    builder = ReportBuilder(os.fspath(path), max_errors)
    for outcome in _read_outcomes(path, format):
        if isinstance(outcome, DataError):
            builder.add_error(outcome)
        else:
            builder.add_record(outcome[0])
    return builder.build()


def _no_records(report: LoadReport) -> DataError:
    if report.skipped:
        return DataError(
            f"has no valid record: all {report.skipped} records are invalid. First error: {report.errors[0]}",
            source=report.source,
        )
    return DataError(
        "holds no records: the file is empty (only blank lines, an empty list or a table without rows). "
        "Check the path.",
        source=report.source,
    )


def write_jsonl(records: Iterable[PreferenceRecord], path: str | os.PathLike[str]) -> int:
    """Write records as JSONL (one ``record.to_dict()`` per line); returns how many were written.

    The file appears whole or not at all: lines go to a temporary file beside the target,
    which then replaces it (``os.replace`` is atomic on one file system), so a reader
    never sees half a file and a failed write leaves an existing file untouched.
    """
    count = 0
    with atomic_file(path, "w", encoding="utf-8", newline="\n") as file:
        for record in records:
            if not isinstance(record, RECORD_TYPES):
                raise TypeError(f"write_jsonl writes prefcore.data records, got {type(record).__name__}.")
            file.write(json.dumps(record.to_dict(), ensure_ascii=False, allow_nan=False))
            file.write("\n")
            count += 1
    return count


def _read_outcomes(
    path: str | os.PathLike[str], format: str | None
) -> Iterator[tuple[str, PreferenceRecord] | DataError]:
    """Each record of the file in order with the format it was read as, or the ``DataError`` for a bad one."""
    source = os.fspath(path)
    read_raw = _raw_reader(source)
    for line, raw in read_raw(Path(source), source):
        if raw is None:  # a blank line
            continue
        if isinstance(raw, DataError):
            yield raw
            continue
        try:
            yield read_record(raw, format=format, source=source, line=line)
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
            yield line, decode_jsonl_line(raw_line, source, line)


def decode_jsonl_line(raw_line: bytes, source: str, line: int) -> Any:
    """The JSON value of one line of a JSONL file, ``None`` for a blank line, or the ``DataError`` naming its problem.

    The value is checked (nesting, number sizes, repeated keys, Unicode) but is not yet a record.
    """
    encoding = "utf-8-sig" if line == 1 else "utf-8"
    not_utf8 = None
    try:
        text = raw_line.decode(encoding)
    except UnicodeDecodeError as error:
        # Decoded again with the bad bytes kept as lone surrogates: the walk then names the field.
        not_utf8 = DataError(f"is not UTF-8 text ({error.reason} at byte {error.start}).", source=source, line=line)
        text = raw_line.decode(encoding, errors="surrogateescape")
    if not text.strip():
        return None
    try:
        value, suspect = decode(text)
        if not isinstance(value, dict):
            return _not_an_object(value, suspect, source, line)
        if suspect:
            check_tree(value)
    except json.JSONDecodeError as error:
        return not_utf8 or DataError(
            f"is not valid JSON: {error.msg} (column {error.colno}). Each line of a JSONL file holds one JSON object.",
            source=source,
            line=line,
        )
    except TreeError as error:
        if not_utf8 is not None and error.surrogate:
            return DataError(not_utf8.reason, source=source, line=line, field=field_name(error.path))
        return tree_error(error, source, line)
    return value


def _read_json(path: Path, source: str) -> Iterator[tuple[int, Any]]:
    """A JSON list of objects, or an object holding that list under "data" (or "records")."""
    data = path.read_bytes()
    not_utf8 = None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        not_utf8 = DataError(
            f"is not UTF-8 text ({error.reason} at byte {error.start}).",
            source=source,
            line=data.count(b"\n", 0, error.start) + 1,
        )
        text = data.decode("utf-8-sig", errors="surrogateescape")
    try:
        document, suspect = decode(text)
    except json.JSONDecodeError as error:
        if not_utf8 is not None:
            raise not_utf8 from None
        raise DataError(
            f"is not valid JSON: {error.msg} (column {error.colno}).", source=source, line=error.lineno
        ) from None
    except TreeError as error:
        raise _located(error, source) from None
    if isinstance(document, dict):
        keys = [key for key in _JSON_CONTAINER_KEYS if isinstance(document.get(key), list)]
        if len(keys) != 1 or getattr(document, "duplicate", None) in _JSON_CONTAINER_KEYS:
            raise DataError(
                "a JSON file holds a list of records, or an object with the list under 'data' or "
                f"'records' (once); this is an object with the keys {sorted(document)[:10]}. "
                "For one record per line use .jsonl.",
                source=source,
            )
        document = document[keys[0]]
    if not isinstance(document, list):
        raise DataError(f"a JSON file holds a list of records, got a {type(document).__name__}.", source=source)
    for number, raw in enumerate(document, start=1):
        try:
            if not isinstance(raw, dict):
                raw = _not_an_object(raw, suspect, source, number)
            elif suspect:
                check_tree(raw)
        except TreeError as error:
            reason = not_utf8.reason if not_utf8 is not None and error.surrogate else error.reason
            raw = DataError(reason, source=source, line=number, field=field_name(error.path))
        yield number, raw


def _not_an_object(value: Any, suspect: bool, source: str, line: int) -> DataError:
    """The error for a record that is a list, string or number; shown only if it is harmless to render."""
    got = f"a {type(value).__name__}" if suspect else describe(value)
    return DataError(f"a record must be a JSON object, got {got}.", source=source, line=line)


def _located(error: TreeError, source: str) -> DataError:
    """A problem found in a whole JSON document, placed in its record: ``[3, "chosen"]`` is record 4's 'chosen'."""
    path = error.path
    if path and path[0] in _JSON_CONTAINER_KEYS:
        path = path[1:]
    if path and isinstance(path[0], int):
        return tree_error(error, source, path[0] + 1, path[1:])
    return tree_error(error, source, None)


def _read_parquet(path: Path, source: str) -> Iterator[tuple[int, Any]]:
    """Rows of a Parquet table, streamed in batches; one column per field."""
    try:
        import pyarrow
        import pyarrow.parquet as parquet
    except ImportError as error:
        raise ImportError(
            f"Reading {source} needs pyarrow, which is not installed: pip install 'prefcore[parquet]'."
        ) from error
    try:
        table = parquet.ParquetFile(path)
        names = table.schema_arrow.names
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise DataError(
                f"has several columns named {repeated[0]!r}; a reader would keep only the last. Rename or drop one.",
                source=source,
                field=repeated[0],
            )
        # Strings from Parquet are valid UTF-8 and its maps were checked above; only nesting is left.
        deep = max((_type_depth(field.type) for field in table.schema_arrow), default=0) >= MAX_DEPTH - 1
        index = 0
        for batch in table.iter_batches(batch_size=1024):
            try:
                rows = batch.to_pylist(maps_as_pydicts="strict")
            except (KeyError, UnicodeDecodeError):
                rows = [_parquet_row(batch, position, source, index + position + 1) for position in range(len(batch))]
            for row in rows:
                index += 1
                if deep and not isinstance(row, DataError):
                    try:
                        check_tree(row)
                    except TreeError as error:
                        row = tree_error(error, source, index)
                yield index, row
    except DataError:
        raise
    except (OSError, ValueError, pyarrow.ArrowException) as error:
        # pyarrow's ArrowInvalid is a ValueError, ArrowIOError an OSError, ArrowNotImplementedError neither.
        raise DataError(f"is not a readable Parquet file: {error}", source=source) from None


def _type_depth(arrow_type: Any) -> int:
    """How deeply lists, structs and maps nest in an Arrow type (0 for a plain value)."""
    depth, level, types = 0, 0, [arrow_type]
    while types and level <= MAX_DEPTH:
        level += 1
        children = [child.field(i).type for child in types for i in range(child.num_fields)]
        if children or any(child.num_fields for child in types):
            depth = level
        types = children
    return depth


def _parquet_row(batch: Any, position: int, source: str, line: int) -> dict[str, Any] | DataError:
    """One row cell by cell, when its batch would not convert: the cell at fault is named."""
    row = {}
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        try:
            row[name] = column[position].as_py(maps_as_pydicts="strict")
        except KeyError as error:
            key = re.search(r"duplicate key was (.*)\)", str(error))
            which = f"the key {key.group(1)}" if key else "a key"
            return DataError(
                f"is a map that holds {which} more than once; a reader would keep only one value. Keep one.",
                source=source,
                line=line,
                field=name,
            )
        except UnicodeDecodeError as error:
            return DataError(
                f"is not UTF-8 text ({error.reason} at byte {error.start}).", source=source, line=line, field=name
            )
    return row


_RAW_READERS: Mapping[str, RawReader] = MappingProxyType(
    {".jsonl": _read_jsonl, ".ndjson": _read_jsonl, ".json": _read_json, ".parquet": _read_parquet}
)
