"""Multi-aspect reward model: one scalar head per aspect, each trained on the choices about its aspect.

Touvron et al. 2023, "Llama 2" (https://arxiv.org/abs/2307.09288), section 3.2.2, train
separate helpfulness and safety rewards; Wang et al. 2023, "HelpSteer"
(https://arxiv.org/abs/2311.09528), and Wang et al. 2024, "Interpretable Preferences via
Multi-Objective Reward Modeling" (ArmoRM, https://arxiv.org/abs/2406.12845), read several
aspects off one backbone, one head each, and combine them for scoring.

    loss  = −log σ(r_a(x, y_c) − r_a(x, y_r)),   a = the pair's aspect
    score = Σ_a w_a · r_a(x, y)

r_a: head a of the network (``aspects`` names the heads in order); each pair's ``aspect``
field picks the head it trains, so a pair judged on safety never moves the helpfulness
head (the backbone is shared). w_a: ``aspect_weights`` for scoring (equal by default),
stored with the trained model and used by its ``scorer()``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prefcore import hookimpl
from prefcore.batch import LossOutput
from prefcore.errors import ConfigError
from prefcore.lazy import lazy_module
from prefcore.methods import PreferenceModel
from prefcore.methods import check_finite
from prefcore.methods import option
from prefcore.preference import RewardBatch
from prefcore.preference import item_weights
from prefcore.preference import pair_metrics
from prefcore.preference import pair_rewards
from prefcore.preference import reduce_losses
from prefcore.preference import refuse_ties

if TYPE_CHECKING:
    from prefcore.engine.reward_model import ScoringRule

F = lazy_module("torch.nn.functional")
reward_model = lazy_module("prefcore.engine.reward_model")


@dataclass(frozen=True)
class MultiAspectConfig:
    aspects: tuple[str, ...] = option(
        ("helpfulness", "harmlessness"), doc="one head per aspect, named as the pairs' 'aspect' field"
    )
    aspect_weights: Mapping[str, float] | None = option(
        None, doc="w_a per aspect name for scoring (aspects left out weigh 0); None = equal weights"
    )

    def __post_init__(self) -> None:
        aspects = tuple(self.aspects) if isinstance(self.aspects, (list, tuple)) else None
        if not aspects or not all(isinstance(name, str) and name.strip() for name in aspects):
            raise ConfigError(
                f"aspects must be a non-empty list of aspect names for objective 'multi_aspect'. Got {self.aspects!r}.",
                method="multi_aspect",
                field="aspects",
            )
        if len(set(aspects)) != len(aspects):
            raise ConfigError(
                f"aspects must be distinct for objective 'multi_aspect'. Got {list(aspects)}.",
                method="multi_aspect",
                field="aspects",
            )
        object.__setattr__(self, "aspects", aspects)
        if self.aspect_weights is not None:
            unknown = sorted(set(self.aspect_weights) - set(aspects))
            if unknown:
                raise ConfigError(
                    f"aspect_weights names {unknown[0]!r}, which is not one of the aspects {list(aspects)}.",
                    method="multi_aspect",
                    field="aspect_weights",
                )
            for name, weight in self.aspect_weights.items():
                check_finite("multi_aspect", f"aspect_weights.{name}", weight)


class MultiAspect(PreferenceModel):
    """Multi-aspect: one head per aspect, Bradley–Terry on each pair's own aspect, weighted heads for scoring."""

    name = "multi_aspect"
    config_cls = MultiAspectConfig
    data_formats = ("pairwise",)

    @property
    def aspects(self) -> tuple[str, ...]:
        """Head names in order: the trainer maps each pair's ``aspect`` to its head with them."""
        return self.config.aspects

    def scoring_rule(self) -> ScoringRule:
        """The trained model's default scoring: Σ_a w_a · r_a."""
        weights = self.config.aspect_weights
        if weights is None:
            return reward_model.ScoringRule()
        return reward_model.ScoringRule(
            aspect_weights=tuple(float(weights.get(name, 0.0)) for name in self.config.aspects)
        )

    def loss(self, batch: RewardBatch) -> LossOutput:
        if batch.num_heads != self.num_heads():
            raise ValueError(
                f"preference model {self.name!r} has {self.num_heads()} aspects {list(self.aspects)}, "
                f"but the rewards have {batch.num_heads} heads."
            )
        if batch.aspect_index is None and self.num_heads() > 1:
            raise ValueError(
                f"preference model {self.name!r} needs each pair's aspect (aspect_index); give pairs an 'aspect' "
                f"among {list(self.aspects)}."
            )
        refuse_ties(batch, self.name)
        chosen, rejected = pair_rewards(batch, self.name)
        losses = -F.logsigmoid(chosen - rejected)
        loss = reduce_losses(losses, batch, item_weights(batch, losses.numel(), "pair"))
        return LossOutput(loss, pair_metrics(chosen, rejected))


@hookimpl
def prefcore_register_preference_models() -> list[type[PreferenceModel]]:
    return [MultiAspect]
