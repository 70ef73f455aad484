"""RA-LLM's robust alignment check: refuse when enough token-dropped copies of a request are refused.

An adversarial prompt (a jailbreak suffix, say) is brittle: dropping a few of its tokens
breaks it, and the model's own alignment then refuses. RA-LLM (Cao et al. 2023,
https://arxiv.org/abs/2309.14348) therefore checks a request on ``copies`` random copies of
it, each with ⌊drop_rate · L⌋ of its L tokens dropped (the user's text only, never the chat
template), and refuses it when the share of copies whose short reply is a refusal reaches
``threshold``, or, first (``check_original``, the paper's step 1), when the unchanged prompt
already triggers a refusal:

    f = #{copies whose check fires} / copies,      refuse ⟺ check(x) fires or f ≥ threshold

The paper's defaults are copies = 20, drop_rate = 0.3, threshold = 0.2 and replies of at most
10 new tokens. Which positions are dropped follows ``seed`` and the prompt's index through
one ``random.Random`` per prompt (RA-LLM itself seeded only numpy and torch, so its drops
were not reproducible). What "the check fires" means is a callable: by default the policy
replies greedily and ``prefcore.refusal.RefusalDetector`` reads the reply; tests and other
detectors pass their own.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import replace
from typing import Any

from prefcore.errors import ConfigError
from prefcore.methods import option

__all__ = ["CopyCheck", "RobustnessConfig", "RobustnessResult", "drop_tokens", "dropped_copies", "robust_refusals"]

CopyCheck = Callable[[Sequence[Any]], Sequence[bool]]
"""``check(prompts) -> fired``: whether each (token-dropped) prompt triggers a refusal."""


@dataclass(frozen=True)
class RobustnessConfig:
    """RA-LLM's robustness check (``[robustness]`` of a generate run file)."""

    copies: int = option(20, doc="token-dropped copies of each prompt that are checked")
    drop_rate: float = option(0.3, doc="share of the prompt's tokens dropped in each copy (floor(rate * L) tokens)")
    threshold: float = option(0.2, doc="refuse when at least this share of copies triggers a refusal")
    max_new_tokens: int = option(10, doc="length of the short reply the default check reads")
    check_original: bool = option(True, doc="RA-LLM's first step: refuse at once when the unchanged prompt fires")
    seed: int = option(0, doc="seed of the dropped positions (with the prompt's index)")

    def __post_init__(self) -> None:
        for name in ("copies", "max_new_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"robustness {name} must be a whole number >= 1; got {value!r}.", field=name)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ConfigError(f"robustness seed must be a whole number >= 0; got {self.seed!r}.", field="seed")
        if not _number(self.drop_rate) or not 0.0 <= self.drop_rate < 1.0:
            raise ConfigError(f"robustness drop_rate must be in [0, 1); got {self.drop_rate!r}.", field="drop_rate")
        if not _number(self.threshold) or not 0.0 < self.threshold <= 1.0:
            raise ConfigError(f"robustness threshold must be in (0, 1]; got {self.threshold!r}.", field="threshold")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class RobustnessResult:
    """One prompt's check: its copies, which of them fired, and the decision."""

    copies: tuple[Any, ...]
    fired: tuple[bool, ...]
    threshold: float
    original_fired: bool = False

    @property
    def fraction(self) -> float:
        """f: the share of copies that triggered a refusal."""
        return sum(self.fired) / len(self.fired)

    @property
    def refused(self) -> bool:
        """RA-LLM's verdict: the unchanged prompt triggered a refusal, or f ≥ threshold."""
        return self.original_fired or self.fraction >= self.threshold

    def to_dict(self) -> dict[str, Any]:
        return {
            "refused": self.refused,
            "fraction": self.fraction,
            "threshold": self.threshold,
            "original_fired": self.original_fired,
            "copies": [_display(copy) for copy in self.copies],
            "fired": list(self.fired),
        }


def _display(prompt: Any) -> Any:
    if isinstance(prompt, str):
        return prompt
    return [{"role": message.role, "content": message.content} for message in prompt]


def drop_tokens(ids: Sequence[int], drop_rate: float, rng: random.Random) -> list[int]:
    """``ids`` with ⌊drop_rate · L⌋ positions, drawn without replacement by ``rng``, removed."""
    count = math.floor(drop_rate * len(ids))
    dropped = set(rng.sample(range(len(ids)), count))
    return [token for position, token in enumerate(ids) if position not in dropped]


def _user_text(prompt: Any) -> tuple[str, Callable[[str], Any]]:
    """The text to drop tokens from, and how to put a shortened text back into the prompt."""
    if isinstance(prompt, str):
        return prompt, lambda text: text
    turns = list(prompt)
    for position in range(len(turns) - 1, -1, -1):
        if turns[position].role == "user":

            def rebuild(text: str, position: int = position) -> Any:
                return tuple(
                    replace(turn, content=text) if index == position else turn for index, turn in enumerate(turns)
                )

            return turns[position].content, rebuild
    raise ConfigError("the robustness check needs a prompt with a user turn to drop tokens from.")


def dropped_copies(tokenizer: Any, prompt: Any, config: RobustnessConfig, index: int) -> tuple[Any, ...]:
    """``config.copies`` copies of ``prompt`` (text or chat turns), each with tokens of the user text dropped."""
    text, rebuild = _user_text(prompt)
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    rng = random.Random(f"ra-llm:{config.seed}:{index}")
    return tuple(
        rebuild(tokenizer.decode(drop_tokens(ids, config.drop_rate, rng), skip_special_tokens=True))
        for _ in range(config.copies)
    )


def robust_refusals(
    prompts: Sequence[Any], tokenizer: Any, config: RobustnessConfig, check: CopyCheck, *, start: int = 0
) -> list[RobustnessResult]:
    """RA-LLM's decision for each prompt: ``check`` runs once on every prompt's copies together.

    ``start`` is the index of the first prompt (its copies' seed), when prompts come in batches.
    """
    copies = [dropped_copies(tokenizer, prompt, config, start + index) for index, prompt in enumerate(prompts)]
    flat = [copy for group in copies for copy in group]
    fired = [bool(value) for value in check(flat)]
    if len(fired) != len(flat):
        raise ValueError(f"the robustness check answered {len(fired)} times for {len(flat)} copies.")
    originals = [bool(value) for value in check(list(prompts))] if config.check_original else [False] * len(prompts)
    if len(originals) != len(prompts):
        raise ValueError(f"the robustness check answered {len(originals)} times for {len(prompts)} prompts.")
    size = config.copies
    return [
        RobustnessResult(group, tuple(fired[index * size : (index + 1) * size]), config.threshold, originals[index])
        for index, group in enumerate(copies)
    ]
