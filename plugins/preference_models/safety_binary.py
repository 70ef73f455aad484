"""Pairwise reward with a binary-label term: the sign of the reward says safe or unsafe.

Dai et al. 2023, "Safe RLHF: Safe Reinforcement Learning from Human Feedback"
(https://arxiv.org/abs/2310.12773), Eq. 6 (the cost model): besides which of two answers
is less harmful, annotators say whether each answer is safe, and a classification term
makes the sign of the model's output carry that verdict, so 0 is a meaningful threshold.
Here the output is a reward (higher = better and safer), so safe pushes it above 0.

    loss = 1/N · [ Σ_pairs −log σ(r(x, y_c) − r(x, y_r)) + λ · Σ_labelled −log σ(s_i · r(x, y_i)) ]

s_i = +1 for a completion labelled safe (``BinaryLabel.label`` True), −1 for unsafe; λ: the
weight of the classification term; N: the comparisons of the step (pairs, plus labelled
completions that belong to no pair). The labels of a pair's two completions travel with
the pair (a Safe-RLHF record: a choice and two safety verdicts); completions labelled but
never compared are items of their own, so either kind of feedback alone also trains.
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
from prefcore.preference import mean_or_zero
from prefcore.preference import pair_metrics
from prefcore.preference import refuse_ties

torch = lazy_module("torch")
F = lazy_module("torch.nn.functional")


@dataclass(frozen=True)
class SafetyBinaryConfig:
    label_weight: float = option(1.0, doc="λ: weight of the term −log σ(s·r) that puts safe above 0 and unsafe below")

    def __post_init__(self) -> None:
        check_non_negative("safety_binary", "label_weight", self.label_weight)


class SafetyBinary(PreferenceModel):
    """Safe-RLHF style: Bradley–Terry on pairs plus −log σ(±r) so that safe rewards are > 0, unsafe < 0."""

    name = "safety_binary"
    config_cls = SafetyBinaryConfig
    data_formats = ("pairwise", "unpaired")

    def loss(self, batch: RewardBatch) -> LossOutput:
        rewards = batch.rewards[:, 0]
        total = rewards.new_zeros(())
        metrics: dict[str, torch.Tensor] = {}
        if batch.chosen_index is not None and batch.rejected_index is not None:
            refuse_ties(batch, self.name)
            chosen, rejected = rewards[batch.chosen_index], rewards[batch.rejected_index]
            pair_losses = -F.logsigmoid(chosen - rejected)
            weights = item_weights(batch, pair_losses.numel(), "pair")
            total = total + (pair_losses if weights is None else pair_losses * weights).sum()
            metrics.update(pair_metrics(chosen, rejected))
        if batch.labels is not None:
            mask = batch.label_mask if batch.label_mask is not None else torch.ones_like(batch.labels, dtype=torch.bool)
            if batch.labels.shape != rewards.shape or mask.shape != rewards.shape:
                raise ValueError(f"labels and label_mask need one entry per sequence ({rewards.numel()}).")
            signs = torch.where(batch.labels, 1.0, -1.0).to(rewards.dtype)
            label_losses = -F.logsigmoid(signs * rewards)
            total = total + self.config.label_weight * label_losses[mask].sum()
            metrics["labels/accuracy"] = mean_or_zero((signs * rewards.detach() > 0)[mask])
            metrics["labels/safe_reward"] = mean_or_zero(rewards.detach()[mask & batch.labels])
            metrics["labels/unsafe_reward"] = mean_or_zero(rewards.detach()[mask & ~batch.labels])
        if not metrics:
            raise ValueError(
                f"preference model {self.name!r} needs pairs or binary labels, and the batch has neither; "
                f"give pairwise records and/or BinaryLabel records (label = safe)."
            )
        count = batch.num_items if batch.num_items is not None else self.comparisons(batch)
        return LossOutput(total / max(count, 1), metrics)

    @staticmethod
    def comparisons(batch: RewardBatch) -> int:
        """N without ``num_items``: the pairs, plus labelled sequences that are in no pair."""
        count = 0 if batch.chosen_index is None else batch.chosen_index.numel()
        if batch.labels is not None:
            labelled = batch.label_mask if batch.label_mask is not None else torch.ones_like(batch.labels)
            in_pairs = torch.zeros_like(labelled, dtype=torch.bool)
            if batch.chosen_index is not None and batch.rejected_index is not None:
                in_pairs[batch.chosen_index] = True
                in_pairs[batch.rejected_index] = True
            count += int((labelled.bool() & ~in_pairs).sum())
        return count


@hookimpl
def prefcore_register_preference_models() -> list[type[PreferenceModel]]:
    return [SafetyBinary]
