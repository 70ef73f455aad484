"""Alignment checks on candidate completions: a scorer and the range its score must fall in.

A check is any scorer prefcore has (a ``[[reward]]`` entry: a reward model, an ensemble,
a rule, a verifiable checker) or the string-pattern refusal detector, with bounds:

    [[check]]
    kind = "rule"               # any [[reward]] kind and its options
    method = "demo_rule"
    min = 0.0                   # fails when the score is below min

    [[check]]
    kind = "refusal"            # prefcore.refusal.RefusalDetector: 1 = refusal, 0 = not
    name = "no_refusal"
    max = 0.5                   # fails when the candidate refuses
    patterns = ["\\bcan not\\b"] # optional; prefixes = [...] replaces the defaults

A candidate passes when every check's score lies in ``[min, max]`` (either bound may be
left out, not both). Reward entries are planned by ``prefcore.rewards.plan_rewards`` and
built by ``build_reward``, so a check scores exactly as the same ``[[reward]]`` entry would.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from typing import Any

from prefcore.errors import ConfigError
from prefcore.refusal import RefusalDetector
from prefcore.rewards import CombinedReward
from prefcore.rewards import RewardComponent
from prefcore.rewards import build_reward
from prefcore.rewards import plan_rewards

if TYPE_CHECKING:
    from prefcore.registry import Registry

__all__ = ["CHECK_SECTION", "REFUSAL_KIND", "CandidateCheck", "build_checks"]

CHECK_SECTION = "check"
REFUSAL_KIND = "refusal"


@dataclass(frozen=True)
class CandidateCheck:
    """A scorer and the range ``[minimum, maximum]`` its score must lie in for a candidate to pass.

    Arguments:
        name: how outputs name the check.
        reward: the scorer, as a one-component ``CombinedReward`` (its total is the score).
        minimum, maximum: the bounds; None = unbounded on that side (not both).
    """

    name: str
    reward: CombinedReward
    minimum: float | None = None
    maximum: float | None = None

    def __post_init__(self) -> None:
        if self.minimum is None and self.maximum is None:
            raise ConfigError(f"check {self.name!r} needs min, max or both: the range a passing score lies in.")
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise ConfigError(f"check {self.name!r}: min = {self.minimum} is above max = {self.maximum}.")

    def passes(self, score: float) -> bool:
        """Whether ``score`` lies in the check's range."""
        if self.minimum is not None and score < self.minimum:
            return False
        return self.maximum is None or score <= self.maximum

    def scores(self, prompts: Sequence[Any], completions: Sequence[str], answers: Sequence[Any] | None) -> list[float]:
        """The check's score of each completion."""
        return [float(value) for value in self.reward(prompts, completions, answers).total]


def _bound(label: str, entry: dict[str, Any], key: str) -> float | None:
    value = entry.pop(key, None)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{label}: {key} must be a finite number; got {value!r}.", field=f"{CHECK_SECTION}.{key}")
    return float(value)


def build_checks(
    entries: Sequence[Mapping[str, Any]] | None,
    registry: Registry | None = None,
    *,
    where: str = "",
    device: str = "cpu",
) -> tuple[CandidateCheck, ...]:
    """The ``[[check]]`` entries as checks, each refused with a ``ConfigError`` naming it when malformed.

    Arguments:
        entries: the run file's ``check`` tables.
        registry: the plugins rule checks come from (default: a fresh one from the environment).
        where: how errors name the file (``"run.toml: "``).
        device: where saved reward models are loaded.
    """
    checks: list[CandidateCheck] = []
    names: set[str] = set()
    for index, raw in enumerate(entries or ()):
        label = f"{where}[[{CHECK_SECTION}]] #{index + 1}"
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{label} must be a table; got {raw!r}.", field=CHECK_SECTION)
        entry = dict(raw)
        minimum, maximum = _bound(label, entry, "min"), _bound(label, entry, "max")
        if minimum is None and maximum is None:
            raise ConfigError(
                f"{label} needs min, max or both: a candidate passes when its score lies in [min, max].",
                field=f"{CHECK_SECTION}.min",
            )
        if entry.get("kind") == REFUSAL_KIND:
            entry.pop("kind")
            name = entry.pop("name", REFUSAL_KIND)
            detector = RefusalDetector.from_options(entry)
            if entry:
                raise ConfigError(
                    f"{label} (kind = 'refusal') has no option {sorted(entry)[0]!r}. Accepted: kind, name, min, max, "
                    "prefixes, patterns.",
                    field=f"{CHECK_SECTION}.{sorted(entry)[0]}",
                )
            reward = CombinedReward((RewardComponent(name, detector, 1.0, "string-pattern refusal detector"),))
        else:
            plan = plan_rewards([entry], registry, has_trained_model=False, where=f"{label}: ")
            reward = build_reward(plan, device=device)
            name = plan.specs[0].name
        if name in names:
            raise ConfigError(f'{label}: another check is named {name!r}; give it name = "...".', field=CHECK_SECTION)
        names.add(name)
        checks.append(CandidateCheck(name, reward, minimum, maximum))
    return tuple(checks)
