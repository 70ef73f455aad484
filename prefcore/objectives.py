"""The usage-objective author's surface: base classes for the common shapes and the helpers they use.

A usage objective turns a ``LogProbBatch`` into a loss (``prefcore.methods.UsageObjective``).
Most objectives share one of three shapes, and a base class carries everything that
shape repeats, so a method file holds only its config, its formula and its docstring:

- ``PairwiseObjective``: write ``pair_loss(chosen_logratios, rejected_logratios, batch)``,
  the per-pair losses; the base reads the pairs, applies ``batch.weights`` and the
  gradient-accumulation count, reports TRL's metrics (``rewards/chosen``, ``rewards/margins``,
  ``logps/chosen``, ...) and takes a fused kernel path when ``fused_pair_loss`` offers one.
- ``ListwiseObjective``: write ``sequence_scores(batch)`` and ``list_loss(scores, ranks, valid, batch)``.
- ``UnpairedObjective``: write ``sequence_loss(logratios, labels, batch)`` (KTO's shape).

The helpers below are what the built-in objectives use: summed and averaged sequence
log-probs, pair and list splitting, policy/reference log-ratios, soft labels and margins,
``reduce_losses`` (one reduction for weights, ``num_items`` and empty micro-batches), the
token-exact NLL shares and the standard metrics. Option checks for a config's
``__post_init__`` (``check_positive``, ...) live in ``prefcore.methods``; the parity kit that
tests an objective is ``prefcore.testing``.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from typing import Any
from typing import ClassVar
from typing import Union

from prefcore.batch import LogProbBatch
from prefcore.batch import LossOutput
from prefcore.data import Message
from prefcore.data import Text
from prefcore.errors import ConfigError
from prefcore.lazy import lazy_module
from prefcore.methods import UsageObjective

torch = lazy_module("torch")
preference_losses = lazy_module("prefcore.kernels.preference_losses")

__all__ = [
    "ListwiseObjective",
    "LossesAndMetrics",
    "Metrics",
    "PairLosses",
    "PairwiseObjective",
    "UnpairedLosses",
    "UnpairedObjective",
    "check_template",
    "conditioned_prompt",
    "fused_pair_losses",
    "item_weights",
    "labelled_mask",
    "list_reward_metrics",
    "list_scores",
    "list_values",
    "logp_metrics",
    "masked_mean",
    "mean_or_zero",
    "nll_shares",
    "pair_lengths",
    "pair_logp_metrics",
    "pair_logps",
    "pair_logratios",
    "pair_margins",
    "pair_probabilities",
    "plackett_luce_nll",
    "plain_text",
    "policy_sequence_logps",
    "reduce_losses",
    "reference_kwargs",
    "reference_sequence_logps",
    "require_labels",
    "require_lists",
    "require_pairs",
    "reward_metrics",
    "sequence_weights",
    "token_mean_scale",
    "upcast",
]

Metrics = Mapping[str, Any]
"""Extra named metrics an objective reports: detached 0-d tensors or floats."""
LossesAndMetrics = Union["torch.Tensor", "tuple[torch.Tensor, Metrics]"]
"""What ``pair_loss``/``list_loss``/``sequence_loss`` return: per-comparison losses, optionally with extra metrics."""


# ----------------------------------------------------------------------------------------------
# Reading the batch
# ----------------------------------------------------------------------------------------------


def upcast(values: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 to fp32 (exponentials and sums lose too much in half precision); fp32/fp64 unchanged."""
    return values.float() if values.dtype in (torch.float16, torch.bfloat16) else values


def require_pairs(batch: LogProbBatch, objective: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``[P]`` chosen and rejected sequence indices; a clear error for a batch that is not pairwise."""
    if batch.chosen_index is None or batch.rejected_index is None:
        raise ValueError(
            f"objective {objective!r} trains on pairs, but the batch has no chosen_index/rejected_index; "
            f"use pairwise data."
        )
    return batch.chosen_index, batch.rejected_index


def require_lists(batch: LogProbBatch, objective: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``[L, K]`` list indices and ranks; a clear error for a batch that is not listwise."""
    if batch.list_index is None or batch.list_ranks is None:
        raise ValueError(
            f"objective {objective!r} trains on ranked lists, but the batch has no list_index/list_ranks; "
            f"use listwise data."
        )
    return batch.list_index, batch.list_ranks


def require_labels(batch: LogProbBatch, objective: str) -> torch.Tensor:
    """``[S]`` desirable/undesirable labels; a clear error for a batch that is not unpaired."""
    if batch.labels is None:
        raise ValueError(
            f"objective {objective!r} trains on labelled completions, but the batch has no labels; use unpaired data."
        )
    return batch.labels


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[S]`` mean of each row of ``[S, T]`` values over its masked-in positions, in fp32 or fp64."""
    means, _ = preference_losses.sequence_logps(values, mask, average=True)
    return means


def policy_sequence_logps(batch: LogProbBatch, *, average: bool = False) -> torch.Tensor:
    """``[S]`` summed (or token-averaged) policy log-probs of each completion, in fp32 or fp64."""
    values, _ = preference_losses.sequence_logps(batch.policy_logps, batch.mask, average=average)
    return values


def reference_sequence_logps(batch: LogProbBatch, objective: str, *, average: bool = False) -> torch.Tensor:
    """``[S]`` summed (or token-averaged) reference log-probs, from per-token values or the cache."""
    if batch.ref_sequence_logps is not None:
        reference = upcast(batch.ref_sequence_logps)
        if average:
            reference = reference / batch.mask.sum(-1).clamp(min=1).to(reference.dtype)
        return reference.detach()
    reference_logps = reference_kwargs(batch, objective)["ref_logps"]
    values, _ = preference_losses.sequence_logps(reference_logps.detach(), batch.mask, average=average)
    return values


def reference_kwargs(batch: LogProbBatch, objective: str) -> dict[str, torch.Tensor]:
    """The reference argument of a ``prefcore.kernels.preference_losses`` call: the cache if present."""
    if batch.ref_sequence_logps is not None:
        return {"ref_sequence_logps": batch.ref_sequence_logps}
    if batch.ref_logps is not None:
        return {"ref_logps": batch.ref_logps}
    raise ValueError(
        f"objective {objective!r} needs reference log-probs, but the batch has neither ref_logps nor "
        f"ref_sequence_logps; configure a reference model or precomputed reference log-probs."
    )


def pair_logps(batch: LogProbBatch, objective: str, *, average: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``[P]`` summed (or token-averaged) policy log-probs ``log π(y|x)`` of the chosen and rejected completions."""
    chosen_index, rejected_index = require_pairs(batch, objective)
    values = policy_sequence_logps(batch, average=average)
    return values[chosen_index], values[rejected_index]


def pair_logratios(batch: LogProbBatch, objective: str, *, average: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``[P]`` ``log π(y|x) − log π_ref(y|x)`` of the chosen and rejected completion of each pair."""
    chosen_index, rejected_index = require_pairs(batch, objective)
    logratios = policy_sequence_logps(batch, average=average) - reference_sequence_logps(
        batch, objective, average=average
    )
    return logratios[chosen_index], logratios[rejected_index]


def pair_probabilities(batch: LogProbBatch, objective: str, default: float) -> torch.Tensor | None:
    """``[P]`` probability that chosen is preferred, per pair: the feedback's soft label, else ``default``.

    None when no pair of the batch carries one (then the objective's plain loss applies
    unchanged). ``batch.probabilities`` holds NaN for pairs whose record gives none; they get
    ``default`` (1 for a plain choice, or the objective's own smoothing, e.g. cDPO's 1 − ε).
    """
    if batch.probabilities is None:
        return None
    chosen_index, _ = require_pairs(batch, objective)
    probabilities = upcast(batch.probabilities.detach())
    if probabilities.shape != chosen_index.shape:
        raise ValueError(
            f"objective {objective!r}: batch.probabilities has shape {tuple(probabilities.shape)}; "
            f"it needs one entry per pair ({chosen_index.numel()})."
        )
    given = ~torch.isnan(probabilities)
    if not bool(((probabilities[given] >= 0) & (probabilities[given] <= 1)).all()):
        raise ValueError(
            f"objective {objective!r}: batch.probabilities must lie in [0, 1] (NaN = not given); "
            f"got {probabilities[given].min().item():g}..{probabilities[given].max().item():g}."
        )
    return torch.where(given, probabilities, torch.full_like(probabilities, default))


def pair_margins(batch: LogProbBatch, objective: str) -> torch.Tensor | None:
    """``[P]`` strength of each pair's preference (0 where the record gives none), or None without margins."""
    if batch.margins is None:
        return None
    chosen_index, _ = require_pairs(batch, objective)
    margins = upcast(batch.margins.detach())
    if margins.shape != chosen_index.shape:
        raise ValueError(
            f"objective {objective!r}: batch.margins has shape {tuple(margins.shape)}; "
            f"it needs one entry per pair ({chosen_index.numel()})."
        )
    if not bool(torch.isfinite(margins).all()):
        raise ValueError(f"objective {objective!r}: batch.margins must be finite numbers.")
    return margins


def pair_lengths(batch: LogProbBatch, objective: str, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Completion-token counts of the chosen and rejected completion of each pair (at least 1)."""
    chosen_index, rejected_index = require_pairs(batch, objective)
    lengths = batch.mask.sum(-1).clamp(min=1).to(dtype)
    return lengths[chosen_index], lengths[rejected_index]


def labelled_mask(batch: LogProbBatch) -> torch.Tensor:
    """``[S]`` True for sequences that carry a loss (not KTO's mismatched reference sequences)."""
    keep = torch.ones(batch.num_sequences, dtype=torch.bool, device=batch.mask.device)
    if batch.mismatched_index is not None:
        keep[batch.mismatched_index] = False
    return keep


def item_weights(batch: LogProbBatch, count: int) -> torch.Tensor | None:
    """``batch.weights`` as one weight per comparison (pairs, lists or SFT sequences), or None."""
    if batch.weights is None:
        return None
    if batch.weights.numel() != count:
        raise ValueError(f"batch.weights has {batch.weights.numel()} entries for {count} comparisons.")
    return upcast(batch.weights)


def sequence_weights(batch: LogProbBatch) -> torch.Tensor | None:
    """``batch.weights`` per sequence (unpaired data): given per sequence, or per labelled sequence in order."""
    if batch.weights is None:
        return None
    weights = upcast(batch.weights)
    if weights.numel() == batch.num_sequences:
        return weights
    labelled = labelled_mask(batch)
    if weights.numel() != int(labelled.sum()):
        raise ValueError(
            f"batch.weights has {weights.numel()} entries for {batch.num_sequences} sequences "
            f"({int(labelled.sum())} labelled)."
        )
    per_sequence = torch.ones(batch.num_sequences, dtype=weights.dtype, device=weights.device)
    per_sequence[labelled] = weights
    return per_sequence


# ----------------------------------------------------------------------------------------------
# Reduction and metrics
# ----------------------------------------------------------------------------------------------


def reduce_losses(losses: torch.Tensor, batch: LogProbBatch, weights: torch.Tensor | None = None) -> torch.Tensor:
    """``Σ wᵢ·lossᵢ / N`` with N = ``batch.num_items`` when set, else the comparisons in this batch.

    Dividing by the step's comparison count (not this micro-batch's) makes the losses of
    micro-batches add up to the step mean, whatever the split.
    """
    if weights is not None:
        losses = losses * weights.to(losses.dtype)
    count = batch.num_items if batch.num_items is not None else losses.numel()
    return losses.sum() / max(count, 1)


def token_mean_scale(batch: LogProbBatch, target_index: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | None:
    """Factor taking the kernels' NLL shares from this micro-batch's token mean to the step's; None = keep it.

    ``nll_loss`` (and the NLL part of ``orpo_loss``) gives comparison p the share
    −log π(y_p)·P / n, with n the target tokens of this micro-batch's P comparisons, so that
    the mean is TRL's token average. ``reduce_losses`` divides by N (``num_items``). Times
    n·N / (P·``num_tokens``) a share becomes −log π(y_p)·N / num_tokens, and the micro-batches
    of a step add up to −Σ log π / num_tokens exactly, whatever their lengths. The kernel
    stays the one definition of the NLL; with ``num_tokens`` unset its value (TRL's) stands.
    """
    if batch.num_tokens is None:
        return None
    comparisons = max(int(target_index.numel()), 1)
    count = batch.num_items if batch.num_items is not None else comparisons
    micro_tokens = (batch.mask[target_index] != 0).sum().to(dtype)
    return micro_tokens * (count / (comparisons * max(batch.num_tokens, 1)))


def nll_shares(
    batch: LogProbBatch, chosen_index: torch.Tensor, rejected_index: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-comparison shares of the token-averaged NLL of the chosen sequences, for ``reduce_losses``.

    Returns the ``[P]`` shares (over the step's tokens when ``num_tokens`` is set, see
    ``token_mean_scale``) and this micro-batch's detached token mean, the ``nll`` metric.
    """
    out = preference_losses.nll_loss(batch.policy_logps, batch.mask, chosen_index, rejected_index)
    scale = token_mean_scale(batch, chosen_index, out.losses.dtype)
    shares = out.losses if scale is None else out.losses * scale
    return shares, out.loss.detach()


def mean_or_zero(values: torch.Tensor) -> torch.Tensor:
    """Mean of a detached metric; 0 for an empty micro-batch rather than NaN."""
    values = values.detach().float()
    return values.mean() if values.numel() else torch.zeros((), device=values.device)


def reward_metrics(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> dict[str, torch.Tensor]:
    """TRL's DPOTrainer reward metrics of each pair's implicit rewards, with TRL's names and meanings.

    ``rewards/chosen``, ``rewards/rejected``: mean reward; ``rewards/margins``: mean of
    chosen − rejected; ``rewards/accuracies``: share of pairs whose chosen reward is higher.
    """
    chosen_rewards, rejected_rewards = chosen_rewards.detach().float(), rejected_rewards.detach().float()
    return {
        "rewards/chosen": mean_or_zero(chosen_rewards),
        "rewards/rejected": mean_or_zero(rejected_rewards),
        "rewards/margins": mean_or_zero(chosen_rewards - rejected_rewards),
        "rewards/accuracies": mean_or_zero((chosen_rewards > rejected_rewards).float()),
    }


def logp_metrics(chosen_logps: torch.Tensor, rejected_logps: torch.Tensor) -> dict[str, torch.Tensor]:
    """TRL's ``logps/chosen`` and ``logps/rejected``: mean summed policy log-prob of each side."""
    return {"logps/chosen": mean_or_zero(chosen_logps), "logps/rejected": mean_or_zero(rejected_logps)}


def pair_logp_metrics(batch: LogProbBatch, objective: str) -> dict[str, torch.Tensor]:
    """``logp_metrics`` of a pairwise batch's chosen and rejected completions (outside the autograd graph)."""
    chosen_index, rejected_index = require_pairs(batch, objective)
    with torch.no_grad():
        logps, _ = preference_losses.sequence_logps(batch.policy_logps, batch.mask)
    return logp_metrics(logps[chosen_index], logps[rejected_index])


# ----------------------------------------------------------------------------------------------
# Ranked lists
# ----------------------------------------------------------------------------------------------


def list_values(values: torch.Tensor, list_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[L, K]`` values of each list's sequences (0 at padding) and the ``[L, K]`` validity mask."""
    valid = list_index >= 0
    gathered = values[list_index.clamp(min=0)]
    return torch.where(valid, gathered, torch.zeros_like(gathered)), valid


def list_scores(batch: LogProbBatch, objective: str) -> torch.Tensor | None:
    """``[L, K]`` the feedback's score of each list item, aligned with ``list_index``, or None without scores.

    NaN at padding and where the item's record gives no score (a ranking, a pair), so an
    objective can fall back to its plain loss for those lists. Detached: scores are data.
    """
    if batch.scores is None:
        return None
    list_index, _ = require_lists(batch, objective)
    scores = upcast(batch.scores.detach())
    if scores.shape != (batch.num_sequences,):
        raise ValueError(
            f"objective {objective!r}: batch.scores has shape {tuple(scores.shape)}; "
            f"it needs one entry per sequence ({batch.num_sequences})."
        )
    if bool(torch.isinf(scores).any()):
        raise ValueError(f"objective {objective!r}: batch.scores must be finite numbers (NaN = not given).")
    gathered = scores[list_index.clamp(min=0)]
    return torch.where(list_index >= 0, gathered, torch.full_like(gathered, float("nan")))


def plackett_luce_nll(scores: torch.Tensor, ranks: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``[L]`` negative log-likelihood of each ranking under Plackett–Luce with the given ``[L, K]`` scores.

    −Σ_k [s_k − log Σ_{j ranked no better than k} exp(s_j)], over items k that have at least
    one item ranked strictly below them. Without ties this is the usual product over
    suffixes of the ranking (the last term, log 1, drops out); tied items share one
    denominator (Breslow's method), so the order within a tie does not matter.
    """
    ranks_k, ranks_j = ranks.unsqueeze(-1), ranks.unsqueeze(-2)
    valid_j = valid.unsqueeze(-2)
    diagonal = torch.eye(scores.shape[-1], dtype=torch.bool, device=scores.device)
    competitors = ((ranks_j >= ranks_k) & valid_j) | diagonal  # the item itself keeps padding rows finite
    competitor_scores = scores.unsqueeze(-2).expand(competitors.shape)
    log_denominator = torch.logsumexp(
        torch.where(competitors, competitor_scores, torch.full_like(competitor_scores, float("-inf"))), dim=-1
    )
    has_worse = ((ranks_j > ranks_k) & valid_j).any(-1) & valid
    terms = torch.where(has_worse, log_denominator - scores, torch.zeros_like(scores))
    return terms.sum(-1)


def list_reward_metrics(rewards: torch.Tensor, valid: torch.Tensor) -> dict[str, torch.Tensor]:
    """Reward metrics of the best (first) against the worst (last valid) item of each list."""
    last = valid.sum(-1) - 1
    best = rewards[:, 0]
    worst = rewards.gather(-1, last.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return reward_metrics(best, worst)


# ----------------------------------------------------------------------------------------------
# Conditioned prompts (hindsight and reward-conditioned SFT)
# ----------------------------------------------------------------------------------------------


def conditioned_prompt(prompt: Text, condition: str) -> Text:
    """``prompt`` with ``condition`` before it, exactly as generation will put it there.

    Text prompts get the condition prepended; a conversation gets it as a leading system
    message, which is what the engine does with an objective's ``generation_prefix``.
    """
    if isinstance(prompt, str):
        return condition + prompt
    return (Message("system", condition), *prompt)


def plain_text(text: Text) -> str:
    """A completion as plain text: the string, or the contents of its messages joined."""
    return text if isinstance(text, str) else "".join(message.content for message in text)


def check_template(objective: str, name: str, template: str, *fields: str) -> None:
    """``template`` must be a non-empty ``str.format`` template using exactly the given fields."""
    if not isinstance(template, str) or not template:
        raise ConfigError(
            f"{name} must be a non-empty string for objective {objective!r}. Got {template!r}.",
            method=objective,
            field=name,
        )
    try:
        template.format(**{field: "" for field in fields})
    except (KeyError, IndexError, ValueError) as error:
        accepted = ", ".join("{" + field + "}" for field in fields) or "no fields"
        raise ConfigError(
            f"{name} must be a format string using {accepted} for objective {objective!r}. "
            f"Got {template!r} ({type(error).__name__}: {error}).",
            method=objective,
            field=name,
        ) from None
    for field_name in fields:
        if "{" + field_name + "}" not in template:
            raise ConfigError(
                f"{name} must contain {{{field_name}}} for objective {objective!r}. Got {template!r}.",
                method=objective,
                field=name,
            )


# ----------------------------------------------------------------------------------------------
# Base classes
# ----------------------------------------------------------------------------------------------


def _split(result: LossesAndMetrics) -> tuple[torch.Tensor, Metrics]:
    if isinstance(result, tuple):
        losses, metrics = result
        return losses, dict(metrics)
    return result, {}


def _beta_from_config(cls: type[UsageObjective]) -> None:
    """A concrete base-class objective reports β-scaled rewards: its config has ``beta``, or it says otherwise."""
    # ABCMeta sets __abstractmethods__ only after __init_subclass__: work it out as ABCMeta does
    own = [name for name, value in vars(cls).items() if getattr(value, "__isabstractmethod__", False)]
    inherited = [
        name
        for base in cls.__bases__
        for name in getattr(base, "__abstractmethods__", ())
        if getattr(getattr(cls, name, None), "__isabstractmethod__", False)
    ]
    abstract = own + inherited
    if abstract or cls.implicit_reward_beta is not _Base.implicit_reward_beta:
        return
    if "beta" not in {config_field.name for config_field in dataclasses.fields(cls.config_cls)}:
        raise TypeError(
            f"{cls.__name__}: the rewards it reports are β·log-ratio, so its config {cls.config_cls.__name__} "
            f"needs a 'beta' field, or {cls.__name__} must override implicit_reward_beta()."
        )


class _Base(UsageObjective, abc.ABC):
    """What the three shape bases share: β from the config, checked when the class is defined."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _beta_from_config(cls)

    def implicit_reward_beta(self) -> float | None:
        """``config.beta``: the β of the rewards β·log(π/π_ref) this objective reports."""
        return float(self.config.beta)


@dataclass(frozen=True)
class PairLosses:
    """Per-pair losses with the rewards they imply: what a fused kernel path hands back."""

    losses: torch.Tensor
    """``[P]`` loss of each pair, before weights and the ``num_items`` reduction."""
    chosen_rewards: torch.Tensor
    """``[P]`` implicit reward of each chosen completion (the ``rewards/*`` metrics)."""
    rejected_rewards: torch.Tensor
    """``[P]`` implicit reward of each rejected completion."""
    metrics: Mapping[str, Any] = field(default_factory=dict)
    """Extra detached scalar metrics (e.g. ``nll``)."""


def fused_pair_losses(batch: LogProbBatch, objective: str, kernel: Callable[..., Any], **options: Any) -> PairLosses:
    """Per-pair losses and rewards from one fused kernel of ``prefcore.kernels.preference_losses``.

    ``kernel`` is e.g. ``preference_losses.dpo_loss``; it reads the batch's pairs, its mask and
    whichever reference the batch carries (per token or cached sums), and ``options`` are the
    loss's own (``beta``, ``label_smoothing``, ...).
    """
    chosen_index, rejected_index = require_pairs(batch, objective)
    out = kernel(
        batch.policy_logps, batch.mask, chosen_index, rejected_index, **reference_kwargs(batch, objective), **options
    )
    return PairLosses(out.losses, out.chosen_rewards, out.rejected_rewards)


class PairwiseObjective(_Base):
    """Base of a pairwise objective whose loss is a function of each pair's two log-ratios.

    A subclass writes ``pair_loss`` and gets: the pairs read from the batch (a clear error on
    other data), ``batch.weights`` and ``num_items`` applied through ``reduce_losses`` (exact
    gradient accumulation), TRL's ``rewards/*`` metrics with r = β·log-ratio (β from
    ``implicit_reward_beta()``, by default ``config.beta``) and ``logps/chosen``/``logps/rejected``.

    Class attributes:
        average_logratios: hand ``pair_loss`` per-token averages instead of sums (IPO); the
            rewards stay β × the summed log-ratios, as TRL logs them.
        batch_coupled: the loss of a pair depends on the other pairs (AOT sorts the batch), so
            per-pair weights cannot apply: a weighted batch is refused, and the parity kit
            skips the per-comparison checks.
        needs_reference: False for a reference-free objective (CPO): ``pair_loss`` then gets
            the policy log-probs log π(y|x), the log-ratios to a uniform reference.

    ``fused_pair_loss(batch)`` may return a ``PairLosses`` computed in one kernel call (DPO's
    ``prefcore.kernels.preference_losses.dpo_loss``); None (the default) uses ``pair_loss``.
    The parity kit checks that both paths agree.
    """

    data_formats: ClassVar[tuple[str, ...]] = ("pairwise",)
    needs_reference: ClassVar[bool] = True
    average_logratios: ClassVar[bool] = False
    batch_coupled: ClassVar[bool] = False

    @abc.abstractmethod
    def pair_loss(
        self, chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, batch: LogProbBatch
    ) -> LossesAndMetrics:
        """``[P]`` loss of each pair from its ``[P]`` log-ratios (or per-pair losses and extra metrics).

        ``batch`` is there for per-pair data (``pair_probabilities``, ``pair_margins``,
        ``pair_lengths``); the loss must not reduce over pairs (the base does).
        """

    def fused_pair_loss(self, batch: LogProbBatch) -> PairLosses | None:
        """The same losses from one fused kernel call, or None to use ``pair_loss`` (the default)."""
        return None

    def pair_inputs(self, batch: LogProbBatch, *, average: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``[P]`` chosen and rejected log-ratios (policy log-probs when reference-free)."""
        if self.uses_reference():
            return pair_logratios(batch, self.name, average=average)
        return pair_logps(batch, self.name, average=average)

    def pair_losses(self, batch: LogProbBatch) -> PairLosses:
        """Per-pair losses and rewards through ``pair_loss`` (the formula path, never the fused one)."""
        chosen, rejected = self.pair_inputs(batch)
        if self.average_logratios:
            losses, metrics = _split(self.pair_loss(*self.pair_inputs(batch, average=True), batch))
        else:
            losses, metrics = _split(self.pair_loss(chosen, rejected, batch))
        beta = self.implicit_reward_beta()
        return PairLosses(losses, beta * chosen, beta * rejected, metrics)

    def loss(self, batch: LogProbBatch) -> LossOutput:
        require_pairs(batch, self.name)
        if self.batch_coupled and batch.weights is not None:
            raise ValueError(
                f"objective {self.name!r} couples the pairs of a batch, so per-pair weights do not apply; "
                f"drop the weights or use 'dpo'."
            )
        out = self.fused_pair_loss(batch)
        if out is None:
            out = self.pair_losses(batch)
        weights = None if self.batch_coupled else item_weights(batch, out.losses.numel())
        loss = reduce_losses(out.losses, batch, weights)
        metrics = {
            **reward_metrics(out.chosen_rewards, out.rejected_rewards),
            **pair_logp_metrics(batch, self.name),
            **out.metrics,
        }
        return LossOutput(loss, metrics)


class ListwiseObjective(_Base):
    """Base of a listwise objective: a score per completion, a loss per ranked list.

    A subclass writes ``sequence_scores(batch)`` (``[S]``, e.g. β·log-ratios) and
    ``list_loss(scores, ranks, valid, batch)`` (``[L]`` from ``[L, K]`` scores, ranks with
    1 = best, and the validity mask); it gets the lists read from the batch, weights and
    ``num_items`` applied, and reward metrics of the best against the worst item of each list.
    """

    data_formats: ClassVar[tuple[str, ...]] = ("listwise",)

    @abc.abstractmethod
    def sequence_scores(self, batch: LogProbBatch) -> torch.Tensor:
        """``[S]`` the score of each completion that the ranking loss compares."""

    @abc.abstractmethod
    def list_loss(
        self, scores: torch.Tensor, ranks: torch.Tensor, valid: torch.Tensor, batch: LogProbBatch
    ) -> LossesAndMetrics:
        """``[L]`` loss of each list (or per-list losses and extra metrics)."""

    def loss(self, batch: LogProbBatch) -> LossOutput:
        list_index, list_ranks = require_lists(batch, self.name)
        scores, valid = list_values(self.sequence_scores(batch), list_index)
        losses, extra = _split(self.list_loss(scores, list_ranks.to(scores.dtype), valid, batch))
        loss = reduce_losses(losses, batch, item_weights(batch, losses.numel()))
        return LossOutput(loss, {**list_reward_metrics(scores, valid), **extra})


@dataclass(frozen=True)
class UnpairedLosses:
    """Per-sequence losses of the labelled sequences with their rewards: what a fused kernel path hands back."""

    losses: torch.Tensor
    """``[N]`` loss of each labelled sequence (KTO's mismatched sequences excluded), in sequence order."""
    desirable_rewards: torch.Tensor
    """Implicit rewards of the desirable sequences (the ``rewards/chosen`` metric)."""
    undesirable_rewards: torch.Tensor
    """Implicit rewards of the undesirable sequences (the ``rewards/rejected`` metric)."""
    metrics: Mapping[str, Any] = field(default_factory=dict)


class UnpairedObjective(_Base):
    """Base of an objective on single completions labelled desirable or undesirable (KTO's shape).

    A subclass writes ``sequence_loss(logratios, labels, batch)``: ``[N]`` losses from the
    ``[N]`` log-ratios and labels of the labelled sequences (KTO's mismatched sequences,
    which only estimate a reference point, are left out). It gets per-sequence weights and
    ``num_items`` applied and TRL's KTO metrics (``rewards/chosen``, ``rewards/rejected``,
    ``rewards/margins``, ``logps/chosen``, ``logps/rejected``). ``fused_unpaired_loss`` may
    offer a fused kernel path, as on ``PairwiseObjective``.
    """

    data_formats: ClassVar[tuple[str, ...]] = ("unpaired",)
    needs_reference: ClassVar[bool] = True

    @abc.abstractmethod
    def sequence_loss(self, logratios: torch.Tensor, labels: torch.Tensor, batch: LogProbBatch) -> LossesAndMetrics:
        """``[N]`` loss of each labelled sequence (or the losses and extra metrics)."""

    def fused_unpaired_loss(self, batch: LogProbBatch, rows: torch.Tensor) -> UnpairedLosses | None:
        """The same losses for the labelled ``rows`` from one fused kernel call, or None (the default)."""
        return None

    def unpaired_losses(self, batch: LogProbBatch, rows: torch.Tensor) -> UnpairedLosses:
        """Losses and rewards of the labelled ``rows`` through ``sequence_loss`` (never the fused path)."""
        labels = require_labels(batch, self.name)[rows]
        logratios = (policy_sequence_logps(batch) - reference_sequence_logps(batch, self.name))[rows]
        losses, metrics = _split(self.sequence_loss(logratios, labels, batch))
        rewards = (self.implicit_reward_beta() * logratios).detach()
        return UnpairedLosses(losses, rewards[labels], rewards[~labels], metrics)

    def loss(self, batch: LogProbBatch) -> LossOutput:
        labels = require_labels(batch, self.name)
        rows = labelled_mask(batch).nonzero().flatten()
        out = self.fused_unpaired_loss(batch, rows)
        if out is None:
            out = self.unpaired_losses(batch, rows)
        weights = sequence_weights(batch)
        loss = reduce_losses(out.losses, batch, None if weights is None else weights[rows])
        chosen_reward, rejected_reward = mean_or_zero(out.desirable_rewards), mean_or_zero(out.undesirable_rewards)
        with torch.no_grad():
            logps = preference_losses.sequence_logps(batch.policy_logps, batch.mask)[0][rows]
        desirable = labels[rows]
        metrics = {
            "rewards/chosen": chosen_reward,
            "rewards/rejected": rejected_reward,
            "rewards/margins": chosen_reward - rejected_reward,
            **logp_metrics(logps[desirable], logps[~desirable]),
            **out.metrics,
        }
        return LossOutput(loss, metrics)
