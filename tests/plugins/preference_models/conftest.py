"""Fixtures of the preference-model tests: the built-in objectives in a fresh registry, random batches, one thread.

The built-in modules are registered directly on a fresh plugin manager (not through
installed entry points), so these tests see exactly the files in ``plugins/preference_models/``.
Random batches are fixtures that return builders, as helper modules are not importable
under ``--import-mode=importlib``.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import pytest
import torch

import prefcore.plugins.preference_models as preference_package
from prefcore.batch import LossOutput
from prefcore.preference import RewardBatch
from prefcore.registry import Registry
from prefcore.testing import plugin_modules
from prefcore.testing import registry_of

# fp64 references through a different reduction order than the objectives' fp32 path
RTOL, ATOL = 1e-5, 1e-6


@pytest.fixture(scope="session")
def preference_modules() -> list[ModuleType]:
    return plugin_modules(preference_package)


@pytest.fixture(scope="session")
def preference_registry() -> Registry:
    return registry_of(plugin_modules(preference_package))


PairBatch = Callable[..., RewardBatch]


@pytest.fixture
def pair_batch() -> PairBatch:
    """``pair_batch(P, heads=1, **fields)``: 2P sequences, pair i = (2i, 2i+1) shuffled, rewards with grad."""

    def build(pairs: int, heads: int = 1, *, seed: int = 0, scale: float = 2.0, **fields: object) -> RewardBatch:
        generator = torch.Generator().manual_seed(seed)
        rewards = (scale * torch.randn(2 * pairs, heads, generator=generator)).requires_grad_()
        order = torch.randperm(2 * pairs, generator=generator)
        return RewardBatch(rewards=rewards, chosen_index=order[:pairs], rejected_index=order[pairs:], **fields)

    return build


@pytest.fixture
def assert_matches() -> Callable[[Callable[[RewardBatch], LossOutput], Callable[..., torch.Tensor], RewardBatch], None]:
    """Loss and gradient (w.r.t. rewards and step rewards, under a random upstream gradient) equal the reference's."""

    def check(
        loss_fn: Callable[[RewardBatch], LossOutput], reference: Callable[..., torch.Tensor], batch: RewardBatch
    ) -> None:
        inputs = [tensor for tensor in (batch.rewards, batch.step_rewards) if tensor is not None]
        upstream = torch.rand(()) + 0.5
        output = loss_fn(batch)
        ours = torch.autograd.grad(output.loss * upstream, inputs, allow_unused=True, materialize_grads=True)
        doubles = [tensor.detach().double().requires_grad_() for tensor in inputs]
        expected_loss = reference(*doubles)
        expected = torch.autograd.grad(
            expected_loss * upstream.double(), doubles, allow_unused=True, materialize_grads=True
        )
        torch.testing.assert_close(output.loss.double(), expected_loss.detach(), rtol=RTOL, atol=ATOL)
        for got, want in zip(ours, expected, strict=True):
            torch.testing.assert_close(got.double(), want, rtol=RTOL, atol=ATOL)

    return check
