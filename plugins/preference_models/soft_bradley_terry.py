"""Soft-label Bradley–Terry: cross-entropy against the probability that chosen is preferred.

Kaufmann et al. 2023, "A Survey of Reinforcement Learning from Human Feedback"
(https://arxiv.org/abs/2312.14925), section 5.1 (Bradley–Terry with soft labels); the
binary cross-entropy form of the preference likelihood in Christiano et al. 2017
(https://arxiv.org/abs/1706.03741), who give indistinguishable pairs the uniform target 0.5.

    Δ    = r(x, y_c) − r(x, y_r)
    loss = −[p·log σ(Δ) + (1 − p)·log σ(−Δ)]

p: the probability that y_c is preferred (an annotator vote share, a judge's confidence);
1 for a plain choice, 0.5 for a tie (the uniform target: neither should win). With p = 1
this is plain Bradley–Terry; its minimum is at σ(Δ) = p, so the reward gap learns how
sure the feedback is, not only its direction.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefcore import hookimpl
from prefcore.batch import LossOutput
from prefcore.lazy import lazy_module
from prefcore.methods import NoOptions
from prefcore.methods import PreferenceModel
from prefcore.preference import RewardBatch
from prefcore.preference import item_weights
from prefcore.preference import mean_or_zero
from prefcore.preference import pair_metrics
from prefcore.preference import pair_rewards
from prefcore.preference import reduce_losses

torch = lazy_module("torch")
F = lazy_module("torch.nn.functional")


@dataclass(frozen=True)
class SoftBradleyTerryConfig(NoOptions):
    """The targets come from the data (``probability``, ``tie``); there is nothing to configure."""


class SoftBradleyTerry(PreferenceModel):
    """Soft Bradley–Terry: cross-entropy of σ(r_c − r_r) against the preference probability; ties as 0.5."""

    name = "soft_bradley_terry"
    config_cls = SoftBradleyTerryConfig
    data_formats = ("pairwise",)

    def targets(self, batch: RewardBatch, like: torch.Tensor) -> torch.Tensor:
        """``[P]`` p per pair: the soft label, 0.5 for a tie, 1 otherwise."""
        targets = torch.ones_like(like) if batch.probabilities is None else batch.probabilities.to(like.dtype)
        if targets.shape != like.shape:
            raise ValueError(f"probabilities has shape {tuple(targets.shape)}; it needs one entry per pair.")
        if targets.numel() and not bool(((targets >= 0) & (targets <= 1)).all()):
            raise ValueError(f"preference model {self.name!r}: probabilities must lie in [0, 1].")
        if batch.ties is not None:
            targets = torch.where(batch.ties.to(targets.device), torch.full_like(targets, 0.5), targets)
        return targets

    def loss(self, batch: RewardBatch) -> LossOutput:
        chosen, rejected = pair_rewards(batch, self.name)
        difference = chosen - rejected
        targets = self.targets(batch, difference)
        losses = -(targets * F.logsigmoid(difference) + (1 - targets) * F.logsigmoid(-difference))
        loss = reduce_losses(losses, batch, item_weights(batch, losses.numel(), "pair"))
        preferred = targets > 0.5  # ties and reversed soft labels have no "right" order to count
        metrics = pair_metrics(chosen[preferred], rejected[preferred])
        metrics["rewards/target_error"] = mean_or_zero((torch.sigmoid(difference) - targets).abs())
        return LossOutput(loss, metrics)


@hookimpl
def prefcore_register_preference_models() -> list[type[PreferenceModel]]:
    return [SoftBradleyTerry]
