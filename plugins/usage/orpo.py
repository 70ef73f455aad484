"""ORPO: odds-ratio preference optimisation, SFT and preference in one reference-free loss.

Hong et al. 2024, "ORPO: Monolithic Preference Optimization without Reference Model",
https://arxiv.org/abs/2403.07691, Eqs. 4-7 (TRL ``ORPOTrainer``).

    a(y)     = (1/|y|)·Σ_t log π(y_t | x, y_<t)            (so P(y) = exp a(y) < 1)
    log_odds = [a(y_w) − a(y_l)] − [log(1 − e^a(y_w)) − log(1 − e^a(y_l))]
    L_SFT    = −Σ_pairs log π(y_w|x) / Σ_pairs |y_w|        (NLL over every chosen token)
    loss     = L_SFT + λ·mean_pairs[−log σ(log_odds)]

y_w, y_l: chosen and rejected completion; |y|: number of completion tokens; π: the policy;
σ: the logistic function; λ (``beta``, TRL's name): weight of the odds-ratio term. The
odds ratio penalises the rejected style mildly during SFT, so no separate SFT stage or
reference model is needed. Computed by ``prefcore.kernels.preference_losses.orpo_loss``.

L_SFT is a token average over the batch (as in TRL); under gradient accumulation over the
whole step's chosen tokens (``LogProbBatch.num_tokens``), so micro-batches add up exactly,
whatever the completion lengths.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefcore import hookimpl
from prefcore.batch import LogProbBatch
from prefcore.batch import LossOutput
from prefcore.lazy import lazy_module
from prefcore.methods import UsageObjective
from prefcore.methods import check_positive
from prefcore.methods import option
from prefcore.objectives import item_weights
from prefcore.objectives import mean_or_zero
from prefcore.objectives import pair_logp_metrics
from prefcore.objectives import reduce_losses
from prefcore.objectives import require_pairs
from prefcore.objectives import reward_metrics
from prefcore.objectives import token_mean_scale

preference_losses = lazy_module("prefcore.kernels.preference_losses")


@dataclass(frozen=True)
class ORPOConfig:
    beta: float = option(0.1, doc="λ: weight of the odds-ratio term added to the NLL of the chosen")

    def __post_init__(self) -> None:
        check_positive("orpo", "beta", self.beta)


class ORPO(UsageObjective):
    """ORPO: NLL of the chosen plus an odds-ratio penalty on the rejected, no reference."""

    name = "orpo"
    config_cls = ORPOConfig
    data_formats = ("pairwise",)
    needs_reference = False

    def implicit_reward_beta(self) -> float:
        """β of the rewards it reports, λ, which also scales the β × mean token log-prob rewards."""
        return self.config.beta

    def loss(self, batch: LogProbBatch) -> LossOutput:
        chosen_index, rejected_index = require_pairs(batch, self.name)
        out = preference_losses.orpo_loss(
            batch.policy_logps, batch.mask, chosen_index, rejected_index, beta=self.config.beta
        )
        losses = out.losses
        scale = token_mean_scale(batch, chosen_index, losses.dtype)
        if scale is not None:
            # out.losses = NLL share (a micro-batch token mean) + odds-ratio term: rescale only the former
            nll = preference_losses.nll_loss(batch.policy_logps, batch.mask, chosen_index, rejected_index)
            losses = losses + (scale - 1) * nll.losses
        loss = reduce_losses(losses, batch, item_weights(batch, losses.numel()))
        metrics = {**reward_metrics(out.chosen_rewards, out.rejected_rewards), **pair_logp_metrics(batch, self.name)}
        if out.nll_loss is not None and out.odds_ratio_loss is not None and out.log_odds is not None:
            metrics |= {
                "nll": out.nll_loss.detach(),
                "odds_ratio_loss": out.odds_ratio_loss.detach(),
                "log_odds": mean_or_zero(out.log_odds),
            }
        return LossOutput(loss, metrics)


@hookimpl
def prefcore_register_usage_objectives() -> list[type[UsageObjective]]:
    return [ORPO]
