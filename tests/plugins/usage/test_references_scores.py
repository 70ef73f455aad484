"""Scores and margins reach the objectives whose papers define them: PRO's reward temperature, ODPO's offset.

PRO (Song et al. 2024) tempers each softmax of a scored list by the reward gaps; checked
against a transcription of the authors' ``compute_loss`` on strict rankings and against the
paper's formula written with explicit loops (ties included), then through the parity kit.
RRHF (Yuan et al. 2023) compares completions by their rewards r_i: the engine orders scored
lists by score, so RRHF on a batch built from scored records equals the paper's loss written
with the records' own scores. ODPO (Amini et al. 2024) is checked against the authors'
``preference_loss`` and a per-pair loop, pairs without a margin included.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from prefcore.batch import LogProbBatch
from prefcore.data import Scores
from prefcore.demo.task import rankings
from prefcore.demo.tokenizer import build_tokenizer
from prefcore.engine.batching import build_items
from prefcore.engine.batching import collate
from prefcore.methods import UsageObjective
from prefcore.registry import Registry
from prefcore.testing import assert_matches_reference
from prefcore.testing import check_objective
from prefcore.testing import make_random_batch

RTOL, ATOL = 1e-5, 1e-6


def _objective(registry: Registry, name: str, **options: Any) -> UsageObjective:
    objective = registry.create("usage", name, options)
    assert isinstance(objective, UsageObjective)
    return objective


def _tokens(batch: LogProbBatch, sequence: int) -> list[int]:
    return [t for t in range(batch.mask.shape[1]) if bool(batch.mask[sequence, t])]


def _policy_sum(batch: LogProbBatch, sequence: int) -> torch.Tensor:
    return torch.stack([batch.policy_logps[sequence, t] for t in _tokens(batch, sequence)]).sum()


def _policy_mean(batch: LogProbBatch, sequence: int) -> torch.Tensor:
    return _policy_sum(batch, sequence) / len(_tokens(batch, sequence))


def _logratio(batch: LogProbBatch, sequence: int) -> torch.Tensor:
    tokens = _tokens(batch, sequence)
    if batch.ref_sequence_logps is not None:
        reference = batch.ref_sequence_logps[sequence]
    else:
        assert batch.ref_logps is not None
        reference = torch.stack([batch.ref_logps[sequence, t] for t in tokens]).sum()
    return _policy_sum(batch, sequence) - reference


def _lists(batch: LogProbBatch) -> list[list[tuple[int, float]]]:
    """Each list's (sequence, rank) items, best first."""
    assert batch.list_index is not None and batch.list_ranks is not None
    return [
        [(int(i), float(r)) for i, r in zip(row, ranks, strict=True) if int(i) >= 0]
        for row, ranks in zip(batch.list_index, batch.list_ranks, strict=True)
    ]


def _scored_lists(seed: int = 0, *, with_ties: bool = True, **kwargs: Any) -> LogProbBatch:
    """A listwise batch whose scores fall down each ranking by random gaps (ties share a score)."""
    batch = make_random_batch("listwise", with_reference=False, with_ties=with_ties, seed=seed, **kwargs)
    generator = torch.Generator().manual_seed(seed + 100)
    scores = torch.full((batch.num_sequences,), math.nan, dtype=torch.float64)
    for items in _lists(batch):
        levels = sorted({rank for _, rank in items})
        gaps = 0.2 + 1.8 * torch.rand(len(levels), generator=generator, dtype=torch.float64)
        value = {rank: 4.0 - float(gaps[: position + 1].sum()) for position, rank in enumerate(levels)}
        for sequence, rank in items:
            scores[sequence] = value[rank]
    return replace(batch, scores=scores.to(batch.policy_logps.dtype))


# ----------------------------------------------------------------------------------------------
# PRO
# ----------------------------------------------------------------------------------------------


def damo_pro_compute_loss(scores: torch.Tensor, rewards: torch.Tensor) -> torch.Tensor:
    """The ranking part of PRO's ``compute_loss`` (AlibabaResearch/DAMO-ConvAI, PRO/train/utils/process_manager.py).

    ``scores``: ``[B, n]`` length-normalised log-probs, best first; ``rewards``: ``[B, n]``,
    strictly decreasing along each row. The authors' eps (1e-10 inside the log) is left out.
    """
    total = torch.zeros((), dtype=scores.dtype)
    for time in range(scores.shape[1] - 1):
        neg_temperatures = rewards[:, time].view(-1, 1) - rewards[:, time + 1 :]
        pos_temperature = torch.max(neg_temperatures, dim=1).values
        loss = (
            torch.log(
                torch.exp(scores[:, time] * pos_temperature)
                + torch.sum(torch.exp(scores[:, time + 1 :] * neg_temperatures), dim=1)
            )
            - scores[:, time] * pos_temperature
        )
        total = total + loss.mean()
    return total


def song_pro_loss(batch: LogProbBatch, *, sft_weight: float, use_scores: bool = True) -> torch.Tensor:
    """Song et al. 2024, L_PRO + β·L_SFT per list, written with loops, averaged over lists.

    Item k with items ranked strictly below it: −log [exp(T_kk·s_k) / Σ_j exp(T_kj·s_j)] over
    the items j ranked no better than k; T_kj = r_k − r_j below k, T_kk = max of those, and
    items tied with k take T_kk (the documented tie rule). Without scores every T is 1.
    """
    losses = []
    for items in _lists(batch):
        s = {sequence: _policy_mean(batch, sequence) for sequence, _ in items}
        r = {sequence: float(batch.scores[sequence]) for sequence, _ in items} if batch.scores is not None else {}
        scored = use_scores and bool(r) and not any(math.isnan(value) for value in r.values())
        loss = torch.zeros((), dtype=batch.policy_logps.dtype)
        for k, rank_k in items:
            below = [j for j, rank_j in items if rank_j > rank_k]
            if not below:
                continue
            top = max(r[k] - r[j] for j in below) if scored else 1.0
            competitors = [j for j, rank_j in items if rank_j >= rank_k]
            factor = {j: (r[k] - r[j] if j in below else top) if scored else 1.0 for j in competitors}
            loss = loss + torch.logsumexp(torch.stack([factor[j] * s[j] for j in competitors]), 0) - top * s[k]
        losses.append(loss - sft_weight * s[items[0][0]])
    return torch.stack(losses).mean()


def test_pro_matches_the_authors_code_on_strict_scored_rankings(usage_registry: Registry) -> None:
    batch = _scored_lists(seed=2, with_ties=False, num_items=5, list_size=4)
    objective = _objective(usage_registry, "pro", sft_weight=0.0)

    def reference(b: LogProbBatch) -> torch.Tensor:
        per_list = []
        for items in _lists(b):
            scores = torch.stack([_policy_mean(b, sequence) for sequence, _ in items]).unsqueeze(0)
            rewards = torch.tensor([[float(b.scores[sequence]) for sequence, _ in items]], dtype=scores.dtype)
            per_list.append(damo_pro_compute_loss(scores, rewards))
        return torch.stack(per_list).mean()

    assert_matches_reference(objective, batch, reference, rtol=RTOL, atol=ATOL, reference_name="DAMO PRO compute_loss")


@pytest.mark.parametrize("sft_weight", [0.0, 0.3])
def test_pro_with_scores_matches_the_paper_ties_included(usage_registry: Registry, sft_weight: float) -> None:
    batch = _scored_lists(seed=5, num_items=6, list_size=5)
    objective = _objective(usage_registry, "pro", sft_weight=sft_weight)
    reference = lambda b: song_pro_loss(b, sft_weight=sft_weight)
    assert_matches_reference(objective, batch, reference, rtol=RTOL, atol=ATOL, reference_name="PRO paper")


def test_parity_kit_of_pro_with_scores(usage_registry: Registry) -> None:
    objective = _objective(usage_registry, "pro", sft_weight=0.2)
    batch = _scored_lists(seed=8, num_items=6, list_size=4, with_weights=True)
    check_objective(objective, batch, lambda b: song_pro_loss(b, sft_weight=0.2))


def test_pro_scores_change_the_loss_and_the_option_turns_them_off(usage_registry: Registry) -> None:
    scored = _scored_lists(seed=3)
    plain = replace(scored, scores=None)
    on, off = _objective(usage_registry, "pro"), _objective(usage_registry, "pro", use_scores=False)
    assert not torch.allclose(on.loss(scored).loss, on.loss(plain).loss), "pro ignores the scores"
    torch.testing.assert_close(off.loss(scored).loss, on.loss(plain).loss)
    torch.testing.assert_close(off.loss(scored).loss, song_pro_loss(scored, sft_weight=0.05, use_scores=False))


def test_pro_lists_without_scores_keep_the_plain_loss(usage_registry: Registry) -> None:
    """A mixed batch: lists whose scores are NaN (rankings, pairs) train exactly as without scores."""
    scored = _scored_lists(seed=4, num_items=4)
    assert scored.scores is not None and scored.list_index is not None
    unscored_rows = [1, 3]
    scores = scored.scores.clone()
    for row in unscored_rows:
        row_sequences = scored.list_index[row]
        scores[row_sequences[row_sequences >= 0]] = math.nan
    mixed = replace(scored, scores=scores)
    objective = _objective(usage_registry, "pro")
    torch.testing.assert_close(objective.loss(mixed).loss, song_pro_loss(mixed, sft_weight=0.05))
    all_nan = replace(scored, scores=torch.full_like(scores, math.nan))
    torch.testing.assert_close(objective.loss(all_nan).loss, objective.loss(replace(scored, scores=None)).loss)


def test_pro_refuses_scores_that_contradict_the_ranking(usage_registry: Registry) -> None:
    batch = _scored_lists(seed=6, with_ties=False)
    assert batch.scores is not None
    objective = _objective(usage_registry, "pro")
    with pytest.raises(ValueError, match=r"objective 'pro'.*fall strictly down"):
        objective.loss(replace(batch, scores=-batch.scores))
    with pytest.raises(ValueError, match=r"objective 'pro'.*one entry per sequence"):
        objective.loss(replace(batch, scores=batch.scores[:-1]))


# ----------------------------------------------------------------------------------------------
# RRHF and listwise DPO: ordered by the rewards, which the engine's ranks already are
# ----------------------------------------------------------------------------------------------


def yuan_rrhf_loss_by_rewards(batch: LogProbBatch) -> torch.Tensor:
    """Yuan et al. 2023, Eqs. 1-4 (λ = 1, unit weights): Σ_{r_i < r_j} max(0, p_i − p_j) − Σ log π(y_best), per list.

    The pairs compared and the best completion come from the rewards ``batch.scores``, not the ranks.
    """
    assert batch.scores is not None
    losses = []
    for items in _lists(batch):
        sequences = [sequence for sequence, _ in items]
        reward = {sequence: float(batch.scores[sequence]) for sequence in sequences}
        p = {sequence: _policy_mean(batch, sequence) for sequence in sequences}
        rank = sum(
            (torch.relu(p[i] - p[j]) for i in sequences for j in sequences if reward[i] < reward[j]),
            torch.zeros((), dtype=batch.policy_logps.dtype),
        )
        best = max(sequences, key=lambda sequence: reward[sequence])
        losses.append(rank - _policy_sum(batch, best))
    return torch.stack(losses).mean()


def _batch_from_scored_records(seed: int = 0) -> tuple[LogProbBatch, list[Scores]]:
    """Scores records (ties included) through ``build_items`` and ``collate``, random policy log-probs."""
    tokenizer = build_tokenizer()
    values = [(4.0, 2.5, 2.5, 1.0), (1.0, 5.0, 3.0), (2.0, 4.5, 3.5, 5.0)]
    records = []
    for ranking, rated in zip(rankings(count=3, seed=seed), values, strict=True):
        completions = ranking.completions[: len(rated)]
        records.append(Scores(ranking.prompt, completions, tuple({"overall": v} for v in rated), (1, 5)))
    sequences = collate(build_items(records, "listwise", tokenizer, max_length=64), tokenizer.pad_token_id)
    mask = sequences.sequences.completion_mask
    generator = torch.Generator().manual_seed(seed)
    policy_logps = (0.02 + 0.96 * torch.rand(mask.shape, generator=generator)).log() * mask
    batch = LogProbBatch(
        policy_logps=policy_logps,
        mask=mask,
        list_index=sequences.list_index,
        list_ranks=sequences.list_ranks,
        scores=sequences.scores,
    )
    return batch, records


def test_scored_records_reach_the_batch_with_their_scores() -> None:
    batch, records = _batch_from_scored_records()
    expected = [row["overall"] for record in records for row in record.scores]
    assert batch.scores is not None
    assert batch.scores.tolist() == pytest.approx(expected)


def test_rrhf_on_scored_records_is_the_paper_loss_ranked_by_the_rewards(usage_registry: Registry) -> None:
    batch, _ = _batch_from_scored_records()
    objective = _objective(usage_registry, "rrhf")
    assert_matches_reference(
        objective, batch, yuan_rrhf_loss_by_rewards, rtol=RTOL, atol=ATOL, reference_name="RRHF by rewards"
    )


@pytest.mark.parametrize("name", ["rrhf", "plackett_luce_dpo"])
def test_order_only_listwise_objectives_ignore_the_score_values(usage_registry: Registry, name: str) -> None:
    """RRHF and listwise DPO use only the order of the rewards, which the ranks already give."""
    batch = _scored_lists(seed=7)
    if name == "plackett_luce_dpo":
        batch = replace(batch, ref_logps=make_random_batch("listwise", with_ties=True, seed=7).ref_logps)
    assert batch.scores is not None
    objective = _objective(usage_registry, name)
    rescaled = replace(batch, scores=3 * batch.scores + 1)
    torch.testing.assert_close(objective.loss(batch).loss, objective.loss(replace(batch, scores=None)).loss)
    torch.testing.assert_close(objective.loss(rescaled).loss, objective.loss(batch).loss)


# ----------------------------------------------------------------------------------------------
# ODPO
# ----------------------------------------------------------------------------------------------


def rycolab_odpo_preference_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    reference_chosen_logps: torch.Tensor,
    reference_rejected_logps: torch.Tensor,
    beta: float,
    alpha: float,
    chosen_rewards: list[torch.Tensor],
    rejected_rewards: list[torch.Tensor],
) -> torch.Tensor:
    """The ``offset=True`` branch of ``preference_loss`` in rycolab/odpo, trainers.py (mean over pairs)."""
    logits = (policy_chosen_logps - policy_rejected_logps) - (reference_chosen_logps - reference_rejected_logps)
    margin = torch.stack(chosen_rewards, dim=0) - torch.stack(rejected_rewards, dim=0)
    margin = torch.log(margin)
    return (-F.logsigmoid(beta * logits - alpha * margin)).mean()


def amini_odpo_per_pair_loss(batch: LogProbBatch, *, beta: float, alpha: float) -> torch.Tensor:
    """−log σ(β·h − α·log m) per pair, Δ = 0 for a pair without a margin (m = 0), averaged."""
    assert batch.chosen_index is not None and batch.rejected_index is not None
    losses = []
    for i in range(batch.chosen_index.numel()):
        margin = 0.0 if batch.margins is None else float(batch.margins[i])
        offset = alpha * math.log(margin) if margin > 0 else 0.0
        h = _logratio(batch, int(batch.chosen_index[i])) - _logratio(batch, int(batch.rejected_index[i]))
        losses.append(-F.logsigmoid(beta * h - offset))
    return torch.stack(losses).mean()


def _margin_batch(seed: int = 0, margins: list[float] | None = None, **kwargs: Any) -> LogProbBatch:
    margins = margins or [1.5, 0.25, 0.0, 3.0, 0.8, 0.0]
    batch = make_random_batch("pairwise", num_items=len(margins), seed=seed, **kwargs)
    return replace(batch, margins=torch.tensor(margins, dtype=batch.policy_logps.dtype))


@pytest.mark.parametrize("reference_per_sequence", [False, True])
def test_odpo_matches_the_authors_code(usage_registry: Registry, reference_per_sequence: bool) -> None:
    batch = _margin_batch(seed=1, margins=[1.5, 0.25, 3.0, 0.8], reference_per_sequence=reference_per_sequence)
    objective = _objective(usage_registry, "odpo", beta=0.5, alpha=0.7)
    assert batch.chosen_index is not None and batch.rejected_index is not None and batch.margins is not None

    def reference(b: LogProbBatch) -> torch.Tensor:
        chosen, rejected = b.chosen_index, b.rejected_index
        policy = torch.stack([_policy_sum(b, s) for s in range(b.num_sequences)])
        ref = policy - torch.stack([_logratio(b, s) for s in range(b.num_sequences)])
        base = [torch.tensor(2.0)] * len(chosen)  # each completion's own score; only the gap matters
        chosen_scores = [base[i] + b.margins[i] for i in range(len(chosen))]
        return rycolab_odpo_preference_loss(
            policy[chosen], policy[rejected], ref[chosen].detach(), ref[rejected].detach(), 0.5, 0.7,
            chosen_scores, base,
        )  # fmt: skip

    assert_matches_reference(objective, batch, reference, rtol=RTOL, atol=ATOL, reference_name="rycolab ODPO")


def test_parity_kit_of_odpo_with_and_without_margins(usage_registry: Registry) -> None:
    objective = _objective(usage_registry, "odpo", beta=0.3, alpha=1.0)
    check_objective(
        objective,
        _margin_batch(seed=8, with_weights=True),
        lambda b: amini_odpo_per_pair_loss(b, beta=0.3, alpha=1.0),
    )
    check_objective(objective)  # the kit's own batches, without margins


def test_odpo_without_margins_is_dpo(usage_registry: Registry) -> None:
    batch = _margin_batch(seed=2)
    odpo, dpo = _objective(usage_registry, "odpo", beta=0.2), _objective(usage_registry, "dpo", beta=0.2)
    for plain in (replace(batch, margins=None), replace(batch, margins=torch.zeros(6))):
        torch.testing.assert_close(odpo.loss(plain).loss, dpo.loss(plain).loss)
    torch.testing.assert_close(
        _objective(usage_registry, "odpo", beta=0.2, alpha=0.0).loss(batch).loss, dpo.loss(batch).loss
    )
    assert not torch.allclose(odpo.loss(batch).loss, dpo.loss(batch).loss), "odpo ignores the margins"


def test_odpo_asks_more_of_pairs_with_larger_margins(usage_registry: Registry) -> None:
    """The same pair loses more, and is pushed harder, as its margin grows: the offset is α·log m."""
    objective = _objective(usage_registry, "odpo", beta=0.5)
    base = make_random_batch("pairwise", num_items=1, seed=3)
    losses = [float(objective.loss(replace(base, margins=torch.tensor([m]))).loss) for m in (0.5, 1.0, 4.0, 20.0)]
    assert losses == sorted(losses) and len(set(losses)) == 4


def test_odpo_refuses_bad_options_and_margins(usage_registry: Registry) -> None:
    with pytest.raises(ValueError, match="alpha must be >= 0 for objective 'odpo'"):
        _objective(usage_registry, "odpo", alpha=-1.0)
    with pytest.raises(ValueError, match="beta must be > 0 for objective 'odpo'"):
        _objective(usage_registry, "odpo", beta=0.0)
    with pytest.raises(ValueError, match=r"objective 'odpo'.*margins"):
        _objective(usage_registry, "odpo").loss(_margin_batch(margins=[1.0, math.inf]))
