"""Every registered usage objective trains a tiny model end to end and raises the held-out margin.

The model is the demo's tiny Llama, warm-started by SFT on the demo's mediocre replies (as
the default job does), the data the demo's rule-labelled pairs (rankings for listwise
objectives, pairs split into labels for unpaired ones). After a few optimiser
steps through the real engine (fused LM-head log-probs, reference model, batching), the
preferred completions of *held-out* pairs must gain log-probability over the rejected ones
relative to the starting model.
"""

from __future__ import annotations

import pytest
import torch

from prefcore.data import BinaryLabel
from prefcore.demo.model import build_tiny_model
from prefcore.demo.task import preference_pairs
from prefcore.demo.task import rankings
from prefcore.demo.task import sft_examples
from prefcore.demo.tokenizer import build_tokenizer
from prefcore.engine.batching import build_items
from prefcore.engine.logprobs import sequence_logps
from prefcore.engine.models import frozen_copy
from prefcore.engine.reference import ModelReference
from prefcore.engine.sequences import pad_sequences
from prefcore.engine.sequences import tokenize_sequence
from prefcore.engine.trainer import TrainConfig
from prefcore.engine.trainer import Trainer
from prefcore.engine.trainer import WeightedObjective
from prefcore.registry import Registry
from prefcore.rollout import ROLLOUT_FORMAT

REGISTRY = Registry.from_environment(third_party=False)
# online objectives train on rollouts, not on the offline pairs this file trains on
OBJECTIVES = [info.name for info in REGISTRY.methods("usage") if ROLLOUT_FORMAT not in info.cls.data_formats]
STEPS = 30
OPTIONS = {
    # The demo's word-level tokenizer only knows its own words: condition with words it has,
    # so that good and bad conditions are distinct tokens.
    "reward_conditioned_sft": {"levels": ["poor", "sure", "rich"], "condition_template": "{level} "},
    "orpo": {"beta": 0.5},
}
STEPS_FOR = {"reward_conditioned_sft": 120}  # it must first learn what the condition word means


def _heldout_margin(model, reference, tokenizer, pairs, prefix: str) -> float:
    """Mean over pairs of [log π(c) − log π(r)] − [log π0(c) − log π0(r)], summed over completion tokens."""

    def sums(net, completions, with_prefix: str) -> torch.Tensor:
        sequences = [
            tokenize_sequence(tokenizer, pair.prompt, completion, max_length=64, prefix=with_prefix)
            for pair, completion in zip(pairs, completions, strict=True)
        ]
        return sequence_logps(net, pad_sequences(sequences, tokenizer.pad_token_id))

    chosen = [pair.chosen for pair in pairs]
    rejected = [pair.rejected for pair in pairs]
    trained = sums(model, chosen, prefix) - sums(model, rejected, prefix)
    start = sums(reference, chosen, "") - sums(reference, rejected, "")
    return float((trained - start).mean())


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="module")
def warm_state(tokenizer, tmp_path_factory) -> dict[str, torch.Tensor]:
    """A reference policy: SFT on mediocre demonstrations, shared by every objective's test."""
    torch.set_num_threads(1)
    model = build_tiny_model(tokenizer, seed=0)
    demonstrations = [BinaryLabel(d.prompt, d.completion, True) for d in sft_examples(count=256, seed=5)]
    items = build_items(demonstrations, "sft", tokenizer, max_length=64)
    config = TrainConfig(steps=40, batch_size=16, lr=5e-3, schedule="constant", progress=False)
    sft = REGISTRY.create("usage", "sft", {})
    Trainer(
        model,
        [WeightedObjective(sft)],
        items,
        config,
        pad_token_id=tokenizer.pad_token_id,
        run_dir=tmp_path_factory.mktemp("warm"),
        device=torch.device("cpu"),
    ).fit()
    return {name: tensor.clone() for name, tensor in model.state_dict().items()}


@pytest.mark.parametrize("name", OBJECTIVES)
def test_objective_raises_heldout_margin(name: str, tokenizer, warm_state, tmp_path) -> None:
    torch.set_num_threads(1)  # tiny matrices: threads only add overhead on two cores
    objective = REGISTRY.create("usage", name, OPTIONS.get(name, {}))
    data_format = objective.data_formats[0]
    records = list(rankings(count=48, seed=1) if data_format == "listwise" else preference_pairs(count=48, seed=1))
    records = objective.transform_records(records)
    items = build_items(records, data_format, tokenizer, max_length=64, mismatched=data_format == "unpaired")
    policy = build_tiny_model(tokenizer, seed=0)
    policy.load_state_dict(warm_state)
    reference_model = frozen_copy(policy)
    reference = ModelReference(reference_model, fused=True, backend="auto") if objective.uses_reference() else None
    config = TrainConfig(
        steps=STEPS_FOR.get(name, STEPS), batch_size=8, lr=2e-3, warmup_steps=0, schedule="constant", progress=False
    )
    trainer = Trainer(
        policy,
        [WeightedObjective(objective)],
        items,
        config,
        pad_token_id=tokenizer.pad_token_id,
        run_dir=tmp_path,
        device=torch.device("cpu"),
        reference_logps=reference,
    )
    trainer.fit()
    heldout = preference_pairs(count=32, seed=77)
    margin = _heldout_margin(policy, reference_model, tokenizer, heldout, objective.generation_prefix())
    assert margin > 0, f"{name}: held-out preference margin fell by {-margin:.4f} after {config.steps} steps"
