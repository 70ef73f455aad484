"""``[train] precision``: bf16 autocast on CPU and GPU keeps fp32 weights and an fp32 loss close to fp32's.

Documented tolerance (README, "Speed"): on the demo's tiny Llama the bf16-autocast DPO loss is
within 1e-2 (relative) of the fp32 loss, and its gradient points the same way (cosine > 0.99).
"""

from __future__ import annotations

import math

import pytest
import torch

from prefcore.demo.model import build_tiny_model
from prefcore.demo.task import preference_pairs
from prefcore.demo.tokenizer import build_tokenizer
from prefcore.engine.batching import build_items
from prefcore.engine.batching import collate
from prefcore.engine.models import frozen_copy
from prefcore.engine.reference import ModelReference
from prefcore.engine.trainer import TrainConfig
from prefcore.engine.trainer import Trainer
from prefcore.engine.trainer import WeightedObjective
from prefcore.engine.trainer import autocast_dtype
from prefcore.engine.trainer import cpu_has_native_bf16
from prefcore.registry import Registry

LOSS_RTOL = 1e-2
GRAD_COSINE = 0.99
CPU = torch.device("cpu")


@pytest.mark.parametrize(
    ("precision", "expected"),
    [("fp32", None), ("bf16", torch.bfloat16), ("fp16", None), ("bf16-params", None)],  # fp16: GPU only
)
def test_cpu_autocast_dtype(precision, expected) -> None:
    assert autocast_dtype(precision, CPU) == expected


def test_auto_is_bf16_exactly_where_the_cpu_has_native_bf16() -> None:
    assert autocast_dtype("auto", CPU) == (torch.bfloat16 if cpu_has_native_bf16() else None)


def test_default_precision_is_fp32() -> None:
    assert TrainConfig().precision == "fp32"


def _loss_and_grad(
    precision: str, tmp_path, *, perturb_reference: bool = True
) -> tuple[float, torch.Tensor, list[torch.dtype]]:
    torch.manual_seed(0)
    tokenizer = build_tokenizer()
    policy = build_tiny_model(tokenizer, seed=0)
    reference_model = frozen_copy(policy)
    with torch.no_grad():  # a reference that differs from the policy, so the loss is not log 2
        for parameter in reference_model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter) if perturb_reference else 0.0)
    items = build_items(list(preference_pairs(count=8, seed=1)), "pairwise", tokenizer, max_length=64)
    objective = Registry.from_environment(third_party=False).create("usage", "dpo", {})
    trainer = Trainer(
        policy,
        [WeightedObjective(objective)],
        items,
        TrainConfig(steps=1, batch_size=8, precision=precision, progress=False),
        pad_token_id=tokenizer.pad_token_id,
        run_dir=tmp_path / f"{precision}-{perturb_reference}",
        device=CPU,
        reference_logps=ModelReference(reference_model, fused=True, backend="auto"),
    )
    batch = collate(items, tokenizer.pad_token_id)
    log_prob_batch = trainer._log_prob_batch(batch, len(items), batch.target_token_count())
    loss = objective.loss(log_prob_batch).loss
    loss.backward()
    grad = torch.cat([parameter.grad.flatten() for parameter in policy.parameters()])
    return float(loss.detach()), grad, [loss.dtype, log_prob_batch.policy_logps.dtype, grad.dtype]


@pytest.mark.parametrize("precision", ["bf16", "bf16-params"])
def test_bf16_dpo_loss_is_fp32_within_the_documented_tolerance(tmp_path, precision) -> None:
    loss32, grad32, _ = _loss_and_grad("fp32", tmp_path)
    loss16, grad16, dtypes = _loss_and_grad(precision, tmp_path)
    assert dtypes == [torch.float32] * 3  # fp32 loss, log-probs and (master-weight) gradients
    assert abs(loss16 - loss32) <= LOSS_RTOL * abs(loss32)
    assert loss16 != loss32  # bf16 matmuls really ran
    cosine = torch.nn.functional.cosine_similarity(grad16, grad32, dim=0)
    assert cosine > GRAD_COSINE


@pytest.mark.parametrize("precision", ["fp32", "bf16", "bf16-params"])
def test_policy_and_reference_compute_the_same_function_so_dpo_starts_at_log_2(tmp_path, precision) -> None:
    loss, _, _ = _loss_and_grad(precision, tmp_path, perturb_reference=False)
    assert loss == pytest.approx(math.log(2), abs=1e-7)


def test_bf16_params_runs_the_model_in_bf16_and_leaves_fp32_weights_in_place(tmp_path) -> None:
    tokenizer = build_tokenizer()
    policy = build_tiny_model(tokenizer, seed=0)
    seen: list[torch.dtype] = []
    policy.model.layers[0].mlp.down_proj.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    items = build_items(list(preference_pairs(count=4, seed=1)), "pairwise", tokenizer, max_length=64)
    objective = Registry.from_environment(third_party=False).create("usage", "dpo", {})
    before = {name: parameter.detach().clone() for name, parameter in policy.named_parameters()}
    trainer = Trainer(
        policy,
        [WeightedObjective(objective)],
        items,
        TrainConfig(steps=1, batch_size=4, lr=1e-3, precision="bf16-params", progress=False),
        pad_token_id=tokenizer.pad_token_id,
        run_dir=tmp_path,
        device=CPU,
        reference_logps=ModelReference(frozen_copy(policy), fused=True, backend="auto"),
    )
    trainer.train_step()
    assert seen and set(seen) == {torch.bfloat16}  # activations in bf16, not autocast's fp32 residual
    for name, parameter in policy.named_parameters():
        assert isinstance(parameter, torch.nn.Parameter) and parameter.dtype == torch.float32, name
        assert not torch.equal(parameter, before[name]) or parameter.grad is None, name  # fp32 master moved
    assert any(not torch.equal(parameter, before[name]) for name, parameter in policy.named_parameters())
