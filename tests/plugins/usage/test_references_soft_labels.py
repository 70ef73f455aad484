"""Soft labels and margins of the feedback reach the objectives whose papers define them.

A pair's ``probability`` (vote share, judge confidence, a reward model's σ(Δ)) and ``margin``
arrive in ``LogProbBatch.probabilities`` / ``margins`` (NaN / 0 where a record gives none).
Each objective that can use them is checked against its paper's formula written here with
explicit per-pair loops, on batches that mix pairs with and without a soft label, and then
through the whole parity kit. With the option off, or on plain pairs, nothing changes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from prefcore.batch import LogProbBatch
from prefcore.methods import UsageObjective
from prefcore.registry import Registry
from prefcore.testing import assert_matches_reference
from prefcore.testing import check_objective
from prefcore.testing import make_random_batch

RTOL, ATOL = 1e-5, 1e-6
NAN = float("nan")
# One soft label per pair: confident, unsure, reversed (p < 0.5), missing, certain, near 0.5.
PROBABILITIES = [0.95, 0.7, 0.25, NAN, 1.0, 0.6]


def _objective(registry: Registry, name: str, **options: Any) -> UsageObjective:
    objective = registry.create("usage", name, options)
    assert isinstance(objective, UsageObjective)
    return objective


def _soft_batch(seed: int = 3, probabilities: list[float] = PROBABILITIES, **kwargs: Any) -> LogProbBatch:
    batch = make_random_batch("pairwise", num_items=len(probabilities), with_margins=True, seed=seed, **kwargs)
    return replace(batch, probabilities=torch.tensor(probabilities))


def _logratio(batch: LogProbBatch, sequence: int, *, average: bool = False) -> torch.Tensor:
    """log π(y|x) − log π_ref(y|x), summed over completion tokens (or their mean)."""
    tokens = [t for t in range(batch.mask.shape[1]) if bool(batch.mask[sequence, t])]
    policy = torch.stack([batch.policy_logps[sequence, t] for t in tokens]).sum()
    if batch.ref_sequence_logps is not None:
        reference = batch.ref_sequence_logps[sequence]
    else:
        assert batch.ref_logps is not None
        reference = torch.stack([batch.ref_logps[sequence, t] for t in tokens]).sum()
    ratio = policy - reference
    return ratio / len(tokens) if average else ratio


def _per_pair(
    batch: LogProbBatch, pair_loss: Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """Mean over pairs of ``pair_loss(i, chosen, rejected)`` (sequence indices of pair i)."""
    assert batch.chosen_index is not None and batch.rejected_index is not None
    losses = [pair_loss(i, batch.chosen_index[i], batch.rejected_index[i]) for i in range(batch.chosen_index.numel())]
    return torch.stack(losses).mean()


def _p(batch: LogProbBatch, i: int, default: float) -> float:
    assert batch.probabilities is not None
    value = float(batch.probabilities[i])
    return default if math.isnan(value) else value


# ----------------------------------------------------------------------------------------------
# References, one per paper
# ----------------------------------------------------------------------------------------------


def mitchell_cdpo_soft_loss(batch: LogProbBatch, *, beta: float, label_smoothing: float) -> torch.Tensor:
    """Mitchell 2023 (cDPO) with the pair's own target: −p·log σ(βh) − (1 − p)·log σ(−βh), p = 1 − ε if absent."""

    def loss(i: int, c: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        p = _p(batch, i, 1 - label_smoothing)
        h = beta * (_logratio(batch, c) - _logratio(batch, r))
        return -p * F.logsigmoid(h) - (1 - p) * F.logsigmoid(-h)

    return _per_pair(batch, loss)


def chowdhury_rdpo_per_pair_loss(batch: LogProbBatch, *, beta: float, flip_rate: float) -> torch.Tensor:
    """Chowdhury et al. 2024, Eq. 8 with εᵢ = 1 − pᵢ (ε = flip_rate if absent), no reordering of the pair."""

    def loss(i: int, c: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        eps = 1 - _p(batch, i, 1 - flip_rate)
        h = beta * (_logratio(batch, c) - _logratio(batch, r))
        return (-(1 - eps) * F.logsigmoid(h) + eps * F.logsigmoid(-h)) / (1 - 2 * eps)

    return _per_pair(batch, loss)


def azar_ipo_soft_loss(batch: LogProbBatch, *, beta: float) -> torch.Tensor:
    """Azar et al. 2024, Eq. 12 sampled per pair: (h − τ⁻¹·(p − ½))², h on per-token averages, p = 1 if absent."""

    def loss(i: int, c: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        h = _logratio(batch, c, average=True) - _logratio(batch, r, average=True)
        return (h - (_p(batch, i, 1.0) - 0.5) / beta) ** 2

    return _per_pair(batch, loss)


def ji_exo_soft_loss(batch: LogProbBatch, *, beta: float, epsilon: float) -> torch.Tensor:
    """Ji et al. 2024, Eq. 16 with K = 2: KL([σ(βh), σ(−βh)] ‖ [q, 1 − q]), q = p in [ε, 1 − ε], 1 − ε if absent."""

    def loss(i: int, c: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        q = min(max(_p(batch, i, 1 - epsilon), epsilon), 1 - epsilon)
        h = beta * (_logratio(batch, c) - _logratio(batch, r))
        model = [torch.sigmoid(h), torch.sigmoid(-h)]
        return sum(m * (torch.log(m) - math.log(t)) for m, t in zip(model, (q, 1 - q), strict=True))

    return _per_pair(batch, loss)


def chen_nca_soft_loss(batch: LogProbBatch, *, beta: float) -> torch.Tensor:
    """Chen et al. 2024 (NCA) with K = 2 targets (p, 1 − p): −Σᵢ [pᵢ·log σ(rᵢ) + ½·log σ(−rᵢ)], p = 1 if absent."""

    def loss(i: int, c: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        p = _p(batch, i, 1.0)
        rewards = (beta * _logratio(batch, c), beta * _logratio(batch, r))
        return -sum(t * F.logsigmoid(x) + 0.5 * F.logsigmoid(-x) for t, x in zip((p, 1 - p), rewards, strict=True))

    return _per_pair(batch, loss)


def wu_sppo_soft_loss(batch: LogProbBatch, *, beta: float) -> torch.Tensor:
    """Wu et al. 2024, Eq. 4.7 with P(y_w ≻ π) = p and P(y_l ≻ π) = 1 − p (hard p = 1 if absent), η = 1/β."""

    def loss(i: int, c: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        p = _p(batch, i, 1.0)
        return (_logratio(batch, c) - (p - 0.5) / beta) ** 2 + (_logratio(batch, r) - (0.5 - p) / beta) ** 2

    return _per_pair(batch, loss)


def touvron_margin_hinge_loss(batch: LogProbBatch, *, beta: float, scale: float) -> torch.Tensor:
    """SLiC-HF's hinge with Llama 2's per-pair margin (Eq. 2): max(0, 1 + s·m − βh)."""
    assert batch.margins is not None

    def loss(i: int, c: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        h = beta * (_logratio(batch, c) - _logratio(batch, r))
        return torch.clamp(1 + scale * batch.margins[i] - h, min=0)

    return _per_pair(batch, loss)


# (objective, options, reference with the same options)
CASES = [
    ("cdpo", {"beta": 0.3, "label_smoothing": 0.2},
     lambda b: mitchell_cdpo_soft_loss(b, beta=0.3, label_smoothing=0.2)),
    ("robust_dpo", {"beta": 0.3, "flip_rate": 0.1}, lambda b: chowdhury_rdpo_per_pair_loss(b, beta=0.3, flip_rate=0.1)),
    ("ipo", {"beta": 0.4}, lambda b: azar_ipo_soft_loss(b, beta=0.4)),
    ("exo_pair", {"beta": 0.3, "epsilon": 0.01}, lambda b: ji_exo_soft_loss(b, beta=0.3, epsilon=0.01)),
    ("nca_pair", {"beta": 0.3}, lambda b: chen_nca_soft_loss(b, beta=0.3)),
    ("sppo_hard", {"beta": 0.5}, lambda b: wu_sppo_soft_loss(b, beta=0.5)),
    ("hinge", {"beta": 0.5, "use_margins": True, "margin_scale": 0.7},
     lambda b: touvron_margin_hinge_loss(b, beta=0.5, scale=0.7)),
]  # fmt: skip
CASE_IDS = [case[0] for case in CASES]
SOFT_LABEL_OBJECTIVES = ["cdpo", "robust_dpo", "ipo", "exo_pair", "nca_pair", "sppo_hard"]


@pytest.mark.parametrize("reference_per_sequence", [False, True])
@pytest.mark.parametrize(("name", "options", "reference"), CASES, ids=CASE_IDS)
def test_soft_labels_and_margins_match_the_papers(
    usage_registry: Registry, name: str, options: dict[str, Any], reference: Any, reference_per_sequence: bool
) -> None:
    batch = _soft_batch(reference_per_sequence=reference_per_sequence)
    objective = _objective(usage_registry, name, **options)
    assert_matches_reference(objective, batch, reference, rtol=RTOL, atol=ATOL, reference_name=f"{name} paper formula")


@pytest.mark.parametrize(("name", "options", "reference"), CASES, ids=CASE_IDS)
def test_parity_kit_with_soft_labels_and_margins(
    usage_registry: Registry, name: str, options: dict[str, Any], reference: Any
) -> None:
    objective = _objective(usage_registry, name, **options)
    check_objective(objective, _soft_batch(seed=8, with_weights=True), reference)


@pytest.mark.parametrize("name", SOFT_LABEL_OBJECTIVES)
def test_soft_labels_change_the_loss_and_the_option_turns_them_off(usage_registry: Registry, name: str) -> None:
    soft = _soft_batch()
    plain = replace(soft, probabilities=None)
    on, off = _objective(usage_registry, name), _objective(usage_registry, name, use_probabilities=False)
    assert not torch.allclose(on.loss(soft).loss, on.loss(plain).loss), f"{name} ignores the soft labels"
    torch.testing.assert_close(off.loss(soft).loss, on.loss(plain).loss)


@pytest.mark.parametrize("name", SOFT_LABEL_OBJECTIVES)
def test_pairs_without_a_soft_label_keep_the_plain_loss(usage_registry: Registry, name: str) -> None:
    """A batch whose pairs all lack a soft label (NaN) trains exactly as one without the field."""
    batch = _soft_batch(probabilities=[NAN] * 4)
    objective = _objective(usage_registry, name)
    torch.testing.assert_close(objective.loss(batch).loss, objective.loss(replace(batch, probabilities=None)).loss)


def test_robust_dpo_caps_the_flip_rate_of_unsure_pairs(usage_registry: Registry) -> None:
    """p = 0.55 (ε = 0.45 would scale the pair by 1/(1 − 2ε) = 10) trains as ε = max_flip_rate = 0.3."""
    objective = _objective(usage_registry, "robust_dpo", beta=0.3, max_flip_rate=0.3)
    unsure, capped = _soft_batch(probabilities=[0.55, 0.45]), _soft_batch(probabilities=[0.7, 0.3])
    torch.testing.assert_close(objective.loss(unsure).loss, objective.loss(capped).loss)
    torch.testing.assert_close(
        objective.loss(capped).loss, chowdhury_rdpo_per_pair_loss(capped, beta=0.3, flip_rate=0.1)
    )


@pytest.mark.parametrize("name", ["dpo", "hinge", "simpo"])
def test_objectives_without_a_per_pair_definition_ignore_soft_labels_and_margins(
    usage_registry: Registry, name: str
) -> None:
    """DPO, SimPO and (by default) the SLiC-HF hinge define neither: their loss is unchanged."""
    batch = _soft_batch(with_reference=True)
    objective = _objective(usage_registry, name)
    plain = replace(batch, probabilities=None, margins=None)
    torch.testing.assert_close(objective.loss(batch).loss, objective.loss(plain).loss)


@pytest.mark.parametrize("field", ["probabilities", "margins"])
def test_malformed_soft_labels_and_margins_are_refused(usage_registry: Registry, field: str) -> None:
    name, options = ("cdpo", {}) if field == "probabilities" else ("hinge", {"use_margins": True})
    objective = _objective(usage_registry, name, **options)
    bad = {"probabilities": torch.tensor([0.5, 1.5]), "margins": torch.tensor([0.5, math.inf])}[field]
    with pytest.raises(ValueError, match=f"objective '{name}'.*{field}"):
        objective.loss(replace(make_random_batch("pairwise", num_items=2), **{field: bad}))
    with pytest.raises(ValueError, match="one entry per pair"):
        objective.loss(replace(make_random_batch("pairwise", num_items=2), **{field: bad[:1]}))
