"""The implicit reward of DPO: a policy and its reference define a reward model without a head.

Rafailov et al. 2023, "Direct Preference Optimization: Your Language Model is Secretly a
Reward Model" (https://arxiv.org/abs/2305.18290), Eq. 5 and Eq. 7.

    r(x, y) = β·(log π(y|x) − log π_ref(y|x))
    loss    = −log σ(r(x, y_c) − r(x, y_r))

π, π_ref: the policy and the frozen reference (log-probs summed over completion tokens);
β: the scale of the log-ratio; σ: the logistic function. The reward network this objective
trains is ``prefcore.engine.reward_model.ImplicitRewardModel``: its rewards are
β-scaled log-ratios, so Bradley–Terry on them is exactly the DPO loss, and training this
"reward model" is DPO on the policy. The same class scores with a policy that was trained
elsewhere (e.g. by the ``dpo`` usage objective): ``ImplicitRewardModel(policy, reference,
tokenizer, beta).scorer()`` plugs into every evaluator that takes a scorer.
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
from prefcore.preference import pair_metrics
from prefcore.preference import pair_rewards
from prefcore.preference import reduce_losses
from prefcore.preference import refuse_ties

F = lazy_module("torch.nn.functional")


@dataclass(frozen=True)
class ImplicitDPOConfig:
    beta: float = option(0.1, doc="β: the implicit reward is β·(log π − log π_ref); DPO's KL strength")

    def __post_init__(self) -> None:
        check_positive("implicit_dpo", "beta", self.beta)


class ImplicitDPO(PreferenceModel):
    """DPO's implicit reward β·log(π/π_ref) as a reward model; training it is DPO on the policy."""

    name = "implicit_dpo"
    config_cls = ImplicitDPOConfig
    data_formats = ("pairwise",)

    def implicit_reward_beta(self) -> float:
        """β of the config: the trainer builds an ``ImplicitRewardModel`` (policy + frozen reference)."""
        return self.config.beta

    def loss(self, batch: RewardBatch) -> LossOutput:
        """DPO's loss on rewards that are already β·(log π − log π_ref)."""
        refuse_ties(batch, self.name)
        chosen, rejected = pair_rewards(batch, self.name)
        losses = -F.logsigmoid(chosen - rejected)
        loss = reduce_losses(losses, batch, item_weights(batch, losses.numel(), "pair"))
        return LossOutput(loss, pair_metrics(chosen, rejected))


@hookimpl
def prefcore_register_preference_models() -> list[type[PreferenceModel]]:
    return [ImplicitDPO]
