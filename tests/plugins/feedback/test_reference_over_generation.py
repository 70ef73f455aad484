"""reference_over_generation: the human reference beats the model's answer, from a file or a local model."""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from prefcore.data import BinaryLabel
from prefcore.data import Message
from prefcore.demo.model import build_tiny_model
from prefcore.demo.tokenizer import build_tokenizer
from prefcore.engine.generation import generate_completions
from prefcore.errors import ConfigError
from prefcore.errors import DataError
from prefcore.evaluation import GenerationSettings
from prefcore.plugins.feedback.reference_over_generation import ReferenceOverGeneration
from prefcore.plugins.feedback.reference_over_generation import ReferenceOverGenerationConfig

WriteRows = Callable[[str, Sequence[Any]], Path]

DEMONSTRATIONS = [
    {"prompt": "what is the colour of the sky", "completion": "blue"},
    {"prompt": "what is the colour of grass", "completion": "green"},
]


def test_references_beat_generations_read_from_a_file(write_rows: WriteRows) -> None:
    demonstrations = write_rows("demos.jsonl", DEMONSTRATIONS)
    generations = write_rows(
        "generations.jsonl",
        [
            {"prompt": "what is the colour of the sky", "completion": "green"},
            {"prompt": "what is the colour of grass", "completion": "green"},  # equals the reference: no pair
            {"prompt": "what is the colour of the sky", "completion": "  "},  # empty: no pair
            {"prompt": "what is the colour of the sky", "completion": "sky is sky"},
        ],
    )
    source = ReferenceOverGeneration(
        ReferenceOverGenerationConfig(demonstrations=demonstrations, generations=generations)
    )
    pairs = list(source.records())
    assert [(pair.prompt, pair.chosen, pair.rejected) for pair in pairs] == [
        ("what is the colour of the sky", "blue", "green"),
        ("what is the colour of the sky", "blue", "sky is sky"),
    ]
    assert pairs[0].source == "self_play" and pairs[0].provenance is not None and pairs[0].provenance.line == 1
    warm_start = source.demonstrations()
    assert [(d.prompt, d.completion, d.label) for d in warm_start] == [
        (row["prompt"], row["completion"], True) for row in DEMONSTRATIONS
    ]
    assert all(isinstance(d, BinaryLabel) and d.source == "demonstration" for d in warm_start)


def test_generations_are_sampled_from_a_local_model(tmp_path: Path, write_rows: WriteRows) -> None:
    tokenizer = build_tokenizer(["what", "is", "the", "colour", "of", "sky", "grass", "blue", "green", "red"])
    model = build_tiny_model(
        tokenizer, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    model.save_pretrained(tmp_path / "generator")
    tokenizer.save_pretrained(tmp_path / "generator")
    demonstrations = write_rows("demos.jsonl", DEMONSTRATIONS)
    config = ReferenceOverGenerationConfig(
        demonstrations=demonstrations, model_path=tmp_path / "generator", samples=2, max_new_tokens=4, seed=3
    )
    pairs = list(ReferenceOverGeneration(config).records())
    settings = GenerationSettings(max_new_tokens=4, temperature=1.0, num_samples=2, seed=3)
    prompts = [row["prompt"] for row in DEMONSTRATIONS]
    answers = generate_completions(model, tokenizer, prompts, settings)
    expected = [
        (row["completion"], answer)
        for row, answer in zip([row for row in DEMONSTRATIONS for _ in range(2)], answers, strict=True)
        if answer.strip() and answer.strip() != row["completion"]
    ]
    assert [(pair.chosen, pair.rejected) for pair in pairs] == expected
    assert len(expected) >= 2


@pytest.mark.parametrize(
    ("row", "field", "says"),
    [
        ({"prompt": "what is the colour of the sea", "completion": "blue"}, "prompt", "matches no demonstration"),
        ({"prompt": "what is the colour of the sky"}, "completion", "is missing"),
        ({"prompt": [{"role": "user", "content": "hi"}], "completion": [{"role": "assistant", "content": "x"}]},
         "prompt", "matches no demonstration"),
    ],
)  # fmt: skip
def test_malformed_generation_rows(write_rows: WriteRows, row: dict[str, Any], field: str, says: str) -> None:
    demonstrations = write_rows("demos.jsonl", DEMONSTRATIONS)
    generations = write_rows("generations.jsonl", [row])
    config = ReferenceOverGenerationConfig(demonstrations=demonstrations, generations=generations)
    with pytest.raises(DataError) as excinfo:
        list(ReferenceOverGeneration(config).records())
    assert (excinfo.value.source, excinfo.value.line, excinfo.value.field) == (str(generations), 1, field)
    assert says in str(excinfo.value)


def test_a_malformed_demonstration(write_rows: WriteRows) -> None:
    demonstrations = write_rows("demos.jsonl", [DEMONSTRATIONS[0], {"completion": "green"}])
    config = ReferenceOverGenerationConfig(demonstrations=demonstrations, generations=demonstrations)
    with pytest.raises(DataError) as excinfo:
        ReferenceOverGeneration(config).demonstrations()
    assert (excinfo.value.line, excinfo.value.field) == (2, "prompt")
    assert "A demonstration row is" in str(excinfo.value)


@pytest.mark.parametrize(
    "options",
    [{}, {"generations": Path("g.jsonl"), "model_path": Path("model")}, {"generations": Path("g"), "samples": 0}],
)
def test_invalid_options(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as excinfo:
        ReferenceOverGenerationConfig(demonstrations=Path("d.jsonl"), **options)
    assert excinfo.value.method == "reference_over_generation"


def test_conversational_demonstrations_and_generations(write_rows: WriteRows) -> None:
    """Chat data keeps its messages: the pair's prompt is the conversation, the reference its assistant turn."""
    user = [{"role": "user", "content": "what is the colour of the sky"}]
    reference = [{"role": "assistant", "content": "blue"}]
    demonstrations = write_rows("demos.jsonl", [{"prompt": user, "completion": reference}])
    generations = write_rows(
        "generations.jsonl",
        [
            {"prompt": user, "completion": "it is green"},
            {"prompt": user, "completion": [{"role": "assistant", "content": "grey"}]},
            {"prompt": user, "completion": "blue"},
        ],
    )
    config = ReferenceOverGenerationConfig(demonstrations=demonstrations, generations=generations)
    pairs = list(ReferenceOverGeneration(config).records())
    assert [pair.rejected for pair in pairs] == [
        (Message("assistant", "it is green"),),
        (Message("assistant", "grey"),),
    ]
    assert all(pair.prompt == (Message("user", "what is the colour of the sky"),) for pair in pairs)
    assert all(pair.chosen == (Message("assistant", "blue"),) for pair in pairs)
