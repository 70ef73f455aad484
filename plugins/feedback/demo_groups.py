"""Feedback from two communities of annotators on the embedded demo task (``prefcore.demo.groups``).

Preference data presupposes a population: here a panel of annotators from two communities
votes on every pair, each by their community's rule. Both want correct, polite replies;
``fast`` (70 % by default) wants the bare answer, ``full`` (30 %) a full sentence. Each pair
differs on one dimension, named in ``metadata["category"]`` (correctness, manners or length),
so ``prefcore disagreement`` can say which dimension splits the communities.

``target`` says whose preferences the run trains on:

    votes          every annotator's vote, one record each (annotator_id, annotator_groups)
    fast, full     that community's votes only, aggregated by majority
    group_shares   one soft record per pair and community: its majority side, probability = its
                   vote share, aspect = the community (one reward head per group; ``group_share``)
    a rule name    every vote aggregated by that aggregation rule (``majority``, ``soft_label``,
                   ``utilitarian``, ``egalitarian``, ``jury``; ``aggregation_options``; rules
                   that group votes get ``by = "community"`` unless given)

``conditioned = true`` trains a group-conditioned policy: each community's votes aggregated by
``target`` (a rule) within the community, the prompt tagged with the community
("[community: full] what colour is the sky ?"); the demonstrations and the held-out prompts are
tagged too, so the policy learns to answer as the named community prefers. The demonstrations
come from a decent speaker (``groups.DECENT``: mostly right and polite, bare or full at random),
so the SFT reference leaves length to chance and a win rate against it shows whose length a
policy serves.

The judge is a ``prefcore.groups.GroupJudge``: a tagged prompt is judged by its community's
rule, an untagged one by the population (the communities' rules weighted by their shares).
``heldout_records()`` adds each community's verdict on pairs of held-out prompts (soft, with
``annotator_groups``) for the per-group evaluators.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prefcore import hookimpl
from prefcore.aggregation import aggregate_records
from prefcore.aggregation import create_rule
from prefcore.demo import groups
from prefcore.demo import task
from prefcore.errors import ConfigError
from prefcore.errors import PrefcoreError
from prefcore.groups import group_prefix
from prefcore.methods import FeedbackSource
from prefcore.methods import option

NAME = "demo_groups"
OWN_TARGETS = ("votes", "group_shares")


@dataclass(frozen=True)
class DemoGroupsConfig:
    count: int = option(2000, doc="minimal pairs on training prompts; every panel member votes on each")
    target: str = option(
        "majority",
        doc="whose preferences train: votes, group_shares, a community (fast, full) or an aggregation rule "
        "(majority, soft_label, utilitarian, egalitarian, jury)",
    )
    aggregation_options: Mapping[str, Any] = option(default_factory=dict, doc="options of the target's rule")
    conditioned: bool = option(False, doc="tag each community's data and prompts with its name (group-conditioned)")
    minority_share: float = option(0.3, doc="share of the 'full' community in the population and on the panel")
    panel: int = option(10, doc="annotators voting on each pair, seats shared by population share")
    noise: float = option(0.1, doc="chance that an annotator flips their vote")
    heldout_pairs: int = option(300, doc="pairs on held-out prompts, each community's verdict (per-group evaluation)")
    demonstrations: int = option(8000, doc="unjudged replies for the SFT warm start (0: none)")
    seed: int = option(0, doc="demonstrations use seed, votes seed + 1; the held-out prompts never change")

    def __post_init__(self) -> None:
        if not 0.0 < self.minority_share < 1.0:
            raise ValueError(f"minority_share must be between 0 and 1, got {self.minority_share}.")
        if self.count < 1 or self.heldout_pairs < 0 or self.demonstrations < 0:
            raise ValueError("count must be 1 or more; heldout_pairs and demonstrations 0 or more.")
        if self.panel < 2:
            raise ValueError(f"panel must be 2 or more (one seat per community at least), got {self.panel}.")
        if self.conditioned and self.target in (*OWN_TARGETS, *groups.GROUPS):
            raise ValueError(
                f"conditioned = true aggregates each community's own votes by a rule; target must name a rule "
                f"(e.g. majority), not {self.target!r}."
            )
        if self.target not in (*OWN_TARGETS, *groups.GROUPS):
            try:
                create_rule(self.target, self.rule_options())
            except ConfigError as error:
                raise ConfigError(
                    f"target must be votes, group_shares, a community ({', '.join(groups.GROUPS)}) or an "
                    f"aggregation rule with valid aggregation_options; {error}",
                    method=NAME,
                    field="target",
                ) from error

    def rule_options(self) -> dict[str, Any]:
        options = dict(self.aggregation_options)
        if self.target not in (*OWN_TARGETS, *groups.GROUPS):
            config_cls = _rule_config(self.target)
            if config_cls is not None and "by" in {item.name for item in dataclasses.fields(config_cls)}:
                options.setdefault("by", groups.ATTRIBUTE)
        return options

    @property
    def shares(self) -> dict[str, float]:
        return {"fast": 1.0 - self.minority_share, "full": self.minority_share}


def _rule_config(name: str) -> Any:
    """The config class of the aggregation rule ``name``, or None when there is no such rule."""
    from prefcore.api import get_registry

    try:
        return get_registry().get("aggregation", name).config_cls
    except PrefcoreError:
        return None


class DemoGroups(FeedbackSource):
    """Two communities' votes on the demo task (fast: bare answers, full: full sentences), targeted or conditioned."""

    name = NAME
    config_cls = DemoGroupsConfig

    def _pairs(self) -> tuple[groups.GroupPair, ...]:
        config = self.config
        return groups.group_pairs(
            config.count, config.seed + 1, shares=config.shares, panel=config.panel, noise=config.noise
        )

    def records(self) -> Iterator[Any]:
        config = self.config
        pairs = self._pairs()
        if config.target == "group_shares":
            yield from (groups.share_record(pair, group, aspect=True) for pair in pairs for group in groups.GROUPS)
            return
        votes = groups.vote_records(pairs)
        if config.target == "votes":
            yield from votes
        elif config.target in groups.GROUPS:
            mine = [vote for vote in votes if vote.annotator_groups[groups.ATTRIBUTE] == config.target]
            yield from aggregate_records(mine, "majority")[0]
        elif config.conditioned:
            for group in groups.GROUPS:
                mine = [vote for vote in votes if vote.annotator_groups[groups.ATTRIBUTE] == group]
                prefix = group_prefix(groups.ATTRIBUTE, group)
                for record in aggregate_records(mine, config.target, config.rule_options())[0]:
                    yield dataclasses.replace(
                        record, prompt=prefix + record.prompt, annotator_groups={groups.ATTRIBUTE: group}
                    )
        else:
            yield from aggregate_records(votes, config.target, config.rule_options())[0]

    def demonstrations(self) -> list[Any] | None:
        if self.config.demonstrations == 0:
            return None
        examples = [
            example.to_record()
            for example in task.sft_examples(self.config.demonstrations, self.config.seed, groups.DECENT)
        ]
        return groups.tagged_demonstrations(examples, self.config.seed) if self.config.conditioned else examples

    def judge(self) -> Callable[[str, str, str], float]:
        return groups.group_judge(self.config.shares)

    def evaluation_prompts(self) -> tuple[str, ...]:
        prompts = task.heldout_prompts()
        if not self.config.conditioned:
            return prompts
        return tuple(group_prefix(groups.ATTRIBUTE, group) + prompt for group in groups.GROUPS for prompt in prompts)

    def heldout_records(self) -> Sequence[Any] | None:
        """Each community's soft verdict on pairs of held-out prompts, tagged when the run is conditioned."""
        config = self.config
        if config.heldout_pairs == 0:
            return None
        pairs = groups.heldout_group_pairs(
            config.heldout_pairs, config.seed, shares=config.shares, panel=config.panel, noise=config.noise
        )
        return [
            groups.share_record(pair, group, prefix=config.conditioned, aspect=config.target == "group_shares")
            for pair in pairs
            for group in groups.GROUPS
        ]


@hookimpl
def prefcore_register_feedback() -> list[type[FeedbackSource]]:
    return [DemoGroups]
