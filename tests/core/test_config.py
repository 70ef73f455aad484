"""Method configs and run files: validation, overrides and every error path."""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Literal

import pytest

from prefcore.config import apply_overrides
from prefcore.config import build_config
from prefcore.config import field_docs
from prefcore.config import load_run_config
from prefcore.config import parse_override
from prefcore.config import parse_run_config
from prefcore.errors import ConfigError
from prefcore.methods import option


@dataclass(frozen=True)
class Inner:
    scale: float = option(1.0, doc="scale")


@dataclass(frozen=True)
class Example:
    beta: float = option(0.1, doc="inverse temperature")
    steps: int = option(10, doc="steps")
    mode: Literal["sum", "mean"] = option("sum", doc="reduction")
    name: str | None = option(None, doc="optional name")
    sizes: tuple[int, ...] = option((1, 2), doc="sizes")
    weights: dict[str, float] = option(default_factory=dict, doc="aspect weights")
    inner: Inner = option(default_factory=Inner, doc="nested options")
    path: Path = option(Path("x"), doc="a path")

    def __post_init__(self) -> None:
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0. Got {self.beta}.")


def test_valid_options_are_coerced() -> None:
    config = build_config(
        Example,
        {"beta": 1, "sizes": [3, 4], "weights": {"help": 2}, "inner": {"scale": 3}, "path": "a/b", "mode": "mean"},
        method="usage objective 'x'",
    )
    assert config.beta == 1.0 and isinstance(config.beta, float)
    assert config.sizes == (3, 4)
    assert config.weights == {"help": 2.0}
    assert config.inner == Inner(scale=3.0)
    assert config.path == Path("a/b")


def test_unknown_key_names_key_and_accepted_ones() -> None:
    with pytest.raises(ConfigError) as excinfo:
        build_config(Example, {"betta": 0.2}, method="usage objective 'x'")
    assert excinfo.value.field == "betta"
    assert "has no option 'betta'" in str(excinfo.value)
    assert "Accepted options: beta, inner, mode, name, path, sizes, steps, weights." in str(excinfo.value)


@pytest.mark.parametrize(
    ("options", "field", "fragment"),
    [
        ({"beta": "high"}, "beta", "must be float; got 'high' (str)"),
        ({"steps": 1.5}, "steps", "must be int; got 1.5"),
        ({"steps": True}, "steps", "must be int; got True"),
        ({"mode": "max"}, "mode", "must be one of 'sum', 'mean'; got 'max'"),
        ({"sizes": [1, "a"]}, "sizes[1]", "must be int; got 'a'"),
        ({"weights": {"a": "b"}}, "weights.a", "must be float"),
        ({"inner": {"scal": 1}}, "scal", "has no option 'scal'"),
    ],
)
def test_wrong_type_names_field_expected_type_and_value(options: dict, field: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        build_config(Example, options, method="usage objective 'x'")
    assert excinfo.value.field == field
    assert fragment in str(excinfo.value)


def test_post_init_validation_becomes_config_error() -> None:
    with pytest.raises(ConfigError, match=r"beta must be > 0\. Got -1\.0\."):
        build_config(Example, {"beta": -1}, method="usage objective 'x'")


def test_field_docs_show_type_default_and_doc() -> None:
    rows = {name: (type_, default, doc) for name, type_, default, doc in field_docs(Example)}
    assert rows["beta"] == ("float", "0.1", "inverse temperature")
    assert rows["name"][0] == "str | None"


RUN_FILE = """
[feedback]
method = "preference_file"
path = "pairs.jsonl"

[usage]
method = "dpo"
beta = 0.1

[[evaluation]]
method = "win_rate"

[[evaluation]]
method = "kl"

[train]
steps = 20
"""


def test_run_file_round_trip_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text(RUN_FILE)
    config = load_run_config(path, ["usage.beta=0.2", "train.lr=1e-4", "evaluation.kl.samples=4", "usage.tag=hello"])
    [usage] = config.selected("usage")
    assert usage.options == {"beta": 0.2, "tag": "hello"}
    assert [spec.name for spec in config.selected("evaluation")] == ["win_rate", "kl"]
    assert config.selected("evaluation")[1].options == {"samples": 4}
    assert config.section("train") == {"steps": 20, "lr": 1e-4}
    assert parse_run_config(config.to_dict()) == parse_run_config(config.to_dict())
    assert parse_run_config(config.to_dict()).selected("usage") == config.selected("usage")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[usage]\nbeta = 1\n", "needs a 'method'"),
        ("[trian]\nsteps = 1\n", "unknown section [trian]"),
        ("[usage]\nmethod = 'dpo'\nweight = 'x'\n", "'weight' must be a number"),
        ("[usage\n", "not valid TOML"),
    ],
)
def test_bad_run_files(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "run.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=None) as excinfo:
        load_run_config(path)
    assert fragment in str(excinfo.value)


def test_missing_run_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_run_config(tmp_path / "nope.toml")


def test_override_parsing() -> None:
    assert parse_override("usage.beta=0.2") == (["usage", "beta"], 0.2)
    assert parse_override("usage.method=ipo") == (["usage", "method"], "ipo")
    assert parse_override("train.flags=[1, 2]") == (["train", "flags"], [1, 2])
    with pytest.raises(ConfigError, match=r"expected section\.key=value"):
        parse_override("usage.beta")


def test_override_ambiguous_section_needs_a_method_name() -> None:
    data = {"evaluation": [{"method": "a"}, {"method": "b"}]}
    with pytest.raises(ConfigError, match="selects several methods"):
        apply_overrides(data, ["evaluation.samples=3"])
    with pytest.raises(ConfigError, match="no method 'c'"):
        apply_overrides(data, ["evaluation.c.samples=3"])
    assert apply_overrides(data, ["evaluation.1.samples=3"])["evaluation"][1] == {"method": "b", "samples": 3}
    assert data["evaluation"][1] == {"method": "b"}  # the input is not modified


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_float_options_must_be_finite(value: float) -> None:
    with pytest.raises(ConfigError, match="must be a finite number") as excinfo:
        build_config(Example, {"beta": value}, method="usage objective 'x'")
    assert excinfo.value.field == "beta"
    with pytest.raises(ConfigError, match="must be a finite number") as excinfo:
        build_config(Example, {"weights": {"a": value}}, method="usage objective 'x'")
    assert excinfo.value.field == "weights.a"


def test_a_field_may_allow_infinity_but_never_nan() -> None:
    assert build_config(BoundedWithDoc, {"limit": float("inf")}, method="m").limit == float("inf")
    with pytest.raises(ConfigError, match="finite"):
        build_config(BoundedWithDoc, {"limit": float("nan")}, method="m")


@dataclass(frozen=True)
class BoundedWithDoc:
    limit: float = field(default=1.0, metadata={"doc": "an upper bound; inf = none", "allow_inf": True})


def test_unknown_key_suggests_the_closest_option() -> None:
    with pytest.raises(ConfigError, match=r"has no option 'betta'\. Did you mean 'beta'\?"):
        build_config(Example, {"betta": 0.2}, method="usage objective 'x'")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[trian]\nsteps = 1\n", "unknown section [trian]. Did you mean 'train'?"),
        ("[data]\npath = 'x.jsonl'\n", "unknown section [data]."),
        ("[[usage]]\nmethod = 'dpo'\nweight = nan\n", "'weight' must be a finite number > 0; got nan"),
        ("[[usage]]\nmethod = 'dpo'\nweight = inf\n", "'weight' must be a finite number > 0; got inf"),
        ("[[usage]]\nmethod = 'dpo'\nweight = 0\n", "'weight' must be a finite number > 0; got 0"),
        ("[[usage]]\nmethod = 'dpo'\n[[usage]]\nmethod = 'sft'\nweight = -1.0\n", "[usage] #2: 'weight' must be"),
    ],
)
def test_sections_and_weights_are_checked(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "run.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as excinfo:
        load_run_config(path)
    assert fragment in str(excinfo.value)
