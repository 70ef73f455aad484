"""Bradley–Terry with a margin: a strongly preferred completion must win by more.

Touvron et al. 2023, "Llama 2: Open Foundation and Fine-Tuned Chat Models"
(https://arxiv.org/abs/2307.09288), Eq. 2; used by UltraRM (Cui et al. 2023,
https://arxiv.org/abs/2310.01377) and by TRL's reward trainer when the data has a
``margin`` column.

    loss = −log σ(r(x, y_c) − r(x, y_r) − s·m)

m: the pair's margin, the strength of the preference (Llama 2's "significantly better" /
"slightly better" levels as numbers, or a score gap); s: a scale for margins given in
other units. The loss stays high until r_c exceeds r_r by s·m, so the reward gap grows
with the strength of the preference; with m = 0 it is plain Bradley–Terry. Pairs
without a margin count as m = 0.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefcore import hookimpl
from prefcore.batch import LossOutput
from prefcore.lazy import lazy_module
from prefcore.methods import PreferenceModel
from prefcore.methods import check_positive
from prefcore.methods import option
from prefcore.preference import RewardBatch
from prefcore.preference import item_weights
from prefcore.preference import mean_or_zero
from prefcore.preference import pair_metrics
from prefcore.preference import pair_rewards
from prefcore.preference import reduce_losses
from prefcore.preference import refuse_ties

torch = lazy_module("torch")
F = lazy_module("torch.nn.functional")


@dataclass(frozen=True)
class MarginBradleyTerryConfig:
    scale: float = option(1.0, doc="s: the margin subtracted is s·m (m = the pair's margin)")

    def __post_init__(self) -> None:
        check_positive("margin_bradley_terry", "scale", self.scale)


class MarginBradleyTerry(PreferenceModel):
    """Margin Bradley–Terry (Llama 2): −log σ(r_c − r_r − s·m), the gap must exceed the preference strength."""

    name = "margin_bradley_terry"
    config_cls = MarginBradleyTerryConfig
    data_formats = ("pairwise",)

    def loss(self, batch: RewardBatch) -> LossOutput:
        refuse_ties(batch, self.name)
        chosen, rejected = pair_rewards(batch, self.name)
        margins = torch.zeros_like(chosen) if batch.margins is None else batch.margins.to(chosen.dtype)
        if margins.shape != chosen.shape:
            raise ValueError(
                f"margins has shape {tuple(margins.shape)}; it needs one entry per pair ({chosen.numel()})."
            )
        losses = -F.logsigmoid(chosen - rejected - self.config.scale * margins)
        loss = reduce_losses(losses, batch, item_weights(batch, losses.numel(), "pair"))
        metrics = pair_metrics(chosen, rejected)
        metrics["rewards/margin_met"] = mean_or_zero((chosen - rejected).detach() > self.config.scale * margins)
        return LossOutput(loss, metrics)


@hookimpl
def prefcore_register_preference_models() -> list[type[PreferenceModel]]:
    return [MarginBradleyTerry]
