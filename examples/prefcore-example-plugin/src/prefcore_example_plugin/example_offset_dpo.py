"""Usage objective ``example_offset_dpo``: DPO whose reward margin must clear a fixed offset Δ.

The constant-offset case of ODPO (Amini et al. 2024, "Direct Preference Optimization with
an Offset", https://arxiv.org/abs/2402.10571, Eq. 6):

    h = [log π(y_w|x) − log π_ref(y_w|x)] − [log π(y_l|x) − log π_ref(y_l|x)]
    loss = −log σ(β·h − Δ)

π: the policy; π_ref: the frozen reference; y_w, y_l: the chosen and rejected completion;
log π(y|x): the summed log-probability of the completion's tokens; σ: the logistic function;
β: the strength of the implicit KL penalty.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefcore import hookimpl
from prefcore.batch import LogProbBatch
from prefcore.batch import LossOutput
from prefcore.lazy import lazy_module
from prefcore.methods import UsageObjective
from prefcore.methods import check_finite
from prefcore.methods import check_positive
from prefcore.methods import option

F = lazy_module("torch.nn.functional")
kernels = lazy_module("prefcore.kernels.preference_losses")  # Triton on GPU, torch on CPU


@dataclass(frozen=True)
class OffsetDPOConfig:
    beta: float = option(0.1, doc="β: strength of the implicit KL penalty")
    offset: float = option(0.5, doc="Δ: the reward margin the chosen completion must clear")

    def __post_init__(self) -> None:
        check_positive("example_offset_dpo", "beta", self.beta)
        check_finite("example_offset_dpo", "offset", self.offset)


class OffsetDPO(UsageObjective):
    """DPO whose implicit-reward margin must clear a fixed offset Δ."""

    name = "example_offset_dpo"
    config_cls = OffsetDPOConfig
    data_formats = ("pairwise",)
    needs_reference = True

    def loss(self, batch: LogProbBatch) -> LossOutput:
        policy, _ = kernels.sequence_logps(batch.policy_logps, batch.mask)
        if batch.ref_sequence_logps is not None:
            reference = batch.ref_sequence_logps.to(policy.dtype)
        else:
            reference, _ = kernels.sequence_logps(batch.ref_logps, batch.mask)
        ratio = policy - reference
        chosen, rejected = ratio[batch.chosen_index], ratio[batch.rejected_index]
        losses = -F.logsigmoid(self.config.beta * (chosen - rejected) - self.config.offset)
        if batch.weights is not None:
            losses = losses * batch.weights.to(losses.dtype)
        denominator = batch.num_items if batch.num_items is not None else losses.numel()
        margin = (self.config.beta * (chosen - rejected)).detach()
        return LossOutput(
            losses.sum() / denominator,
            {"rewards/margin": margin.mean(), "rewards/accuracy": (margin > 0).float().mean()},
        )


@hookimpl
def prefcore_register_usage_objectives() -> list[type[UsageObjective]]:
    return [OffsetDPO]
