"""Rule feedback from demonstrations: the human reference is preferred over a model's own answer.

SPIN (Chen et al. 2024, "Self-Play Fine-Tuning Converts Weak Language Models to Strong
Language Models", https://arxiv.org/abs/2401.01335) and adversarial preference
optimisation (APO; Cheng et al. 2023, "Adversarial Preference Optimization",
https://arxiv.org/abs/2311.08045) turn demonstrations into comparisons with one rule:

    for a demonstration (x, y_human) and a model answer y_model to the same prompt x:
    chosen = y_human, rejected = y_model      (no pair when y_model is empty or equals y_human)

The rule is ``prefcore.engine.self_play.reference_over_generation``, the one SPIN rounds
use; this source applies it once, to answers read from a file (``generations``: rows
matched to demonstrations by prompt, any number per prompt) or sampled from a local model
(``model_path``: ``samples`` answers per demonstration, seeded). The demonstrations are
also the source's ``demonstrations()``, the SFT warm start SPIN begins from.

Input (JSONL): ``demonstrations`` and ``generations`` rows are both
``{"prompt": ..., "completion": ...}``, text or, for chat models, TRL's conversational
messages (the prompt's turns, the reference's assistant turn); generations match their
demonstration by prompt.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefcore import hookimpl
from prefcore.data import BinaryLabel
from prefcore.data import Provenance
from prefcore.errors import ConfigError
from prefcore.feedback import Row
from prefcore.feedback import model_samples
from prefcore.feedback import read_rows
from prefcore.lazy import lazy_module
from prefcore.methods import FeedbackSource
from prefcore.methods import option

# The SPIN engine (torch, transformers) loads when labels are made, not when the plugin registers.
self_play = lazy_module("prefcore.engine.self_play")
sequences = lazy_module("prefcore.engine.sequences")

NAME = "reference_over_generation"

DEMONSTRATION = (
    "A demonstration row is {'prompt': text or messages, 'completion': the human reference, text or an assistant turn}."
)
GENERATION = (
    "A generation row is {'prompt': text or messages, 'completion': the model's text}, its prompt that of a "
    "demonstration."
)


@dataclass(frozen=True)
class ReferenceOverGenerationConfig:
    demonstrations: Path = option(doc="JSONL of {prompt, completion} human references")
    generations: Path | None = option(None, doc="JSONL of {prompt, completion} model answers (or set model_path)")
    model_path: Path | None = option(None, doc="local folder of a causal LM that answers the demonstrations' prompts")
    samples: int = option(1, doc="answers sampled per demonstration (model_path)")
    max_new_tokens: int = option(64, doc="length limit of sampled answers (model_path)")
    temperature: float = option(1.0, doc="sampling temperature, 0 = greedy (model_path)")
    seed: int = option(0, doc="sampling seed (model_path)")
    batch_size: int = option(16, doc="prompts per generation batch (model_path)")
    device: str = option("cpu", doc="device of the generator (model_path)")

    def __post_init__(self) -> None:
        if (self.generations is None) == (self.model_path is None):
            raise ConfigError(
                'set exactly one of generations = "<answers.jsonl>" or model_path = "<model folder>".',
                method=NAME,
                field="generations",
            )
        for field in ("samples", "max_new_tokens", "batch_size"):
            if getattr(self, field) < 1:
                raise ConfigError(f"{field} must be 1 or more, got {getattr(self, field)}.", method=NAME, field=field)
        if self.temperature < 0:
            raise ConfigError(
                f"temperature must be 0 or more, got {self.temperature}.", method=NAME, field="temperature"
            )


def _text_row(row: Row, *, blank_completion: bool = False) -> tuple[Any, Any]:
    """Prompt and completion; a model's blank answer is read (the rule then makes no pair from it)."""
    prompt = row.text("prompt")
    if blank_completion and isinstance(row.data.get("completion"), str):
        completion: Any = row.data["completion"]
    else:
        completion = row.text("completion")
    return prompt, completion


def read_demonstrations(path: Path) -> list[BinaryLabel]:
    """Demonstrations as desirable completions, each remembering its file and line."""
    demonstrations = []
    for row in read_rows(path, DEMONSTRATION):
        prompt, completion = _text_row(row)
        demonstrations.append(
            BinaryLabel(prompt, completion, True, source="demonstration", provenance=Provenance(row.source, row.line))
        )
    return demonstrations


def match_generations(path: Path, demonstrations: list[BinaryLabel]) -> tuple[list[BinaryLabel], list[str]]:
    """Generation rows aligned with the demonstrations of their prompt (every reference of that prompt)."""
    by_prompt: dict[Any, list[BinaryLabel]] = {}
    for demonstration in demonstrations:
        by_prompt.setdefault(demonstration.prompt, []).append(demonstration)
    aligned: list[BinaryLabel] = []
    answers: list[str] = []
    for row in read_rows(path, GENERATION):
        prompt, completion = _text_row(row, blank_completion=True)
        if prompt not in by_prompt:
            raise row.error("matches no demonstration's prompt.", "prompt")
        for demonstration in by_prompt[prompt]:
            aligned.append(demonstration)
            answers.append(completion if isinstance(completion, str) else sequences.completion_text(completion))
    return aligned, answers


def sample_generations(
    config: ReferenceOverGenerationConfig, demonstrations: list[BinaryLabel]
) -> tuple[list[BinaryLabel], list[str]]:
    """``samples`` answers of the local model per demonstration, demonstration-major."""
    answers = model_samples(
        config.model_path,
        [demonstration.prompt for demonstration in demonstrations],
        samples=config.samples,
        max_new_tokens=config.max_new_tokens,
        temperature=config.temperature,
        seed=config.seed,
        batch_size=config.batch_size,
        device=config.device,
    )
    aligned = [demonstration for demonstration in demonstrations for _ in range(config.samples)]
    return aligned, answers


class ReferenceOverGeneration(FeedbackSource):
    """Rule feedback (SPIN, APO): the human reference is preferred over the model's own answer."""

    name = NAME
    config_cls = ReferenceOverGenerationConfig

    def records(self) -> Iterator[Any]:
        demonstrations = read_demonstrations(self.config.demonstrations)
        if self.config.generations is not None:
            aligned, answers = match_generations(self.config.generations, demonstrations)
        else:
            aligned, answers = sample_generations(self.config, demonstrations)
        yield from self_play.reference_over_generation(aligned, answers)

    def demonstrations(self) -> list[Any]:
        return list(read_demonstrations(self.config.demonstrations))


@hookimpl
def prefcore_register_feedback() -> list[type[FeedbackSource]]:
    return [ReferenceOverGeneration]
