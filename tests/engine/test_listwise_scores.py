"""Scored completions become ranked lists that carry their scores; nothing is dropped silently.

``build_items(..., "listwise")`` turns a ``Scores`` record into a list ordered by score
(equal scores tie), Likert answers of one prompt (one ``Scores`` record per completion)
into one list per annotator, and keeps each score for ``LogProbBatch.scores`` (NaN for
the sequences of rankings and pairs in the same batch). Records that order nothing are
counted in a warning that says where the first of each kind is; a record that cannot be
made a list unambiguously raises ``DataError`` naming it. Relabelled pairs carry the
reward gap as their margin, which ODPO reads.
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from typing import Any

import pytest
import torch

from prefcore.batch import LogProbBatch
from prefcore.batch import LossOutput
from prefcore.data import BinaryLabel
from prefcore.data import Critique
from prefcore.data import FeedbackRecord
from prefcore.data import PairwiseComparison
from prefcore.data import Provenance
from prefcore.data import Ranking
from prefcore.data import Scores
from prefcore.demo.model import build_tiny_model
from prefcore.demo.task import preference_pairs
from prefcore.demo.task import rankings
from prefcore.demo.tokenizer import build_tokenizer
from prefcore.engine.batching import build_items
from prefcore.engine.batching import collate
from prefcore.engine.trainer import TrainConfig
from prefcore.engine.trainer import Trainer
from prefcore.engine.trainer import WeightedObjective
from prefcore.errors import DataError
from prefcore.plugins.usage.odpo import ODPO
from prefcore.plugins.usage.odpo import ODPOConfig
from prefcore.plugins.usage.pro import PRO
from prefcore.plugins.usage.pro import PROConfig


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return build_tokenizer()


@pytest.fixture(scope="module")
def demo_lists() -> tuple[Ranking, ...]:
    return rankings(count=4, seed=2)


def _scores(ranking: Ranking, values: list[float], *, line: int | None = None, **kwargs: Any) -> Scores:
    provenance = Provenance("rated.jsonl", line) if line is not None else None
    completions = ranking.completions[: len(values)]
    return Scores(
        ranking.prompt, completions, tuple({"overall": v} for v in values), (1, 5), provenance=provenance, **kwargs
    )


def _completion_ids(sequences: tuple[Any, ...]) -> list[tuple[int, ...]]:
    return [tuple(sequence.completion_ids) for sequence in sequences]


def test_a_scores_record_is_a_list_ordered_by_score_with_ties(tokenizer: Any, demo_lists: Any) -> None:
    record = _scores(demo_lists[0], [3.0, 5.0, 3.0, 1.5])
    [item] = build_items([record], "listwise", tokenizer, max_length=64)
    assert item.data_format == "listwise"
    assert item.ranks == (2.0, 1.0, 2.0, 4.0)  # the two 3.0 tie, below the 5.0
    assert item.scores == (3.0, 5.0, 3.0, 1.5)
    batch = collate([item], tokenizer.pad_token_id)
    assert batch.list_index is not None and batch.list_ranks is not None and batch.scores is not None
    assert batch.list_index[0, 0].item() == 1  # best first: the completion scored 5
    assert batch.list_ranks[0].tolist() == [1.0, 2.0, 2.0, 4.0]
    assert batch.scores.tolist() == [3.0, 5.0, 3.0, 1.5]


def test_rankings_and_pairs_beside_scored_lists_get_nan_scores(tokenizer: Any, demo_lists: Any) -> None:
    pair = preference_pairs(count=1, seed=3)[0]
    records = [demo_lists[1], _scores(demo_lists[0], [2.0, 4.0, 1.0]), pair]
    items = build_items(records, "listwise", tokenizer, max_length=64)
    assert [item.scores for item in items] == [None, (2.0, 4.0, 1.0), None]
    batch = collate(items, tokenizer.pad_token_id)
    assert batch.scores is not None
    expected = [math.nan] * 4 + [2.0, 4.0, 1.0] + [math.nan] * 2
    torch.testing.assert_close(batch.scores, torch.tensor(expected), equal_nan=True)
    assert collate([items[0], items[2]], tokenizer.pad_token_id).scores is None  # no scored list: no field


def test_one_completion_ratings_of_a_prompt_form_one_list_per_annotator(tokenizer: Any, demo_lists: Any) -> None:
    """A Likert session writes one Scores record per answer; one annotator's answers rank the completions."""
    ranking = demo_lists[0]

    def rating(index: int, value: float, annotator: str) -> Scores:
        completion = ranking.completions[index]
        return Scores(ranking.prompt, (completion,), ({"overall": value},), (1, 5), annotator_id=annotator)

    records = [rating(0, 2.0, "ann"), rating(1, 4.0, "bob"), rating(1, 5.0, "ann"), rating(2, 1.0, "ann")]
    records += [rating(0, 3.0, "bob"), rating(3, 2.0, "cy")]  # cy rated one completion only
    [ann, bob] = build_items(records, "listwise", tokenizer, max_length=64)
    assert (ann.ranks, ann.scores) == ((2.0, 1.0, 3.0), (2.0, 5.0, 1.0))
    assert (bob.ranks, bob.scores) == ((1.0, 2.0), (4.0, 3.0))
    [same] = build_items([_scores(ranking, [2.0, 5.0, 1.0])], "listwise", tokenizer, max_length=64)
    assert _completion_ids(ann.sequences) == _completion_ids(same.sequences)  # the completions, in rating order


def test_a_completion_rated_twice_in_one_list_is_an_error_naming_both(tokenizer: Any, demo_lists: Any) -> None:
    ranking = demo_lists[0]
    first, again = (
        Scores(
            ranking.prompt, (ranking.completions[0],), ({"overall": v},), (1, 5), provenance=Provenance("r.jsonl", n)
        )
        for v, n in ((2.0, 4), (3.0, 9))
    )
    other = Scores(ranking.prompt, (ranking.completions[1],), ({"overall": 1.0},), (1, 5))
    with pytest.raises(DataError, match=r"r.jsonl line 9.*r.jsonl line 4 already rates") as excinfo:
        build_items([first, other, again], "listwise", tokenizer, max_length=64)
    assert (excinfo.value.source, excinfo.value.line) == ("r.jsonl", 9)


def test_a_record_rating_several_aspects_names_itself(tokenizer: Any, demo_lists: Any) -> None:
    ranking = demo_lists[0]
    rows = ({"help": 4.0, "safe": 2.0}, {"help": 1.0, "safe": 5.0})
    record = Scores(ranking.prompt, ranking.completions[:2], rows, (1, 5), provenance=Provenance("r.jsonl", 7))
    with pytest.raises(DataError, match="several aspects") as excinfo:
        build_items([record], "listwise", tokenizer, max_length=64)
    assert (excinfo.value.source, excinfo.value.line) == ("r.jsonl", 7)


def test_records_that_order_nothing_are_counted_and_located(
    tokenizer: Any, demo_lists: Any, caplog: pytest.LogCaptureFixture
) -> None:
    ranking = demo_lists[0]
    a, b = ranking.completions[:2]
    where = Provenance("mixed.jsonl", 3)
    records = [
        PairwiseComparison(ranking.prompt, a, b, tie=True, provenance=where),
        BinaryLabel(ranking.prompt, a, True, provenance=Provenance("mixed.jsonl", 5)),
        BinaryLabel(ranking.prompt, b, False),
        Critique(ranking.prompt, a, "too short", provenance=Provenance("mixed.jsonl", 8)),
        Critique(ranking.prompt, a, "too short", revision=b),  # the revision over the original: a list of two
        FeedbackRecord(ranking.prompt, (ranking,)),
    ]
    with caplog.at_level(logging.WARNING, logger="prefcore.batching"):
        items = build_items(records, "listwise", tokenizer, max_length=64)
    [revised] = build_items([PairwiseComparison(ranking.prompt, b, a)], "listwise", tokenizer, max_length=64)
    assert len(items) == 2  # the critique's revision over its original, and the bundled ranking
    assert _completion_ids(items[0].sequences) == _completion_ids(revised.sequences)
    [message] = [record.getMessage() for record in caplog.records]
    assert "4 record(s) form no ranked list" in message and "2 list(s) kept" in message
    assert "1 tie pair(s)" in message and "(first: mixed.jsonl line 3)" in message
    assert "2 binary label(s)" in message and "(first: mixed.jsonl line 5)" in message
    assert "1 critique(s) without a revision" in message and "(first: mixed.jsonl line 8)" in message


def test_nothing_is_logged_when_every_record_forms_a_list(
    tokenizer: Any, demo_lists: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="prefcore.batching"):
        build_items([*demo_lists, _scores(demo_lists[0], [1.0, 2.0])], "listwise", tokenizer, max_length=64)
    assert not caplog.records


def _recording(objective_cls: type, config: Any) -> Any:
    class Recording(objective_cls):
        def loss(self, batch: LogProbBatch) -> LossOutput:
            self.batches.append(batch)
            return super().loss(batch)

    recording = Recording(config)
    recording.batches = []
    return recording


def _train(items: list[Any], tokenizer: Any, objective: Any, tmp_path: Any, *, reference: bool = False) -> None:
    from prefcore.engine.models import frozen_copy
    from prefcore.engine.reference import ModelReference

    torch.set_num_threads(1)
    policy = build_tiny_model(tokenizer, seed=0)
    config = TrainConfig(steps=1, batch_size=len(items), lr=1e-2, warmup_steps=0, schedule="constant", progress=False)
    Trainer(
        policy,
        [WeightedObjective(objective)],
        items,
        config,
        pad_token_id=tokenizer.pad_token_id,
        run_dir=tmp_path,
        device=torch.device("cpu"),
        reference_logps=ModelReference(frozen_copy(policy), fused=True, backend="auto") if reference else None,
    ).fit()


def test_scores_reach_pro_through_the_trainer(tokenizer: Any, demo_lists: Any, tmp_path: Any) -> None:
    values = [[4.0, 2.0, 3.0], [1.0, 5.0], [2.5, 4.5, 1.0, 3.5]]
    records = [_scores(ranking, v) for ranking, v in zip(demo_lists, values, strict=False)]
    records.append(demo_lists[3])  # a ranking without scores in the same batch
    pro = _recording(PRO, PROConfig())
    _train(build_items(records, "listwise", tokenizer, max_length=64), tokenizer, pro, tmp_path)
    [batch] = pro.batches
    assert batch.scores is not None and batch.list_index is not None
    by_list = sorted(
        tuple(batch.scores[row[row >= 0]].tolist()) for row in batch.list_index if not batch.scores[row[0]].isnan()
    )
    assert by_list == sorted(tuple(sorted(v, reverse=True)) for v in values)  # best first, each list's own scores
    plain = PRO(PROConfig(use_scores=False))
    assert not torch.allclose(pro.loss(batch).loss, plain.loss(batch).loss), "pro ignored the scores"


def test_relabelled_pairs_carry_the_reward_gap_as_margin_into_odpo(tokenizer: Any, tmp_path: Any) -> None:
    from prefcore.pipeline import relabel_pairs

    def scorer(prompts: list[Any], completions: list[Any]) -> list[float]:
        """A stand-in reward model: 0.3 per word."""
        return [0.3 * len(str(completion).split()) for completion in completions]

    pairs = [replace(pair, margin=None, probability=None) for pair in preference_pairs(count=8, seed=4)]
    relabelled = relabel_pairs(pairs, scorer)
    assert relabelled
    gaps = [scorer([], [pair.chosen])[0] - scorer([], [pair.rejected])[0] for pair in relabelled]
    assert [pair.margin for pair in relabelled] == pytest.approx(gaps) and min(gaps) > 0
    odpo = _recording(ODPO, ODPOConfig(alpha=0.5))
    _train(build_items(relabelled, "pairwise", tokenizer, max_length=64), tokenizer, odpo, tmp_path, reference=True)
    [batch] = odpo.batches
    assert batch.margins is not None
    assert sorted(batch.margins.tolist()) == pytest.approx(sorted(gaps), rel=1e-6)
    offset = float(odpo.loss(batch).metrics["offset"])
    assert offset == pytest.approx(sum(0.5 * math.log(gap) for gap in gaps) / len(gaps), rel=1e-5)
