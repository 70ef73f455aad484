"""Helpers shared by the built-in usage objectives: config checks, pairing, reduction, metrics.

Not a plugin: it registers nothing. Every objective reduces its per-comparison losses
through ``reduce_losses`` so that weights, ``num_items`` (gradient accumulation) and empty
micro-batches are handled the same way everywhere; token-averaged NLL terms go through
``nll_shares`` / ``token_mean_scale`` so that ``num_tokens`` makes them exact across splits.
"""

from __future__ import annotations

from prefcore.batch import LogProbBatch
from prefcore.data import Message
from prefcore.data import Text
from prefcore.lazy import lazy_module

torch = lazy_module("torch")
preference_losses = lazy_module("prefcore.kernels.preference_losses")


# ----------------------------------------------------------------------------------------------
# Config checks: the message names the option, the objective and the value
# ----------------------------------------------------------------------------------------------


def check_positive(objective: str, name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0 for objective {objective!r}. Got {value}.")


def check_non_negative(objective: str, name: str, value: float) -> None:
    if not value >= 0:
        raise ValueError(f"{name} must be >= 0 for objective {objective!r}. Got {value}.")


def check_in_range(objective: str, name: str, value: float, low: float, high: float, *, closed: str = "[)") -> None:
    """``closed`` says which ends belong to the range: ``[)``, ``[]``, ``()`` or ``(]``."""
    above = value >= low if closed[0] == "[" else value > low
    below = value <= high if closed[1] == "]" else value < high
    if not (above and below):
        interval = f"{closed[0]}{low}, {high}{closed[1]}"
        raise ValueError(f"{name} must be in {interval} for objective {objective!r}. Got {value}.")


# ----------------------------------------------------------------------------------------------
# Reading the batch
# ----------------------------------------------------------------------------------------------


def upcast(values: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 to fp32 (exponentials and sums lose too much in half precision); fp32/fp64 unchanged."""
    return values.float() if values.dtype in (torch.float16, torch.bfloat16) else values


def require_pairs(batch: LogProbBatch, objective: str) -> tuple[torch.Tensor, torch.Tensor]:
    if batch.chosen_index is None or batch.rejected_index is None:
        raise ValueError(
            f"objective {objective!r} trains on pairs, but the batch has no chosen_index/rejected_index; "
            f"use pairwise data."
        )
    return batch.chosen_index, batch.rejected_index


def require_lists(batch: LogProbBatch, objective: str) -> tuple[torch.Tensor, torch.Tensor]:
    if batch.list_index is None or batch.list_ranks is None:
        raise ValueError(
            f"objective {objective!r} trains on ranked lists, but the batch has no list_index/list_ranks; "
            f"use listwise data."
        )
    return batch.list_index, batch.list_ranks


def require_labels(batch: LogProbBatch, objective: str) -> torch.Tensor:
    if batch.labels is None:
        raise ValueError(
            f"objective {objective!r} trains on labelled completions, but the batch has no labels; use unpaired data."
        )
    return batch.labels


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


def pair_logratios(batch: LogProbBatch, objective: str, *, average: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``log π(y|x) − log π_ref(y|x)`` of the chosen and rejected completion of each pair."""
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
    """TRL's reward metrics of the implicit rewards of each pair: means, margin and accuracy."""
    chosen_rewards, rejected_rewards = chosen_rewards.detach().float(), rejected_rewards.detach().float()
    return {
        "rewards/chosen": mean_or_zero(chosen_rewards),
        "rewards/rejected": mean_or_zero(rejected_rewards),
        "rewards/margin": mean_or_zero(chosen_rewards - rejected_rewards),
        "rewards/accuracy": mean_or_zero((chosen_rewards > rejected_rewards).float()),
    }


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
        raise ValueError(f"{name} must be a non-empty string for objective {objective!r}. Got {template!r}.")
    try:
        template.format(**{field: "" for field in fields})
    except (KeyError, IndexError, ValueError) as error:
        accepted = ", ".join("{" + field + "}" for field in fields) or "no fields"
        raise ValueError(
            f"{name} must be a format string using {accepted} for objective {objective!r}. "
            f"Got {template!r} ({type(error).__name__}: {error})."
        ) from None
    for field in fields:
        if "{" + field + "}" not in template:
            raise ValueError(f"{name} must contain {{{field}}} for objective {objective!r}. Got {template!r}.")
