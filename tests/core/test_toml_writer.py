"""The run folder's config.toml: valid TOML that reads back as the same run file.

Before: the writer printed JSON literals, so None became ``null`` (invalid TOML) and a
nested table became a JSON object (invalid TOML too).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from prefcore.config import dump_run_config
from prefcore.config import load_run_config
from prefcore.config import parse_run_config
from prefcore.defaults import default_run_data
from prefcore.toml_writer import TOMLWriteError
from prefcore.toml_writer import dumps

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def test_values_toml_has_and_json_writes_differently() -> None:
    data = {
        "run": {"name": 'say "hi"\n\tà\x00\x7f😀', "path": Path("a/b"), "unset": None, "sizes": (1, 2)},
        "usage": {"method": "x", "weights": {"help": 1.5, "odd key": -0.0, "none": None}, "limit": math.inf},
        "evaluation": [{"method": "a", "bins": [{"low": 0, "high": 1.0}]}, {"method": "b", "flag": False}],
        "top": [1, 2],
        "empty": [],
        "nested": {"deeper": {"deepest": {"x": float("nan")}}},
        "odd section": {"1": True},
    }
    back = tomllib.loads(dumps(data))
    assert back["run"] == {"name": 'say "hi"\n\tà\x00\x7f😀', "path": "a/b", "sizes": [1, 2]}  # None left out
    assert back["usage"] == {"method": "x", "weights": {"help": 1.5, "odd key": -0.0}, "limit": math.inf}
    assert back["evaluation"] == [{"method": "a", "bins": [{"low": 0, "high": 1.0}]}, {"method": "b", "flag": False}]
    assert back["top"] == [1, 2] and back["empty"] == []
    assert math.isnan(back["nested"]["deeper"]["deepest"]["x"])
    assert back["odd section"] == {"1": True}


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"run": {"name": "\ud800"}}, "lone surrogate"),
        ({"run": {"sizes": [1, None]}}, "cannot hold None"),
        ({"run": {"thing": object()}}, "cannot write a object"),
    ],
)
def test_values_toml_cannot_hold_are_refused(data: dict, fragment: str) -> None:
    with pytest.raises(TOMLWriteError, match=fragment):
        dumps(data)


def test_default_job_round_trips(tmp_path: Path) -> None:
    config = parse_run_config(default_run_data(), source="x")
    path = tmp_path / "config.toml"
    path.write_text(dump_run_config(config))
    again = load_run_config(path)
    assert again.methods == config.methods and again.settings == config.settings


def test_none_options_read_back_as_their_default(tmp_path: Path) -> None:
    """None means the default, so leaving it out builds the same configs (the run reproduces)."""
    from prefcore.validation import check_run_config

    data = default_run_data()
    data["model"] = {"demo": True, "path": None, "chat_template": None}
    data["warm_start"]["data"] = None
    config = parse_run_config(data, source="x")
    path = tmp_path / "config.toml"
    path.write_text(dump_run_config(config))
    again = load_run_config(path)
    first, second = check_run_config(config), check_run_config(again)
    assert first.sections == second.sections
    assert [m.method.config for m in first.selected("usage")] == [m.method.config for m in second.selected("usage")]


scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.text(st.characters(exclude_categories=("Cs",))),
)
keys = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=8)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(keys, inner, max_size=3)),
    max_leaves=8,
)
tables = st.dictionaries(keys, values, max_size=4)
documents = st.dictionaries(keys, st.one_of(tables, st.lists(tables, min_size=1, max_size=3)), max_size=4)


def test_a_key_ending_in_a_newline_is_quoted() -> None:
    """``$`` in a bare-key pattern matches before a final newline; such a key must be quoted."""
    document = {"0\n": {"a\n": 1}, "x": [{"1\n": 2}]}
    assert tomllib.loads(dumps(document)) == document


@settings(max_examples=100, deadline=None)
@given(documents)
def test_any_document_round_trips(document: dict) -> None:
    assert tomllib.loads(dumps(document)) == document
