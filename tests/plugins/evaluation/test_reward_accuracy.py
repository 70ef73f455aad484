"""reward_accuracy on hand-made pairs and a lookup-table scorer: strict ties, categories, ECE by hand, gold labels."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pytest

from prefcore.data import PairwiseComparison
from prefcore.errors import ConfigError
from prefcore.evaluation import EvaluationContext
from prefcore.evaluation import EvaluationInputError
from prefcore.plugins.evaluation.reward_accuracy import RewardAccuracy
from prefcore.plugins.evaluation.reward_accuracy import RewardAccuracyConfig
from prefcore.plugins.evaluation.reward_accuracy import expected_calibration_error
from prefcore.report import plot_reliability
from prefcore.report import write_plots

SCORES = {"a": 2.0, "b": 0.0, "c": 1.0, "d": 1.0, "e": -1.0, "f": 3.0, "g": 0.5}


def table_scorer(prompts: Sequence[object], completions: Sequence[str]) -> list[float]:
    return [SCORES[text] for text in completions]


def pair(chosen: str, rejected: str, **metadata: object) -> PairwiseComparison:
    return PairwiseComparison(prompt="q", chosen=chosen, rejected=rejected, metadata=metadata)


PAIRS = (
    pair("a", "b", category="chat", gold="chosen"),  # margin 2, right; gold agrees with the label
    pair("c", "d", category="chat"),  # margin 0: a planted tie, counted wrong
    pair("e", "f", category="safety", gold="rejected"),  # margin -4, wrong; but gold says rejected is better
    pair("g", "b", category="safety", gold=1),  # margin 0.5, right
    PairwiseComparison(prompt="q", chosen="a", rejected="f", tie=True),  # a labelled tie: skipped
)


def context(preferences: Sequence[object], scorer: object = table_scorer) -> EvaluationContext:
    return EvaluationContext(policy=None, tokenizer=None, preferences=preferences, scorer=scorer)  # type: ignore[arg-type]


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_accuracy_is_strict_and_split_by_category() -> None:
    metrics = RewardAccuracy(RewardAccuracyConfig()).evaluate(context(PAIRS)).metrics
    assert metrics["accuracy"] == 0.5  # 2 of 4: the tie counts wrong
    assert metrics["tie_rate"] == 0.25
    assert metrics["num_pairs"] == 4 and metrics["num_skipped_ties"] == 1
    assert metrics["accuracy/chat"] == 0.5 and metrics["accuracy/safety"] == 0.5
    assert metrics["num_pairs/chat"] == 2 and metrics["num_pairs/safety"] == 2


def test_calibration_by_hand() -> None:
    metrics = RewardAccuracy(RewardAccuracyConfig(bins=2)).evaluate(context(PAIRS)).metrics
    p = [sigmoid(2.0), 0.5, sigmoid(-4.0), sigmoid(0.5)]
    confidence = [max(x, 1 - x) for x in p]  # 0.881, 0.5, 0.982, 0.622
    correct = [1.0, 0.0, 0.0, 1.0]
    # bin 0 = [0.5, 0.75): pairs 2 and 4; bin 1 = [0.75, 1]: pairs 1 and 3
    low = abs((correct[1] + correct[3]) / 2 - (confidence[1] + confidence[3]) / 2)
    high = abs((correct[0] + correct[2]) / 2 - (confidence[0] + confidence[2]) / 2)
    assert metrics["ece"] == pytest.approx(0.5 * low + 0.5 * high)
    assert metrics["brier"] == pytest.approx(sum((1 - x) ** 2 for x in p) / 4)
    assert metrics["reliability/0/count"] == 2 and metrics["reliability/1/count"] == 2
    assert metrics["reliability/1/confidence"] == pytest.approx((confidence[0] + confidence[2]) / 2)
    assert metrics["reliability/1/accuracy"] == 0.5


def test_a_perfectly_calibrated_table_has_zero_ece() -> None:
    # ten pairs at confidence 0.8 of which 8 right: ECE 0, whatever the bin count
    right, wrong = math.log(4), -math.log(4)  # sigmoid(log 4) = 0.8
    ece, table = expected_calibration_error([sigmoid(right)] * 8 + [sigmoid(wrong)] * 2, bins=5)
    assert ece == pytest.approx(0.0, abs=1e-12)
    assert [row["count"] for row in table] == [0, 0, 0, 10, 0]


def test_gold_agreement_separates_model_errors_from_label_noise() -> None:
    metrics = RewardAccuracy(RewardAccuracyConfig()).evaluate(context(PAIRS)).metrics
    assert metrics["num_gold"] == 3
    assert metrics["gold_agreement"] == 1.0  # the model ranks the gold-better completion higher every time
    assert metrics["label_gold_agreement"] == pytest.approx(2 / 3)  # the safety pair's label is wrong


def test_scale_changes_calibration_not_accuracy() -> None:
    plain = RewardAccuracy(RewardAccuracyConfig()).evaluate(context(PAIRS)).metrics
    sharp = RewardAccuracy(RewardAccuracyConfig(scale=10.0)).evaluate(context(PAIRS)).metrics
    assert plain["accuracy"] == sharp["accuracy"] and plain["ece"] != sharp["ece"]


def test_missing_inputs_and_bad_options_are_named() -> None:
    with pytest.raises(EvaluationInputError) as excinfo:
        RewardAccuracy(RewardAccuracyConfig()).evaluate(context(PAIRS, scorer=None))
    assert excinfo.value.missing == "a scorer"
    with pytest.raises(EvaluationInputError):
        RewardAccuracy(RewardAccuracyConfig()).evaluate(context(()))
    for options in ({"bins": 0}, {"scale": 0.0}):
        with pytest.raises(ConfigError):
            RewardAccuracyConfig(**options)  # type: ignore[arg-type]


def test_the_report_draws_the_reliability_bins(tmp_path: Path) -> None:
    metrics = RewardAccuracy(RewardAccuracyConfig(bins=4)).evaluate(context(PAIRS)).metrics
    rows = [{"step": 0.0, "loss": 1.0}, {"step": 10.0, **{f"reward_accuracy/{k}": v for k, v in metrics.items()}}]
    written = write_plots(tmp_path, rows)
    assert ("reliability.png", "Reward-model calibration (reliability diagram)") in written
    assert (tmp_path / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_reliability([{"step": 0.0, "loss": 1.0}], tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_the_judge_supplies_gold_where_records_do_not() -> None:
    def prefers_a(prompt: object, first: str, second: str) -> float:  # a rule that knows "a" is best
        return 0.5 if first == second else float(first == "a" or (second != "a" and first < second))

    plain = context(PAIRS)
    plain.judge = prefers_a
    metrics = RewardAccuracy(RewardAccuracyConfig(judge_gold=True)).evaluate(plain).metrics
    # records' gold first (pairs 1, 3, 4); the judge for pair 2: judge("c", "d") = 1 → chosen is gold-better
    assert metrics["num_gold"] == 4
    assert metrics["gold_agreement"] == pytest.approx(3 / 4)  # the model tied pair 2: not strictly higher
    assert metrics["label_gold_agreement"] == pytest.approx(3 / 4)
    with pytest.raises(EvaluationInputError):
        RewardAccuracy(RewardAccuracyConfig(judge_gold=True)).evaluate(context(PAIRS))
