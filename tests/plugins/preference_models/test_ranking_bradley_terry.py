"""ranking_bradley_terry against InstructGPT's Eq. 1: every C(K, 2) pair of a list, averaged per list."""

from __future__ import annotations

import itertools

import pytest
import torch

from prefcore.plugins.preference_models.ranking_bradley_terry import RankingBradleyTerry
from prefcore.preference import RewardBatch


def instructgpt_ranking_loss(rewards: torch.Tensor, batch: RewardBatch) -> torch.Tensor:
    """Ouyang et al. 2022 Eq. 1: −1/C(K,2) Σ log σ(r_w − r_l) per list (tied items not compared), mean over lists."""
    assert batch.list_index is not None and batch.list_ranks is not None
    total = rewards.new_zeros(())
    for indices, ranks in zip(batch.list_index.tolist(), batch.list_ranks.tolist(), strict=True):
        items = [(index, rank) for index, rank in zip(indices, ranks, strict=True) if index >= 0]
        terms = [
            -torch.log(1 / (1 + torch.exp(-(rewards[a, 0] - rewards[b, 0]))))
            for (a, rank_a), (b, rank_b) in itertools.permutations(items, 2)
            if rank_a < rank_b
        ]
        if terms:
            total = total + torch.stack(terms).mean()
    return total / (batch.num_items or len(batch.list_index))


def _list_batch(sizes: list[int], *, ties: bool, seed: int = 0) -> RewardBatch:
    """Lists of the given sizes padded to the longest, ranks best first (with repeats when ``ties``)."""
    generator = torch.Generator().manual_seed(seed)
    width = max(sizes)
    list_index = torch.full((len(sizes), width), -1)
    list_ranks = torch.full((len(sizes), width), float("inf"))
    start = 0
    for row, size in enumerate(sizes):
        list_index[row, :size] = torch.randperm(size, generator=generator) + start
        ranks = torch.randint(1, 3, (size,), generator=generator) if ties else torch.arange(1, size + 1)
        list_ranks[row, :size] = ranks.sort().values.float()
        start += size
    rewards = (2 * torch.randn(start, 1, generator=generator)).requires_grad_()
    return RewardBatch(rewards, list_index=list_index, list_ranks=list_ranks)


# (list sizes, ties, why)
LISTS = [
    ([2], False, "a list of two is one Bradley–Terry pair"),
    ([4, 4, 4], False, "InstructGPT's K = 4 lists, C(4, 2) = 6 pairs each"),
    ([9, 3, 5], False, "ragged lists: padding must add nothing"),
    ([5, 6, 2], True, "tied items are not compared; an all-tie list adds 0"),
]


@pytest.mark.parametrize(("sizes", "ties", "why"), LISTS)
def test_ranking_bradley_terry_matches_instructgpt_formula(assert_matches, sizes, ties, why) -> None:
    batch = _list_batch(sizes, ties=ties, seed=len(sizes))
    assert_matches(RankingBradleyTerry().loss, lambda rewards: instructgpt_ranking_loss(rewards, batch), batch)


def test_each_list_weighs_the_same_whatever_its_length() -> None:
    """Averaging inside a list keeps a long list's 45 pairs from outweighing a short list's one.

    At equal rewards each pair pushes its two items by 1/2 each way; item k of a list of 10
    wins 10 − k and loses k − 1 comparisons, so the list's total push is Σ|11 − 2k|/2 = 25,
    divided by its 45 pairs; the list of two pushes 1/2 + 1/2 = 1. Both over the 2 lists.
    """
    batch = _list_batch([10, 2], ties=False)
    rewards = torch.zeros_like(batch.rewards, requires_grad=True)
    objective = RankingBradleyTerry()
    objective.loss(RewardBatch(rewards, list_index=batch.list_index, list_ranks=batch.list_ranks)).loss.backward()
    assert rewards.grad is not None
    long_list, short_list = batch.list_index[0, :10], batch.list_index[1, :2]
    assert float(rewards.grad[long_list].abs().sum()) == pytest.approx(25 / 45 / 2)
    assert float(rewards.grad[short_list].abs().sum()) == pytest.approx(1 / 2)


def test_batch_without_lists_is_refused() -> None:
    with pytest.raises(ValueError, match="listwise data"):
        RankingBradleyTerry().loss(RewardBatch(torch.zeros(2, 1)))
