"""Aggregation rule ``egalitarian``: a pair is preferred only as strongly as its least-satisfied group prefers it.

Rawls' maximin (the welfare of the worst-off) applied to groups of annotators, as in
pluralistic alignment (Sorensen et al. 2024, "A Roadmap to Pluralistic Alignment",
https://arxiv.org/abs/2402.05070). With s_g the first side's vote share within group g of
the attribute ``by`` (ties count ½):

    share = min_g s_g   if every group leans to the first side  (min_g s_g > ½)
    share = max_g s_g   if every group leans to the second side (max_g s_g < ½)
    share = ½ (a tie)   otherwise: the groups lean different ways
    i.e. share = the value of [min_g s_g, max_g s_g] closest to ½

So the target is the least-satisfied group's share of the side chosen, and no side is
imposed on a group that prefers the other.

Trades off: no group's preference is ever overridden, at the cost of signal. The target is
only as confident as the least-convinced group, and pairs on which groups split become ties,
which most objectives skip. It says where a policy may not go rather than where it should.
Every voter needs a group of ``by`` (a missing one is an error, not a silent drop).
"""

from __future__ import annotations

from dataclasses import dataclass

from prefcore import hookimpl
from prefcore.aggregation import PairVotes
from prefcore.aggregation import Target
from prefcore.errors import ConfigError
from prefcore.methods import AggregationRule
from prefcore.methods import option

NAME = "egalitarian"


@dataclass(frozen=True)
class EgalitarianConfig:
    by: str = option(doc="the group attribute, e.g. 'community' (annotator_groups or the participants table)")

    def __post_init__(self) -> None:
        if not self.by.strip():
            raise ConfigError("by must name a group attribute, e.g. by = 'community'.", method=NAME, field="by")


class Egalitarian(AggregationRule):
    """The least-satisfied group's share of the chosen side; a tie where groups lean different ways.

    Trades off: no group's preference is overridden, at the cost of signal: targets are only as
    confident as the least-convinced group, and pairs that split groups become ties.
    """

    name = NAME
    config_cls = EgalitarianConfig

    def aggregate(self, votes: PairVotes) -> Target:
        shares = votes.group_shares(self.config.by)
        low, high = min(shares.values()), max(shares.values())
        share = min(max(0.5, low), high)
        return Target(share, details={"group_shares": shares})


@hookimpl
def prefcore_register_aggregation_rules() -> list[type[AggregationRule]]:
    return [Egalitarian]
