"""Property-based fuzzing of the data readers: records, or a DataError naming file, line and field.

The inputs are written as raw text or bytes, not through ``json.dumps``, so they can hold
what real files hold and a JSON library never writes: repeated keys, ints of thousands of
digits, deep nesting, unpaired ``\\ud800`` escapes, bytes that are not UTF-8, lines cut
short. Parquet tables get typed columns (maps with repeated keys, binary, decimals, nested
structs) and corrupted files. Whatever comes in, a reader returns records that can be
written back and read again, or raises ``DataError``; never another exception.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from prefcore.data import load_preferences
from prefcore.data import read_demonstrations
from prefcore.data import validate_file
from prefcore.data import write_jsonl
from prefcore.errors import DataError

FUZZ = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

FIELDS = [
    "prompt", "chosen", "rejected", "completion", "completions", "label", "ranks", "scores", "scale",
    "critique", "revision", "items", "messages", "type", "margin", "probability", "tie", "spans",
    "metadata", "role", "content", "annotator_id", "source", "id", "data", "records", "start", "end",
]  # fmt: skip
ROLES = ["system", "user", "assistant", "tool", "human", "gpt", "", "Assistant"]

# Record-level problems that have no single field to name: the line is not an object, is
# not JSON (or not text at all), or its fields fit no format (or several).
WHOLE_RECORD = (
    "a record must be a JSON object",
    "is not valid JSON",
    "is not UTF-8 text",
    "cannot tell the record format",
    "the fields",
)


# ---------------------------------------------------------------- JSON text, hostile by construction

json_strings = st.one_of(
    st.text(max_size=8).map(json.dumps),
    st.sampled_from(['"\\ud800"', '"a\\udfffb"', '"\\ud83d\\ude00"', '"\\u0000"', '""', '"  "', '"caf\\u00e9"']),
    st.sampled_from(ROLES + FIELDS).map(json.dumps),
)
json_numbers = st.one_of(
    st.integers(-(10**20), 10**20).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr).filter(lambda text: "e" not in text or "." in text),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "0.5", "2.0", "1e-400"]),
    st.integers(300, 5000).map(lambda digits: "9" * digits),
    st.integers(4290, 4310).map(lambda digits: "-" + "1" * digits),
)
json_scalars = st.one_of(json_strings, json_numbers, st.sampled_from(["true", "false", "null"]))


def _object(items: list[tuple[str, str]]) -> str:
    return "{" + ", ".join(f"{key}: {value}" for key, value in items) + "}"


def _message(role: str, content: str) -> str:
    return _object([('"role"', json.dumps(role)), ('"content"', content)])


json_keys = st.one_of(st.sampled_from(FIELDS).map(json.dumps), json_strings)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4).map(lambda items: "[" + ", ".join(items) + "]"),
        st.lists(st.tuples(json_keys, children), max_size=4).map(_object),
        st.builds(_message, st.sampled_from(ROLES), json_strings),
        st.lists(st.builds(_message, st.sampled_from(ROLES), json_strings), min_size=1, max_size=3).map(
            lambda items: "[" + ", ".join(items) + "]"
        ),
    ),
    max_leaves=12,
)
conversations = st.lists(st.builds(_message, st.sampled_from(ROLES), json_strings), min_size=1, max_size=3).map(
    lambda items: "[" + ", ".join(items) + "]"
)
texts_or_chats = st.one_of(json_strings, conversations)
deep_values = (
    st.integers(90, 3000)
    .filter(lambda depth: depth < 200 or depth > 2000)
    .map(lambda depth: "[" * depth + "1" + "]" * depth)
)


@st.composite
def near_records(draw: st.DrawFn) -> str:
    """A record of one layout with plausible values and sometimes an extra (or repeated) field: often valid."""
    layout = draw(
        st.sampled_from(
            [
                ("prompt", "chosen", "rejected"),
                ("chosen", "rejected"),
                ("prompt", "completion", "label"),
                ("prompt", "completion"),
                ("messages",),
                ("prompt", "completions", "ranks"),
                ("prompt", "completion", "critique"),
            ]
        )
    )
    values = {"label": st.sampled_from(["true", "false", "1"]), "ranks": st.sampled_from(["[1, 2]", "[2, 1]", "[1]"])}
    values["completions"] = st.lists(texts_or_chats, min_size=2, max_size=2).map(
        lambda items: "[" + ", ".join(items) + "]"
    )
    items = [(json.dumps(name), draw(values.get(name, texts_or_chats))) for name in layout]
    if draw(st.booleans()):
        items.append((draw(json_keys), draw(json_values | deep_values)))
    return _object(items)


# Records: objects whose keys are field names (sometimes repeated), so parsing goes deep, or plausible ones.
json_records = st.one_of(
    near_records(),
    st.lists(st.tuples(st.sampled_from(FIELDS).map(json.dumps), json_values | deep_values), max_size=6).map(_object),
    json_values,
)


@st.composite
def jsonl_files(draw: st.DrawFn) -> bytes:
    lines = [draw(json_records).encode("utf-8", "surrogatepass") for _ in range(draw(st.integers(0, 5)))]
    if lines and draw(st.booleans()):  # damage: a cut, a byte that is not UTF-8, raw noise
        index = draw(st.integers(0, len(lines) - 1))
        line = lines[index]
        position = draw(st.integers(0, len(line)))
        lines[index] = draw(
            st.sampled_from(
                [
                    line[:position],
                    line[:position] + b"\xff" + line[position:],
                    line[:position] + b"\xc3" + line[position:],
                    draw(st.binary(max_size=20)),
                ]
            )
        )
    blank = draw(st.sampled_from([b"", b"\n", b"  \r\n"]))
    return b"\n".join(lines) + blank


@st.composite
def json_files(draw: st.DrawFn) -> bytes:
    records = draw(st.lists(json_records, max_size=5))
    body = "[" + ", ".join(records) + "]"
    shape = draw(st.sampled_from(["list", "data", "records", "both", "scalar"]))
    document = {
        "list": body,
        "data": '{"version": 1, "data": ' + body + "}",
        "records": '{"records": ' + body + ', "records": []}',
        "both": '{"data": ' + body + ', "records": ' + body + "}",
        "scalar": draw(json_values),
    }[shape]
    data = document.encode("utf-8", "surrogatepass")
    if draw(st.booleans()):
        position = draw(st.integers(0, len(data)))
        data = draw(st.sampled_from([data[:position], data[:position] + b"\xfe" + data[position:]]))
    return data


# ---------------------------------------------------------------- the property


def check_reader_contract(path: Path) -> None:
    """Records that survive a write and a re-read, or DataErrors naming the file (and the line, for a record)."""
    for read in (load_preferences, read_demonstrations):
        try:
            records, report = read(path)
        except DataError as error:
            assert error.source == str(path), error
        else:
            assert records and report.ok
            copy = path.with_name("copy.jsonl")
            write_jsonl(records, copy)
            assert read(copy)[0] == records
    try:
        _, report = load_preferences(path, skip_invalid=True, max_errors=1000)
    except DataError as error:
        assert error.source == str(path), error
        return
    for error in report.errors:  # errors about one record, each skipped
        assert error.source == str(path) and error.line is not None, error
        assert error.field is not None or error.reason.startswith(WHOLE_RECORD), error
    assert validate_file(path, max_errors=1000).skipped == report.skipped


@FUZZ
@given(data=jsonl_files())
def test_jsonl_reader_contract(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "fuzz.jsonl"
    path.write_bytes(data)
    check_reader_contract(path)


@FUZZ
@given(data=json_files())
def test_json_reader_contract(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "fuzz.json"
    path.write_bytes(data)
    check_reader_contract(path)


# ---------------------------------------------------------------- Parquet

pyarrow = importlib.import_module("pyarrow")
parquet = importlib.import_module("pyarrow.parquet")

MESSAGE = pyarrow.struct([("role", pyarrow.string()), ("content", pyarrow.string())])
SPAN = pyarrow.struct([("start", pyarrow.int64()), ("end", pyarrow.int64())])
texts = st.one_of(st.text(max_size=6), st.sampled_from(["q", "a", "b", "user", "assistant"]))


def _column(kind: str) -> tuple[Any, st.SearchStrategy[Any]]:
    """A pyarrow type and a strategy for one cell of it (None is a null cell)."""
    cells: dict[str, tuple[Any, st.SearchStrategy[Any]]] = {
        "string": (pyarrow.string(), texts),
        "int": (pyarrow.int64(), st.integers(-(2**63), 2**63 - 1)),
        "uint": (pyarrow.uint64(), st.integers(0, 2**64 - 1)),
        "float": (pyarrow.float64(), st.floats()),
        "bool": (pyarrow.bool_(), st.booleans()),
        "strings": (pyarrow.list_(pyarrow.string()), st.lists(texts, max_size=3)),
        "ints": (pyarrow.list_(pyarrow.int64()), st.lists(st.integers(-5, 5), max_size=3)),
        "messages": (
            pyarrow.list_(MESSAGE),
            st.lists(st.fixed_dictionaries({"role": st.sampled_from(ROLES), "content": texts}), max_size=3),
        ),
        # Lists of pairs: a map may hold one key twice.
        "map": (
            pyarrow.map_(pyarrow.string(), pyarrow.float64()),
            st.lists(st.tuples(st.sampled_from(["h", "s", "overall"]), st.floats(0, 5)), max_size=3),
        ),
        "binary": (pyarrow.binary(), st.binary(max_size=4)),
        "decimal": (pyarrow.decimal128(10, 2), st.decimals(-100, 100, places=2, allow_nan=False)),
        "date": (pyarrow.date32(), st.dates()),
        "struct": (SPAN, st.fixed_dictionaries({"start": st.integers(-2, 9), "end": st.integers(-2, 9)})),
    }  # fmt: skip
    return cells[kind]


KINDS = ["string", "int", "uint", "float", "bool", "strings", "ints", "messages", "map", "binary", "decimal", "date"]


words = st.sampled_from(["q", "a", "b", "c", "Why?", "Yes."])


def _turns(*roles: str) -> st.SearchStrategy[list[dict[str, str]]]:
    return st.tuples(*(st.fixed_dictionaries({"role": st.just(role), "content": words}) for role in roles)).map(list)


LAYOUT_CELLS = {
    "prompt": (words, _turns("user") | _turns("system", "user")),
    "chosen": (words, _turns("assistant")),
    "rejected": (words, _turns("assistant")),
    "completion": (words, _turns("assistant")),
    "messages": (words, _turns("user", "assistant") | _turns("system", "user", "assistant", "user", "assistant")),
}
"""Cells that fit a layout: (text, messages)."""

LAYOUTS = [("prompt", "chosen", "rejected"), ("prompt", "completion", "label"), ("prompt", "completion"), ("messages",)]


@st.composite
def parquet_tables(draw: st.DrawFn) -> Any:
    """Columns of a real layout (text or message lists) half the time, then columns of any type and name."""
    kinds = {}
    if draw(st.booleans()):
        layout = draw(st.sampled_from(LAYOUTS))
        chat = draw(st.booleans())
        for name in layout:
            kinds[name] = "bool" if name == "label" else "messages" if chat or name == "messages" else "string"
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=3)):
        kinds.setdefault(name, draw(st.sampled_from([*KINDS, "struct"])))
    names = list(kinds) or ["prompt"]
    if draw(st.integers(0, 9)) == 0:
        names.append(names[0])  # a repeated column name
    rows = draw(st.integers(0, 4))
    columns = []
    for name in names:
        kind = kinds.get(name, "string")
        arrow_type, cell = _column(kind)
        if name in LAYOUT_CELLS and kind in ("string", "messages"):  # mostly plausible, sometimes anything
            cell = LAYOUT_CELLS[name][kind == "messages"] | cell
        columns.append(pyarrow.array([draw(cell | st.none()) for _ in range(rows)], type=arrow_type))
    return pyarrow.table(columns, names=names)


@FUZZ
@given(table=parquet_tables(), damage=st.none() | st.tuples(st.integers(0, 10_000), st.binary(min_size=1, max_size=8)))
def test_parquet_reader_contract(tmp_path: Path, table: Any, damage: tuple[int, bytes] | None) -> None:
    path = tmp_path / "fuzz.parquet"
    parquet.write_table(table, path)
    if damage is not None:  # overwrite a few bytes somewhere: a corrupt file
        data = bytearray(path.read_bytes())
        position = damage[0] % len(data)
        data[position : position + len(damage[1])] = damage[1]
        path.write_bytes(bytes(data))
    check_reader_contract(path)
