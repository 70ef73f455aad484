"""Group-aware reward models trained end to end on the demo communities' votes, judged per community.

A group-blind Bradley–Terry model on the majority vote ranks the minority's held-out choices
near chance on the dimension they disagree on; one head per community (``group_share``, the
distributional model) ranks both, and its heads predict which way each community leans.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from prefcore.demo import groups
from prefcore.demo.tokenizer import build_tokenizer
from prefcore.engine.reward_heldout import evaluate_reward_model
from prefcore.engine.reward_trainer import train_preference_model
from prefcore.plugins.feedback.demo_groups import DemoGroups
from prefcore.plugins.feedback.demo_groups import DemoGroupsConfig
from prefcore.plugins.preference_models.bradley_terry import BradleyTerry
from prefcore.plugins.preference_models.group_share import GroupShare
from prefcore.plugins.preference_models.group_share import GroupShareConfig
from prefcore.settings import RewardTrainConfig


def _per_group_accuracy(network, heldout) -> dict[str, float]:
    return {
        group: evaluate_reward_model(network, [r for r in heldout if r.annotator_groups["community"] == group])[
            "accuracy"
        ]
        for group in groups.GROUPS
    }


@pytest.mark.slow
def test_group_share_serves_both_communities_where_a_majority_model_does_not(tmp_path: Path) -> None:
    torch.manual_seed(0)
    tokenizer = build_tokenizer()
    config = RewardTrainConfig(steps=150, batch_size=32, lr=1e-3, demo=True, heldout_fraction=0.0)
    accuracy = {}
    for name, objective, target in (
        ("majority", BradleyTerry(), "majority"),
        ("group_share", GroupShare(GroupShareConfig(groups=groups.GROUPS)), "group_shares"),
    ):
        source = DemoGroups(DemoGroupsConfig(count=800, target=target, demonstrations=0, heldout_pairs=150))
        network = train_preference_model(list(source.records()), objective, tokenizer, config, run_dir=tmp_path / name)
        accuracy[name] = _per_group_accuracy(network, source.heldout_records())
        if name == "group_share":
            length = [p for p in groups.heldout_group_pairs(150, 0) if p.dimension == "length"]
            full_first = [groups.is_full(p.prompt, p.first) for p in length]
            prompts = [p.prompt for p in length]
            first = network.score(prompts, [p.first for p in length])
            second = network.score(prompts, [p.second for p in length])
            shares = GroupShare.predicted_shares(first, second)  # [N, 2]: P(group prefers first)
            sign = torch.tensor([1.0 if full else -1.0 for full in full_first])
            full_sentence_share = 0.5 + sign[:, None] * (shares - 0.5)
            # the share preferring the full sentence: most of 'full', few of 'fast'
            assert full_sentence_share[:, 1].mean() > 0.7 > 0.3 > full_sentence_share[:, 0].mean()
    assert accuracy["majority"]["fast"] > 0.75 and accuracy["majority"]["full"] < 0.65, accuracy
    assert min(accuracy["group_share"].values()) > 0.75, accuracy
