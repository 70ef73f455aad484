"""Objectives that TRL implements, checked against TRL's own code (loss value and gradient).

TRL 1.16 computes its losses inside trainer methods that normally receive a model. The
harness below calls those methods unbound, with a stand-in ``self`` carrying the options
and a stand-in model that returns the batch's per-token log-probs, so the loss code that
runs is TRL's, line for line:

- ``trl/trainer/dpo_trainer.py``, ``DPOTrainer._compute_loss``: every DPO ``loss_type``
  and ``f_divergence_type`` (with ``precompute_ref_logps=True``: reference sums come from
  the batch);
- ``trl/trainer/kto_trainer.py``, ``KTOTrainer._compute_loss`` (``loss_type="kto"``);
- ``trl/experimental/cpo/cpo_trainer.py``, ``CPOTrainer.cpo_loss`` (``sigmoid``, ``simpo``);
- ``trl/experimental/orpo/orpo_trainer.py``, ``ORPOTrainer.odds_ratio_loss``.

Where TRL computes a term from logits (the NLL of CPO and ORPO is ``nn.CrossEntropyLoss``
over the chosen labels in ``concatenated_forward``), the harness writes that line on
log-probs: the mean of −log p over every chosen token.
"""

from __future__ import annotations

import importlib
from collections import defaultdict
from types import MethodType
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from prefcore.batch import LogProbBatch
from prefcore.methods import UsageObjective
from prefcore.registry import Registry
from prefcore.testing import assert_matches_reference
from prefcore.testing import make_random_batch

trl_dpo_trainer = importlib.import_module("trl.trainer.dpo_trainer")
trl_kto_trainer = importlib.import_module("trl.trainer.kto_trainer")
trl_cpo_trainer = importlib.import_module("trl.experimental.cpo.cpo_trainer")
trl_orpo_trainer = importlib.import_module("trl.experimental.orpo.orpo_trainer")

# fp32 losses through two different reduction orders
RTOL, ATOL = 1e-5, 1e-6


class _Accelerator:
    """Single process: gathering is the identity."""

    device = torch.device("cpu")

    @staticmethod
    def gather(values: torch.Tensor) -> torch.Tensor:
        return values

    @staticmethod
    def gather_for_metrics(values: torch.Tensor) -> torch.Tensor:
        return values


class _LogProbModel:
    """Stands in for TRL's model called with ``fused_lm_head=True``: returns fixed per-token log-probs.

    ``outputs[id(input_ids)]`` holds the log-probs of each input tensor it may be called with.
    """

    training = False

    def __init__(self, outputs: dict[int, torch.Tensor]) -> None:
        self.outputs = outputs

    def __call__(self, input_ids: torch.Tensor, **kwargs: Any) -> SimpleNamespace:
        log_probs = self.outputs[id(input_ids)]
        return SimpleNamespace(
            log_probs=log_probs,
            entropy=torch.zeros_like(log_probs.detach()),
            mean_logits=torch.zeros_like(log_probs.detach()),
            is_top1=torch.zeros(log_probs.shape, dtype=torch.bool),
        )


def _trainer_state(model: _LogProbModel, **options: Any) -> SimpleNamespace:
    return SimpleNamespace(
        model=model,
        accelerator=_Accelerator(),
        aux_loss_enabled=False,
        precompute_ref_logps=True,
        _metrics=defaultdict(lambda: defaultdict(list)),
        _total_train_tokens=0,
        _tp_size=1,
        **options,
    )


def _completion_mask(mask: torch.Tensor) -> torch.Tensor:
    """TRL's mask is over input ids; log-probs line up with ``completion_mask[:, 1:]``: prepend a prompt token."""
    return torch.cat([torch.zeros(mask.shape[0], 1, dtype=torch.long), mask.long()], dim=1)


def _reference_sums(batch: LogProbBatch) -> torch.Tensor:
    if batch.ref_sequence_logps is not None:
        return batch.ref_sequence_logps
    assert batch.ref_logps is not None
    return (batch.ref_logps * batch.mask).sum(-1)


def trl_dpo_loss(
    batch: LogProbBatch,
    loss_type: str | list[str],
    *,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
    f_divergence_type: str = "reverse_kl",
    f_alpha_divergence_coef: float = 0.5,
    discopop_tau: float = 0.05,
    loss_weights: list[float] | None = None,
) -> torch.Tensor:
    """``DPOTrainer._compute_loss`` of TRL on ``batch`` (pairs laid out [chosen..., rejected...] as TRL does)."""
    assert batch.chosen_index is not None and batch.rejected_index is not None
    loss_types = [loss_type] if isinstance(loss_type, str) else loss_type
    order = torch.cat([batch.chosen_index, batch.rejected_index])
    mask = batch.mask[order]
    log_probs = batch.policy_logps[order] * mask
    input_ids = torch.zeros(mask.shape[0], mask.shape[1] + 1, dtype=torch.long)
    reference = _reference_sums(batch)
    inputs = {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "completion_mask": _completion_mask(mask),
        "ref_chosen_logps": reference[batch.chosen_index],
        "ref_rejected_logps": reference[batch.rejected_index],
    }
    model = _LogProbModel({id(input_ids): log_probs})
    trainer = _trainer_state(
        model,
        loss_types=loss_types,
        loss_weights=loss_weights or [1.0] * len(loss_types),
        beta=beta,
        label_smoothing=label_smoothing,
        f_divergence_type=f_divergence_type,
        f_alpha_divergence_coef=f_alpha_divergence_coef,
        ld_alpha=None,
        use_weighting=False,
        args=SimpleNamespace(discopop_tau=discopop_tau),
    )
    return trl_dpo_trainer.DPOTrainer._compute_loss(trainer, model, inputs, return_outputs=False)


def trl_kto_loss(
    batch: LogProbBatch, *, beta: float = 0.1, desirable_weight: float = 1.0, undesirable_weight: float = 1.0
) -> torch.Tensor:
    """``KTOTrainer._compute_loss`` of TRL; the batch's mismatched sequences are TRL's KL completions.

    Without mismatched sequences TRL's ``calculate_KL=False`` path runs (reference point 0).
    """
    assert batch.labels is not None
    calculate_kl = batch.mismatched_index is not None
    keep = torch.ones(batch.num_sequences, dtype=torch.bool)
    if calculate_kl:
        keep[batch.mismatched_index] = False
    rows = keep.nonzero().flatten()
    kl_rows = batch.mismatched_index if calculate_kl else rows[:1]
    reference = _reference_sums(batch)

    def model_inputs(selected: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mask = batch.mask[selected]
        input_ids = torch.zeros(len(selected), mask.shape[1] + 1, dtype=torch.long)
        return input_ids, _completion_mask(mask), batch.policy_logps[selected] * mask

    input_ids, completion_mask, log_probs = model_inputs(rows)
    kl_input_ids, kl_completion_mask, kl_log_probs = model_inputs(kl_rows)
    inputs = {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "completion_mask": completion_mask,
        "KL_input_ids": kl_input_ids,
        "KL_attention_mask": torch.ones_like(kl_input_ids),
        "KL_completion_mask": kl_completion_mask,
        "label": batch.labels[rows],
        "ref_logps": reference[rows],
        "ref_KL_logps": reference[kl_rows],
    }
    model = _LogProbModel({id(input_ids): log_probs, id(kl_input_ids): kl_log_probs})
    trainer = _trainer_state(
        model,
        loss_type="kto",
        calculate_KL=calculate_kl,
        beta=beta,
        desirable_weight=desirable_weight,
        undesirable_weight=undesirable_weight,
    )
    trainer._compute_kl_logps = MethodType(trl_kto_trainer.KTOTrainer._compute_kl_logps, trainer)
    return trl_kto_trainer.KTOTrainer._compute_loss(trainer, model, inputs, return_outputs=False)


def _chosen_token_nll(batch: LogProbBatch) -> torch.Tensor:
    """TRL's ``cross_entropy_loss(all_logits[:len_chosen], labels[:len_chosen])`` on log-probs."""
    assert batch.chosen_index is not None
    mask = batch.mask[batch.chosen_index]
    return -(batch.policy_logps[batch.chosen_index] * mask).sum() / mask.sum()


def _pair_logps(batch: LogProbBatch, *, average: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """TRL's ``get_batch_logps``: ``(per_token_logps * loss_mask).sum(-1)`` (``/ loss_mask.sum(-1)``)."""
    assert batch.chosen_index is not None and batch.rejected_index is not None
    sums = (batch.policy_logps * batch.mask).sum(-1)
    if average:
        sums = sums / batch.mask.sum(-1)
    return sums[batch.chosen_index], sums[batch.rejected_index]


def trl_cpo_loss(
    batch: LogProbBatch,
    *,
    loss_type: str = "sigmoid",
    beta: float = 0.1,
    label_smoothing: float = 0.0,
    cpo_alpha: float = 1.0,
    simpo_gamma: float = 0.5,
) -> torch.Tensor:
    """``CPOTrainer.cpo_loss`` + ``get_batch_loss_metrics``: ``losses.mean() + cpo_alpha * nll_loss``."""
    trainer = SimpleNamespace(
        alpha=0.0,
        loss_type=loss_type,
        beta=beta,
        label_smoothing=label_smoothing,
        simpo_gamma=simpo_gamma,
        accelerator=_Accelerator(),
    )
    chosen_logps, rejected_logps = _pair_logps(batch, average=loss_type in ("ipo", "simpo"))
    losses, _, _ = trl_cpo_trainer.CPOTrainer.cpo_loss(trainer, chosen_logps, rejected_logps)
    nll = _chosen_token_nll(batch) if cpo_alpha else torch.zeros(())
    return losses.mean() + cpo_alpha * nll


def trl_orpo_loss(batch: LogProbBatch, *, beta: float = 0.1) -> torch.Tensor:
    """``ORPOTrainer.odds_ratio_loss`` + ``get_batch_loss_metrics``: ``policy_nll_loss - losses.mean()``."""
    trainer = SimpleNamespace(beta=beta, accelerator=_Accelerator())
    chosen_logps, rejected_logps = _pair_logps(batch, average=True)
    losses, *_ = trl_orpo_trainer.ORPOTrainer.odds_ratio_loss(trainer, chosen_logps, rejected_logps)
    return _chosen_token_nll(batch) - losses.mean()


# ----------------------------------------------------------------------------------------------
# Batches: per-token reference log-probs, and the per-sequence cache
# ----------------------------------------------------------------------------------------------

REFERENCE_LAYOUTS = {
    "ref_logps": {"reference_per_sequence": False},
    "ref_sequence_logps": {"reference_per_sequence": True},
}


@pytest.fixture(params=sorted(REFERENCE_LAYOUTS))
def pair_batch(request: pytest.FixtureRequest) -> LogProbBatch:
    """Random pairs with a reference, given per token or as the per-sequence cache."""
    return make_random_batch("pairwise", num_items=6, seed=3, **REFERENCE_LAYOUTS[request.param])


@pytest.fixture
def reference_free_batch() -> LogProbBatch:
    return make_random_batch("pairwise", num_items=6, with_reference=False, seed=4)


def _objective(registry: Registry, name: str, **options: Any) -> UsageObjective:
    objective = registry.create("usage", name, options)
    assert isinstance(objective, UsageObjective)
    return objective


def _check(objective: UsageObjective, batch: LogProbBatch, reference: Any) -> None:
    assert_matches_reference(objective, batch, reference, rtol=RTOL, atol=ATOL)


# ----------------------------------------------------------------------------------------------
# DPOTrainer loss types
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("beta", [0.1, 0.7])
def test_dpo_matches_trl(usage_registry: Registry, pair_batch: LogProbBatch, beta: float) -> None:
    objective = _objective(usage_registry, "dpo", beta=beta)
    _check(objective, pair_batch, lambda batch: trl_dpo_loss(batch, "sigmoid", beta=beta))


def test_ipo_matches_trl(usage_registry: Registry, pair_batch: LogProbBatch) -> None:
    objective = _objective(usage_registry, "ipo", beta=0.3)
    _check(objective, pair_batch, lambda batch: trl_dpo_loss(batch, "ipo", beta=0.3))


def test_hinge_matches_trl(usage_registry: Registry, pair_batch: LogProbBatch) -> None:
    # β = 0.5 puts some pairs on each side of the hinge
    objective = _objective(usage_registry, "hinge", beta=0.5)
    _check(objective, pair_batch, lambda batch: trl_dpo_loss(batch, "hinge", beta=0.5))


def test_exo_pair_matches_trl(usage_registry: Registry, pair_batch: LogProbBatch) -> None:
    objective = _objective(usage_registry, "exo_pair", beta=0.2, epsilon=1e-3)
    _check(objective, pair_batch, lambda batch: trl_dpo_loss(batch, "exo_pair", beta=0.2, label_smoothing=1e-3))


def test_nca_pair_matches_trl(usage_registry: Registry, pair_batch: LogProbBatch) -> None:
    objective = _objective(usage_registry, "nca_pair", beta=0.2)
    _check(objective, pair_batch, lambda batch: trl_dpo_loss(batch, "nca_pair", beta=0.2))


def test_robust_dpo_matches_trl(usage_registry: Registry, pair_batch: LogProbBatch) -> None:
    objective = _objective(usage_registry, "robust_dpo", beta=0.2, flip_rate=0.2)
    _check(objective, pair_batch, lambda batch: trl_dpo_loss(batch, "robust", beta=0.2, label_smoothing=0.2))


def test_bco_pair_matches_trl(usage_registry: Registry, pair_batch: LogProbBatch) -> None:
    objective = _objective(usage_registry, "bco_pair", beta=0.2)
    _check(objective, pair_batch, lambda batch: trl_dpo_loss(batch, "bco_pair", beta=0.2))


def test_sppo_hard_matches_trl(usage_registry: Registry, pair_batch: LogProbBatch) -> None:
    objective = _objective(usage_registry, "sppo_hard", beta=0.5)
    _check(objective, pair_batch, lambda batch: trl_dpo_loss(batch, "sppo_hard", beta=0.5))


@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_aot_matches_trl(usage_registry: Registry, pair_batch: LogProbBatch, label_smoothing: float) -> None:
    objective = _objective(usage_registry, "aot", beta=0.2, label_smoothing=label_smoothing)
    _check(objective, pair_batch, lambda batch: trl_dpo_loss(batch, "aot", beta=0.2, label_smoothing=label_smoothing))


@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_aot_pair_matches_trl(usage_registry: Registry, pair_batch: LogProbBatch, label_smoothing: float) -> None:
    objective = _objective(usage_registry, "aot_pair", beta=0.2, label_smoothing=label_smoothing)
    _check(
        objective,
        pair_batch,
        lambda batch: trl_dpo_loss(batch, "aot_unpaired", beta=0.2, label_smoothing=label_smoothing),
    )


def test_apo_zero_matches_trl(usage_registry: Registry, pair_batch: LogProbBatch) -> None:
    objective = _objective(usage_registry, "apo_zero", beta=0.3)
    _check(objective, pair_batch, lambda batch: trl_dpo_loss(batch, "apo_zero", beta=0.3))


def test_apo_down_matches_trl(usage_registry: Registry, pair_batch: LogProbBatch) -> None:
    objective = _objective(usage_registry, "apo_down", beta=0.3)
    _check(objective, pair_batch, lambda batch: trl_dpo_loss(batch, "apo_down", beta=0.3))


@pytest.mark.parametrize("tau", [0.05, 1.0])
def test_discopop_matches_trl(usage_registry: Registry, pair_batch: LogProbBatch, tau: float) -> None:
    objective = _objective(usage_registry, "discopop", beta=0.2, tau=tau)
    _check(objective, pair_batch, lambda batch: trl_dpo_loss(batch, "discopop", beta=0.2, discopop_tau=tau))


def test_sigmoid_norm_matches_trl(usage_registry: Registry, pair_batch: LogProbBatch) -> None:
    objective = _objective(usage_registry, "sigmoid_norm", beta=2.0)
    _check(objective, pair_batch, lambda batch: trl_dpo_loss(batch, "sigmoid_norm", beta=2.0))


@pytest.mark.parametrize(
    ("divergence", "alpha"),
    [
        ("reverse_kl", 0.5),
        ("forward_kl", 0.5),
        ("js_divergence", 0.5),
        ("alpha_divergence", 0.5),
        ("alpha_divergence", 1.5),
        ("alpha_divergence", 1.0),
    ],
)
def test_fdpo_matches_trl(usage_registry: Registry, pair_batch: LogProbBatch, divergence: str, alpha: float) -> None:
    objective = _objective(usage_registry, "fdpo", beta=0.2, divergence=divergence, alpha=alpha)
    _check(
        objective,
        pair_batch,
        lambda batch: trl_dpo_loss(
            batch, "sigmoid", beta=0.2, f_divergence_type=divergence, f_alpha_divergence_coef=alpha
        ),
    )


@pytest.mark.parametrize("alpha", [0.5, 1.0])
def test_rpo_matches_trl(usage_registry: Registry, pair_batch: LogProbBatch, alpha: float) -> None:
    objective = _objective(usage_registry, "rpo", beta=0.2, alpha=alpha)
    _check(
        objective,
        pair_batch,
        lambda batch: trl_dpo_loss(batch, ["sigmoid", "sft"], beta=0.2, loss_weights=[1.0, alpha]),
    )


def test_sft_matches_trl(usage_registry: Registry, pair_batch: LogProbBatch) -> None:
    objective = _objective(usage_registry, "sft")
    _check(objective, pair_batch, lambda batch: trl_dpo_loss(batch, "sft"))


# ----------------------------------------------------------------------------------------------
# KTOTrainer, CPOTrainer, ORPOTrainer
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reference_per_sequence", [False, True])
@pytest.mark.parametrize(("desirable_weight", "undesirable_weight"), [(1.0, 1.0), (1.33, 0.5)])
def test_kto_matches_trl(
    usage_registry: Registry, reference_per_sequence: bool, desirable_weight: float, undesirable_weight: float
) -> None:
    batch = make_random_batch(
        "unpaired", num_items=8, with_mismatched=True, reference_per_sequence=reference_per_sequence, seed=5
    )
    options = {"beta": 0.3, "desirable_weight": desirable_weight, "undesirable_weight": undesirable_weight}
    objective = _objective(usage_registry, "kto", **options)
    _check(objective, batch, lambda batch: trl_kto_loss(batch, **options))


def test_kto_without_mismatched_sequences_matches_trl_without_kl(usage_registry: Registry) -> None:
    batch = make_random_batch("unpaired", num_items=8, seed=6)
    objective = _objective(usage_registry, "kto", beta=0.3)
    _check(objective, batch, lambda batch: trl_kto_loss(batch, beta=0.3))


def test_kto_reference_point_is_positive_in_the_test_batch(usage_registry: Registry) -> None:
    """The TRL comparison above only exercises z0 if the mismatched log-ratios are not clamped to 0."""
    batch = make_random_batch("unpaired", num_items=8, with_mismatched=True, seed=5)
    output = _objective(usage_registry, "kto", beta=0.3).loss(batch)
    assert float(output.metrics["kl"]) > 0


@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_cpo_matches_trl(usage_registry: Registry, reference_free_batch: LogProbBatch, label_smoothing: float) -> None:
    objective = _objective(usage_registry, "cpo", beta=0.2, alpha=0.7, label_smoothing=label_smoothing)
    _check(
        objective,
        reference_free_batch,
        lambda batch: trl_cpo_loss(batch, beta=0.2, cpo_alpha=0.7, label_smoothing=label_smoothing),
    )


@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_simpo_matches_trl(
    usage_registry: Registry, reference_free_batch: LogProbBatch, label_smoothing: float
) -> None:
    # TRL subtracts simpo_gamma / beta inside β·(...): the kernel's γ is TRL's simpo_gamma.
    objective = _objective(usage_registry, "simpo", beta=2.0, gamma=0.8, label_smoothing=label_smoothing)
    _check(
        objective,
        reference_free_batch,
        lambda batch: trl_cpo_loss(
            batch, loss_type="simpo", beta=2.0, simpo_gamma=0.8, cpo_alpha=0.0, label_smoothing=label_smoothing
        ),
    )


def test_orpo_matches_trl(usage_registry: Registry, reference_free_batch: LogProbBatch) -> None:
    objective = _objective(usage_registry, "orpo", beta=0.25)
    _check(objective, reference_free_batch, lambda batch: trl_orpo_loss(batch, beta=0.25))


def test_harness_reads_trl_options() -> None:
    """The stand-in trainer must feed TRL's code: a wrong loss type reaches TRL's own error."""
    batch = make_random_batch("pairwise", num_items=2)
    with pytest.raises(ValueError, match="Unknown loss type"):
        trl_dpo_loss(batch, "no_such_loss")
