"""Per-group evaluation: what the group evaluators share, public so a third party can write the same.

A policy can serve a population on average and one of its groups badly. The group
evaluators (``group_win_rate``, ``group_preference_accuracy``, ``distributional_alignment``)
report a metric per group g of one attribute, then

    worst_group_<metric> = min_g metric_g        <metric>_gap = max_g metric_g − min_g metric_g

(for a distance, where lower is better, the worst group is the largest). The held-out
records say which group judged them in ``annotator_groups``; a prompt may name the group it
asks for with ``prefcore.groups.group_prefix`` (a group-conditioned policy).

The distributional score compares the policy's preference distribution with each group's
vote share s_g on a pair: the policy prefers the first reply with p = σ(r(x, a) − r(x, b)),
r its implicit reward, and

    JS(p, s) = ½ KL(P ‖ M) + ½ KL(S ‖ M),  M = (P + S) / 2,   P = Bernoulli(p), S = Bernoulli(s)
    distance = √JS with logarithms base 2, in [0, 1] (0: the same distribution)
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

from prefcore.data import PairwiseComparison
from prefcore.errors import ConfigError
from prefcore.evaluation import EvaluationContext
from prefcore.evaluation import EvaluationInputError
from prefcore.evaluation import sequence_logps
from prefcore.evaluation import tokenize_completion
from prefcore.lazy import lazy_module

torch = lazy_module("torch")

__all__ = [
    "bernoulli_js_distance",
    "group_pairs",
    "implicit_pair_rewards",
    "summarise_groups",
]


def bernoulli_js_distance(p: float, q: float) -> float:
    """Jensen–Shannon distance (base 2, in [0, 1]) between Bernoulli(p) and Bernoulli(q)."""

    def kl(a: float, b: float) -> float:
        total = 0.0
        for x, y in ((a, b), (1.0 - a, 1.0 - b)):
            if x > 0.0:
                total += x * math.log2(x / y)
        return total

    m = (p + q) / 2
    return math.sqrt(max(0.0, 0.5 * kl(p, m) + 0.5 * kl(q, m)))


def group_pairs(
    records: Iterable[Any], attribute: str, evaluator: str, *, keep_ties: bool = False
) -> dict[str, list[PairwiseComparison]]:
    """The held-out pairwise records per group of ``attribute`` (records without that group are left out).

    Raises ``EvaluationInputError`` when no held-out pair names a group of ``attribute``.
    """
    found: dict[str, list[PairwiseComparison]] = {}
    for record in records:
        if not isinstance(record, PairwiseComparison) or (record.tie and not keep_ties):
            continue
        group = record.annotator_groups.get(attribute)
        if group is not None:
            found.setdefault(group, []).append(record)
    if not found:
        raise EvaluationInputError(
            evaluator,
            f"held-out pairs with a {attribute!r} group (annotator_groups)",
            "Evaluate on records that carry annotator_groups (a participants table, prefcore annotate --group, "
            "or the demo_groups feedback source).",
        )
    return dict(sorted(found.items()))


def summarise_groups(values: Mapping[str, float], metric: str, *, lower_is_better: bool = False) -> dict[str, float]:
    """``<metric>/<group>`` per group, ``worst_group_<metric>`` and ``<metric>_gap`` (best − worst, ≥ 0)."""
    if not values:
        raise ConfigError(f"no group has a {metric} to summarise.")
    out = {f"{metric}/{group}": float(value) for group, value in values.items()}
    worst = max(values.values()) if lower_is_better else min(values.values())
    out[f"worst_group_{metric}"] = float(worst)
    out[f"{metric}_gap"] = float(max(values.values()) - min(values.values()))
    return out


def implicit_pair_rewards(
    context: EvaluationContext, pairs: Sequence[PairwiseComparison], *, batch_size: int = 8, max_length: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """The policy's implicit rewards ``r(x, chosen)`` and ``r(x, rejected)``, each ``[P]`` float64.

    r = β · (log π − log π_ref) with β ``context.beta``; log π alone without a reference.
    Prompts are conditioned on ``context.generation_prefix``, as the policy is used.
    """
    chosen: list[torch.Tensor] = []
    rejected: list[torch.Tensor] = []
    for start in range(0, len(pairs), batch_size):
        batch = pairs[start : start + batch_size]
        rows = [
            tokenize_completion(
                context.tokenizer,
                pair.prompt,
                completion,
                max_length=max_length,
                prefix=context.generation_prefix,
                where=str(pair.provenance) if pair.provenance else "held-out record",
            )
            for pair in batch
            for completion in (pair.chosen, pair.rejected)
        ]
        rewards = sequence_logps(context.policy, rows, context)
        if context.reference is not None:
            rewards = context.beta * (rewards - sequence_logps(context.reference, rows, context))
        chosen.append(rewards[0::2])
        rejected.append(rewards[1::2])
    return torch.cat(chosen).double(), torch.cat(rejected).double()
