"""Aggregation rule ``jury``: a seeded jury of annotators, seated by group composition, gives the verdict.

Jury learning (Gordon et al. 2022, "Jury Learning: Integrating Dissenting Voices into
Machine Learning Models", https://arxiv.org/abs/2202.02950) makes explicit whose voices
decide a label: a jury of ``size`` seats is shared among the groups of the attribute ``by``
by ``composition`` (largest-remainder seats; empty: equal weight to the groups that voted on
the pair; a group outside the composition has no seat), and each seat is filled by one vote
drawn at random, with replacement, from that group's votes on the pair. Votes are 1 (first
side), 0 (second), ½ (a tie):

    verdict(jury) = 1 if mean(seated votes) > ½, 0 if < ½, ½ if = ½
    share         = mean over ``juries`` seeded juries of verdict(jury)

One jury (the default) gives a hard label, as a jury's verdict is; several give the share of
verdicts as a soft label. Draws are seeded per pair (``seed`` and the pair), so a run is
reproducible and does not depend on the order of the data.

Trades off: the composition of voices becomes a stated decision (half the seats to a
minority group, say) rather than an accident of who was recruited; but one jury is a random
draw, so a single verdict is noisy (more juries average it toward the composition-weighted
share), and a pair none of whose voters belongs to a seated group cannot be judged: it is
dropped and counted.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass

from prefcore import hookimpl
from prefcore.aggregation import PairVotes
from prefcore.aggregation import Target
from prefcore.aggregation import seat_counts
from prefcore.errors import ConfigError
from prefcore.methods import AggregationRule
from prefcore.methods import check_positive
from prefcore.methods import option

NAME = "jury"


@dataclass(frozen=True)
class JuryConfig:
    by: str = option(doc="the group attribute whose groups share the seats, e.g. 'community'")
    composition: Mapping[str, float] = option(
        default_factory=dict, doc="seat weight per group (empty: equal weight to the groups that voted on the pair)"
    )
    size: int = option(12, doc="seats per jury")
    juries: int = option(1, doc="juries per pair: 1 gives a hard verdict, more the share of verdicts")
    seed: int = option(0, doc="seed of the draws (combined with each pair, so order does not matter)")

    def __post_init__(self) -> None:
        if not self.by.strip():
            raise ConfigError("by must name a group attribute, e.g. by = 'community'.", method=NAME, field="by")
        check_positive(NAME, "size", self.size)
        check_positive(NAME, "juries", self.juries)
        bad = {group: weight for group, weight in self.composition.items() if weight < 0}
        if bad or (self.composition and not sum(self.composition.values()) > 0):
            raise ConfigError(
                f"composition needs weights >= 0 with a positive sum, got {dict(self.composition)}.",
                method=NAME,
                field="composition",
            )


class Jury(AggregationRule):
    """A seeded jury seated by group composition decides each pair (jury learning).

    Trades off: whose voices decide becomes a stated composition rather than an accident of
    recruitment, at the cost of sampling noise (more juries average it) and of dropping pairs
    that no voter of a seated group answered.
    """

    name = NAME
    config_cls = JuryConfig

    def aggregate(self, votes: PairVotes) -> Target:
        config = self.config
        # Sorted, so that the draws depend on the votes and the seed, never on the order of the data.
        by_group = votes.by_group(config.by)
        groups = {
            group: sorted(by_group[group], key=lambda vote: (vote.annotator or "", vote.value))
            for group in sorted(by_group)
        }
        weights = dict(config.composition) or {group: 1.0 for group in groups}
        seats = {group: count for group, count in seat_counts(weights, config.size).items() if count}
        empty = sorted(group for group in seats if group not in groups)
        if empty:
            return Target.drop(f"no vote from {config.by}={empty[0]} to seat")
        rng = random.Random(f"{config.seed}:{votes.key!r}")
        verdicts = []
        for _ in range(config.juries):
            seated = [rng.choice(groups[group]).value for group, count in seats.items() for _ in range(count)]
            mean = sum(seated) / len(seated)
            verdicts.append(1.0 if mean > 0.5 else 0.0 if mean < 0.5 else 0.5)
        share = sum(verdicts) / len(verdicts)
        return Target(share, hard=config.juries == 1, details={"jury_seats": seats})


@hookimpl
def prefcore_register_aggregation_rules() -> list[type[AggregationRule]]:
    return [Jury]
