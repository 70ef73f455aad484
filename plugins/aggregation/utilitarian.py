"""Aggregation rule ``utilitarian``: the mean over groups of each group's vote share.

Social choice's utilitarian welfare (the sum of utilities) applied to groups of annotators,
as in pluralistic alignment (Sorensen et al. 2024, "A Roadmap to Pluralistic Alignment",
https://arxiv.org/abs/2402.05070). With s_g the first side's vote share within group g of
the attribute ``by`` (ties count ½) and w_g the group's weight (equal unless ``weights`` is given):

    share = Σ_g w_g · s_g / Σ_g w_g      over the groups that voted on the pair
    chosen = the side with share > ½, probability = max(share, 1 − share);  share = ½ → a tie

Trades off: each group counts by its weight, not by how many of its members happened to
annotate, so a large group cannot drown a small one by numbers alone; but it is still an
average, and a group that strongly objects is outweighed when the others lean the other way.
Every voter needs a group of ``by`` (a missing one is an error, not a silent drop).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from prefcore import hookimpl
from prefcore.aggregation import PairVotes
from prefcore.aggregation import Target
from prefcore.errors import ConfigError
from prefcore.methods import AggregationRule
from prefcore.methods import option

NAME = "utilitarian"


@dataclass(frozen=True)
class UtilitarianConfig:
    by: str = option(doc="the group attribute, e.g. 'community' (annotator_groups or the participants table)")
    weights: Mapping[str, float] = option(
        default_factory=dict, doc="weight per group, e.g. population shares (empty: every group counts equally)"
    )

    def __post_init__(self) -> None:
        if not self.by.strip():
            raise ConfigError("by must name a group attribute, e.g. by = 'community'.", method=NAME, field="by")
        bad = {group: weight for group, weight in self.weights.items() if not weight > 0}
        if bad:
            raise ConfigError(f"weights must be > 0, got {bad}.", method=NAME, field="weights")


class Utilitarian(AggregationRule):
    """The mean over groups of each group's vote share (optionally weighted): every group counts, not every vote.

    Trades off: a large group cannot drown a small one by numbers, but it is an average: a
    group that strongly objects is outweighed when the others lean the other way.
    """

    name = NAME
    config_cls = UtilitarianConfig

    def aggregate(self, votes: PairVotes) -> Target:
        shares = votes.group_shares(self.config.by)
        weights = self.config.weights
        unweighted = sorted(group for group in shares if weights and group not in weights)
        if unweighted:
            raise ConfigError(
                f"weights gives no weight to the group(s) {unweighted} of {self.config.by!r}; "
                f"weights covers {sorted(weights)}.",
                method=NAME,
                field="weights",
            )
        weight = {group: weights.get(group, 1.0) for group in shares}
        share = sum(weight[group] * shares[group] for group in shares) / sum(weight.values())
        return Target(share, details={"group_shares": shares})


@hookimpl
def prefcore_register_aggregation_rules() -> list[type[AggregationRule]]:
    return [Utilitarian]
