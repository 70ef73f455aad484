"""Aggregation rules on hand-made votes, against targets computed by hand.

Two pairs of the prompt "p", voted on by group A (alice, ann, amy) and group B (bob, ben, bea, bo);
a vote is 1 for the pair's first side ("a" or "c"), 0 for the second, ½ for a tie:

    pair (a, b):  A: 1, 1, 0   (s_A = 2/3)      B: 0, ½       (s_B = 1/4)      pooled 2.5 / 5 = ½
    pair (c, d):  A: 1, 1, 0   (s_A = 2/3)      B: 1, 1, 1, 1 (s_B = 1)        pooled 6 / 7
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from prefcore import hookimpl
from prefcore.aggregation import PairVotes
from prefcore.aggregation import Target
from prefcore.aggregation import Vote
from prefcore.aggregation import aggregate_records
from prefcore.aggregation import aggregate_votes
from prefcore.aggregation import collect_votes
from prefcore.aggregation import create_rule
from prefcore.aggregation import seat_counts
from prefcore.data import PairwiseComparison
from prefcore.errors import ConfigError
from prefcore.errors import DataError
from prefcore.groups import UnknownAttributeError
from prefcore.methods import AggregationRule
from prefcore.plugins.feedback.annotations import Annotations
from prefcore.plugins.feedback.annotations import AnnotationsConfig
from prefcore.registry import PrefcorePluginManager
from prefcore.registry import Provenance
from prefcore.registry import Registry

REGISTRY = Registry.from_environment(third_party=False)

GROUP = {"alice": "A", "ann": "A", "amy": "A", "bob": "B", "ben": "B", "bea": "B", "bo": "B"}


def vote(annotator: str, chosen: str, rejected: str, *, tie: bool = False) -> PairwiseComparison:
    return PairwiseComparison(
        "p", chosen, rejected, tie=tie, annotator_id=annotator, annotator_groups={"community": GROUP[annotator]}
    )


VOTES = [
    vote("alice", "a", "b"),
    vote("ann", "a", "b"),
    vote("amy", "b", "a"),
    vote("bob", "b", "a"),
    vote("ben", "a", "b", tie=True),
    vote("alice", "c", "d"),
    vote("ann", "c", "d"),
    vote("amy", "d", "c"),  # d over c: a 0 for the first side c
    vote("bob", "c", "d"),
    vote("ben", "c", "d"),
    vote("bea", "c", "d"),
    vote("bo", "c", "d"),
]


def targets(name: str, **options: Any) -> tuple[dict[tuple[str, str], tuple[str, float | None, bool]], Any]:
    """(first side, second side) → (chosen, probability, tie) of each record, and the summary."""
    records, summary = aggregate_records(VOTES, name, options, registry=REGISTRY)
    out = {}
    for record in records:
        key = tuple(sorted((record.chosen, record.rejected)))
        out[key] = (record.chosen, record.probability, record.tie)
    return out, summary


def test_collect_votes_orders_each_pair_and_counts_ties_half() -> None:
    pairs = collect_votes(VOTES)
    assert [(p.first, p.second, [v.value for v in p.votes]) for p in pairs] == [
        ("a", "b", [1.0, 1.0, 0.0, 0.0, 0.5]),
        ("c", "d", [1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0]),
    ]
    assert pairs[0].group_shares("community") == {"A": pytest.approx(2 / 3), "B": 0.25}


def test_majority_drops_and_counts_the_even_split() -> None:
    out, summary = targets("majority")
    assert out == {("c", "d"): ("c", None, False)}
    assert (summary.pairs, summary.votes, summary.kept) == (2, 12, 1)
    assert summary.dropped == {"tie: votes evenly split": 1}


def test_soft_label_is_the_pooled_vote_share() -> None:
    out, _ = targets("soft_label")
    assert out[("a", "b")] == ("a", 0.5, True)
    assert out[("c", "d")] == ("c", pytest.approx(6 / 7), False)


def test_utilitarian_is_the_mean_of_group_shares() -> None:
    out, _ = targets("utilitarian", by="community")
    # (a, b): (2/3 + 1/4) / 2 = 11/24 for a, so b is chosen with 13/24.
    assert out[("a", "b")] == ("b", pytest.approx(13 / 24), False)
    assert out[("c", "d")] == ("c", pytest.approx((2 / 3 + 1) / 2), False)


def test_utilitarian_weights_groups() -> None:
    out, _ = targets("utilitarian", by="community", weights={"A": 3.0, "B": 1.0})
    assert out[("a", "b")] == ("a", pytest.approx((3 * 2 / 3 + 1 * 1 / 4) / 4), False)
    with pytest.raises(ConfigError, match=r"no weight to the group\(s\) \['B'\]"):
        targets("utilitarian", by="community", weights={"A": 1.0})


def test_egalitarian_is_the_least_satisfied_groups_share_or_a_tie() -> None:
    out, _ = targets("egalitarian", by="community")
    assert out[("a", "b")] == ("a", 0.5, True)  # A leans a (2/3), B leans b (1/4): a tie
    assert out[("c", "d")] == ("c", pytest.approx(2 / 3), False)  # both lean c: A's 2/3


def test_egalitarian_for_the_second_side_takes_the_largest_share() -> None:
    rule = create_rule("egalitarian", {"by": "g"}, registry=REGISTRY)
    pair = PairVotes("k", "p", "x", "y", PairwiseComparison("p", "x", "y"))
    pair.votes = [_v(0.2, "G1"), _v(0.4, "G2")]
    assert rule.aggregate(pair).share == pytest.approx(0.4)


def _v(value: float, group: str) -> Vote:
    return Vote(value, None, {"g": group})


def test_seat_counts_use_largest_remainders() -> None:
    assert seat_counts({"A": 1, "B": 1, "C": 1}, 4) == {"A": 2, "B": 1, "C": 1}
    assert seat_counts({"A": 0.5, "B": 0.3, "C": 0.2}, 12) == {"A": 6, "B": 4, "C": 2}
    assert seat_counts({"A": 2, "B": 1}, 3) == {"A": 2, "B": 1}


def test_jury_seated_by_composition_follows_the_seated_majority() -> None:
    out, _ = targets("jury", by="community", composition={"B": 1.0}, size=5)
    assert out[("c", "d")] == ("c", None, False)  # B alone: every B vote is for c
    # two seats for a group that votes c, one for a group that votes d: 2/3 → c, whatever the draw
    pair = PairVotes("k", "p", "x", "y", PairwiseComparison("p", "x", "y"))
    pair.votes = [_v(1.0, "G1"), _v(1.0, "G1"), _v(0.0, "G2")]
    rule = create_rule("jury", {"by": "g", "composition": {"G1": 2, "G2": 1}, "size": 3}, registry=REGISTRY)
    assert rule.aggregate(pair) == Target(1.0, hard=True, details={"jury_seats": {"G1": 2, "G2": 1}})
    rule = create_rule("jury", {"by": "g", "composition": {"G1": 1, "G2": 2}, "size": 3}, registry=REGISTRY)
    assert rule.aggregate(pair).share == 0.0


def test_many_juries_give_the_binomial_share_of_verdicts() -> None:
    # Three seats from A's votes (1, 1, 0), drawn with replacement: a verdict for c needs 2+ ones,
    # P = p³ + 3p²(1 − p) with p = 2/3, which is 20/27.
    out, _ = targets("jury", by="community", composition={"A": 1.0}, size=3, juries=20000, seed=7)
    chosen, probability, _ = out[("c", "d")]
    assert chosen == "c"
    assert probability == pytest.approx(20 / 27, abs=0.015)


def test_jury_is_seeded_per_pair_not_per_order() -> None:
    options = {"by": "community", "size": 3, "juries": 5, "seed": 3}
    first = {
        (r.chosen, r.rejected, r.probability) for r in aggregate_records(VOTES, "jury", options, registry=REGISTRY)[0]
    }
    shuffled = VOTES[:]
    random.Random(0).shuffle(shuffled)
    assert {
        (r.chosen, r.rejected, r.probability)
        for r in aggregate_records(shuffled, "jury", options, registry=REGISTRY)[0]
    } == first


def test_jury_drops_a_pair_without_a_voter_of_a_seated_group() -> None:
    out, summary = targets("jury", by="community", composition={"A": 1.0, "C": 1.0})
    assert out == {}
    assert summary.dropped == {"no vote from community=C to seat": 2}


def test_a_group_rule_names_the_annotators_without_a_group_and_the_known_attributes() -> None:
    with pytest.raises(UnknownAttributeError, match="Known attributes: 'community'"):
        aggregate_records(VOTES, "egalitarian", {"by": "region"}, registry=REGISTRY)
    records = [*VOTES, PairwiseComparison("p", "a", "b", annotator_id="zed")]
    with pytest.raises(DataError, match=r"votes of zed have no 'community' group"):
        aggregate_records(records, "utilitarian", {"by": "community"}, registry=REGISTRY)


def test_unknown_rule_lists_the_available_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as excinfo:
        create_rule("majorty", registry=REGISTRY)
    message = str(excinfo.value)
    assert "Did you mean 'majority'" in message
    for name in ("egalitarian", "jury", "majority", "soft_label", "utilitarian"):
        assert name in message
    with pytest.raises(ConfigError, match=r"Available: .*majority"):
        AnnotationsConfig(path=tmp_path / "x.jsonl", aggregation="nope")
    with pytest.raises(ConfigError, match="has no option 'bye'"):
        AnnotationsConfig(path=tmp_path / "x.jsonl", aggregation="egalitarian", aggregation_options={"bye": "g"})


def test_annotations_source_joins_participants_and_aggregates(tmp_path: Path) -> None:
    answers = tmp_path / "answers.jsonl"
    rows = [{k: v for k, v in r.to_dict().items() if k != "annotator_groups"} for r in VOTES]
    answers.write_text("".join(json.dumps(row) + "\n" for row in rows))
    people = tmp_path / "people.csv"
    people.write_text("annotator_id,community\n" + "".join(f"{a},{g}\n" for a, g in GROUP.items()) + "zoe,A\n")
    source = Annotations(
        AnnotationsConfig(
            path=answers, participants=people, aggregation="egalitarian", aggregation_options={"by": "community"}
        )
    )
    records = list(source.records())
    assert [(r.chosen, r.probability, r.tie) for r in records] == [("a", 0.5, True), ("c", pytest.approx(2 / 3), False)]
    assert records[1].metadata["group_shares"] == {"A": pytest.approx(2 / 3), "B": 1.0}
    assert source.participants is not None and source.participants.unknown == ("zoe",)
    assert source.aggregation is not None and source.aggregation.kept == 2


def test_combine_vote_share_is_the_soft_label_rule(tmp_path: Path) -> None:
    path = tmp_path / "answers.jsonl"
    path.write_text("".join(json.dumps(record.to_dict()) + "\n" for record in VOTES))
    soft = aggregate_records(VOTES, "soft_label", registry=REGISTRY)[0]
    assert list(Annotations(AnnotationsConfig(path=path, combine="vote_share")).records()) == soft
    assert soft[1].metadata == {"votes": 7, "annotators": ["alice", "ann", "amy", "bob", "ben", "bea", "bo"]}


class _FirstVoteWins(AggregationRule):
    name = "acme_first_vote_wins"

    def aggregate(self, votes: PairVotes) -> Target:
        return Target(votes.votes[0].value, hard=True)


def test_hook_prefcore_register_aggregation_rules() -> None:
    class Plugin:
        @staticmethod
        @hookimpl
        def prefcore_register_aggregation_rules() -> list[type[AggregationRule]]:
            return [_FirstVoteWins]

    manager = PrefcorePluginManager()
    manager.register_plugin(Plugin, Provenance(plugin="acme"))
    registry = Registry(manager)
    assert registry.names("aggregation") == ["acme_first_vote_wins"]
    rule = create_rule("acme_first_vote_wins", registry=registry)
    records, summary = aggregate_votes(VOTES, rule)
    assert [(r.chosen, r.probability) for r in records] == [("a", None), ("c", None)]
    assert summary.rule == "acme_first_vote_wins"


def test_preference_file_source_aggregates_by_rule(tmp_path: Path) -> None:
    path = tmp_path / "votes.jsonl"
    rows = [{k: v for k, v in r.to_dict().items() if k != "annotator_groups"} for r in VOTES]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    people = tmp_path / "people.jsonl"
    people.write_text("".join(json.dumps({"annotator_id": a, "community": g}) + "\n" for a, g in GROUP.items()))
    options = {"path": str(path), "participants": str(people), "aggregation": "utilitarian"}
    source = REGISTRY.create("feedback", "preference_file", {**options, "aggregation_options": {"by": "community"}})
    records = list(source.records())
    assert [(r.chosen, r.probability) for r in records] == [("b", pytest.approx(13 / 24)), ("c", pytest.approx(5 / 6))]
    majority = REGISTRY.create("feedback", "preference_file", {"path": str(path), "aggregation": "majority"})
    assert [(r.chosen, r.probability) for r in majority.records()] == [("c", None)]
    assert majority.aggregation.dropped == {"tie: votes evenly split": 1}
    with pytest.raises(ConfigError, match=r"aggregation = 'majoritty'.*Available: egalitarian, jury, majority"):
        REGISTRY.create("feedback", "preference_file", {"path": str(path), "aggregation": "majoritty"})
