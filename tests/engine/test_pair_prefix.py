"""``[train] share_prompts``: a pair's prompt runs once, and losses and gradients equal the padded batch's."""

from __future__ import annotations

import pytest
import torch

from prefcore.data import PairwiseComparison
from prefcore.demo.model import build_tiny_model
from prefcore.demo.task import preference_pairs
from prefcore.demo.tokenizer import build_tokenizer
from prefcore.engine import trainer as trainer_module
from prefcore.engine.batching import build_items
from prefcore.engine.batching import collate
from prefcore.engine.logprobs import completion_token_logps
from prefcore.engine.models import frozen_copy
from prefcore.engine.pair_prefix import plan_prompts
from prefcore.engine.pair_prefix import shared_prompt_token_logps
from prefcore.engine.reference import ModelReference
from prefcore.engine.trainer import TrainConfig
from prefcore.engine.trainer import Trainer
from prefcore.engine.trainer import WeightedObjective
from prefcore.registry import Registry

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def _items(tokenizer, count: int = 8):
    return build_items(list(preference_pairs(count=count, seed=1)), "pairwise", tokenizer, max_length=64)


@pytest.mark.parametrize("fused", [True, False])
def test_shared_prompt_logps_equal_the_padded_batch(tokenizer, fused) -> None:
    torch.manual_seed(0)
    model = build_tiny_model(tokenizer, seed=0)
    batch = collate(_items(tokenizer), tokenizer.pad_token_id)
    plan = plan_prompts(batch.sequences)
    assert plan is not None and len(set(plan.prompts)) == len(plan.prompts) // 2  # one prompt per pair
    shared = shared_prompt_token_logps(model, plan, CPU, fused=fused, backend="auto")
    padded = completion_token_logps(model, batch.sequences, fused=fused)
    assert shared.shape == padded.shape
    assert torch.equal(shared != 0, batch.sequences.completion_mask)
    torch.testing.assert_close(shared, padded, rtol=1e-5, atol=1e-5)


def test_no_shared_prompt_means_no_plan(tokenizer) -> None:
    pairs = [
        PairwiseComparison(prompt=f"what colour is the {thing} ?", chosen="blue", rejected="red")
        for thing in ("sky", "sea")
    ]
    items = build_items(pairs, "pairwise", tokenizer, max_length=64)
    single = collate(items[:1], tokenizer.pad_token_id)  # one pair: its two rows share the prompt
    assert plan_prompts(single.sequences) is not None
    rows = collate(items, tokenizer.pad_token_id).sequences
    distinct = type(rows)(rows.input_ids[::2], rows.attention_mask[::2], rows.completion_mask[::2])
    assert plan_prompts(distinct) is None


def _step(tokenizer, tmp_path, share: bool, fused: bool) -> tuple[dict[str, float], list[torch.Tensor]]:
    torch.manual_seed(0)
    policy = build_tiny_model(tokenizer, seed=0)
    reference_model = frozen_copy(policy)
    with torch.no_grad():
        for parameter in reference_model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    objective = Registry.from_environment(third_party=False).create("usage", "dpo", {})
    config = TrainConfig(
        steps=2, batch_size=4, grad_accum=2, share_prompts=share, fused_lm_head=fused, lr=1e-2, progress=False
    )
    trainer = Trainer(
        policy,
        [WeightedObjective(objective)],
        _items(tokenizer),
        config,
        pad_token_id=tokenizer.pad_token_id,
        run_dir=tmp_path / f"{share}-{fused}",
        device=CPU,
        reference_logps=ModelReference(reference_model, fused=fused, backend="auto"),
    )
    metrics = trainer.train_step()
    grads = [parameter.grad.clone() for parameter in trainer.trainable]
    metrics = {**metrics, **{f"second/{key}": value for key, value in trainer.train_step().items()}}
    return metrics, grads


@pytest.mark.parametrize("fused", [True, False])
def test_dpo_steps_with_shared_prompts_equal_the_padded_ones(tokenizer, tmp_path, fused, monkeypatch) -> None:
    padded, padded_grads = _step(tokenizer, tmp_path, share=False, fused=fused)
    used = []  # the shared path really ran, for the policy and for the reference

    def recording(function):
        def wrapper(*args, **kwargs):
            result = function(*args, **kwargs)
            used.append((function.__name__, result is not None))
            return result

        return wrapper

    for name in ("shared_prompt_token_logps", "reference_shared_prompt_logps"):
        monkeypatch.setattr(trainer_module, name, recording(getattr(trainer_module, name)))
    shared, shared_grads = _step(tokenizer, tmp_path, share=True, fused=fused)
    assert sorted(set(used)) == [("reference_shared_prompt_logps", True), ("shared_prompt_token_logps", True)]
    assert shared["loss"] != pytest.approx(0.6931, abs=1e-3)  # the reference differs: a real loss
    for key, value in padded.items():
        if "elapsed" not in key:
            assert shared[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    for ours, theirs in zip(shared_grads, padded_grads, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)
