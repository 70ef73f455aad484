"""Inference-time alignment around any causal LM: best-of-n, candidate checks, a fallback, RA-LLM.

For each prompt ``AlignedGenerator.generate`` does, in order:

1. sample n candidates from the model (``prefcore.engine.rollout.sample_rollouts``, seeded);
2. score each with the reward (any ``[[reward]]`` plan built by ``prefcore.rewards.build_reward``:
   total = Σ weight · component) and run every check (``prefcore.inference.checks``);
3. if the robustness check is on and RA-LLM refuses the prompt, answer the fallback;
4. else answer the highest-reward candidate that passes every check (the first on ties), or
   the fallback when none passes.

Every candidate is kept with its reward components, check scores and log-probability, so
the choice can be audited line by line. Each decision also carries the best-of-n KL bound
log n − (n − 1)/n and Beirami et al.'s estimate from the highest-reward candidate's
log-probability (``prefcore.inference.kl``), which says how far reranking moved from the
model's own distribution.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from prefcore.engine.rollout import RolloutSettings
from prefcore.engine.rollout import sample_rollouts
from prefcore.errors import ConfigError
from prefcore.evaluation import Scorer
from prefcore.inference.checks import CandidateCheck
from prefcore.inference.kl import best_of_n_kl_bound
from prefcore.inference.kl import best_of_n_kl_estimate
from prefcore.inference.robustness import CopyCheck
from prefcore.inference.robustness import RobustnessConfig
from prefcore.inference.robustness import RobustnessResult
from prefcore.inference.robustness import robust_refusals
from prefcore.methods import option
from prefcore.refusal import REFUSAL_TEXT
from prefcore.refusal import RefusalDetector
from prefcore.rewards import CombinedReward
from prefcore.rewards import RewardComponent

__all__ = [
    "AlignedGenerator",
    "Candidate",
    "Decision",
    "GenerateSettings",
    "model_refusal_check",
    "summarize",
]

CHOSEN = "best_of_n"
ALL_FAILED = "all_candidates_failed"
ROBUSTNESS = "robustness_check"


@dataclass(frozen=True)
class GenerateSettings:
    """How candidates are sampled and what a refused request receives (``[generate]`` of a run file)."""

    n: int = option(4, doc="candidates sampled per prompt; the best passing one is answered")
    max_new_tokens: int = option(64, doc="most new tokens per candidate")
    temperature: float = option(1.0, doc="sampling temperature (the base policy KL is measured against)")
    top_p: float = option(1.0, doc="nucleus sampling mass (1 = off)")
    seed: int = option(0, doc="seed of the sampling (batch b draws with seed + b): same seed, model, batches: same")
    batch_size: int = option(16, doc="prompts sampled together (n candidates each)")
    fallback: str = option(REFUSAL_TEXT, doc="the reply when every candidate fails or the request is refused")

    def __post_init__(self) -> None:
        if not isinstance(self.n, int) or isinstance(self.n, bool) or self.n < 1:
            raise ConfigError(f"generate n must be a whole number >= 1; got {self.n!r}.", field="generate.n")
        if not isinstance(self.batch_size, int) or isinstance(self.batch_size, bool) or self.batch_size < 1:
            raise ConfigError(
                f"generate batch_size must be a whole number >= 1; got {self.batch_size!r}.",
                field="generate.batch_size",
            )
        if not isinstance(self.fallback, str):
            raise ConfigError(f"generate fallback must be text; got {self.fallback!r}.", field="generate.fallback")
        self.rollout_settings()  # sampling options are checked where sampling defines them

    def rollout_settings(self) -> RolloutSettings:
        return RolloutSettings(
            samples_per_prompt=self.n,
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed,
        )


@dataclass(frozen=True)
class Candidate:
    """One sampled completion with everything the choice read.

    Attributes:
        text: the completion.
        reward: the total reward (0 when the generator has no reward).
        components: each reward component's score by name.
        checks: each check's score by name.
        failed: the checks it failed (``passed`` is True when there are none).
        logp: Σ_t log π(y_t | x, y_<t) at the sampling temperature.
        truncated: whether it ran out of tokens before a stop token.
    """

    text: str
    reward: float
    components: Mapping[str, float]
    checks: Mapping[str, float]
    failed: tuple[str, ...]
    logp: float
    truncated: bool

    @property
    def passed(self) -> bool:
        return not self.failed

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "reward": self.reward,
            "components": dict(self.components),
            "checks": dict(self.checks),
            "passed": self.passed,
            "failed_checks": list(self.failed),
            "logp": self.logp,
            "truncated": self.truncated,
        }


@dataclass(frozen=True)
class Decision:
    """What one prompt was answered, why, and every candidate that was considered.

    Attributes:
        prompt: the prompt as given.
        completion: the answer (a candidate's text, or the fallback).
        chosen: the index of the answered candidate, or None when the fallback was answered.
        reason: ``best_of_n``, ``all_candidates_failed`` or ``robustness_check``.
        candidates: every candidate, in sampling order.
        robustness: RA-LLM's check of the prompt, when it ran.
        kl_estimate: Beirami et al.'s KL̂ of best-of-n for this prompt (``prefcore.inference.kl``).
        kl_bound: log n − (n − 1)/n.
    """

    prompt: Any
    completion: str
    chosen: int | None
    reason: str
    candidates: tuple[Candidate, ...]
    robustness: RobustnessResult | None = None
    kl_estimate: float = float("nan")
    kl_bound: float = 0.0

    @property
    def refused(self) -> bool:
        return self.chosen is None

    def to_dict(self) -> dict[str, Any]:
        prompt = (
            self.prompt
            if isinstance(self.prompt, str)
            else [{"role": turn.role, "content": turn.content} for turn in self.prompt]
        )
        return {
            "prompt": prompt,
            "completion": self.completion,
            "chosen": self.chosen,
            "reason": self.reason,
            "refused": self.refused,
            "kl_estimate": self.kl_estimate,
            "kl_bound": self.kl_bound,
            "candidates": [candidate.to_dict() for candidate in self.candidates],
            "robustness": None if self.robustness is None else self.robustness.to_dict(),
        }


def model_refusal_check(
    model: Any, tokenizer: Any, detector: RefusalDetector, *, max_new_tokens: int = 10, prefix: str = ""
) -> CopyCheck:
    """RA-LLM's alignment check: the model replies greedily (≤ ``max_new_tokens``), ``detector`` reads the reply."""
    settings = RolloutSettings(samples_per_prompt=1, max_new_tokens=max_new_tokens, temperature=0.0)

    def check(prompts: Sequence[Any]) -> list[bool]:
        replies = sample_rollouts(model, tokenizer, prompts, settings, prefix=prefix).texts
        return [detector.is_refusal(reply) for reply in replies]

    return check


def _as_reward(reward: CombinedReward | Scorer | None) -> CombinedReward | None:
    if reward is None or isinstance(reward, CombinedReward):
        return reward
    return CombinedReward((RewardComponent("reward", reward),))


@dataclass
class AlignedGenerator:
    """Best-of-n with alignment checks and a fallback around ``model`` and ``tokenizer``.

    Arguments:
        model, tokenizer: any transformers causal LM and its tokenizer.
        reward: what ranks candidates: a ``CombinedReward`` (``build_reward``) or any scorer;
            None answers the first passing candidate.
        checks: candidate checks (``build_checks``); a candidate must pass them all.
        settings: sampling and the fallback text.
        robustness: RA-LLM's check; None = off.
        robustness_check: what fires on a token-dropped copy; default
            ``model_refusal_check(model, tokenizer, RefusalDetector())``.
        prefix: condition text put before each prompt.
    """

    model: Any
    tokenizer: Any
    reward: CombinedReward | Scorer | None = None
    checks: Sequence[CandidateCheck] = ()
    settings: GenerateSettings = field(default_factory=GenerateSettings)
    robustness: RobustnessConfig | None = None
    robustness_check: CopyCheck | None = None
    prefix: str = ""

    def __post_init__(self) -> None:
        self.reward = _as_reward(self.reward)
        if self.robustness is not None and self.robustness_check is None:
            self.robustness_check = model_refusal_check(
                self.model,
                self.tokenizer,
                RefusalDetector(),
                max_new_tokens=self.robustness.max_new_tokens,
                prefix=self.prefix,
            )

    def generate(self, prompts: Sequence[Any], answers: Sequence[Any] | None = None) -> list[Decision]:
        """One ``Decision`` per prompt; ``answers`` are reference answers for verifiable rewards and checks."""
        prompts = list(prompts)
        if not prompts:
            raise ValueError("AlignedGenerator.generate needs at least one prompt.")
        if answers is not None and len(answers) != len(prompts):
            raise ValueError(f"got {len(answers)} reference answers for {len(prompts)} prompts.")
        size = self.settings.batch_size
        decisions: list[Decision] = []
        for start in range(0, len(prompts), size):
            chunk = None if answers is None else list(answers[start : start + size])
            decisions += self._generate_batch(prompts[start : start + size], chunk, start, start // size)
        return decisions

    def _generate_batch(
        self, prompts: list[Any], answers: list[Any] | None, first_index: int, batch: int
    ) -> list[Decision]:
        """One sampling batch; ``first_index`` numbers its prompts for the robustness copies' seeds."""
        n = self.settings.n
        rollouts = sample_rollouts(
            self.model,
            self.tokenizer,
            prompts,
            self.settings.rollout_settings(),
            prefix=self.prefix,
            seed=self.settings.seed + batch,
        )
        texts = list(rollouts.texts)
        per_completion = [rollouts.prompt_of(index) for index in range(len(texts))]
        expanded = None if answers is None else [answers[index // n] for index in range(len(texts))]
        if self.reward is not None:
            scores = self.reward(per_completion, texts, expanded)
            totals = [float(value) for value in scores.total]
            components = {name: [float(v) for v in values] for name, values in scores.components.items()}
        else:
            totals, components = [0.0] * len(texts), {}
        check_scores = {check.name: check.scores(per_completion, texts, expanded) for check in self.checks}
        robust: list[RobustnessResult | None] = [None] * len(prompts)
        if self.robustness is not None:
            assert self.robustness_check is not None
            robust = list(
                robust_refusals(prompts, self.tokenizer, self.robustness, self.robustness_check, start=first_index)
            )
        bound = best_of_n_kl_bound(n)
        decisions = []
        for index, prompt in enumerate(prompts):
            rows = range(index * n, (index + 1) * n)
            candidates = tuple(
                Candidate(
                    text=texts[row],
                    reward=totals[row],
                    components={name: values[row] for name, values in components.items()},
                    checks={name: values[row] for name, values in check_scores.items()},
                    failed=tuple(
                        check.name for check in self.checks if not check.passes(check_scores[check.name][row])
                    ),
                    logp=float(sum(rollouts.sampling_logps[row])),
                    truncated=rollouts.truncated[row],
                )
                for row in rows
            )
            best = max(range(n), key=lambda k: (candidates[k].reward, -k))
            estimate = best_of_n_kl_estimate(n, min(1.0, math.exp(candidates[best].logp)))
            passing = [k for k in range(n) if candidates[k].passed]
            if robust[index] is not None and robust[index].refused:  # type: ignore[union-attr]
                chosen, reason = None, ROBUSTNESS
            elif not passing:
                chosen, reason = None, ALL_FAILED
            else:
                chosen, reason = max(passing, key=lambda k: (candidates[k].reward, -k)), CHOSEN
            completion = self.settings.fallback if chosen is None else candidates[chosen].text
            decisions.append(Decision(prompt, completion, chosen, reason, candidates, robust[index], estimate, bound))
        return decisions


def summarize(decisions: Sequence[Decision]) -> dict[str, float]:
    """Rates and means over decisions: refusals by reason, chosen and candidate reward, KL against its bound."""
    count = len(decisions)
    answered = [d for d in decisions if d.chosen is not None]
    rewards = [c.reward for d in decisions for c in d.candidates]
    estimates = [d.kl_estimate for d in decisions if not math.isnan(d.kl_estimate)]
    return {
        "num_prompts": float(count),
        "refusal_rate": sum(d.refused for d in decisions) / count,
        "all_failed_rate": sum(d.reason == ALL_FAILED for d in decisions) / count,
        "robustness_refusal_rate": sum(d.reason == ROBUSTNESS for d in decisions) / count,
        "chosen_reward": (sum(d.candidates[d.chosen].reward for d in answered) / len(answered))  # type: ignore[index]
        if answered
        else float("nan"),
        "candidate_reward": sum(rewards) / len(rewards) if rewards else float("nan"),
        "kl_estimate": sum(estimates) / len(estimates) if estimates else float("nan"),
        "kl_bound": decisions[0].kl_bound if decisions else float("nan"),
    }
