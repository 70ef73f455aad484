"""llm_judge: both orders asked, label probabilities normalised, order-inconsistent verdicts handled.

A tiny random Llama with a word-level tokenizer is the judge: its verdicts are noise, but
every number it gives can be recomputed from its logits. Stub judges with a known position
bias show what the two-order rule does to it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from prefcore.demo.model import build_tiny_model
from prefcore.demo.tokenizer import build_tokenizer
from prefcore.engine.sequences import prompt_token_ids
from prefcore.errors import ConfigError
from prefcore.plugins.feedback.llm_judge import CausalLMLabelProbabilities
from prefcore.plugins.feedback.llm_judge import LLMJudge
from prefcore.plugins.feedback.llm_judge import LLMJudgeConfig
from prefcore.plugins.feedback.llm_judge import judge_prompt

WriteRows = Callable[[str, Sequence[Any]], Path]

WORDS = ("a", "b", "1", "2", "answer", "which", "better", "is", "the", "sky", "blue", "green", "good", "bad", "reply")
SHORT_TEMPLATE = "{principles} {prompt} answer {label_first} {first} answer {label_second} {second} which is better"
ITEMS = [
    {"prompt": "the sky is", "completions": ["blue", "green", "good reply"]},
    {"prompt": "good or bad", "completions": ["good", "bad"]},
]


@pytest.fixture(scope="module")
def judge_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tokenizer = build_tokenizer(WORDS)
    model = build_tiny_model(tokenizer, seed=1, hidden_size=16, num_hidden_layers=1, num_attention_heads=2)
    folder = tmp_path_factory.mktemp("judge")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def backend(judge_folder: Path) -> CausalLMLabelProbabilities:
    return CausalLMLabelProbabilities.load(LLMJudgeConfig(model_path=judge_folder, template=SHORT_TEMPLATE))


class Recorder:
    """Wraps label probabilities and keeps every judge prompt asked."""

    def __init__(self, inner: Callable[[Sequence[tuple[Any, Any, Any]]], Sequence[float]]) -> None:
        self.inner = inner
        self.queries: list[tuple[Any, Any, Any]] = []

    def __call__(self, queries: Sequence[tuple[Any, Any, Any]]) -> Sequence[float]:
        self.queries += list(queries)
        return self.inner(queries)


def test_both_orders_of_every_pair_are_asked(write_rows: WriteRows, backend: CausalLMLabelProbabilities) -> None:
    items = write_rows("items.jsonl", ITEMS)
    recorder = Recorder(backend)
    config = LLMJudgeConfig(path=items, template=SHORT_TEMPLATE)
    records = list(LLMJudge(config, label_probabilities=recorder).records())
    pairs = {
        ("the sky is", "blue", "green"),
        ("the sky is", "blue", "good reply"),
        ("the sky is", "green", "good reply"),
    }
    pairs.add(("good or bad", "good", "bad"))
    assert set(recorder.queries) == pairs | {(prompt, y, x) for prompt, x, y in pairs}
    assert len(recorder.queries) == 8 and len(records) == 4
    for record in records:
        forward, backward = record.metadata["judge_orders"]
        first_shown = backend([(record.prompt, record.chosen, record.rejected)])[0]
        second_shown = backend([(record.prompt, record.rejected, record.chosen)])[0]
        assert (forward, backward) == pytest.approx((first_shown, 1.0 - second_shown))
        expected = 0.5 if record.tie else (forward + backward) / 2
        assert record.probability == pytest.approx(expected)
        assert record.source == "ai"


def test_label_probabilities_are_normalised_over_the_two_label_tokens(backend: CausalLMLabelProbabilities) -> None:
    tokenizer, model = backend.tokenizer, backend.model
    text = judge_prompt(backend.config, "the sky is", "blue", "green")
    ids = prompt_token_ids(tokenizer, text)
    assert ids == backend.query_ids("the sky is", "blue", "green")
    with torch.no_grad():
        probabilities = torch.softmax(model(torch.tensor([ids])).logits[0, -1].float(), dim=-1)
    label_a, label_b = tokenizer.convert_tokens_to_ids(["a", "b"])
    expected = probabilities[label_a] / (probabilities[label_a] + probabilities[label_b])
    [p_first] = backend([("the sky is", "blue", "green")])
    assert p_first == pytest.approx(float(expected), rel=1e-5)
    assert probabilities[label_a] + probabilities[label_b] < 0.5  # most mass is elsewhere, and ignored


def test_batches_of_different_lengths_give_the_same_probabilities(backend: CausalLMLabelProbabilities) -> None:
    queries = [("the sky is", "blue", "green"), ("good or bad", "good", "bad reply good"), ("sky", "b", "a")]
    one_by_one = [backend([query])[0] for query in queries]
    assert backend(queries) == pytest.approx(one_by_one, abs=1e-6)


def test_loaded_from_a_local_folder_by_path(write_rows: WriteRows, judge_folder: Path) -> None:
    items = write_rows("items.jsonl", ITEMS)
    source = LLMJudge(LLMJudgeConfig(model_path=judge_folder, path=items, labels=("1", "2"), batch_size=3))
    records = list(source.records())
    assert len(records) == 4
    assert all(0.0 < record.probability < 1.0 for record in records)
    judge = source.judge()
    assert judge("the sky is", "blue", "green") + judge("the sky is", "green", "blue") == pytest.approx(1.0)


def always_first(queries: Sequence[tuple[Any, Any, Any]]) -> list[float]:
    """A judge that picks whatever it reads first, with 90% confidence."""
    return [0.9 for _ in queries]


def biased_counter(bias: float) -> Callable[[Sequence[tuple[Any, Any, Any]]], list[float]]:
    """P(first label) = σ(bias + good(first) − good(second)): a real signal plus a first-position bias."""

    def judge(queries: Sequence[tuple[Any, Any, Any]]) -> list[float]:
        scores = [bias + first.count("good") - second.count("good") for _, first, second in queries]
        return [1.0 / (1.0 + math.exp(-score)) for score in scores]

    return judge


def test_a_judge_that_always_picks_the_first_position_is_neutralised(write_rows: WriteRows) -> None:
    items = write_rows("items.jsonl", ITEMS)
    source = LLMJudge(LLMJudgeConfig(path=items), label_probabilities=always_first)
    records = list(source.records())
    assert len(records) == 4
    assert all(r.tie and r.probability == 0.5 and not r.metadata["order_consistent"] for r in records)
    assert source.judge()("p", "x", "y") == pytest.approx(0.5)
    dropped = LLMJudge(LLMJudgeConfig(path=items, inconsistent="drop"), label_probabilities=always_first)
    assert list(dropped.records()) == []
    raw = LLMJudge(LLMJudgeConfig(judge_orders="one"), label_probabilities=always_first)
    assert raw.judge()("p", "x", "y") == pytest.approx(0.9)


def test_a_moderate_position_bias_does_not_change_the_winner(write_rows: WriteRows) -> None:
    items = write_rows("items.jsonl", [{"prompt": "p", "completions": ["bad", "good good"]}])
    [record] = LLMJudge(LLMJudgeConfig(path=items), label_probabilities=biased_counter(0.5)).records()
    assert (record.chosen, record.rejected, record.tie) == ("good good", "bad", False)
    sigmoid = lambda value: 1.0 / (1.0 + math.exp(-value))
    assert record.metadata["judge_orders"] == pytest.approx([sigmoid(2.5), sigmoid(1.5)])
    assert record.probability == pytest.approx((sigmoid(2.5) + sigmoid(1.5)) / 2)


def test_a_bias_stronger_than_the_signal_gives_a_tie(write_rows: WriteRows) -> None:
    items = write_rows("items.jsonl", [{"prompt": "p", "completions": ["bad", "good"]}])
    [record] = LLMJudge(LLMJudgeConfig(path=items), label_probabilities=biased_counter(3.0)).records()
    assert record.tie and not record.metadata["order_consistent"]


def test_labels_must_be_single_distinct_tokens(backend: CausalLMLabelProbabilities) -> None:
    with pytest.raises(ConfigError) as excinfo:
        LLMJudge(LLMJudgeConfig(labels=("Yes", "No")), model=backend.model, tokenizer=backend.tokenizer)
    assert excinfo.value.field == "labels" and "'Yes' is not a single token" in str(excinfo.value)
    with pytest.raises(ConfigError) as excinfo:
        LLMJudge(LLMJudgeConfig(labels=("A", "a")), model=backend.model, tokenizer=backend.tokenizer)
    assert "map to the same token" in str(excinfo.value)


@pytest.mark.parametrize(
    ("options", "field", "says"),
    [
        ({"template": "{prompt} {first}"}, "template", "must contain {second}"),
        ({"template": "{prompt} {first} {second} {rubric}"}, "template", "unknown placeholder(s) ['rubric']"),
        ({"labels": ("A", "A")}, "labels", "must differ"),
        ({"principles": ()}, "principles", "non-empty list"),
        ({"inconsistent": "flip"}, "inconsistent", "'tie' or 'drop'"),
    ],
)
def test_invalid_options(options: dict[str, Any], field: str, says: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        LLMJudgeConfig(**options)
    assert excinfo.value.field == field and says in str(excinfo.value)


def test_missing_inputs_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as excinfo:
        list(LLMJudge(LLMJudgeConfig(), label_probabilities=always_first).records())
    assert excinfo.value.field == "path"
    with pytest.raises(ConfigError) as excinfo:
        LLMJudge(LLMJudgeConfig(model_path=tmp_path / "nowhere")).judge()("p", "x", "y")
    assert excinfo.value.field == "model_path" and "local files only" in str(excinfo.value)
