"""Distributional group preference model: one head per group, predicting the share of the group that prefers a reply.

Aggregating votes into one label hides how split people are, and how groups differ.
Siththaranjan et al. 2024, "Distributional Preference Learning" (https://arxiv.org/abs/2312.08358),
show that a single Bradley–Terry reward implicitly averages over hidden annotator groups
(Borda count); Zhao et al. 2024, "Group Preference Optimization" (https://arxiv.org/abs/2310.11523),
predict each group's preference distribution. Here each group g of one attribute has a
reward head r_g on a shared backbone, and a pair judged by group g (its ``aspect``; the
``demo_groups`` source's ``target = "group_shares"`` writes one such record per pair and
group, ``probability`` = the group's vote share s_g for chosen):

    p_g  = σ(r_g(x, y_c) − r_g(x, y_r))               the predicted share of g preferring y_c
    loss = −[s_g·log p_g + (1 − s_g)·log(1 − p_g)]     cross-entropy against the group's share

averaged over records (so over pairs and groups). A tie is s_g = ½. Its minimum is at
p_g = s_g: the heads learn each group's split, not only its majority. For scoring, the
heads are weighted by ``group_weights`` (population shares; equal when None), the
utilitarian reward Σ_g w_g · r_g.
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
from prefcore.preference import mean_or_zero
from prefcore.preference import pair_metrics
from prefcore.preference import pair_rewards
from prefcore.preference import reduce_losses

if TYPE_CHECKING:
    from prefcore.engine.reward_model import ScoringRule

torch = lazy_module("torch")
F = lazy_module("torch.nn.functional")
reward_model = lazy_module("prefcore.engine.reward_model")

NAME = "group_share"


@dataclass(frozen=True)
class GroupShareConfig:
    groups: tuple[str, ...] = option(
        ("fast", "full"), doc="one head per group, named as the pairs' 'aspect' (the group that judged them)"
    )
    group_weights: Mapping[str, float] | None = option(
        None, doc="w_g per group for scoring, e.g. population shares (groups left out weigh 0); None = equal"
    )

    def __post_init__(self) -> None:
        groups = tuple(self.groups) if isinstance(self.groups, (list, tuple)) else None
        if not groups or not all(isinstance(name, str) and name.strip() for name in groups):
            raise ConfigError(
                f"groups must be a non-empty list of group names, got {self.groups!r}.", method=NAME, field="groups"
            )
        if len(set(groups)) != len(groups):
            raise ConfigError(f"groups must be distinct, got {list(groups)}.", method=NAME, field="groups")
        object.__setattr__(self, "groups", groups)
        if self.group_weights is not None:
            unknown = sorted(set(self.group_weights) - set(groups))
            if unknown:
                raise ConfigError(
                    f"group_weights names {unknown[0]!r}, which is not one of the groups {list(groups)}.",
                    method=NAME,
                    field="group_weights",
                )
            for name, weight in self.group_weights.items():
                check_finite(NAME, f"group_weights.{name}", weight)


class GroupShare(PreferenceModel):
    """Distributional: one head per group, cross-entropy of σ(r_g gap) against the group's vote share."""

    name = NAME
    config_cls = GroupShareConfig
    data_formats = ("pairwise",)

    @property
    def aspects(self) -> tuple[str, ...]:
        """The groups, in head order: a pair's ``aspect`` (the group that judged it) picks its head."""
        return self.config.groups

    def scoring_rule(self) -> ScoringRule:
        """Σ_g w_g · r_g (equal weights when ``group_weights`` is None)."""
        weights = self.config.group_weights
        if weights is None:
            return reward_model.ScoringRule()
        return reward_model.ScoringRule(aspect_weights=tuple(float(weights.get(g, 0.0)) for g in self.config.groups))

    @staticmethod
    def predicted_shares(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """``[N, G]`` share of each group preferring ``first`` from both replies' ``[N, G]`` head rewards."""
        return torch.sigmoid(first - second)

    def loss(self, batch: RewardBatch) -> LossOutput:
        if batch.num_heads != self.num_heads():
            raise ValueError(
                f"preference model {self.name!r} has {self.num_heads()} groups {list(self.aspects)}, "
                f"but the rewards have {batch.num_heads} heads."
            )
        if batch.aspect_index is None and self.num_heads() > 1:
            raise ValueError(
                f"preference model {self.name!r} needs the group that judged each pair as its 'aspect' "
                f"(one of {list(self.aspects)}); demo_groups writes it with target = 'group_shares'."
            )
        chosen, rejected = pair_rewards(batch, self.name)
        difference = chosen - rejected
        shares = torch.ones_like(difference) if batch.probabilities is None else batch.probabilities.to(difference)
        if shares.numel() and not bool(((shares >= 0) & (shares <= 1)).all()):
            raise ValueError(f"preference model {self.name!r}: vote shares (probabilities) must lie in [0, 1].")
        if batch.ties is not None:
            shares = torch.where(batch.ties.to(shares.device), torch.full_like(shares, 0.5), shares)
        losses = -(shares * F.logsigmoid(difference) + (1 - shares) * F.logsigmoid(-difference))
        loss = reduce_losses(losses, batch, item_weights(batch, losses.numel(), "pair"))
        preferred = shares > 0.5
        metrics = pair_metrics(chosen[preferred], rejected[preferred])
        metrics["rewards/share_error"] = mean_or_zero((torch.sigmoid(difference) - shares).abs())
        return LossOutput(loss, metrics)


@hookimpl
def prefcore_register_preference_models() -> list[type[PreferenceModel]]:
    return [GroupShare]
