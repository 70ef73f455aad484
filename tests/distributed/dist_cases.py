"""The training runs the distributed tests compare: built alike in one process and under torchrun.

Each case trains the demo's tiny model for a few steps and returns its per-step losses and
final trainable weights. ``run_case`` is called by the test itself (one process, the whole
batch) and by ``dist_worker.py`` on every rank (the global batch split across the ranks).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from prefcore.demo.model import build_tiny_model
from prefcore.demo.task import preference_pairs
from prefcore.demo.task import rankings
from prefcore.demo.tokenizer import build_tokenizer
from prefcore.engine.batching import build_items
from prefcore.engine.models import frozen_copy
from prefcore.engine.reference import ModelReference
from prefcore.engine.reward_items import build_reward_items
from prefcore.engine.reward_model import build_reward_model
from prefcore.engine.reward_trainer import RewardTrainer
from prefcore.engine.trainer import Trainer
from prefcore.engine.trainer import WeightedObjective
from prefcore.registry import Registry
from prefcore.settings import RewardTrainConfig
from prefcore.settings import TrainConfig

CASES = ("dpo", "listwise", "reward", "dpo_tail")
"""``dpo_tail``: 13 pairs in batches of 6 end an epoch with a batch of one, so rank 1's slice is empty."""
STEPS = 3
BATCH = 6  # global micro-batch: 3 per rank on 2 ranks
CPU = torch.device("cpu")


def _registry() -> Registry:
    return Registry.from_environment(third_party=False)


def _train_config(**overrides: Any) -> TrainConfig:
    values = {
        "steps": STEPS,
        "batch_size": BATCH,
        "lr": 1e-2,
        "warmup_steps": 0,
        "schedule": "constant",
        "max_length": 48,
        "seed": 3,
        "progress": False,
        "kernel_backend": "torch",
    }
    values.update(overrides)
    return TrainConfig(**values)


def _record(metrics_log: list[dict[str, float]]) -> Any:
    return lambda step, metrics: metrics_log.append({"step": step, **dict(metrics)})


def build_case(name: str, run_dir: Path, **overrides: Any) -> tuple[Any, torch.nn.Module]:
    """The trainer of case ``name`` and the plain model it trains."""
    tokenizer = build_tokenizer()
    registry = _registry()
    log: list[dict[str, float]] = []
    if name == "reward":
        config = RewardTrainConfig(
            steps=STEPS, batch_size=BATCH, lr=1e-2, seed=3, schedule="constant", max_length=48, **overrides
        )
        objective = registry.create("preference_model", "bradley_terry", {})
        items = build_reward_items(preference_pairs(count=20, seed=5), objective, tokenizer, max_length=48)
        model = build_reward_model(tokenizer, demo=True, seed=1, max_length=48)
        trainer = RewardTrainer(
            model, objective, items, config, pad_token_id=tokenizer.pad_token_id, run_dir=run_dir, on_step=_record(log)
        )
    else:
        if name in ("dpo", "dpo_tail"):
            count = 20 if name == "dpo" else 13
            records, data_format, method = preference_pairs(count=count, seed=5), "pairwise", "dpo"
        else:
            records, data_format, method = rankings(count=12, seed=5, size=3), "listwise", "plackett_luce_dpo"
        items = build_items(records, data_format, tokenizer, max_length=48)
        model = build_tiny_model(tokenizer, seed=1)
        reference = ModelReference(frozen_copy(model), fused=True, backend="torch")
        trainer = Trainer(
            model,
            [WeightedObjective(registry.create("usage", method, {}))],
            items,
            _train_config(**overrides),
            pad_token_id=tokenizer.pad_token_id,
            run_dir=run_dir,
            device=CPU,
            reference_logps=reference,
            on_step=_record(log),
        )
    trainer.metrics_log = log
    return trainer, model


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def run_case(name: str, run_dir: Path, **overrides: Any) -> dict[str, Any]:
    """Train case ``name``; its losses per step and final weights."""
    trainer, model = build_case(name, run_dir, **overrides)
    trainer.fit()
    return {"losses": [row["loss"] for row in trainer.metrics_log], "weights": weights(model)}
