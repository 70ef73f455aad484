"""Bradley–Terry reward model: the logistic likelihood of pairwise choices.

Christiano et al. 2017, "Deep Reinforcement Learning from Human Preferences"
(https://arxiv.org/abs/1706.03741); Ouyang et al. 2022, "Training language models to follow
instructions with human feedback" (https://arxiv.org/abs/2203.02155), Eq. 1; Kaufmann et al.
2023, "A Survey of Reinforcement Learning from Human Feedback" (https://arxiv.org/abs/2312.14925), Eq. 2.

    loss = −log σ(r(x, y_c) − r(x, y_r)) + c·(r(x, y_c) + r(x, y_r))²

r: the reward network's scalar output; y_c, y_r: the chosen and rejected completion of a
pair; σ: the logistic function. The loss is the negative log-likelihood of the choice
under P(y_c ≻ y_r) = σ(r_c − r_r). The optional second term (c > 0) is reward centering
(Eisenstein et al. 2023, https://arxiv.org/abs/2312.09244; TRL's
``center_rewards_coefficient``): Bradley–Terry fixes rewards only up to a constant, and the
term pins their mean near 0 so that rewards of different models and runs are comparable.
Both terms are averaged over the pairs of the optimiser step.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefcore import hookimpl
from prefcore.batch import LossOutput
from prefcore.lazy import lazy_module
from prefcore.methods import PreferenceModel
from prefcore.methods import check_non_negative
from prefcore.methods import option
from prefcore.preference import RewardBatch
from prefcore.preference import item_weights
from prefcore.preference import pair_metrics
from prefcore.preference import pair_rewards
from prefcore.preference import reduce_losses
from prefcore.preference import refuse_ties

F = lazy_module("torch.nn.functional")


@dataclass(frozen=True)
class BradleyTerryConfig:
    center_rewards_coefficient: float = option(
        0.0, doc="c: weight of the reward-centering term c·(r_c + r_r)²; 0 disables it"
    )

    def __post_init__(self) -> None:
        check_non_negative("bradley_terry", "center_rewards_coefficient", self.center_rewards_coefficient)


class BradleyTerry(PreferenceModel):
    """Bradley–Terry: −log σ(r_c − r_r) on pairwise choices, with optional reward centering."""

    name = "bradley_terry"
    config_cls = BradleyTerryConfig
    data_formats = ("pairwise",)

    def loss(self, batch: RewardBatch) -> LossOutput:
        refuse_ties(batch, self.name)
        chosen, rejected = pair_rewards(batch, self.name)
        losses = -F.logsigmoid(chosen - rejected)
        if self.config.center_rewards_coefficient > 0:
            losses = losses + self.config.center_rewards_coefficient * (chosen + rejected) ** 2
        loss = reduce_losses(losses, batch, item_weights(batch, losses.numel(), "pair"))
        return LossOutput(loss, pair_metrics(chosen, rejected))


@hookimpl
def prefcore_register_preference_models() -> list[type[PreferenceModel]]:
    return [BradleyTerry]
