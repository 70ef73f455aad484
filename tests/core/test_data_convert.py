"""Conversions between feedback formats: pairs from rankings, scores, labels and critiques; labels from pairs."""

from __future__ import annotations

from typing import Any

import pytest

from prefcore.data import BinaryLabel
from prefcore.data import Critique
from prefcore.data import FeedbackRecord
from prefcore.data import PairwiseComparison
from prefcore.data import Provenance
from prefcore.data import Ranking
from prefcore.data import Scores
from prefcore.data import binary_labels_to_pairs
from prefcore.data import critique_to_pairs
from prefcore.data import pair_to_binary_labels
from prefcore.data import preference_target
from prefcore.data import ranking_to_pairs
from prefcore.data import scores_to_pairs
from prefcore.data import to_pairs
from prefcore.errors import ConfigError
from prefcore.errors import DataError

ORIGIN = Provenance("feedback.jsonl", 12)
ANNOTATED = {"annotator_id": "ann-3", "group_id": "batch-1", "source": "human", "metadata": {"round": 2}}


def triples(pairs: list[PairwiseComparison]) -> list[tuple[Any, ...]]:
    return [(pair.chosen, pair.rejected, pair.tie, pair.margin) for pair in pairs]


# ---------------------------------------------------------------- ranking → pairs

RANKING = Ranking("q", ["b", "a", "c", "d"], [2, 1, 2, 4], **ANNOTATED, provenance=ORIGIN)


def test_ranking_gives_every_ordered_pair_and_skips_ties_by_default() -> None:
    assert triples(ranking_to_pairs(RANKING)) == [
        ("a", "b", False, None),
        ("b", "d", False, None),
        ("a", "c", False, None),
        ("a", "d", False, None),
        ("c", "d", False, None),
    ]


def test_ranking_ties_as_tie_pairs_and_rank_gaps_as_margins() -> None:
    pairs = ranking_to_pairs(RANKING, ties="tie", rank_gap_margin=True)
    assert triples(pairs) == [
        ("a", "b", False, 1.0),
        ("b", "c", True, 0.0),
        ("b", "d", False, 2.0),
        ("a", "c", False, 1.0),
        ("a", "d", False, 3.0),
        ("c", "d", False, 2.0),
    ]


def test_derived_pairs_inherit_annotations_and_provenance() -> None:
    pair = ranking_to_pairs(RANKING)[0]
    assert (pair.annotator_id, pair.group_id, pair.source, pair.metadata) == ("ann-3", "batch-1", "human", {"round": 2})
    assert pair.provenance == ORIGIN
    assert pair.prompt == "q"


def test_ranking_ties_not_allowed_raise_with_the_records_origin() -> None:
    with pytest.raises(DataError) as excinfo:
        ranking_to_pairs(RANKING, ties="error")
    error = excinfo.value
    assert (error.source, error.line, error.field) == ("feedback.jsonl", 12, "ranks")
    assert "completions 0 and 2 share rank 2" in error.reason


def test_unknown_tie_handling_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as excinfo:
        ranking_to_pairs(RANKING, ties="keep")  # type: ignore[arg-type]
    assert excinfo.value.field == "ties"


# ---------------------------------------------------------------- scores → pairs

SCORES = Scores(
    "q",
    ["a", "b", "c"],
    [{"help": 5, "safe": 1}, {"help": 3, "safe": 5}, {"help": 5, "safe": 4}],
    (1, 5),
    provenance=ORIGIN,
)


def test_scores_on_one_aspect_give_pairs_with_score_differences_as_margins() -> None:
    pairs = scores_to_pairs(SCORES, aspect="help")
    assert triples(pairs) == [("a", "b", False, 2.0), ("c", "b", False, 2.0)]
    assert {pair.aspect for pair in pairs} == {"help"}


def test_equal_scores_become_tie_pairs_when_asked() -> None:
    pairs = scores_to_pairs(SCORES, aspect="help", ties="tie")
    assert ("a", "c", True, None) in triples(pairs)


def test_weighted_aspects_compare_weighted_sums() -> None:
    pairs = scores_to_pairs(SCORES, weights={"help": 0.5, "safe": 0.5})
    # weighted: a = 3.0, b = 4.0, c = 4.5
    assert triples(pairs) == [("b", "a", False, 1.0), ("c", "a", False, 1.5), ("c", "b", False, 0.5)]
    assert all(pair.aspect is None for pair in pairs)


def test_weighted_sums_equal_up_to_rounding_are_ties() -> None:
    scores = Scores("q", ["a", "b"], [{"x": 0.1, "y": 0.2}, {"x": 0.2, "y": 0.1}], (0, 1))
    assert scores_to_pairs(scores, weights={"x": 1, "y": 1}, ties="tie")[0].tie


def test_min_margin_leaves_out_close_calls() -> None:
    pairs = scores_to_pairs(SCORES, weights={"help": 0.5, "safe": 0.5}, min_margin=1.0)
    assert triples(pairs) == [("b", "a", False, 1.0), ("c", "a", False, 1.5)]


def test_a_single_aspect_needs_no_choice_and_a_single_completion_gives_no_pair() -> None:
    scores = Scores("q", ["a", "b"], [{"overall": 2}, {"overall": 4}], (0, 10))
    assert triples(scores_to_pairs(scores)) == [("b", "a", False, 2.0)]
    assert scores_to_pairs(scores).pop().aspect == "overall"
    assert scores_to_pairs(Scores("q", ["a"], [{"overall": 2}], (0, 10))) == []


@pytest.mark.parametrize(
    ("options", "field", "words"),
    [
        pytest.param({}, "scores", "pass aspect=", id="several-aspects-none-chosen"),
        pytest.param({"aspect": "style"}, "scores", "no aspect 'style'", id="unknown-aspect"),
        pytest.param({"weights": {"style": 1.0}}, "scores", "no aspect 'style' to weight", id="unknown-weight"),
    ],
)
def test_scores_aspect_problems_point_to_the_record(options: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(DataError) as excinfo:
        scores_to_pairs(SCORES, **options)
    assert (excinfo.value.field, excinfo.value.line) == (field, 12)
    assert words in excinfo.value.reason


@pytest.mark.parametrize(
    ("options", "field"),
    [
        pytest.param({"aspect": "help", "weights": {"help": 1}}, "aspect", id="both"),
        pytest.param({"weights": {}}, "weights", id="empty-weights"),
        pytest.param({"weights": {"help": "high"}}, "weights.help", id="weight-not-number"),
        pytest.param({"aspect": "help", "min_margin": -1}, "min_margin", id="negative-min-margin"),
    ],
)
def test_bad_options_are_config_errors(options: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        scores_to_pairs(SCORES, **options)
    assert excinfo.value.field == field


def test_score_ties_not_allowed_raise() -> None:
    with pytest.raises(DataError) as excinfo:
        scores_to_pairs(SCORES, aspect="help", ties="error")
    assert excinfo.value.field == "scores"
    assert "score the same (5)" in excinfo.value.reason


# ---------------------------------------------------------------- pairs ↔ binary labels


def test_pair_unpairs_into_desirable_chosen_and_undesirable_rejected() -> None:
    pair = PairwiseComparison("q", "a", "b", margin=2.0, aspect="help", **ANNOTATED, provenance=ORIGIN)
    chosen, rejected = pair_to_binary_labels(pair)
    assert chosen == BinaryLabel("q", "a", True, aspect="help", **ANNOTATED)
    assert rejected == BinaryLabel("q", "b", False, aspect="help", **ANNOTATED)
    assert rejected.provenance == ORIGIN


def test_tie_pair_makes_no_labels_or_raises() -> None:
    tie = PairwiseComparison("q", "a", "b", tie=True, provenance=ORIGIN)
    assert pair_to_binary_labels(tie) == []
    with pytest.raises(DataError) as excinfo:
        pair_to_binary_labels(tie, ties="error")
    assert (excinfo.value.field, excinfo.value.line) == ("tie", 12)
    with pytest.raises(ConfigError):
        pair_to_binary_labels(tie, ties="tie")  # type: ignore[arg-type]


def test_labels_pair_each_desirable_with_each_undesirable_of_the_same_prompt_and_aspect() -> None:
    labels = [
        BinaryLabel("q", "good", True, annotator_id="x", provenance=ORIGIN),
        BinaryLabel("q", "bad", False, annotator_id="x"),
        BinaryLabel("q", "worse", False, annotator_id="y"),
        BinaryLabel("q", "good", True, annotator_id="z"),  # repeated: counted once
        BinaryLabel("other", "fine", True),  # no undesirable partner
        BinaryLabel("q", "unsafe", False, aspect="safety"),  # another aspect
        BinaryLabel("q", "bad", True),  # conflicting label: never paired with itself
    ]
    pairs = binary_labels_to_pairs(labels)
    assert [(pair.chosen, pair.rejected, pair.annotator_id) for pair in pairs] == [
        ("good", "bad", "x"),
        ("good", "worse", None),
        ("bad", "worse", None),
    ]
    assert pairs[0].provenance == ORIGIN


def test_unpairing_then_pairing_gives_back_the_pair() -> None:
    pair = PairwiseComparison(
        [{"role": "user", "content": "q"}],
        [{"role": "assistant", "content": "a"}],
        [{"role": "assistant", "content": "b"}],
        aspect="help",
        source="ai",
    )
    assert binary_labels_to_pairs(pair_to_binary_labels(pair)) == [pair]


# ---------------------------------------------------------------- critiques, soft labels, mixed input


def test_critique_with_revision_prefers_the_revision() -> None:
    critique = Critique("q", "draft", "too vague", revision="precise answer", source="ai", provenance=ORIGIN)
    [pair] = critique_to_pairs(critique)
    assert (pair.chosen, pair.rejected, pair.source, pair.provenance) == ("precise answer", "draft", "ai", ORIGIN)
    assert critique_to_pairs(Critique("q", "draft", "fine as is")) == []


@pytest.mark.parametrize(
    ("pair", "target"),
    [
        pytest.param(PairwiseComparison("q", "a", "b", probability=0.7), 0.7, id="soft-label-passes-through"),
        pytest.param(PairwiseComparison("q", "a", "b"), 1.0, id="hard-label"),
        pytest.param(PairwiseComparison("q", "a", "b", tie=True), 0.5, id="tie"),
    ],
)
def test_preference_target(pair: PairwiseComparison, target: float) -> None:
    assert preference_target(pair) == target


def test_soft_labels_survive_to_pairs() -> None:
    pair = PairwiseComparison("q", "a", "b", probability=0.8)
    assert to_pairs([pair])[0].probability == 0.8


def test_to_pairs_converts_any_mix_including_bundle_items() -> None:
    bundle = FeedbackRecord(
        "q",
        [
            PairwiseComparison("q", "a", "b"),
            Scores("q", ["a", "b"], [{"help": 4}, {"help": 2}], (1, 5)),
            Critique("q", "b", "wrong", revision="c"),
        ],
    )
    records = [
        BinaryLabel("z", "yes", True),
        bundle,
        PairwiseComparison("t", "x", "y", tie=True),
        Ranking("r", ["1", "2"], [2, 1]),
        BinaryLabel("z", "no", False),
    ]
    assert [(pair.prompt, pair.chosen, pair.rejected, pair.tie) for pair in to_pairs(records)] == [
        ("q", "a", "b", False),
        ("q", "a", "b", False),
        ("q", "c", "b", False),
        ("r", "2", "1", False),
        ("z", "yes", "no", False),
    ]
    assert sum(pair.tie for pair in to_pairs(records, ties="tie")) == 1
    with pytest.raises(DataError):
        to_pairs(records, ties="error")
