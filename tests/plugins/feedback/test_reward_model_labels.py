"""reward_model_labels: a scorer's scores become pairs with σ(Δ/τ) soft labels, ties, rankings and a judge."""

from __future__ import annotations

import math
import sys
import types
from collections.abc import Callable
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from prefcore.data import Ranking
from prefcore.errors import ConfigError
from prefcore.errors import DataError
from prefcore.plugins.feedback.reward_model_labels import RewardModelLabels
from prefcore.plugins.feedback.reward_model_labels import RewardModelLabelsConfig
from prefcore.plugins.feedback.reward_model_labels import score_ranks

WriteRows = Callable[[str, Sequence[Any]], Path]

SCORES = {"great answer": 3.0, "fine": 1.0, "also fine": 1.25, "bad": -1.0}


class TableScorer:
    """A ``Scorer`` that looks completions up in a table and records every call's batch size."""

    def __init__(self, table: dict[str, float]) -> None:
        self.table = table
        self.batches: list[int] = []

    def __call__(self, prompts: Sequence[Any], completions: Sequence[str]) -> list[float]:
        assert len(prompts) == len(completions)
        self.batches.append(len(completions))
        return [self.table[completion] for completion in completions]


def sigmoid(value: float) -> float:
    return 1.0 / (1.0 + math.exp(-value))


@pytest.fixture
def items(write_rows: WriteRows) -> Path:
    return write_rows(
        "items.jsonl",
        [
            {"prompt": "q1", "completions": ["fine", "great answer", "bad"]},
            {"type": "pairwise", "prompt": "q2", "chosen": "fine", "rejected": "also fine"},
        ],
    )


def labels(path: Path, scorer: TableScorer | None = None, **options: Any) -> list[Any]:
    source = RewardModelLabels(RewardModelLabelsConfig(path=path, **options), scorer=scorer or TableScorer(SCORES))
    return list(source.records())


def test_every_pair_is_labelled_by_score_difference(items: Path) -> None:
    pairs = labels(items, temperature=2.0)
    assert [(p.prompt, p.chosen, p.rejected) for p in pairs] == [
        ("q1", "great answer", "fine"),
        ("q1", "fine", "bad"),
        ("q1", "great answer", "bad"),
        ("q2", "also fine", "fine"),
    ]
    assert [p.margin for p in pairs] == [2.0, 2.0, 4.0, 0.25]
    assert [p.probability for p in pairs] == pytest.approx([sigmoid(1.0), sigmoid(1.0), sigmoid(2.0), sigmoid(0.125)])
    assert pairs[0].source == "reward_model" and pairs[0].metadata == {"scores": [3.0, 1.0]}


def test_ties_within_the_threshold_are_kept_or_dropped(items: Path) -> None:
    pairs = labels(items, tie_threshold=0.5)
    tie = pairs[-1]
    assert tie.tie and tie.probability == 0.5 and tie.margin is None
    assert len(labels(items, tie_threshold=0.5, ties="drop")) == 3


def test_best_against_worst(items: Path) -> None:
    pairs = labels(items, pairs="best_worst")
    assert [(p.chosen, p.rejected) for p in pairs] == [("great answer", "bad"), ("also fine", "fine")]


def test_rankings_group_scores_within_the_threshold(items: Path) -> None:
    rankings = labels(items, output="ranking", tie_threshold=0.3)
    assert all(isinstance(r, Ranking) for r in rankings)
    assert [r.ranks for r in rankings] == [(2, 1, 3), (1, 1)]
    assert rankings[0].metadata == {"scores": [1.0, 3.0, -1.0]}
    assert score_ranks([1.0, 1.2, 1.4, 5.0], 0.25) == (2, 2, 2, 1)  # ties chain along close scores


def test_the_scorer_is_asked_in_batches(items: Path) -> None:
    scorer = TableScorer(SCORES)
    labels(items, scorer, batch_size=2)
    assert scorer.batches == [2, 2, 1]


def test_the_judge_is_the_bradley_terry_probability_of_the_scores(items: Path) -> None:
    judge = RewardModelLabels(RewardModelLabelsConfig(path=items, temperature=0.5), scorer=TableScorer(SCORES)).judge()
    assert judge("q", "great answer", "bad") == pytest.approx(sigmoid(8.0))
    assert judge("q", "bad", "great answer") + judge("q", "great answer", "bad") == pytest.approx(1.0)


def test_a_reward_model_folder_is_loaded_lazily_through_the_engine(
    items: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded: list[tuple[Path, str]] = []

    class RewardModel:
        @classmethod
        def load(cls, path: Path, *, device: str = "cpu") -> RewardModel:
            loaded.append((path, device))
            return cls()

        def scorer(self) -> TableScorer:
            return TableScorer(SCORES)

    engine_module = types.ModuleType("prefcore.engine.reward_model")
    engine_module.RewardModel = RewardModel  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "prefcore.engine.reward_model", engine_module)
    source = RewardModelLabels(RewardModelLabelsConfig(path=items, reward_model=tmp_path / "rm"))
    assert loaded == []
    assert len(list(source.records())) == 4
    assert loaded == [(tmp_path / "rm", "cpu")]


def test_without_a_scorer_the_error_says_how_to_give_one(items: Path) -> None:
    with pytest.raises(ConfigError) as excinfo:
        list(RewardModelLabels(RewardModelLabelsConfig(path=items)).records())
    assert excinfo.value.field == "reward_model" and "pass scorer=" in str(excinfo.value)


def test_a_scorer_returning_the_wrong_number_of_scores(items: Path) -> None:
    source = RewardModelLabels(RewardModelLabelsConfig(path=items), scorer=lambda prompts, completions: [0.0])
    with pytest.raises(ValueError, match="returned 1 scores for 5 completions"):
        list(source.records())


@pytest.mark.parametrize(
    ("row", "field", "says"),
    [
        ({"prompt": "q", "completions": ["fine"]}, "completions", "needs at least 2"),
        ({"prompt": "q", "completions": ["fine", "fine"]}, "completions[1]", "repeats completion 0"),
        ({"completions": ["fine", "bad"]}, "prompt", "is missing"),
    ],
)
def test_malformed_items(write_rows: WriteRows, row: dict[str, Any], field: str, says: str) -> None:
    path = write_rows("items.jsonl", [row])
    with pytest.raises(DataError) as excinfo:
        labels(path)
    assert (excinfo.value.source, excinfo.value.line, excinfo.value.field) == (str(path), 1, field)
    assert says in str(excinfo.value)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"temperature": 0.0}, "temperature"),
        ({"tie_threshold": -1.0}, "tie_threshold"),
        ({"output": "scores"}, "output"),
        ({"pairs": "adjacent"}, "pairs"),
        ({"ties": "half"}, "ties"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_invalid_options(options: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        RewardModelLabelsConfig(path=Path("items.jsonl"), **options)
    assert excinfo.value.field == field
