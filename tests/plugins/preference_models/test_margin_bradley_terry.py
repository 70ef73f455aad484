"""margin_bradley_terry against Llama 2's Eq. 2, pair by pair (Touvron et al. 2023)."""

from __future__ import annotations

import pytest
import torch

from prefcore.errors import ConfigError
from prefcore.plugins.preference_models.margin_bradley_terry import MarginBradleyTerry
from prefcore.plugins.preference_models.margin_bradley_terry import MarginBradleyTerryConfig
from prefcore.preference import RewardBatch


def llama2_margin_loss(rewards: torch.Tensor, batch: RewardBatch, scale: float = 1.0) -> torch.Tensor:
    """Touvron et al. 2023 Eq. 2: −log σ(r_c − r_r − m(r)), averaged over pairs; σ written out."""
    assert batch.chosen_index is not None and batch.rejected_index is not None
    margins = batch.margins if batch.margins is not None else torch.zeros(len(batch.chosen_index))
    terms = [
        -torch.log(1 / (1 + torch.exp(-(rewards[c, 0] - rewards[r, 0] - scale * float(m)))))
        for c, r, m in zip(batch.chosen_index.tolist(), batch.rejected_index.tolist(), margins.tolist(), strict=True)
    ]
    return torch.stack(terms).sum() / (batch.num_items or len(terms))


@pytest.mark.parametrize("scale", [1.0, 0.25])
@pytest.mark.parametrize("pairs", [1, 9, 32])
def test_margin_bradley_terry_matches_llama2_formula(pair_batch, assert_matches, pairs, scale) -> None:
    margins = torch.rand(pairs, generator=torch.Generator().manual_seed(pairs)) * 3
    batch = pair_batch(pairs, margins=margins)
    objective = MarginBradleyTerry(MarginBradleyTerryConfig(scale=scale))
    assert_matches(objective.loss, lambda rewards: llama2_margin_loss(rewards, batch, scale), batch)


def test_without_margins_it_is_plain_bradley_terry(pair_batch, assert_matches) -> None:
    batch = pair_batch(5)
    assert_matches(MarginBradleyTerry().loss, lambda rewards: llama2_margin_loss(rewards, batch), batch)


def test_a_larger_margin_asks_for_a_larger_gap() -> None:
    rewards = torch.tensor([[1.0], [0.0]])
    pair = {"chosen_index": torch.tensor([0]), "rejected_index": torch.tensor([1])}
    weak = MarginBradleyTerry().loss(RewardBatch(rewards, margins=torch.tensor([0.5]), **pair))
    strong = MarginBradleyTerry().loss(RewardBatch(rewards, margins=torch.tensor([2.0]), **pair))
    assert float(strong.loss) > float(weak.loss)
    assert float(weak.metrics["rewards/margin_met"]) == 1.0
    assert float(strong.metrics["rewards/margin_met"]) == 0.0


def test_margins_of_the_wrong_length_are_refused(pair_batch) -> None:
    with pytest.raises(ValueError, match="one entry per pair"):
        MarginBradleyTerry().loss(pair_batch(3, margins=torch.ones(2)))


@pytest.mark.parametrize("value", [0.0, -1.0, float("nan")])
def test_config_refuses_bad_scale(value) -> None:
    with pytest.raises(ConfigError) as excinfo:
        MarginBradleyTerryConfig(scale=value)
    assert (excinfo.value.method, excinfo.value.field) == ("margin_bradley_terry", "scale")
