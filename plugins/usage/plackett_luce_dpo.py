"""Listwise DPO: a Plackett–Luce model over the implicit rewards of a ranked list.

Rafailov et al. 2023, "Direct Preference Optimization: Your Language Model is Secretly a
Reward Model", https://arxiv.org/abs/2305.18290, Appendix A.3, Eq. 20.

    r_i  = β·(log π(y_i|x) − log π_ref(y_i|x))                       (implicit reward)
    loss = −Σ_{k=1}^{K} log [ exp(r_τ(k)) / Σ_{j=k}^{K} exp(r_τ(j)) ]   (per ranked list)

τ: the ranking, τ(1) the best of the K completions y_1..y_K of prompt x; π, π_ref: policy
and reference (log-probs summed over completion tokens); β: inverse temperature. For
K = 2 this is the DPO loss. Tied completions share one softmax denominator (Breslow), so
their order does not matter; the last term (log 1) drops out. The model is of the order
only: a scored list trains on the ranking its scores give (``LogProbBatch.scores`` is not
read; PRO is the listwise objective that weighs by score gaps).
"""

from __future__ import annotations

from dataclasses import dataclass

from prefcore import hookimpl
from prefcore.batch import LogProbBatch
from prefcore.lazy import lazy_module
from prefcore.methods import UsageObjective
from prefcore.methods import check_positive
from prefcore.methods import option
from prefcore.objectives import ListwiseObjective
from prefcore.objectives import plackett_luce_nll
from prefcore.objectives import policy_sequence_logps
from prefcore.objectives import reference_sequence_logps

torch = lazy_module("torch")


@dataclass(frozen=True)
class PlackettLuceDPOConfig:
    beta: float = option(0.1, doc="inverse temperature β of the implicit reward β·log(π/π_ref)")

    def __post_init__(self) -> None:
        check_positive("plackett_luce_dpo", "beta", self.beta)


class PlackettLuceDPO(ListwiseObjective):
    """Listwise DPO: Plackett–Luce likelihood of the ranking under implicit rewards."""

    name = "plackett_luce_dpo"
    config_cls = PlackettLuceDPOConfig
    needs_reference = True

    def sequence_scores(self, batch: LogProbBatch) -> torch.Tensor:
        logratios = policy_sequence_logps(batch) - reference_sequence_logps(batch, self.name)
        return self.config.beta * logratios

    def list_loss(
        self, scores: torch.Tensor, ranks: torch.Tensor, valid: torch.Tensor, batch: LogProbBatch
    ) -> torch.Tensor:
        return plackett_luce_nll(scores, ranks, valid)


@hookimpl
def prefcore_register_usage_objectives() -> list[type[UsageObjective]]:
    return [PlackettLuceDPO]
