"""KTO: Kahneman–Tversky optimisation, prospect-theoretic utility of unpaired good/bad labels.

Ethayarajh et al. 2024, "KTO: Model Alignment as Prospect Theoretic Optimization",
https://arxiv.org/abs/2402.01306, Eqs. 7-8 (TRL ``KTOTrainer``, ``loss_type="kto"``).

    z(y)  = log π(y|x) − log π_ref(y|x)
    z0    = max(0, mean over mismatched (x, y') of z(y')), detached
    loss  = λ_D·(1 − σ(β·(z(y) − z0)))   if y is desirable
            λ_U·(1 − σ(β·(z0 − z(y))))   if y is undesirable

y: a completion labelled desirable or undesirable (no pairing needed); π, π_ref: policy and
reference (log-probs summed over completion tokens); σ: the logistic function; β: risk
aversion; λ_D, λ_U: weights of desirable and undesirable examples (to balance their
counts); z0: the reference point, an estimate of KL(π‖π_ref) from the batch's mismatched
sequences (a prompt with another example's completion, ``batch.mismatched_index``) as in
TRL, or 0 when the batch has none. Computed by ``prefcore.kernels.preference_losses.kto_loss``.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefcore import hookimpl
from prefcore.batch import LogProbBatch
from prefcore.lazy import lazy_module
from prefcore.methods import UsageObjective
from prefcore.methods import check_non_negative
from prefcore.methods import check_positive
from prefcore.methods import option
from prefcore.objectives import Metrics
from prefcore.objectives import UnpairedLosses
from prefcore.objectives import UnpairedObjective
from prefcore.objectives import reference_kwargs
from prefcore.objectives import reference_sequence_logps
from prefcore.objectives import require_labels

torch = lazy_module("torch")
preference_losses = lazy_module("prefcore.kernels.preference_losses")


@dataclass(frozen=True)
class KTOConfig:
    beta: float = option(0.1, doc="β: risk aversion, the scale of the implicit reward log(π/π_ref)")
    desirable_weight: float = option(1.0, doc="λ_D: weight of desirable examples")
    undesirable_weight: float = option(1.0, doc="λ_U: weight of undesirable examples")

    def __post_init__(self) -> None:
        check_positive("kto", "beta", self.beta)
        check_non_negative("kto", "desirable_weight", self.desirable_weight)
        check_non_negative("kto", "undesirable_weight", self.undesirable_weight)
        if self.desirable_weight == 0 and self.undesirable_weight == 0:
            raise ValueError(
                "desirable_weight and undesirable_weight cannot both be 0 for objective 'kto'. Got 0 and 0."
            )


class KTO(UnpairedObjective):
    """KTO: prospect-theoretic loss on unpaired desirable/undesirable completions."""

    name = "kto"
    config_cls = KTOConfig

    def reference_point(self, batch: LogProbBatch) -> torch.Tensor:
        """z0: the mean log-ratio of the mismatched sequences, clamped at 0 and detached; 0 without them."""
        if batch.mismatched_index is None or batch.mismatched_index.numel() == 0:
            return torch.zeros((), dtype=torch.float32, device=batch.mask.device)
        rows = batch.mismatched_index
        with torch.no_grad():
            policy, _ = preference_losses.sequence_logps(batch.policy_logps[rows], batch.mask[rows])
            reference = reference_sequence_logps(batch, self.name)[rows]
            return (policy - reference).mean().clamp(min=0)

    def sequence_loss(
        self, logratios: torch.Tensor, labels: torch.Tensor, batch: LogProbBatch
    ) -> tuple[torch.Tensor, Metrics]:
        beta, z0 = self.config.beta, self.reference_point(batch)
        losses = torch.where(
            labels,
            self.config.desirable_weight * (1.0 - torch.sigmoid(beta * (logratios - z0))),
            self.config.undesirable_weight * (1.0 - torch.sigmoid(beta * (z0 - logratios))),
        )
        return losses, {"kl": z0.detach().float()}

    def fused_unpaired_loss(self, batch: LogProbBatch, rows: torch.Tensor) -> UnpairedLosses:
        labels = require_labels(batch, self.name)
        reference = {name: values[rows] for name, values in reference_kwargs(batch, self.name).items()}
        reference_point = self.reference_point(batch)
        out = preference_losses.kto_loss(
            batch.policy_logps[rows],
            batch.mask[rows],
            labels[rows],
            **reference,
            beta=self.config.beta,
            desirable_weight=self.config.desirable_weight,
            undesirable_weight=self.config.undesirable_weight,
            kl_reference_point=reference_point,
        )
        return UnpairedLosses(
            out.losses, out.chosen_rewards, out.rejected_rewards, {"kl": reference_point.detach().float()}
        )


@hookimpl
def prefcore_register_usage_objectives() -> list[type[UsageObjective]]:
    return [KTO]
