"""``[train] loss_aware_head``: DPO-family steps through the loss-aware fused head equal the usual path.

Both paths train the same tiny demo model from the same seed for a few optimiser steps; the
losses, every logged metric and the final weights must agree to 1e-5 in fp32.
"""

from __future__ import annotations

import dataclasses
import math
import traceback

import pytest
import torch
import torch.nn.functional as F

from prefcore.demo.model import build_tiny_model
from prefcore.demo.task import preference_pairs
from prefcore.demo.tokenizer import build_tokenizer
from prefcore.engine import fused_pairwise_step
from prefcore.engine.batching import build_items
from prefcore.engine.batching import collate
from prefcore.engine.logprobs import sequence_logps
from prefcore.engine.models import frozen_copy
from prefcore.engine.reference import ModelReference
from prefcore.engine.trainer import TrainConfig
from prefcore.engine.trainer import Trainer
from prefcore.engine.trainer import WeightedObjective
from prefcore.kernels._dispatch import HAS_TRITON
from prefcore.kernels._dispatch import interpreter_enabled
from prefcore.registry import Registry

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def _trainer(
    tokenizer, tmp_path, name, options, *, loss_aware, cached=False, weighted=False, same_reference=False, **config
) -> Trainer:
    torch.manual_seed(0)
    policy = build_tiny_model(tokenizer, seed=0)
    reference_model = frozen_copy(policy)
    with torch.no_grad():  # a reference unlike the policy: a real loss from the first step
        for parameter in reference_model.parameters():
            parameter.add_(0.0 if same_reference else 0.05 * torch.randn_like(parameter))
    items = build_items(list(preference_pairs(count=12, seed=1)), "pairwise", tokenizer, max_length=64)
    if weighted:  # per-pair weights: batch.weights, applied before the num_items reduction
        items = [dataclasses.replace(item, weight=0.25 + 0.5 * (index % 4)) for index, item in enumerate(items)]
    objective = Registry.from_environment(third_party=False).create("usage", name, options)
    # lr 1e-4: AdamW's first steps move a weight by about lr·sign(gradient), so a weight whose gradient is
    # at rounding level on either path may move either way: at lr 1e-2 one weight of 8192 differed by 3.5e-5
    # (DPO), at 1e-3 by 3.5e-6 (DPO) and 1.5e-5 (SimPO). The first step's gradients are compared directly.
    settings = {"steps": 3, "batch_size": 4, "grad_accum": 2, "lr": 1e-4, "progress": False, **config}
    reference = {}
    if cached:
        reference["cached_reference"] = [
            sequence_logps(reference_model, collate([item], tokenizer.pad_token_id).sequences).tolist()
            for item in items
        ]
    elif objective.uses_reference():
        reference["reference_logps"] = ModelReference(reference_model, fused=True, backend="auto")
    return Trainer(
        policy,
        [WeightedObjective(objective)],
        items,
        TrainConfig(loss_aware_head=loss_aware, **settings),
        pad_token_id=tokenizer.pad_token_id,
        run_dir=tmp_path / f"{name}-{loss_aware}",
        device=CPU,
        **reference,
    )


def _train(trainer: Trainer, steps: int = 3) -> tuple[list[dict[str, float]], list[torch.Tensor]]:
    """Each step's metrics; the first step's gradients and the final weights."""
    metrics = [trainer.train_step()]
    grads = [parameter.grad.clone() for parameter in trainer.trainable]
    metrics += [trainer.train_step() for _ in range(steps - 1)]
    return metrics, grads + [parameter.detach().clone() for parameter in trainer.trainable]


@pytest.fixture
def calls(monkeypatch) -> list[str]:
    """The loss each call of the loss-aware kernel computed: proof that the path ran."""
    seen: list[str] = []
    kernel = fused_pairwise_step.fused_linear_pairwise_loss

    def recording(*args, **kwargs):
        seen.append(kwargs["loss"])
        return kernel(*args, **kwargs)

    monkeypatch.setattr(fused_pairwise_step, "fused_linear_pairwise_loss", recording)
    return seen


def _assert_same(ours, theirs) -> None:
    (our_metrics, our_weights), (their_metrics, their_weights) = ours, theirs
    for step, (mine, expected) in enumerate(zip(our_metrics, their_metrics, strict=True)):
        assert set(mine) == set(expected)
        for key, value in expected.items():
            if key != "elapsed_s":
                assert mine[key] == pytest.approx(value, rel=1e-5, abs=1e-5), (step, key)
    half = len(their_weights) // 2
    for mine, expected in zip(our_weights[:half], their_weights[:half], strict=True):  # the first step's gradients
        torch.testing.assert_close(mine, expected, rtol=1e-4, atol=1e-7)
    for mine, expected in zip(our_weights[half:], their_weights[half:], strict=True):  # the final weights
        torch.testing.assert_close(mine, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "name, options, row",
    [
        ("dpo", {}, "dpo"),
        ("cdpo", {"label_smoothing": 0.2}, "dpo"),
        ("ipo", {"beta": 0.5}, "ipo"),
        ("hinge", {"beta": 0.5}, "hinge"),
        ("simpo", {"gamma": 0.5, "label_smoothing": 0.1}, "simpo"),
    ],
)
def test_steps_equal_the_unfused_path(tokenizer, tmp_path, calls, name, options, row) -> None:
    usual = _train(_trainer(tokenizer, tmp_path, name, options, loss_aware=False))
    assert calls == []
    loss_aware = _train(_trainer(tokenizer, tmp_path, name, options, loss_aware=True))
    assert calls == [row] * 6  # 3 steps x 2 micro-batches
    assert usual[0][0]["loss"] != pytest.approx(math.log(2), abs=1e-3)  # a real loss, not the untrained log 2
    _assert_same(loss_aware, usual)


@pytest.mark.parametrize("setting", ["cached", "weighted"])
def test_cached_reference_sums_and_pair_weights(tokenizer, tmp_path, calls, setting) -> None:
    usual = _train(_trainer(tokenizer, tmp_path, "dpo", {}, loss_aware=False, **{setting: True}), steps=2)
    loss_aware = _train(_trainer(tokenizer, tmp_path, "dpo", {}, loss_aware=True, **{setting: True}), steps=2)
    assert len(calls) == 4
    _assert_same(loss_aware, usual)


@pytest.mark.parametrize(
    "case",
    ["share_prompts", "unfused_head", "soft_labels", "other_objective", "two_objectives"],
)
def test_other_steps_take_the_usual_path(tokenizer, tmp_path, case) -> None:
    name, options, config = "dpo", {}, {}
    if case == "share_prompts":
        config["share_prompts"] = True
    elif case == "unfused_head":
        config["fused_lm_head"] = False
    elif case == "soft_labels":
        name = "ipo"
    elif case == "other_objective":
        name = "robust_dpo"
    trainer = _trainer(tokenizer, tmp_path, name, options, loss_aware=True, **config)
    if case == "two_objectives":
        trainer.objectives = trainer.objectives * 2
    batches, _, plans, _ = trainer._host_batches([(list(range(4)), 1.0)])
    batch = batches[0]
    if case == "soft_labels":
        batch = dataclasses.replace(batch, probabilities=torch.full((2,), 0.8))
    assert fused_pairwise_step.loss_aware_output(trainer, batch, batch, 4, plans[0]) is None


def test_a_subclass_is_not_matched(tokenizer, tmp_path) -> None:
    trainer = _trainer(tokenizer, tmp_path, "dpo", {}, loss_aware=True)
    objective = trainer.objectives[0].objective
    batch = trainer._collate(list(range(4)))
    assert fused_pairwise_step.loss_aware_row(objective, batch) == ("dpo", {"beta": 0.1})
    subclass = type("MyDPO", (type(objective),), {})
    assert fused_pairwise_step.loss_aware_row(subclass(objective.config), batch) is None


def test_the_step_reads_the_device_once(tokenizer, tmp_path, calls, monkeypatch) -> None:
    """As tests/kernels/test_step_sync.py for the usual path: only the trainer's one read, AdamW and SDPA."""
    allowed = {("prefcore/engine/step_reads.py", "read_step_norms"): 0}
    tolerated = (
        ("torch/optim/optimizer.py", "_get_value"),
        ("transformers/masking_utils.py", "_ignore_causal_mask_sdpa"),
    )
    trainer = _trainer(tokenizer, tmp_path, "dpo", {}, loss_aware=True)
    active = [False]
    for name in ("item", "tolist", "__bool__", "__int__", "__float__", "__index__"):
        original = getattr(torch.Tensor, name)

        def reading(tensor, *args, _original=original, _name=name, **kwargs):
            if active[0]:
                frame = traceback.extract_stack(limit=2)[0]
                key = next(
                    (k for k in (*allowed, *tolerated) if frame.filename.endswith(k[0]) and frame.name == k[1]), None
                )
                if key is None:
                    raise AssertionError(f"host read Tensor.{_name} in {frame.filename}:{frame.name} during the step")
                if key in allowed:
                    allowed[key] += 1
            return _original(tensor, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, reading)
    host_batches = trainer._host_batches

    def unguarded(local):
        active[0] = False
        try:
            return host_batches(local)
        finally:
            active[0] = True

    trainer._host_batches = unguarded
    active[0] = True
    try:
        metrics = trainer.train_step()
    finally:
        active[0] = False
    assert calls == ["dpo", "dpo"]
    assert list(allowed.values()) == [1]
    assert math.isfinite(metrics["loss"]) and metrics["loss"] > 0


@pytest.mark.parametrize("precision", ["bf16", "bf16-params"])
def test_bf16_step(tokenizer, tmp_path, calls, precision) -> None:
    """bf16 autocast (the final norm returns fp32 hidden states) or bf16 weight copies (a bf16 logits tile).

    Sums and losses are fp32 on both paths.
    """
    usual = _train(_trainer(tokenizer, tmp_path, "dpo", {}, loss_aware=False, precision=precision), steps=1)
    loss_aware = _train(_trainer(tokenizer, tmp_path, "dpo", {}, loss_aware=True, precision=precision), steps=1)
    assert calls == ["dpo", "dpo"]
    for key, value in usual[0][0].items():
        if key != "elapsed_s":
            # bf16 logits round at 2^-8 of their size (~0.02 here): the oneDNN GEMMs of the two paths see
            # other row sets and need not round alike, so sums agree to ~1e-2 (the bf16 tolerance of the README)
            assert loss_aware[0][0][key] == pytest.approx(value, rel=1e-2, abs=1e-3), key
    # bf16 dlogits round g·(onehot − p): a 1-ulp fp32 difference in g (another order of the same
    # reduction) can flip a rounding, and the bf16 decoder backward carries it to every gradient.
    half = len(usual[1]) // 2
    mine = torch.cat([grad.flatten() for grad in loss_aware[1][:half]])
    expected = torch.cat([grad.flatten() for grad in usual[1][:half]])
    assert float(F.cosine_similarity(mine, expected, dim=0)) > 0.999  # measured 0.999996
    assert float((mine - expected).norm() / expected.norm()) < 5e-2  # measured 3.4e-3


def test_first_step_from_the_reference_logs_the_same_ties(tokenizer, tmp_path, calls) -> None:
    """Policy = reference: every reward is exactly 0 on both paths, so ``rewards/accuracies`` (a strict >) agrees.

    The chunk's rows are gathered in the recompute path's order and summed over the padded rows as
    it sums them, so the sequence sums are bit for bit the usual path's, ties included.
    """
    usual = _trainer(tokenizer, tmp_path, "dpo", {}, loss_aware=False, same_reference=True).train_step()
    loss_aware = _trainer(tokenizer, tmp_path, "dpo", {}, loss_aware=True, same_reference=True).train_step()
    assert calls == ["dpo", "dpo"]
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "loss"):
        assert loss_aware[key] == usual[key], key
    assert usual["rewards/margins"] == 0.0 and usual["loss"] == pytest.approx(math.log(2))


@pytest.mark.skipif(
    not (HAS_TRITON and (torch.cuda.is_available() or interpreter_enabled())),
    reason="needs triton and a GPU or TRITON_INTERPRET=1",
)
def test_triton_backend_step(tokenizer, tmp_path, calls) -> None:
    """``kernel_backend = "triton"``: the Triton log-softmax and pair kernels on both paths (interpreter on CPU)."""
    usual = _train(_trainer(tokenizer, tmp_path, "ipo", {}, loss_aware=False, kernel_backend="triton"), steps=1)
    loss_aware = _train(_trainer(tokenizer, tmp_path, "ipo", {}, loss_aware=True, kernel_backend="triton"), steps=1)
    assert calls == ["ipo", "ipo"]
    _assert_same(loss_aware, usual)


def test_bf16_params_passes_the_fp32_master_head(tokenizer, tmp_path, monkeypatch) -> None:
    """``bf16-params``: the kernel gets the head's fp32 parameter, and its fp32 buffer is the head's gradient.

    Against the same steps given the bf16 copy (the path before): the same bf16 GEMMs, and with one
    chunk per micro-batch the head's gradient is that path's bf16 GEMM rounded once and added in
    fp32, so the metrics, every gradient and the weights after the steps are bit for bit equal.
    """
    seen: list[tuple[torch.Tensor, torch.dtype]] = []
    kernel = fused_pairwise_step.fused_linear_pairwise_loss

    def recording(hidden, weight, *args, **kwargs):
        seen.append((weight, hidden.dtype))
        return kernel(hidden, weight, *args, **kwargs)

    monkeypatch.setattr(fused_pairwise_step, "fused_linear_pairwise_loss", recording)
    trainer = _trainer(tokenizer, tmp_path, "dpo", {}, loss_aware=True, precision="bf16-params")
    head = trainer.policy.get_output_embeddings().weight
    master = _train(trainer, steps=2)
    assert [(weight is head, dtype) for weight, dtype in seen] == [(True, torch.bfloat16)] * 4
    seen.clear()
    monkeypatch.setattr(fused_pairwise_step, "_master_head", lambda model, hidden: None)
    copy = _train(_trainer(tokenizer, tmp_path / "copy", "dpo", {}, loss_aware=True, precision="bf16-params"), steps=2)
    assert [weight.dtype for weight, _ in seen] == [torch.bfloat16] * 4
    for mine, expected in zip(master[0], copy[0], strict=True):
        assert {k: v for k, v in mine.items() if k != "elapsed_s"} == {
            k: v for k, v in expected.items() if k != "elapsed_s"
        }
    for mine, expected in zip(master[1], copy[1], strict=True):  # first-step gradients, then the weights
        torch.testing.assert_close(mine, expected, rtol=0, atol=0)
