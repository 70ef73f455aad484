"""contamination: planted duplicates are all found, short prompts are not skipped, sets and warnings by hand."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from prefcore.data import Message
from prefcore.data import PairwiseComparison
from prefcore.errors import ConfigError
from prefcore.evaluation import EvaluationContext
from prefcore.evaluation import EvaluationInputError
from prefcore.plugins.evaluation.contamination import Contamination
from prefcore.plugins.evaluation.contamination import ContaminationConfig
from prefcore.plugins.evaluation.contamination import TrainingIndex
from prefcore.plugins.evaluation.contamination import ngrams
from prefcore.plugins.evaluation.contamination import record_texts

TRAIN = [
    PairwiseComparison(
        prompt=f"please tell me a fact number {k} about the history of the old town bridge and its builders",
        chosen=f"answer {k} is that it was built in the year {1800 + k} by masons",
        rejected="no idea",
    )
    for k in range(20)
]
FRESH = [f"describe fresh topic {k} with entirely new words like zebra{k} quantum{k} marmalade" for k in range(18)]


def context(prompts: list[Any], training: list[Any] = TRAIN, preferences: tuple[Any, ...] = ()) -> EvaluationContext:
    return EvaluationContext(policy=None, tokenizer=None, prompts=prompts, training=training, preferences=preferences)


def test_planted_duplicates_are_all_found() -> None:
    planted = [TRAIN[3].prompt, TRAIN[11].prompt]  # 2 of 20 = 10% of the evaluation set
    metrics = Contamination(ContaminationConfig()).evaluate(context(FRESH + planted)).metrics
    assert metrics["prompts/contaminated_rate"] == pytest.approx(0.1)  # recall 100%, no false positives
    assert metrics["prompts/exact_duplicate_rate"] == pytest.approx(0.1)
    assert metrics["prompts/mean_overlap"] == pytest.approx(0.1)  # each duplicate overlaps fully
    assert metrics["prompts/num_items"] == 20 and metrics["prompts/warning"] == 1.0
    assert metrics["num_training_texts"] == 60


def test_overlap_is_the_share_of_the_items_ngrams_in_training() -> None:
    index = TrainingIndex(["a b c d e f"], n=3)
    assert index.overlap("a b c d x y") == pytest.approx(2 / 4)  # abc, bcd of abc bcd cdx dxy
    assert index.overlap("A, B; C!") == 1.0  # punctuation and case are ignored
    # shorter than n: matched whole, anywhere inside a training text (not skipped)
    assert index.overlap("c d") == 1.0 and index.overlap("d c") == 0.0
    assert ngrams(("a", "b", "c"), 2) == {("a", "b"), ("b", "c")}


def test_a_paraphrase_with_a_shared_13_gram_is_contaminated_but_not_a_duplicate() -> None:
    near = "so " + TRAIN[5].prompt + " today"
    metrics = Contamination(ContaminationConfig()).evaluate(context([near, FRESH[0]])).metrics
    assert metrics["prompts/contaminated_rate"] == 0.5 and metrics["prompts/exact_duplicate_rate"] == 0.0


def test_sets_are_reported_separately_and_warn_above_the_threshold(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    extra = tmp_path / "probe_set.jsonl"
    extra.write_text(
        json.dumps({"prompt": [{"role": "user", "content": TRAIN[0].chosen}]}) + "\n" + json.dumps(FRESH[1]) + "\n",
        encoding="utf-8",
    )
    heldout = (PairwiseComparison(prompt=FRESH[2], chosen="x", rejected="y"),)
    config = ContaminationConfig(threshold=0.4, eval_files=(str(extra),))
    with caplog.at_level(logging.WARNING, logger="prefcore.evaluation"):
        metrics = Contamination(config).evaluate(context(FRESH[:4], preferences=heldout)).metrics
    assert metrics["prompts/contaminated_rate"] == 0.0 and metrics["prompts/warning"] == 0.0
    assert metrics["heldout/contaminated_rate"] == 0.0 and metrics["heldout/num_items"] == 1
    assert metrics["probe_set/contaminated_rate"] == 0.5 and metrics["probe_set/warning"] == 1.0
    assert "'probe_set'" in caplog.text and "'prompts'" not in caplog.text


def test_training_files_and_chat_records_count(tmp_path: Path) -> None:
    train = tmp_path / "train.jsonl"
    train.write_text(
        json.dumps({"prompt": "the secret canary phrase is purple elephant seven"}) + "\n", encoding="utf-8"
    )
    config = ContaminationConfig(n=4, train_files=(str(train),))
    metrics = Contamination(config).evaluate(context(["is purple elephant seven real", FRESH[0]], training=[])).metrics
    assert metrics["prompts/contaminated_rate"] == 0.5
    chat = (Message("system", "be brief"), Message("user", "hello there"))
    assert record_texts({"prompt": chat, "completions": ["a", "b"]}) == ["be brief", "hello there", "a", "b"]


def test_missing_inputs_and_bad_options_are_named(tmp_path: Path) -> None:
    with pytest.raises(EvaluationInputError) as excinfo:
        Contamination(ContaminationConfig()).evaluate(context(FRESH, training=[]))
    assert excinfo.value.missing == "training data"
    with pytest.raises(EvaluationInputError):
        Contamination(ContaminationConfig()).evaluate(context([]))
    for options in ({"n": 0}, {"threshold": 2.0}, {"train_files": (str(tmp_path / "nope.jsonl"),)}):
        with pytest.raises(ConfigError):
            ContaminationConfig(**options)  # type: ignore[arg-type]
