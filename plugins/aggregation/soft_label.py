"""Aggregation rule ``soft_label``: the vote share becomes the pair's soft target (``probability``).

Learning from the distribution of annotators' answers rather than its mode (Uma et al. 2021,
"Learning from Disagreement: A Survey", https://doi.org/10.1613/jair.1.12752). With votes 1
(first side), 0 (second) and ½ (a tie), pooled over every annotator:

    share       = Σ votes / number of votes
    chosen      = the side with share > ½,  probability = max(share, 1 − share)
    share = ½   → a tie (probability ½)

This is what ``[feedback] combine = "vote_share"`` of the ``annotations`` source has always
done. Trades off: keeps how split the annotators were (3 of 4 gives 0.75, not 1), which
objectives that read ``probability`` (cdpo, robust_dpo, ipo, exo_pair, nca_pair, sppo_hard)
train on; but every annotator counts once, so a group with more annotators moves the
target more, and objectives that ignore ``probability`` see a plain pair.
"""

from __future__ import annotations

from prefcore import hookimpl
from prefcore.aggregation import PairVotes
from prefcore.aggregation import Target
from prefcore.methods import AggregationRule

NAME = "soft_label"


class SoftLabel(AggregationRule):
    """The pooled vote share as the pair's soft label; an even split is a tie.

    Trades off: keeps how split the annotators were, but every annotator counts once, so the
    group with more annotators moves the target more.
    """

    name = NAME

    def aggregate(self, votes: PairVotes) -> Target:
        return Target(votes.share)


@hookimpl
def prefcore_register_aggregation_rules() -> list[type[AggregationRule]]:
    return [SoftLabel]
