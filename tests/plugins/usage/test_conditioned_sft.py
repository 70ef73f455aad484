"""Record rewriting of the conditioned SFT objectives: hindsight_sft and reward_conditioned_sft.

The rewritten records must be valid ``prefcore.data`` records that the engine's SFT path
trains on (desirable ``BinaryLabel``), and their prompts must tokenise exactly as the
engine will present the prompt at generation, with the objective's ``generation_prefix``.
"""

from __future__ import annotations

from typing import Any

import pytest

from prefcore.data import BinaryLabel
from prefcore.data import Critique
from prefcore.data import FeedbackRecord
from prefcore.data import Message
from prefcore.data import PairwiseComparison
from prefcore.data import Provenance
from prefcore.data import Ranking
from prefcore.data import Scores
from prefcore.data import record_from_dict
from prefcore.engine.sequences import prompt_token_ids
from prefcore.methods import UsageObjective
from prefcore.registry import Registry

CHAT_PROMPT = [{"role": "user", "content": "Say hi."}]


class CharTokenizer:
    """One token per character; its chat template writes each turn as ``role: content``."""

    eos_token_id = 0
    chat_template = "role: content, one turn per line"

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        return {"input_ids": [ord(character) for character in text]}

    def apply_chat_template(
        self, chat: list[dict[str, str]], *, tokenize: bool = False, add_generation_prompt: bool = False
    ) -> str:
        text = "".join(f"{turn['role']}: {turn['content']}\n" for turn in chat)
        return text + ("assistant: " if add_generation_prompt else "")


def _objective(registry: Registry, name: str, **options: Any) -> UsageObjective:
    objective = registry.create("usage", name, options)
    assert isinstance(objective, UsageObjective)
    return objective


def _texts(records: list[Any]) -> list[tuple[Any, Any]]:
    return [(record.prompt, record.completion) for record in records]


def _assert_sft_records(records: list[Any]) -> None:
    """Desirable binary labels that survive a JSON round trip: valid records the SFT path trains on."""
    for record in records:
        assert isinstance(record, BinaryLabel) and record.label is True
        assert record_from_dict(record.to_dict()) == record


# ----------------------------------------------------------------------------------------------
# hindsight_sft
# ----------------------------------------------------------------------------------------------


def test_hindsight_puts_the_worse_answer_before_the_positive_condition(usage_registry: Registry) -> None:
    objective = _objective(usage_registry, "hindsight_sft")
    pair = PairwiseComparison("What is 2+2?", "4", "5", annotator_id="ann-1", provenance=Provenance("pairs.jsonl", 3))
    (record,) = objective.transform_records([pair])
    assert record.prompt == (
        "A worse answer to the request below: 5\nA better answer to the request below:\nWhat is 2+2?"
    )
    assert record.completion == "4"
    assert record.annotator_id == "ann-1" and record.provenance == Provenance("pairs.jsonl", 3)
    assert objective.generation_prefix() == "A better answer to the request below:\n"
    _assert_sft_records([record])


def test_hindsight_uses_every_comparison_and_the_critique_text(usage_registry: Registry) -> None:
    objective = _objective(
        usage_registry,
        "hindsight_sft",
        worse_template="Bad: {rejected}\n",
        critique_template="Why: {critique}\n",
        positive_condition="Good:\n",
    )
    records = [
        PairwiseComparison("p1", "a", "b", tie=True),  # a tie has no better answer
        Ranking("p2", ("x", "y", "z"), (2, 1, 3)),
        Critique("p3", "draft", "too long", revision="short"),
        Critique("p4", "fine", "ok as is"),  # no revision: nothing to prefer
        FeedbackRecord("p5", (PairwiseComparison("p5", "c", "d"),)),
    ]
    transformed = objective.transform_records(records)
    assert _texts(transformed) == [
        ("Bad: x\nGood:\np2", "y"),
        ("Bad: z\nGood:\np2", "x"),
        ("Bad: z\nGood:\np2", "y"),
        ("Bad: d\nGood:\np5", "c"),
        ("Bad: draft\nWhy: too long\nGood:\np3", "short"),
    ]
    _assert_sft_records(transformed)


def test_hindsight_training_prompt_ends_with_the_generation_prompt(usage_registry: Registry) -> None:
    objective = _objective(usage_registry, "hindsight_sft")
    (record,) = objective.transform_records([PairwiseComparison("Name a colour.", "Blue.", "Seven.")])
    tokenizer = CharTokenizer()
    training = prompt_token_ids(tokenizer, record.prompt)
    generation = prompt_token_ids(tokenizer, "Name a colour.", prefix=objective.generation_prefix())
    assert training[-len(generation) :] == generation
    assert len(training) > len(generation)


def test_hindsight_conditions_a_conversation_with_a_system_message(usage_registry: Registry) -> None:
    objective = _objective(usage_registry, "hindsight_sft")
    pair = PairwiseComparison(
        CHAT_PROMPT, [{"role": "assistant", "content": "Hi!"}], [{"role": "assistant", "content": "No."}]
    )
    (record,) = objective.transform_records([pair])
    assert record.prompt == (
        Message("system", "A worse answer to the request below: No.\nA better answer to the request below:\n"),
        Message("user", "Say hi."),
    )
    assert record.completion == (Message("assistant", "Hi!"),)
    _assert_sft_records([record])


# ----------------------------------------------------------------------------------------------
# reward_conditioned_sft
# ----------------------------------------------------------------------------------------------


def test_reward_conditioning_levels_of_each_feedback_format(usage_registry: Registry) -> None:
    objective = _objective(usage_registry, "reward_conditioned_sft")
    records = [
        PairwiseComparison("p1", "a", "b"),
        PairwiseComparison("p2", "a", "b", tie=True),  # no quality information
        BinaryLabel("p3", "c", False),
        Ranking("p4", ("x", "y", "z"), (3, 1, 2)),
        Scores("p5", ("lo", "mid", "hi"), ({"help": 1.0}, {"help": 3.0}, {"help": 5.0}), (1, 5)),
        Critique("p6", "draft", "too long", revision="short"),
    ]
    transformed = objective.transform_records(records)
    assert _texts(transformed) == [
        ("<quality:good> p1", "a"),
        ("<quality:bad> p1", "b"),
        ("<quality:bad> p3", "c"),
        ("<quality:bad> p4", "x"),
        ("<quality:good> p4", "y"),
        ("<quality:ok> p4", "z"),
        ("<quality:bad> p5", "lo"),
        ("<quality:ok> p5", "mid"),
        ("<quality:good> p5", "hi"),
        ("<quality:good> p6", "short"),
        ("<quality:bad> p6", "draft"),
    ]
    _assert_sft_records(transformed)
    assert objective.generation_prefix() == "<quality:good> "


def test_reward_conditioning_on_one_aspect(usage_registry: Registry) -> None:
    objective = _objective(
        usage_registry, "reward_conditioned_sft", levels=["low", "high"], condition_template="[{level}] ", aspect="safe"
    )
    scores = Scores("p", ("a", "b"), ({"help": 5.0, "safe": 1.0}, {"help": 1.0, "safe": 4.0}), (1, 5))
    assert _texts(objective.transform_records([scores])) == [("[low] p", "a"), ("[high] p", "b")]
    assert objective.generation_prefix() == "[high] "


def test_reward_conditioning_names_a_missing_aspect(usage_registry: Registry) -> None:
    objective = _objective(usage_registry, "reward_conditioned_sft", aspect="safety")
    scores = Scores("p", ("a",), ({"help": 5.0},), (1, 5), provenance=Provenance("scores.jsonl", 7))
    with pytest.raises(ValueError, match=r"aspect 'safety'.*rates help \(scores.jsonl line 7\)"):
        objective.transform_records([scores])


@pytest.mark.parametrize("prompt", ["Say hi.", CHAT_PROMPT], ids=["text", "conversation"])
def test_best_condition_tokenises_as_generation_does(usage_registry: Registry, prompt: Any) -> None:
    """Training on the best level sees the very prompt ids that generation with the prefix produces."""
    objective = _objective(usage_registry, "reward_conditioned_sft")
    pair = PairwiseComparison(prompt, _completion_like(prompt, "Hi!"), _completion_like(prompt, "No."))
    best = objective.transform_records([pair])[0]
    tokenizer = CharTokenizer()
    assert prompt_token_ids(tokenizer, best.prompt) == prompt_token_ids(
        tokenizer, pair.prompt, prefix=objective.generation_prefix()
    )


def _completion_like(prompt: Any, text: str) -> Any:
    return text if isinstance(prompt, str) else [{"role": "assistant", "content": text}]
