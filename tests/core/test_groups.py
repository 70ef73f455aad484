"""Annotator groups: a record field kept by every reader, writer and conversion; participants tables; bad input."""

from __future__ import annotations

import argparse
import io
import json
import logging
from pathlib import Path

import pyarrow
import pyarrow.parquet as parquet
import pytest

from prefcore.annotate import annotate_from_cli
from prefcore.cli import build_parser
from prefcore.data import BinaryLabel
from prefcore.data import FeedbackRecord
from prefcore.data import PairwiseComparison
from prefcore.data import Ranking
from prefcore.data import Scores
from prefcore.data import binary_labels_to_pairs
from prefcore.data import load_preferences
from prefcore.data import pair_to_binary_labels
from prefcore.data import record_from_dict
from prefcore.data import to_pairs
from prefcore.data import write_jsonl
from prefcore.errors import ConfigError
from prefcore.errors import DataError
from prefcore.groups import GroupConflictError
from prefcore.groups import UnknownAttributeError
from prefcore.groups import annotator_groups
from prefcore.groups import attributes
from prefcore.groups import check_attribute
from prefcore.groups import join_participants
from prefcore.groups import parse_group_options
from prefcore.groups import read_participants

GROUPS = {"community": "rural", "language": "fr"}


def test_records_carry_groups_through_json_and_the_jsonl_writer(tmp_path: Path) -> None:
    pair = PairwiseComparison("p", "a", "b", annotator_id="alice", annotator_groups=GROUPS, group_id="item-1")
    assert pair.to_dict()["annotator_groups"] == GROUPS
    assert record_from_dict(pair.to_dict()) == pair
    assert "annotator_groups" not in PairwiseComparison("p", "a", "b").to_dict()  # no field when there are none
    path = tmp_path / "out.jsonl"
    write_jsonl([pair], path)
    [read] = load_preferences(path)[0]
    assert read.annotator_groups == GROUPS and read.group_id == "item-1"


def test_a_parquet_column_of_groups_is_read_and_null_keys_are_no_attribute(tmp_path: Path) -> None:
    path = tmp_path / "data.parquet"
    rows = [
        {"prompt": "p", "chosen": "a", "rejected": "b", "annotator_groups": {"community": "rural", "language": None}},
        {"prompt": "p", "chosen": "a", "rejected": "b", "annotator_groups": None},
    ]
    parquet.write_table(pyarrow.Table.from_pylist(rows), path)
    first, second = load_preferences(path)[0]
    assert first.annotator_groups == {"community": "rural"}
    assert second.annotator_groups == {}


def test_bad_groups_name_the_field() -> None:
    with pytest.raises(DataError) as excinfo:
        record_from_dict({"prompt": "p", "chosen": "a", "rejected": "b", "annotator_groups": {"community": 3}})
    assert excinfo.value.field == "annotator_groups.community"
    with pytest.raises(DataError, match="must be an object of attribute: group strings"):
        record_from_dict({"prompt": "p", "chosen": "a", "rejected": "b", "annotator_groups": ["rural"]})


def test_conversions_keep_the_groups() -> None:
    ranking = Ranking("p", ("a", "b", "c"), (1, 2, 3), annotator_id="alice", annotator_groups=GROUPS)
    scores = Scores("p", ("a", "b"), ({"x": 1}, {"x": 2}), (1, 5), annotator_id="alice", annotator_groups=GROUPS)
    pairs = to_pairs([ranking, scores])
    assert len(pairs) == 4 and all(pair.annotator_groups == GROUPS for pair in pairs)
    labels = pair_to_binary_labels(pairs[0])
    assert [label.annotator_groups for label in labels] == [GROUPS, GROUPS]
    [pair] = binary_labels_to_pairs(labels)
    assert pair.annotator_groups == GROUPS
    other = BinaryLabel("p", "z", False, annotator_groups={"community": "urban"})
    assert all(pair.annotator_groups == {} for pair in binary_labels_to_pairs([labels[0], other]))


def test_bundle_items_inherit_the_bundles_annotator_and_groups() -> None:
    bundle = FeedbackRecord(
        "p", (PairwiseComparison("p", "a", "b"),), annotator_id="alice", annotator_groups={"community": "rural"}
    )
    assert annotator_groups([bundle]) == {"alice": {"community": "rural"}}


def test_participants_csv_and_jsonl(tmp_path: Path) -> None:
    csv = tmp_path / "people.csv"
    csv.write_text("annotator_id,community,language\nalice,rural,fr\nbob,,en\nalice,rural,\n")
    assert read_participants(csv) == {"alice": {"community": "rural", "language": "fr"}, "bob": {"language": "en"}}
    jsonl = tmp_path / "people.jsonl"
    jsonl.write_text('{"annotator": "alice", "community": "rural"}\n{"annotator": "bob", "role": "expert"}\n')
    assert read_participants(jsonl) == {"alice": {"community": "rural"}, "bob": {"role": "expert"}}


def test_an_annotator_in_two_groups_of_one_attribute_is_a_named_error(tmp_path: Path) -> None:
    csv = tmp_path / "people.csv"
    csv.write_text("annotator_id,community\nalice,rural\nalice,urban\n")
    with pytest.raises(GroupConflictError) as excinfo:
        read_participants(csv)
    error = excinfo.value
    assert (error.annotator, error.attribute, error.groups) == ("alice", "community", ("rural", "urban"))
    assert "line 3" in str(error)

    records = [
        PairwiseComparison("p", "a", "b", annotator_id="alice", annotator_groups={"community": "rural"}),
        PairwiseComparison("q", "a", "b", annotator_id="alice", annotator_groups={"community": "urban"}),
    ]
    with pytest.raises(GroupConflictError, match="'alice' is listed in two groups of 'community'"):
        annotator_groups(records)
    with pytest.raises(GroupConflictError) as excinfo:
        join_participants(records[:1], {"alice": {"community": "urban"}})
    assert excinfo.value.groups == ("rural", "urban")


def test_joining_adds_groups_and_warns_about_unknown_annotators(caplog: pytest.LogCaptureFixture) -> None:
    records = [PairwiseComparison("p", "a", "b", annotator_id="alice"), PairwiseComparison("p", "a", "b")]
    table = {"alice": {"community": "rural"}, "zoe": {"community": "urban"}, "yan": {"community": "urban"}}
    with caplog.at_level(logging.WARNING, logger="prefcore"):
        joined, report = join_participants(records, table, source="people.csv")
    assert joined[0].annotator_groups == {"community": "rural"} and joined[1].annotator_groups == {}
    assert report.unknown == ("yan", "zoe")
    assert "2 annotator(s) who gave no answer in the data: yan, zoe" in caplog.text


def test_an_unknown_attribute_names_the_known_ones() -> None:
    table = annotator_groups([PairwiseComparison("p", "a", "b", annotator_id="alice", annotator_groups=GROUPS)])
    assert attributes(table) == ("community", "language")
    with pytest.raises(UnknownAttributeError) as excinfo:
        check_attribute("region", attributes(table))
    assert excinfo.value.known == ("community", "language")
    assert "Known attributes: 'community', 'language'" in str(excinfo.value)


def test_group_options() -> None:
    assert parse_group_options(["community=rural", " language = fr "]) == GROUPS
    for bad in (["community"], ["=rural"], ["community="]):
        with pytest.raises(ConfigError, match="ATTR=VALUE"):
            parse_group_options(bad)
    with pytest.raises(ConfigError, match="gives 'community' twice"):
        parse_group_options(["community=rural", "community=urban"])


def _annotate(items: Path, out: Path, *groups: str, answers: str) -> int:
    command = ["annotate", str(items), "--out", str(out), "--annotator", "alice", "--no-shuffle"]
    command += [part for group in groups for part in ("--group", group)]
    args: argparse.Namespace = build_parser().parse_args(command)
    return annotate_from_cli(args, stdin=io.StringIO(answers), stdout=io.StringIO())


def test_annotate_writes_the_group_on_every_answer_and_a_resumed_session_must_agree(tmp_path: Path) -> None:
    items = tmp_path / "items.jsonl"
    items.write_text(
        json.dumps({"id": "i1", "prompt": "p", "completions": ["a", "b"]})
        + "\n"
        + json.dumps({"id": "i2", "prompt": "q", "completions": ["c", "d"]})
        + "\n"
    )
    out = tmp_path / "alice.jsonl"
    assert _annotate(items, out, "community=rural", "language=fr", answers="1\n") == 0  # stops after one answer
    [record] = load_preferences(out)[0]
    assert record.annotator_groups == GROUPS and record.chosen == "a"
    with pytest.raises(GroupConflictError) as excinfo:
        _annotate(items, out, "community=urban", answers="2\n")
    assert excinfo.value.groups == ("rural", "urban")
    assert _annotate(items, out, "community=rural", answers="2\n") == 0
    assert [r.annotator_groups["community"] for r in load_preferences(out)[0]] == ["rural", "rural"]
