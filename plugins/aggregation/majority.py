"""Aggregation rule ``majority``: the side most annotators chose becomes a hard label.

The usual way to turn several labellers into one label (InstructGPT, HH-RLHF keep one
comparison per pair). With votes 1 (first side), 0 (second) and ½ (a tie):

    share  = Σ votes / number of votes
    chosen = the first side if share > ½, the second if share < ½;  share = ½: dropped (counted)

Trades off: a clean, confident label that every objective can use, against everything the
vote split said. A 51/49 split trains like 100/0, and where one group outnumbers another the
smaller group's preference disappears from the data however strongly it was held. Evenly
split pairs give no label and are dropped, and the summary counts them.
"""

from __future__ import annotations

from prefcore import hookimpl
from prefcore.aggregation import PairVotes
from prefcore.aggregation import Target
from prefcore.methods import AggregationRule

NAME = "majority"


class Majority(AggregationRule):
    """The side most annotators chose, as a hard label; evenly split pairs are dropped and counted.

    Trades off: clean labels for every objective, against the size of the minority: a 51/49
    split trains like 100/0, and a smaller group's preference disappears from the data.
    """

    name = NAME

    def aggregate(self, votes: PairVotes) -> Target:
        share = votes.share
        if share == 0.5:
            return Target.drop("tie: votes evenly split")
        return Target(1.0 if share > 0.5 else 0.0, hard=True)


@hookimpl
def prefcore_register_aggregation_rules() -> list[type[AggregationRule]]:
    return [Majority]
