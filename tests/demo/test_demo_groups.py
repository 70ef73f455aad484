"""The two-community demo world: rules, panel, minimal pairs, votes; the demo_groups source; the report."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from prefcore.aggregation import aggregate_records
from prefcore.data import BinaryLabel
from prefcore.data import PairwiseComparison
from prefcore.data.readers import load_preferences
from prefcore.demo import groups
from prefcore.demo import task
from prefcore.demo.tokenizer import build_tokenizer
from prefcore.disagreement import disagreement
from prefcore.errors import ConfigError
from prefcore.groups import GroupJudge
from prefcore.groups import group_prefix
from prefcore.groups import split_group_prefix
from prefcore.plugins.feedback.demo_groups import DemoGroups
from prefcore.plugins.feedback.demo_groups import DemoGroupsConfig

SKY = "what colour is the sky ?"


@pytest.mark.parametrize(
    ("reply", "fast", "full"),
    [
        ("sure , blue", 2.7, 2.7),  # 2 + 1 - 0.3: no full sentence
        ("sure , the sky is blue", 2.4, 3.4),  # 2 + 1 - 0.6 (+ 1 for full)
        ("the sky is red", -1.4, -1.4),  # a wrong full sentence earns no bonus
        ("ugh , the sky is blue", 0.4, 1.4),  # 2 - 1 - 0.6 (+ 1)
        ("i do not know", -0.4, -0.4),
    ],
)
def test_community_scores_by_hand(reply: str, fast: float, full: float) -> None:
    assert groups.group_score("fast", SKY, reply) == pytest.approx(fast)
    assert groups.group_score("full", SKY, reply) == pytest.approx(full)
    assert groups.group_score("full", group_prefix("community", "fast") + SKY, reply) == pytest.approx(full)


def test_group_names_are_words_the_demo_tokenizer_knows() -> None:
    """A conditioned policy reads the community from the prompt: its name must not become <unk>."""
    tokenizer = build_tokenizer()
    for group in groups.GROUPS:
        assert tokenizer.convert_tokens_to_ids(group) != tokenizer.unk_token_id


def test_group_prefix_round_trip() -> None:
    assert split_group_prefix("[community: full] " + SKY) == (("community", "full"), SKY)
    assert split_group_prefix(SKY) == (None, SKY)


def test_the_panel_follows_the_shares() -> None:
    panel = groups.annotators({"fast": 0.7, "full": 0.3}, panel=10)
    assert dict(panel.seats) == {"fast": 7, "full": 3}
    assert (len(panel.members["fast"]), len(panel.members["full"])) == (14, 6)
    with pytest.raises(ValueError, match="communities"):
        groups.annotators({"fast": 0.5, "slow": 0.5})


def test_minimal_pairs_differ_on_their_dimension_and_votes_follow_each_rule() -> None:
    pairs = groups.group_pairs(300, seed=3, noise=0.0)
    assert set(Counter(pair.dimension for pair in pairs)) == set(groups.DIMENSIONS)
    for pair in pairs:
        assert len(pair.votes) == 10 and pair.first != pair.second
        for group in groups.GROUPS:
            expected = groups.group_score(group, pair.prompt, pair.first) > groups.group_score(
                group, pair.prompt, pair.second
            )
            assert pair.share(group) == float(expected)  # no noise: the group is unanimous
        agree = pair.share("fast") == pair.share("full")
        assert agree == (pair.dimension != "length"), pair  # only length splits the communities


def test_noise_flips_about_that_share_of_votes() -> None:
    pairs = groups.group_pairs(400, seed=4, noise=0.2)
    flipped = total = 0
    for pair in pairs:
        for _, group, value in pair.votes:
            truth = groups.group_score(group, pair.prompt, pair.first) > groups.group_score(
                group, pair.prompt, pair.second
            )
            flipped += value != float(truth)
            total += 1
    assert 0.17 < flipped / total < 0.23


def test_vote_records_carry_annotators_groups_and_category() -> None:
    pairs = groups.group_pairs(5, seed=1)
    records = groups.vote_records(pairs)
    assert len(records) == 50
    record = records[0]
    assert record.annotator_id in groups.annotators().members[record.annotator_groups["community"]]
    assert record.metadata["category"] == pairs[0].dimension
    assert {record.chosen, record.rejected} == {pairs[0].first, pairs[0].second}


def test_group_judge_tagged_untagged_and_per_group() -> None:
    judge = groups.group_judge()
    bare, full = "sure , blue", "sure , the sky is blue"
    assert isinstance(judge, GroupJudge)
    assert judge("[community: full] " + SKY, bare, full) == 0.0
    assert judge("[community: fast] " + SKY, bare, full) == 1.0
    assert judge(SKY, bare, full) == pytest.approx(0.7)  # 70 % of the population prefers the bare answer
    assert judge.for_group("full")("[community: fast] " + SKY, full, bare) == 1.0  # the tag is stripped


def _source(**options: object) -> DemoGroups:
    return DemoGroups(DemoGroupsConfig(count=40, demonstrations=16, heldout_pairs=10, noise=0.0, **options))


def test_targets_select_whose_votes_train() -> None:
    votes = list(_source(target="votes").records())
    assert len(votes) == 400 and all(record.annotator_id for record in votes)
    pairs = groups.group_pairs(40, 1, noise=0.0)
    full_side = {(p.prompt, frozenset((p.first, p.second))): (p.first if p.share("full") else p.second) for p in pairs}
    for record in _source(target="full").records():
        assert record.chosen == full_side[(record.prompt, frozenset((record.chosen, record.rejected)))]
    majority = list(_source(target="majority").records())
    expected, _ = aggregate_records(votes, "majority")
    assert [(r.prompt, r.chosen) for r in majority] == [(r.prompt, r.chosen) for r in expected]
    shares = list(_source(target="group_shares").records())
    assert len(shares) == 80 and {r.aspect for r in shares} == {"fast", "full"}
    egalitarian = list(_source(target="egalitarian").records())  # by = "community" filled in
    assert all("group_shares" in r.metadata for r in egalitarian)


def test_conditioned_tags_each_communitys_data_prompts_and_demonstrations() -> None:
    source = _source(conditioned=True)
    records = list(source.records())
    tags = Counter(split_group_prefix(record.prompt)[0] for record in records)
    assert set(tags) == {("community", "fast"), ("community", "full")}
    for record in records:
        tag = split_group_prefix(record.prompt)[0]
        assert record.annotator_groups == {"community": tag[1]}
    prompts = source.evaluation_prompts()
    assert len(prompts) == 2 * len(task.heldout_prompts())
    demonstrations = source.demonstrations()
    assert all(isinstance(r, BinaryLabel) and split_group_prefix(r.prompt)[0] for r in demonstrations)
    heldout = source.heldout_records()
    assert len(heldout) == 20 and all(
        split_group_prefix(r.prompt)[0][1] == r.annotator_groups["community"] for r in heldout
    )


def test_heldout_records_hold_each_communitys_share() -> None:
    heldout = _source().heldout_records()
    pairs = groups.heldout_group_pairs(10, 0, noise=0.0)
    assert all(isinstance(record, PairwiseComparison) for record in heldout)
    for pair, (fast, full) in zip(pairs, zip(heldout[0::2], heldout[1::2], strict=True), strict=True):
        assert fast.probability == full.probability == 1.0  # unanimous without noise
        assert (fast.chosen == full.chosen) == (pair.dimension != "length")
    train_prompts = set(task.train_prompts())
    assert not any(record.prompt in train_prompts for record in heldout)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"target": "nobody"}, "nobody"),
        ({"target": "full", "conditioned": True}, "conditioned"),
        ({"minority_share": 1.0}, "minority_share"),
    ],
)
def test_bad_options_are_named(options: dict[str, object], match: str) -> None:
    with pytest.raises((ConfigError, ValueError), match=match):
        DemoGroupsConfig(**options)


def test_the_disagreement_report_names_length(tmp_path: Path) -> None:
    path = tmp_path / "votes.jsonl"
    assert groups.main([str(path), "120"]) == 0
    records, _ = load_preferences(path)
    report = disagreement(records, "community")
    ranked = report.categories_by_gap()
    assert ranked[0].category == "length"
    assert {row.category for row in ranked[1:]} == {"correctness", "manners"}
