"""Objectives without a TRL implementation, checked against their paper's formula in plain torch.

Each reference below is written from the equation it names, with explicit loops over lists
and tokens, so that it shares no code (and no vectorisation trick) with the plugin.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from prefcore.batch import LogProbBatch
from prefcore.methods import UsageObjective
from prefcore.registry import Registry
from prefcore.testing import assert_matches_reference
from prefcore.testing import make_random_batch

RTOL, ATOL = 1e-5, 1e-6


def _objective(registry: Registry, name: str, **options: Any) -> UsageObjective:
    objective = registry.create("usage", name, options)
    assert isinstance(objective, UsageObjective)
    return objective


def _tokens(batch: LogProbBatch, sequence: int, values: torch.Tensor | None = None) -> list[torch.Tensor]:
    """The completion-token values of one sequence, in order."""
    row = (batch.policy_logps if values is None else values)[sequence]
    return [row[t] for t in range(row.shape[0]) if bool(batch.mask[sequence, t])]


def _log_likelihood(batch: LogProbBatch, sequence: int) -> torch.Tensor:
    """log π(y|x) = Σ_t log π(y_t | x, y_<t)."""
    return torch.stack(_tokens(batch, sequence)).sum()


def _reference_log_likelihood(batch: LogProbBatch, sequence: int) -> torch.Tensor:
    if batch.ref_sequence_logps is not None:
        return batch.ref_sequence_logps[sequence]
    assert batch.ref_logps is not None
    return torch.stack(_tokens(batch, sequence, batch.ref_logps)).sum()


def _length(batch: LogProbBatch, sequence: int) -> int:
    return int(batch.mask[sequence].sum())


def _lists(batch: LogProbBatch) -> list[list[tuple[int, float]]]:
    """Each list as (sequence, rank) in the batch's best-first order, padding dropped."""
    assert batch.list_index is not None and batch.list_ranks is not None
    return [
        [(int(sequence), float(rank)) for sequence, rank in zip(row, ranks, strict=True) if sequence >= 0]
        for row, ranks in zip(batch.list_index, batch.list_ranks, strict=True)
    ]


# ----------------------------------------------------------------------------------------------
# References
# ----------------------------------------------------------------------------------------------


def mitchell_cdpo_loss(batch: LogProbBatch, *, beta: float, label_smoothing: float) -> torch.Tensor:
    """Mitchell 2023, "A note on DPO with noisy preferences", the conservative DPO loss.

    L = −(1 − ε)·log σ(β h) − ε·log σ(−β h), h the difference of the two log-ratios.
    """
    assert batch.chosen_index is not None and batch.rejected_index is not None
    losses = []
    for chosen, rejected in zip(batch.chosen_index.tolist(), batch.rejected_index.tolist(), strict=True):
        h = (_log_likelihood(batch, chosen) - _reference_log_likelihood(batch, chosen)) - (
            _log_likelihood(batch, rejected) - _reference_log_likelihood(batch, rejected)
        )
        losses.append(-(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h))
    return torch.stack(losses).mean()


def yuan_rrhf_loss(
    batch: LogProbBatch, *, ranking_weight: float, sft_weight: float, length_penalty: float
) -> torch.Tensor:
    """Yuan et al. 2023, RRHF, Eqs. 1-4: L_rank = Σ_{r_i<r_j} max(0, p_i − p_j), L_ft = −log π(y_best|x)."""
    losses = []
    for items in _lists(batch):
        scores = {s: _log_likelihood(batch, s) / _length(batch, s) ** length_penalty for s, _ in items}
        ranking = torch.zeros(())
        for worse, worse_rank in items:
            for better, better_rank in items:
                if worse_rank > better_rank:
                    ranking = ranking + torch.clamp(scores[worse] - scores[better], min=0)
        best = min(items, key=lambda item: item[1])[0]
        losses.append(ranking_weight * ranking - sft_weight * _log_likelihood(batch, best))
    return torch.stack(losses).mean()


def song_pro_loss(batch: LogProbBatch, *, sft_weight: float) -> torch.Tensor:
    """Song et al. 2024, PRO, Eqs. 5-8: −Σ_{k<n} log softmax over the suffix y_k..y_n, + β·NLL of y_1."""
    losses = []
    for items in _lists(batch):
        ordered = [s for s, _ in sorted(items, key=lambda item: item[1])]
        scores = [_log_likelihood(batch, s) / _length(batch, s) for s in ordered]
        ranking = torch.zeros(())
        for k in range(len(scores) - 1):
            denominator = torch.logsumexp(torch.stack(scores[k:]), dim=0)
            ranking = ranking - (scores[k] - denominator)
        losses.append(ranking + sft_weight * -scores[0])
    return torch.stack(losses).mean()


def rafailov_plackett_luce_loss(batch: LogProbBatch, *, beta: float) -> torch.Tensor:
    """Rafailov et al. 2023, DPO Appendix A.3, Eq. 20: Plackett–Luce over implicit rewards, all K terms."""
    losses = []
    for items in _lists(batch):
        ordered = [s for s, _ in sorted(items, key=lambda item: item[1])]
        rewards = [beta * (_log_likelihood(batch, s) - _reference_log_likelihood(batch, s)) for s in ordered]
        log_likelihood = torch.zeros(())
        for k in range(len(rewards)):
            log_likelihood = log_likelihood + rewards[k] - torch.logsumexp(torch.stack(rewards[k:]), dim=0)
        losses.append(-log_likelihood)
    return torch.stack(losses).mean()


def welleck_unlikelihood_loss(batch: LogProbBatch, *, alpha: float) -> torch.Tensor:
    """Welleck et al. 2020, Eq. 4 per token, −log(1 − p) with 1 − p floored at 1e-5 (the paper's code)."""

    def nll(sequence: int) -> torch.Tensor:
        return -torch.stack(_tokens(batch, sequence)).mean()

    def unlikelihood(sequence: int) -> torch.Tensor:
        terms = [-torch.log(torch.clamp(1 - logp.exp(), min=1e-5)) for logp in _tokens(batch, sequence)]
        return torch.stack(terms).mean()

    if batch.chosen_index is not None and batch.rejected_index is not None:
        pairs = zip(batch.chosen_index.tolist(), batch.rejected_index.tolist(), strict=True)
        return torch.stack([nll(chosen) + alpha * unlikelihood(rejected) for chosen, rejected in pairs]).mean()
    assert batch.labels is not None
    return torch.stack(
        [nll(s) if bool(batch.labels[s]) else alpha * unlikelihood(s) for s in range(batch.num_sequences)]
    ).mean()


def transformers_causal_lm_loss(batch: LogProbBatch) -> torch.Tensor:
    """``transformers.loss.loss_utils.ForCausalLMLoss`` (what TRL's SFTTrainer optimises): the mean of
    −log p over every non-ignored token of the batch."""
    tokens = [logp for sequence in range(batch.num_sequences) for logp in _tokens(batch, sequence)]
    return -torch.stack(tokens).mean()


# ----------------------------------------------------------------------------------------------
# Tests
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reference_per_sequence", [False, True])
@pytest.mark.parametrize("label_smoothing", [0.1, 0.4])
def test_cdpo_matches_mitchell_cdpo_loss(
    usage_registry: Registry, reference_per_sequence: bool, label_smoothing: float
) -> None:
    batch = make_random_batch("pairwise", num_items=5, reference_per_sequence=reference_per_sequence, seed=11)
    objective = _objective(usage_registry, "cdpo", beta=0.3, label_smoothing=label_smoothing)
    assert_matches_reference(
        objective,
        batch,
        lambda batch: mitchell_cdpo_loss(batch, beta=0.3, label_smoothing=label_smoothing),
        rtol=RTOL,
        atol=ATOL,
    )


@pytest.mark.parametrize("with_ties", [False, True])
@pytest.mark.parametrize(
    "options",
    [
        {"ranking_weight": 1.0, "sft_weight": 1.0, "length_penalty": 1.0},
        {"ranking_weight": 3.0, "sft_weight": 0.5, "length_penalty": 0.0},
    ],
)
def test_rrhf_matches_yuan_rrhf_loss(usage_registry: Registry, with_ties: bool, options: dict[str, float]) -> None:
    batch = make_random_batch("listwise", num_items=4, with_reference=False, with_ties=with_ties, seed=12)
    objective = _objective(usage_registry, "rrhf", **options)
    assert_matches_reference(objective, batch, lambda batch: yuan_rrhf_loss(batch, **options), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("sft_weight", [0.0, 0.05, 1.0])
def test_pro_matches_song_pro_loss(usage_registry: Registry, sft_weight: float) -> None:
    batch = make_random_batch("listwise", num_items=4, with_reference=False, seed=13)
    objective = _objective(usage_registry, "pro", sft_weight=sft_weight)
    assert_matches_reference(
        objective, batch, lambda batch: song_pro_loss(batch, sft_weight=sft_weight), rtol=RTOL, atol=ATOL
    )


@pytest.mark.parametrize("reference_per_sequence", [False, True])
def test_plackett_luce_dpo_matches_rafailov_plackett_luce_loss(
    usage_registry: Registry, reference_per_sequence: bool
) -> None:
    batch = make_random_batch("listwise", num_items=4, reference_per_sequence=reference_per_sequence, seed=14)
    objective = _objective(usage_registry, "plackett_luce_dpo", beta=0.5)
    assert_matches_reference(
        objective, batch, lambda batch: rafailov_plackett_luce_loss(batch, beta=0.5), rtol=RTOL, atol=ATOL
    )


@pytest.mark.parametrize("data_format", ["pairwise", "unpaired"])
def test_unlikelihood_matches_welleck_unlikelihood_loss(usage_registry: Registry, data_format: str) -> None:
    batch = make_random_batch(data_format, num_items=5, with_reference=False, seed=15)
    objective = _objective(usage_registry, "unlikelihood", alpha=0.7)
    assert_matches_reference(
        objective, batch, lambda batch: welleck_unlikelihood_loss(batch, alpha=0.7), rtol=RTOL, atol=ATOL
    )


def test_sft_matches_transformers_causal_lm_loss(usage_registry: Registry) -> None:
    batch = make_random_batch("sft", num_items=5, with_reference=False, seed=16)
    assert_matches_reference(
        _objective(usage_registry, "sft"), batch, transformers_causal_lm_loss, rtol=RTOL, atol=ATOL
    )


def test_hindsight_sft_matches_transformers_causal_lm_loss(usage_registry: Registry) -> None:
    batch = make_random_batch("sft", num_items=5, with_reference=False, seed=17)
    assert_matches_reference(
        _objective(usage_registry, "hindsight_sft"), batch, transformers_causal_lm_loss, rtol=RTOL, atol=ATOL
    )


def test_reward_conditioned_sft_matches_transformers_causal_lm_loss(usage_registry: Registry) -> None:
    batch = make_random_batch("sft", num_items=5, with_reference=False, seed=18)
    assert_matches_reference(
        _objective(usage_registry, "reward_conditioned_sft"), batch, transformers_causal_lm_loss, rtol=RTOL, atol=ATOL
    )


# ----------------------------------------------------------------------------------------------
# Properties the papers state
# ----------------------------------------------------------------------------------------------


def test_plackett_luce_dpo_on_two_completions_is_dpo(usage_registry: Registry) -> None:
    """Rafailov et al., Appendix A.3: for K = 2 the Plackett–Luce loss is the DPO loss."""
    pairs = make_random_batch("pairwise", num_items=5, seed=19)
    assert pairs.chosen_index is not None and pairs.rejected_index is not None
    lists = LogProbBatch(
        policy_logps=pairs.policy_logps,
        mask=pairs.mask,
        ref_logps=pairs.ref_logps,
        list_index=torch.stack([pairs.chosen_index, pairs.rejected_index], dim=1),
        list_ranks=torch.tensor([[1.0, 2.0]]).repeat(5, 1),
    )
    assert_matches_reference(
        _objective(usage_registry, "plackett_luce_dpo", beta=0.4),
        lists,
        lambda lists: (
            _objective(usage_registry, "dpo", beta=0.4).loss(pairs.with_policy_logps(lists.policy_logps)).loss
        ),
        reference_name="dpo on the same pairs",
    )


@pytest.mark.parametrize("name", ["pro", "plackett_luce_dpo", "rrhf"])
def test_order_within_a_tie_does_not_matter(usage_registry: Registry, name: str) -> None:
    batch = make_random_batch("listwise", num_items=4, list_size=4, with_ties=True, seed=20)
    assert batch.list_index is not None and batch.list_ranks is not None
    assert bool((batch.list_ranks[0, 1] == batch.list_ranks[0, 2]).item())  # list 0 has a tie at positions 1, 2
    swapped_index = batch.list_index.clone()
    swapped_index[0, [1, 2]] = swapped_index[0, [2, 1]]
    swapped = LogProbBatch(**{**batch.__dict__, "list_index": swapped_index})
    objective = _objective(usage_registry, name)
    torch.testing.assert_close(objective.loss(swapped).loss, objective.loss(batch).loss)


def test_pro_ties_share_a_denominator(usage_registry: Registry) -> None:
    """With a tie, each tied completion competes with the other one and everything below (Breslow)."""
    scores = torch.tensor([-1.0, -2.0, -2.5, -3.0])  # one token each, so average = sum
    batch = LogProbBatch(
        policy_logps=scores.unsqueeze(1),
        mask=torch.ones(4, 1, dtype=torch.bool),
        list_index=torch.tensor([[0, 1, 2, 3]]),
        list_ranks=torch.tensor([[1.0, 2.0, 2.0, 3.0]]),
    )
    expected = (
        -(scores[0] - torch.logsumexp(scores, 0))
        - (scores[1] - torch.logsumexp(scores[1:], 0))
        - (scores[2] - torch.logsumexp(scores[1:], 0))
    )
    loss = _objective(usage_registry, "pro", sft_weight=0.0).loss(batch).loss
    torch.testing.assert_close(loss, expected)


def test_unlikelihood_is_finite_for_a_certain_token(usage_registry: Registry) -> None:
    """−log(1 − p) at p = 1 is floored at −log(1e-5), as in the paper's code."""
    batch = make_random_batch("pairwise", num_items=2, with_reference=False, seed=21)
    assert batch.rejected_index is not None
    policy_logps = batch.policy_logps.clone()
    policy_logps[batch.rejected_index] = 0.0  # every rejected token has probability 1
    output = _objective(usage_registry, "unlikelihood").loss(batch.with_policy_logps(policy_logps))
    assert torch.isfinite(output.loss)
    torch.testing.assert_close(output.metrics["unlikelihood"], torch.tensor(-math.log(1e-5)))
