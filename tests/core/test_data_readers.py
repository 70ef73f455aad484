"""File readers: JSONL, JSON and Parquet, TRL layouts, every error path, skip_invalid reports, atomic writes."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from prefcore.cli import main
from prefcore.data import BinaryLabel
from prefcore.data import Critique
from prefcore.data import FeedbackRecord
from prefcore.data import Message
from prefcore.data import PairwiseComparison
from prefcore.data import Provenance
from prefcore.data import Ranking
from prefcore.data import Scores
from prefcore.data import load_preferences
from prefcore.data import read_demonstrations
from prefcore.data import validate_file
from prefcore.data import write_jsonl
from prefcore.errors import ConfigError
from prefcore.errors import DataError

DATA = Path(__file__).parent.parent / "data"

USER = Message("user", "What color is the sky?")
BLUE = Message("assistant", "It is blue.")
GREEN = Message("assistant", "It is green.")

ONE_OF_EACH = [
    PairwiseComparison("q", "a", "b", margin=1.5, probability=0.9, annotator_id="a1", source="human"),
    Ranking((USER,), [(BLUE,), (GREEN,)], [1, 2], group_id="g"),
    Scores("q", ["a", "b"], [{"help": 4, "safe": 5}, {"help": 2, "safe": 5}], (1, 5), source="ai"),
    BinaryLabel("q", "a bad answer", False, aspect="safety", spans=[(2, 5, False)]),
    Critique("q", "a", "too short", revision="a longer answer"),
    FeedbackRecord("q", [PairwiseComparison("q", "a", "b"), Critique("q", "b", "off topic")], metadata={"n": 1}),
]


def write_lines(path: Path, lines: list[Any]) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def load_error(path: Path, **options: Any) -> DataError:
    with pytest.raises(DataError) as excinfo:
        load_preferences(path, **options)
    return excinfo.value


# ---------------------------------------------------------------- JSONL files


def test_jsonl_reads_every_format_with_line_provenance() -> None:
    path = DATA / "all_formats.jsonl"
    records, report = load_preferences(path)
    assert [record.format for record in records] == ["pairwise", "ranking", "scores", "binary", "critique", "feedback"]
    # Line 3 of the file is blank: provenance counts file lines, not records.
    assert [record.provenance.line for record in records] == [1, 2, 4, 5, 6, 7]
    assert records[0].provenance == Provenance(str(path), 1)
    assert records[0] == PairwiseComparison("Name a prime.", "7", "8", margin=1.0, annotator_id="a1", source="human")
    assert records[5].items[1] == Critique("Name a prime.", "8", "Even.", source="ai")
    assert report.ok and report.total == 6 and report.skipped == 0
    assert report.counts == dict.fromkeys(["pairwise", "ranking", "scores", "binary", "critique", "feedback"], 1)


def test_write_then_load_round_trips_every_type(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    assert write_jsonl(ONE_OF_EACH, path) == len(ONE_OF_EACH)
    records, _ = load_preferences(path)
    assert records == ONE_OF_EACH
    assert [record.provenance.line for record in records] == [1, 2, 3, 4, 5, 6]


def test_pairs_file_with_errors_names_the_first_bad_line() -> None:
    error = load_error(DATA / "pairs_with_errors.jsonl")
    assert (error.source, error.line, error.field) == (str(DATA / "pairs_with_errors.jsonl"), 3, "rejected")
    assert str(error).endswith(
        "line 3: field 'rejected': is missing. A pairwise record needs 'prompt', 'chosen' and 'rejected' "
        "(strings or message lists)."
    )


def test_skip_invalid_counts_every_bad_record_and_keeps_the_good_ones() -> None:
    records, report = load_preferences(DATA / "pairs_with_errors.jsonl", skip_invalid=True)
    assert [record.prompt for record in records] == ["The sky is", "The sun is", "Ice is"]
    assert (report.total, report.valid, report.skipped, report.ok) == (8, 3, 5, False)
    assert report.counts == {"pairwise": 3}
    assert [(error.line, error.field) for error in report.errors] == [
        (3, "rejected"),
        (4, "rejected"),
        (5, "margin"),
        (6, None),
        (7, "prompt"),
    ]
    assert "identical to 'chosen'" in report.errors[1].reason
    assert "got 'big' (str)" in report.errors[2].reason
    assert "not valid JSON" in report.errors[3].reason
    assert "empty or blank" in report.errors[4].reason


def test_report_keeps_the_first_errors_and_summarises_the_rest() -> None:
    report = validate_file(DATA / "pairs_with_errors.jsonl", max_errors=2)
    assert len(report.errors) == 2 and report.skipped == 5
    summary = report.summary()
    assert summary.splitlines()[0] == f"{DATA / 'pairs_with_errors.jsonl'}: 8 records, 3 valid, 5 invalid."
    assert "  pairwise  3" in summary
    assert "First 2 errors:" in summary
    assert "line 3: field 'rejected': is missing." in summary
    assert summary.endswith("... and 3 more.")


def test_validate_file_on_a_clean_file() -> None:
    report = validate_file(DATA / "trl_standard.jsonl")
    assert report.ok and report.counts == {"pairwise": 2}
    assert "First" not in report.summary()


@pytest.mark.parametrize(
    ("line", "field", "words"),
    [
        pytest.param("[1, 2]", None, "must be a JSON object, got [1, 2] (list)", id="not-an-object"),
        pytest.param('{"prompt": "q", "chosen": "a", "rejected": 5}', "rejected", "got 5 (int)", id="wrong-type"),
        pytest.param('{"prompt": "q", "chosen": "a", "rejected": ""}', "rejected", "empty", id="empty-string"),
        pytest.param(
            '{"prompt": "q", "completions": ["a"], "scores": [NaN], "scale": [0, 1]}',
            "scores[0].overall",
            "finite",
            id="nan-score",
        ),
        pytest.param(
            '{"prompt": "q", "completions": ["a"], "scores": [{"h": Infinity}], "scale": [0, 1]}',
            "scores[0].h",
            "finite",
            id="inf-score",
        ),
        pytest.param(
            '{"prompt": "q", "completions": ["a", "b"], "scores": [{"h": 3}, {"h": 11}], "scale": [1, 10]}',
            "scores[1].h",
            "outside the scale [1, 10]",
            id="out-of-scale",
        ),
        pytest.param(
            '{"prompt": "q", "completions": ["a", "b"], "scores": [1, 2]}', "scale", "is missing", id="scale-missing"
        ),
        pytest.param(
            '{"prompt": "q", "completions": ["a", "a"], "ranks": [1, 2]}',
            "completions[1]",
            "distinct",
            id="duplicate-completion",
        ),
        pytest.param(
            '{"prompt": "q", "completions": ["a", "b"], "ranks": [1, "2"]}', "ranks[1]", "whole number", id="rank-str"
        ),
        pytest.param('{"type": "pair", "prompt": "q"}', "type", "unknown record format 'pair'", id="unknown-format"),
        pytest.param(
            '{"prompt": "q", "completion": "a", "label": "good"}', "label", "true or false", id="label-string"
        ),
        pytest.param(
            '{"prompt": "q", "chosen": [{"role": "user", "text": "hi"}], "rejected": "b"}',
            "chosen[0]",
            "'role' and 'content'",
            id="message-keys",
        ),
    ],
)
def test_malformed_jsonl_lines_raise_with_source_line_and_field(
    tmp_path: Path, line: str, field: str | None, words: str
) -> None:
    path = write_lines(tmp_path / "data.jsonl", [{"prompt": "ok", "chosen": "a", "rejected": "b"}, "", line])
    error = load_error(path)
    assert (error.source, error.line, error.field) == (str(path), 3, field)
    assert words in error.reason


def test_invalid_utf8_line_is_reported_and_skippable(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_bytes(b'{"prompt": "q", "chosen": "a", "rejected": "b"}\n{"prompt": "\xff"}\n')
    error = load_error(path)
    assert (error.line, error.field) == (2, "prompt")
    assert error.reason == "is not UTF-8 text (invalid start byte at byte 12)."
    _, report = load_preferences(path, skip_invalid=True)
    assert (report.valid, report.skipped) == (1, 1)


def test_byte_order_mark_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"prompt": "q", "chosen": "a", "rejected": "b"}\n')
    assert load_preferences(path)[0] == [PairwiseComparison("q", "a", "b")]


def test_format_override_applies_to_every_record(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "labels.jsonl", [{"prompt": "q", "completion": "a", "label": True, "critique": "x"}])
    with pytest.raises(DataError, match="several formats"):
        load_preferences(path)
    [record], report = load_preferences(path, format="binary")
    assert record == BinaryLabel("q", "a", True, metadata={"critique": "x"})
    assert report.counts == {"binary": 1}


def test_unknown_format_argument_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as excinfo:
        validate_file(DATA / "trl_standard.jsonl", format="unpaired")
    assert excinfo.value.field == "format"
    assert "Known formats: pairwise, ranking, scores, binary, critique, feedback, demonstration" in str(excinfo.value)


@pytest.mark.parametrize("name", ["data.csv", "data"])
def test_unknown_file_type_is_refused_even_in_skip_mode(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text("prompt,chosen,rejected\n")
    error = load_error(path, skip_invalid=True)
    assert (error.source, error.line) == (str(path), None)
    assert ".jsonl (or .ndjson), .json or .parquet" in error.reason


def test_missing_file(tmp_path: Path) -> None:
    error = load_error(tmp_path / "absent.jsonl")
    assert (error.source, error.reason) == (str(tmp_path / "absent.jsonl"), "no such file.")


# ---------------------------------------------------------------- TRL layouts


def test_trl_standard_preference() -> None:
    records, _ = load_preferences(DATA / "trl_standard.jsonl")
    assert records == [
        PairwiseComparison("The sky is", " blue.", " green."),
        PairwiseComparison("The sun is", " in the sky.", " in the sea.", margin=2.0),
    ]


def test_trl_conversational_preference() -> None:
    records, _ = load_preferences(DATA / "trl_conversational.jsonl")
    assert records[0] == PairwiseComparison((USER,), (BLUE,), (GREEN,))
    assert records[1].prompt == (Message("system", "Be brief."), Message("user", "Where is the sun?"))


def test_trl_implicit_prompt_standard_and_conversational() -> None:
    records, _ = load_preferences(DATA / "trl_implicit_prompt.jsonl")
    assert records == [
        PairwiseComparison("The sky is", " blue.", " green."),
        PairwiseComparison((USER,), (BLUE,), (GREEN,)),
    ]


def test_trl_unpaired_preference() -> None:
    records, report = load_preferences(DATA / "trl_unpaired.jsonl")
    assert records == [
        BinaryLabel("The sky is", " blue.", True),
        BinaryLabel("The sky is", " green.", False),
        BinaryLabel((USER,), (GREEN,), False),
    ]
    assert report.counts == {"binary": 3}


def test_ultrafeedback_layout_text_prompt_beside_whole_conversations(tmp_path: Path) -> None:
    row = {
        "prompt": "What color is the sky?",
        "prompt_id": "abc",
        "chosen": [USER.to_dict(), BLUE.to_dict()],
        "rejected": [USER.to_dict(), GREEN.to_dict()],
        "score_chosen": 8.0,
        "score_rejected": 5.5,
    }
    [record], _ = load_preferences(write_lines(tmp_path / "uf.jsonl", [row]))
    extra_columns = {"prompt_id": "abc", "score_chosen": 8.0, "score_rejected": 5.5}
    assert record == PairwiseComparison((USER,), (BLUE,), (GREEN,), metadata=extra_columns)
    error = load_error(write_lines(tmp_path / "uf.jsonl", [{**row, "prompt": "Something else?"}]))
    assert (error.line, error.field) == (1, "chosen")
    assert "all text or all messages" in error.reason


# ---------------------------------------------------------------- JSON files


@pytest.mark.parametrize("container", ["list", "data", "records"])
def test_json_list_or_data_object_with_record_number_provenance(tmp_path: Path, container: str) -> None:
    rows = [record.to_dict() for record in ONE_OF_EACH]
    document = rows if container == "list" else {"version": 1, container: rows}
    path = tmp_path / "data.json"
    path.write_text(json.dumps(document, indent=2))
    records, report = load_preferences(path)
    assert records == ONE_OF_EACH
    assert [record.provenance.line for record in records] == [1, 2, 3, 4, 5, 6]
    assert report.valid == 6


def test_json_bad_record_names_its_number(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    rows = [{"prompt": "q", "chosen": "a", "rejected": "b"}, {"prompt": "q", "chosen": "a"}]
    path.write_text(json.dumps({"data": rows}))
    error = load_error(path)
    assert (error.source, error.line, error.field) == (str(path), 2, "rejected")


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        pytest.param('[\n  {"prompt": "q",\n  oops}\n]', 3, "not valid JSON", id="syntax-error-names-file-line"),
        pytest.param(
            '{"prompt": "q", "chosen": "a", "rejected": "b"}',
            None,
            "keys ['chosen', 'prompt', 'rejected']",
            id="single-object",
        ),
        pytest.param('"text"', None, "got a str", id="scalar"),
    ],
)
def test_unreadable_json_documents_raise_even_in_skip_mode(
    tmp_path: Path, text: str, line: int | None, words: str
) -> None:
    path = tmp_path / "data.json"
    path.write_text(text)
    error = load_error(path, skip_invalid=True)
    assert (error.source, error.line) == (str(path), line)
    assert words in error.reason


# ---------------------------------------------------------------- Parquet files


def write_parquet(rows: list[dict[str, Any]], path: Path) -> Path:
    pyarrow = importlib.import_module("pyarrow")
    parquet = importlib.import_module("pyarrow.parquet")
    parquet.write_table(pyarrow.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize("record", ONE_OF_EACH, ids=lambda record: record.format)
def test_parquet_round_trip_for_every_type(tmp_path: Path, record: Any) -> None:
    path = write_parquet([record.to_dict(), record.to_dict()], tmp_path / "data.parquet")
    records, report = load_preferences(path)
    assert records == [record, record]
    assert [read.provenance for read in records] == [Provenance(str(path), 1), Provenance(str(path), 2)]
    assert report.counts == {record.format: 2}


def test_parquet_null_cells_are_absent_fields_and_bad_rows_are_numbered(tmp_path: Path) -> None:
    rows = [
        {"prompt": "q", "chosen": "a", "rejected": "b", "margin": 1.0},
        {"prompt": "q", "chosen": "a", "rejected": "c", "margin": None},
        {"prompt": "q", "chosen": "a", "rejected": None, "margin": None},
    ]
    path = write_parquet(rows, tmp_path / "pairs.parquet")
    records, report = load_preferences(path, skip_invalid=True)
    assert records == [PairwiseComparison("q", "a", "b", margin=1.0), PairwiseComparison("q", "a", "c")]
    [error] = report.errors
    assert (error.source, error.line, error.field) == (str(path), 3, "rejected")


def test_parquet_conversational_columns(tmp_path: Path) -> None:
    rows = [{"prompt": [USER.to_dict()], "completion": [GREEN.to_dict()], "label": False}]
    records, _ = load_preferences(write_parquet(rows, tmp_path / "kto.parquet"))
    assert records == [BinaryLabel((USER,), (GREEN,), False)]


def test_corrupt_parquet_file(tmp_path: Path) -> None:
    importlib.import_module("pyarrow")
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"not a parquet file")
    error = load_error(path)
    assert error.source == str(path)
    assert "not a readable Parquet file" in error.reason


def test_parquet_without_pyarrow_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "data.parquet"
    path.write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ImportError, match=r"needs pyarrow.*pip install 'prefcore\[parquet\]'"):
        load_preferences(path)


# ---------------------------------------------------------------- writing


def test_write_jsonl_output_is_one_json_object_per_line(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    write_jsonl([PairwiseComparison("q", "é", "b")], path)
    assert path.read_text(encoding="utf-8") == '{"type": "pairwise", "prompt": "q", "chosen": "é", "rejected": "b"}\n'


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    write_jsonl(ONE_OF_EACH[:1], path)
    before = path.read_bytes()

    def records_then_failure() -> Any:
        yield ONE_OF_EACH[1]
        raise RuntimeError("annotation export interrupted")

    with pytest.raises(RuntimeError):
        write_jsonl(records_then_failure(), path)
    assert path.read_bytes() == before
    assert [entry.name for entry in tmp_path.iterdir()] == ["out.jsonl"]


def test_write_jsonl_refuses_what_is_not_a_record(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="got dict"):
        write_jsonl([{"prompt": "q"}], tmp_path / "out.jsonl")  # type: ignore[list-item]
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------- hostile input: a named error, nothing lost

PAIR = '"prompt": "q", "chosen": "a", "rejected": "b"'


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    ("line", "field", "words"),
    [
        # json.loads raises RecursionError past ~1000 levels; 150 levels decode but are refused too.
        pytest.param("{" + PAIR + ', "x": ' + nested(100_000) + "}", "x[0][0][0][0][0]...", "100 levels", id="deep"),
        pytest.param("{" + PAIR + ', "x": ' + nested(150) + "}", "x[0][0][0][0][0]...", "100 levels", id="deep-150"),
        pytest.param(nested(5000), "[0][0][0][0][0][0]...", "100 levels", id="deep-top-level"),
        # int() refuses more than 4300 digits (ValueError); float() of 400 digits overflows.
        pytest.param("{" + PAIR + ', "margin": ' + "9" * 5000 + "}", "margin", "5000 digits", id="int-5000-digits"),
        pytest.param("{" + PAIR + ', "id": -' + "9" * 5000 + "}", "id", "5000 digits", id="int-5000-digits-meta"),
        pytest.param("{" + PAIR + ', "margin": ' + "9" * 400 + "}", "margin", "400 digits, too large", id="overflow"),
        pytest.param(
            '{"prompt": "q", "completions": ["a", "b"], "ranks": [1, ' + "9" * 400 + "]}",
            "ranks[1]",
            "at most 2**53",
            id="huge-rank",
        ),
        pytest.param("{" + PAIR + ', "rejected": "c"}', "rejected", "appears twice", id="duplicate-key"),
        pytest.param(
            '{"prompt": "q", "chosen": [{"role": "assistant", "content": "a", "content": "b"}], "rejected": "c"}',
            "chosen[0].content",
            "appears twice",
            id="duplicate-key-nested",
        ),
        pytest.param(
            '{"prompt": "q\\ud800", "chosen": "a", "rejected": "b"}', "prompt", "lone surrogate", id="lone-surrogate"
        ),
        pytest.param(
            '{"prompt": "q", "chosen": "a", "rejected": "b", "note\\udfff": 1}',
            "note\udfff",
            "lone surrogate",
            id="lone-surrogate-in-key",
        ),
        pytest.param(
            '{"prompt": [{"role": "wizard", "content": "q"}], "chosen": [{"role": "assistant", "content": "a"}], '
            '"rejected": [{"role": "assistant", "content": "b"}]}',
            "prompt[0].role",
            "must be one of system, user, assistant, tool, got 'wizard'",
            id="unknown-role",
        ),
        pytest.param(
            '{"prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "gpt", "content": "a"}], '
            '"rejected": [{"role": "assistant", "content": "b"}]}',
            "chosen[0].role",
            "Did you mean 'assistant'?",
            id="sharegpt-role",
        ),
        pytest.param(
            '{"prompt": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], '
            '"chosen": [{"role": "assistant", "content": "b"}], "rejected": [{"role": "assistant", "content": "c"}]}',
            "prompt[1].role",
            "must be the user's",
            id="prompt-ends-with-assistant",
        ),
        pytest.param(
            '{"prompt": [{"role": "user", "content": "q"}, {"role": "system", "content": "s"}], '
            '"chosen": [{"role": "assistant", "content": "b"}], "rejected": [{"role": "assistant", "content": "c"}]}',
            "prompt[1].role",
            "system messages come first",
            id="system-after-user",
        ),
        pytest.param(
            '{"prompt": [{"role": "user", "content": "q"}], "completion": [{"role": "assistant", "content": "a"}, '
            '{"role": "user", "content": "thanks"}], "label": true}',
            "completion[1].role",
            "must be 'assistant' in a completion",
            id="completion-with-user-turn",
        ),
    ],
)
def test_hostile_jsonl_lines_name_file_line_and_field(tmp_path: Path, line: str, field: str, words: str) -> None:
    path = write_lines(tmp_path / "data.jsonl", [{"prompt": "ok", "chosen": "a", "rejected": "b"}, line])
    error = load_error(path)
    assert (error.source, error.line, error.field) == (str(path), 2, field)
    assert words in error.reason
    records, report = load_preferences(path, skip_invalid=True)
    assert records == [PairwiseComparison("ok", "a", "b")] and report.skipped == 1


def test_invalid_utf8_in_a_json_document_names_the_record_and_field(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    path.write_bytes(
        b'[{"prompt": "q", "chosen": "a", "rejected": "b"},\n {"prompt": "caf\xe9", "chosen": "a", "rejected": "b"}]'
    )
    error = load_error(path)
    assert (error.line, error.field) == (2, "prompt")
    assert error.reason == "is not UTF-8 text (invalid continuation byte at byte 66)."
    assert load_preferences(path, skip_invalid=True)[1].skipped == 1


def test_invalid_utf8_outside_a_string_names_the_line_of_the_file(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    path.write_bytes(b'[\n{"prompt": "q", "chosen": "a", "rejected": "b"}\xff]')
    error = load_error(path, skip_invalid=True)
    assert (error.line, error.field) == (2, None)
    assert "is not UTF-8 text (invalid start byte" in error.reason


@pytest.mark.parametrize("container", ["list", "data"])
@pytest.mark.parametrize(
    ("record", "field", "words"),
    [
        pytest.param('{"prompt": "q", "x": ' + nested(100_000) + "}", "x[0][0][0][0][0]...", "100 levels", id="deep"),
        pytest.param('{"prompt": "q", "prompt": "r"}', "prompt", "appears twice", id="duplicate-key"),
        pytest.param('{"prompt": "q", "id": ' + "1" * 4301 + "}", "id", "4301 digits", id="huge-int"),
    ],
)
def test_hostile_json_records_are_named_by_number(
    tmp_path: Path, container: str, record: str, field: str, words: str
) -> None:
    records = "[{" + PAIR + "}, " + record + "]"
    path = tmp_path / "data.json"
    path.write_text(records if container == "list" else '{"version": 1, "data": ' + records + "}")
    error = load_error(path)
    assert (error.source, error.line, error.field) == (str(path), 2, field)
    assert words in error.reason


def test_a_json_object_with_its_record_list_twice_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    path.write_text('{"data": [{' + PAIR + '}], "data": [{' + PAIR + "}]}")
    assert "under 'data' or 'records' (once)" in load_error(path).reason


def test_parquet_map_with_a_repeated_key_names_row_and_column(tmp_path: Path) -> None:
    pyarrow = importlib.import_module("pyarrow")
    parquet = importlib.import_module("pyarrow.parquet")
    tags = pyarrow.array(
        [[("k", 1)], [("k", 1), ("k", 2)], [("j", 3)]], type=pyarrow.map_(pyarrow.string(), pyarrow.int64())
    )
    table = pyarrow.table({"prompt": ["q"] * 3, "chosen": ["a"] * 3, "rejected": ["b", "c", "d"], "tags": tags})
    path = tmp_path / "pairs.parquet"
    parquet.write_table(table, path)
    error = load_error(path)
    assert (error.line, error.field) == (2, "tags")
    assert "holds the key 'k' more than once" in error.reason
    records, report = load_preferences(path, skip_invalid=True)
    assert [(record.rejected, record.metadata) for record in records] == [
        ("b", {"tags": {"k": 1}}),
        ("d", {"tags": {"j": 3}}),
    ]
    assert report.skipped == 1


def test_parquet_invalid_utf8_cell_names_row_and_column(tmp_path: Path) -> None:
    pyarrow = importlib.import_module("pyarrow")
    parquet = importlib.import_module("pyarrow.parquet")
    offsets = pyarrow.py_buffer(bytes([0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0]))
    prompts = pyarrow.Array.from_buffers(pyarrow.string(), 2, [None, offsets, pyarrow.py_buffer(b"q\xff")])
    path = tmp_path / "pairs.parquet"
    parquet.write_table(pyarrow.table({"prompt": prompts, "chosen": ["a", "a"], "rejected": ["b", "b"]}), path)
    error = load_error(path)
    assert (error.line, error.field) == (2, "prompt")
    assert "is not UTF-8 text" in error.reason


def test_parquet_repeated_column_names_are_refused(tmp_path: Path) -> None:
    pyarrow = importlib.import_module("pyarrow")
    parquet = importlib.import_module("pyarrow.parquet")
    columns = [pyarrow.array(["q"]), pyarrow.array(["a"]), pyarrow.array(["b"]), pyarrow.array(["c"])]
    path = tmp_path / "pairs.parquet"
    parquet.write_table(pyarrow.table(columns, names=["prompt", "chosen", "rejected", "rejected"]), path)
    error = load_error(path, skip_invalid=True)
    assert (error.line, error.field) == (None, "rejected")
    assert "several columns named 'rejected'" in error.reason


EMPTY_FILES = [
    pytest.param("data.jsonl", b"", id="empty-jsonl"),
    pytest.param("data.jsonl", b"\n  \n\r\n", id="blank-lines"),
    pytest.param("data.json", b"[]", id="empty-json-list"),
    pytest.param("data.json", b'{"data": []}', id="empty-data-object"),
]


@pytest.mark.parametrize(("name", "content"), EMPTY_FILES)
def test_a_file_without_records_is_an_error(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    error = load_error(path, skip_invalid=True)
    assert (error.source, error.line) == (str(path), None)
    assert error.reason.startswith("holds no records")
    report = validate_file(path)
    assert not report.ok and "holds no records" in report.summary()


def test_a_parquet_table_without_rows_is_an_error(tmp_path: Path) -> None:
    path = write_parquet([{"prompt": "q", "chosen": "a", "rejected": "b"}], tmp_path / "data.parquet")
    parquet = importlib.import_module("pyarrow.parquet")
    parquet.write_table(parquet.read_table(path).slice(0, 0), path)
    assert load_error(path).reason.startswith("holds no records")


def test_a_file_of_only_invalid_records_is_an_error_even_when_skipping(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "data.jsonl", [{"prompt": "q", "chosen": "a"}, {"prompt": "q", "chosen": "a"}])
    error = load_error(path, skip_invalid=True)
    assert error.reason.startswith("has no valid record: all 2 records are invalid. First error:")
    assert "line 1: field 'rejected'" in error.reason


def test_validate_data_exits_non_zero_on_an_empty_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text("\n")
    assert main(["validate-data", str(path)]) == 1
    assert "holds no records" in capsys.readouterr().out
    assert main(["validate-data", str(DATA / "trl_standard.jsonl")]) == 0


# ---------------------------------------------------------------- SFT data: TRL's messages and prompt/completion

SKY = Message("user", "What color is the sky?")


def test_read_demonstrations_of_trl_messages() -> None:
    path = DATA / "trl_sft_messages.jsonl"
    records, report = read_demonstrations(path)
    assert records == [
        BinaryLabel((SKY,), (BLUE,), True),
        BinaryLabel(
            (
                Message("system", "Be brief."),
                Message("user", "Where is the sun?"),
                Message("assistant", "In the sky."),
                Message("user", "And at night?"),
            ),
            (Message("assistant", "Below the horizon."),),
            True,
            metadata={"id": "night"},
        ),
    ]
    assert records[1].provenance == Provenance(str(path), 2)
    assert report.counts == {"demonstration": 2}


def test_read_demonstrations_of_trl_prompt_completion() -> None:
    records, _ = read_demonstrations(DATA / "trl_sft_prompt_completion.jsonl")
    assert records == [BinaryLabel("The sky is", " blue.", True), BinaryLabel((SKY,), (BLUE,), True)]


def test_the_last_assistant_turns_are_the_completion(tmp_path: Path) -> None:
    turns = [SKY.to_dict(), {"role": "assistant", "content": "Blue."}, {"role": "assistant", "content": "Mostly."}]
    [record], _ = read_demonstrations(write_lines(tmp_path / "sft.jsonl", [{"messages": turns}]))
    assert record.prompt == (SKY,)
    assert record.completion == (Message("assistant", "Blue."), Message("assistant", "Mostly."))


def test_preference_readers_detect_sft_layouts() -> None:
    records, report = load_preferences(DATA / "trl_sft_messages.jsonl")
    assert all(isinstance(record, BinaryLabel) and record.label for record in records)
    assert report.counts == {"demonstration": 2}
    _, report = load_preferences(DATA / "trl_sft_prompt_completion.jsonl")
    assert report.counts == {"demonstration": 2}
    assert validate_file(DATA / "trl_sft_messages.jsonl", format="demonstration").ok


def test_demonstrations_written_back_read_again(tmp_path: Path) -> None:
    records, _ = read_demonstrations(DATA / "trl_sft_messages.jsonl")
    path = tmp_path / "out.jsonl"
    write_jsonl(records, path)
    assert read_demonstrations(path)[0] == records


def test_sft_messages_in_parquet(tmp_path: Path) -> None:
    rows = [json.loads(line) for line in (DATA / "trl_sft_messages.jsonl").read_text().splitlines()]
    rows[0]["id"] = None  # pyarrow takes the columns from the first row; a null cell is an absent field
    path = write_parquet(rows, tmp_path / "sft.parquet")
    assert read_demonstrations(path)[0] == read_demonstrations(DATA / "trl_sft_messages.jsonl")[0]


@pytest.mark.parametrize(
    ("row", "field", "words"),
    [
        pytest.param(
            {"messages": [SKY.to_dict()]}, "messages[0].role", "must end with the assistant's answer", id="no-answer"
        ),
        pytest.param({"messages": [BLUE.to_dict()]}, "messages[0].role", "only assistant messages", id="no-prompt"),
        pytest.param({"messages": []}, "messages", "empty list", id="empty"),
        pytest.param({"messages": "hi"}, "messages", "list of messages", id="text"),
        pytest.param(
            {"messages": [SKY.to_dict(), BLUE.to_dict()], "prompt": "q"}, "prompt", "beside 'messages'", id="both"
        ),
        pytest.param({"prompt": "q", "completion": "a", "label": False}, "label", "true or absent", id="label-false"),
        pytest.param(
            {"completion": "a"}, "prompt", "is missing. A demonstration (SFT) record needs", id="no-prompt-field"
        ),
        pytest.param({"prompt": "q", "chosen": "a", "rejected": "b"}, "chosen", "belongs to a pairwise", id="a-pair"),
        pytest.param(
            {"prompt": "q", "completion": "a", "critique": "b"}, "critique", "a critique record", id="critique"
        ),
        pytest.param(
            {"messages": [{"role": "system", "content": "s"}, BLUE.to_dict()]},
            "messages[0].role",
            "must be the user's",
            id="system-then-answer",
        ),
    ],
)
def test_bad_demonstrations_name_line_and_field(tmp_path: Path, row: dict[str, Any], field: str, words: str) -> None:
    path = write_lines(tmp_path / "sft.jsonl", [{"prompt": "q", "completion": "a"}, row])
    with pytest.raises(DataError) as excinfo:
        read_demonstrations(path)
    assert (excinfo.value.line, excinfo.value.field) == (2, field)
    assert words in excinfo.value.reason
