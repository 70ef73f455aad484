"""The training runs the distributed tests compare: built alike in one process and under torchrun.

Each case trains the demo's tiny model for a few steps and returns its per-step losses and
final trainable weights. ``run_case`` is called by the test itself (one process, the whole
batch) and by ``dist_worker.py`` on every rank (the global batch split across the ranks).

``dpo_cached`` trains DPO on reference sums precomputed across the ranks (``[run] reference =
"precomputed"``); ``soup`` trains two preference models one after another and interpolates their
weights (``[run] ensemble = "soup"``). The policy cases also report the bytes of reference
weights this rank held during training (FSDP2 shards the reference), and the peak of the tensor
bytes their trainer allocated while it was built (``TensorBytes``): under FSDP2 only this rank's
shards, no second full copy of the policy or the reference.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from prefcore.demo.model import build_tiny_model
from prefcore.demo.task import preference_pairs
from prefcore.demo.task import rankings
from prefcore.demo.tokenizer import build_tokenizer
from prefcore.distributed.memory import TensorBytes
from prefcore.distributed.process_group import current
from prefcore.distributed.wrap import local_parameter_bytes
from prefcore.engine.batching import build_items
from prefcore.engine.models import frozen_copy
from prefcore.engine.reference import CACHE_FILE
from prefcore.engine.reference import ModelReference
from prefcore.engine.reference import precompute_reference
from prefcore.engine.reward_ensemble import save_soup
from prefcore.engine.reward_items import build_reward_items
from prefcore.engine.reward_model import build_reward_model
from prefcore.engine.reward_trainer import RewardTrainer
from prefcore.engine.reward_trainer import train_preference_model
from prefcore.engine.trainer import Trainer
from prefcore.engine.trainer import WeightedObjective
from prefcore.registry import Registry
from prefcore.settings import RewardTrainConfig
from prefcore.settings import TrainConfig

CASES = ("dpo", "listwise", "reward", "dpo_tail", "dpo_cached", "soup")
"""``dpo_tail``: 13 pairs in batches of 6 end an epoch with a batch of one, so rank 1's slice is empty."""
FSDP_CASES = ("dpo_skeleton",)
"""FSDP2 only: ``dpo_skeleton`` is DPO whose ranks other than 0 build the policy (and so the reference)
on the meta device, reading no weights; rank 0 sends them their shards. One process: plain DPO."""
SOUP_WEIGHTS = (0.75, 0.25)
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
    if name == "soup":
        model = build_reward_model(tokenizer, demo=True, seed=1, max_length=48)
        return _Soup(model, tokenizer, registry, run_dir, log, overrides), model
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
        if name in ("dpo", "dpo_tail", "dpo_cached", "dpo_skeleton"):
            count = 13 if name == "dpo_tail" else 20
            records, data_format, method = preference_pairs(count=count, seed=5), "pairwise", "dpo"
        else:
            records, data_format, method = rankings(count=12, seed=5, size=3), "listwise", "plackett_luce_dpo"
        items = build_items(records, data_format, tokenizer, max_length=48)
        parallel = current()
        skeleton = name == "dpo_skeleton" and parallel is not None and not parallel.is_main
        with torch.device("meta") if skeleton else contextlib.nullcontext():
            model = build_tiny_model(tokenizer, seed=1)
        reference = ModelReference(frozen_copy(model), fused=True, backend="torch")
        # what the reference starts from: a skeleton has no weights, so rank 0's initialisation, built here
        full_bytes = _full_bytes(reference.model)
        start = weights(build_tiny_model(tokenizer, seed=1) if skeleton else reference.model, frozen=True)
        cached = None
        if name == "dpo_cached":  # 40 sequences in batches of 4: each of 2 ranks computes 5 batches
            cached = precompute_reference(
                reference, items, pad_token_id=tokenizer.pad_token_id, device=CPU, cache_dir=run_dir, batch_size=4
            )
        plain = local_parameter_bytes(model) + local_parameter_bytes(reference.model)  # 0 for a skeleton
        with TensorBytes() as built:  # the policy's and the reference's wrapping included
            trainer = Trainer(
                model,
                [WeightedObjective(registry.create("usage", method, {}))],
                items,
                _train_config(**overrides),
                pad_token_id=tokenizer.pad_token_id,
                run_dir=run_dir,
                device=CPU,
                reference_logps=None if cached else reference,
                cached_reference=cached,
                on_step=_record(log),
            )
        trainer.reference_model, trainer.reference_full_bytes = reference.model, full_bytes
        trainer.reference_start = start  # before the trainer sharded it (FSDP2 empties the plain model)
        trainer.startup = {
            "peak": built.peak,
            "policy": _full_bytes(model),
            "reference": 0 if cached else full_bytes,
            "plain": plain,
            "largest": max(p.numel() * p.element_size() for p in model.parameters()),
        }
        trainer.items_built = items
    trainer.metrics_log = log
    return trainer, model


class _Soup:
    """Two preference models trained one after another from one initialisation, then souped."""

    def __init__(
        self, model: Any, tokenizer: Any, registry: Registry, run_dir: Path, log: list, overrides: dict
    ) -> None:
        self.model, self.tokenizer, self.run_dir, self.metrics_log = model, tokenizer, run_dir, log
        methods = ("bradley_terry", "margin_bradley_terry")
        self.objectives = [registry.create("preference_model", name, {}) for name in methods]
        self.config = RewardTrainConfig(
            steps=STEPS, batch_size=BATCH, lr=1e-2, seed=1, schedule="constant", max_length=48, demo=True,
            heldout_fraction=0.0, **overrides,
        )  # fmt: skip

    def fit(self) -> None:
        records = preference_pairs(count=20, seed=5)
        members = [
            train_preference_model(
                records,
                objective,
                self.tokenizer,
                self.config,
                run_dir=self.run_dir / f"member-{index}",
                model=self.model if index == 0 else None,  # the second builds the same initialisation (seed)
                on_step=_record(self.metrics_log),
            )
            for index, objective in enumerate(self.objectives)
        ]
        soup = save_soup(members, SOUP_WEIGHTS, self.run_dir / "soup")
        self.model.load_state_dict(soup.state_dict())


def _full_bytes(model: torch.nn.Module) -> int:
    """The bytes of all of ``model``'s parameters, from their shapes (also for a skeleton on the meta device)."""
    return sum(p.numel() * p.element_size() for p in model.parameters())


def weights(model: torch.nn.Module, *, frozen: bool = False) -> dict[str, torch.Tensor]:
    """The trainable parameters (``frozen``: every parameter), copied."""
    return {name: p.detach().clone() for name, p in model.named_parameters() if frozen or p.requires_grad}


class _Unused(ModelReference):
    """A reference that must not run: the sums come from the cache file."""

    def __call__(self, batch: Any) -> torch.Tensor:
        raise AssertionError("the reference ran although its sums were cached")


def run_case(name: str, run_dir: Path, **overrides: Any) -> dict[str, Any]:
    """Train case ``name``; its losses per step and final weights, and for the policy cases the reference's
    bytes this rank held after the first step, its full size, and whether it was whole again at the end."""
    trainer, model = build_case(name, run_dir, **overrides)
    result: dict[str, Any] = {}
    reference = getattr(trainer, "reference_logps", None)
    if reference is not None:
        step = trainer.train_step

        def measured_step() -> dict:
            metrics = step()
            if "reference_bytes" not in result:
                local = getattr(reference, "local_bytes", None)
                result["reference_bytes"] = local() if callable(local) else local_parameter_bytes(reference.model)
            return metrics

        trainer.train_step = measured_step
    trainer.fit()
    result.update(losses=[row["loss"] for row in trainer.metrics_log], weights=weights(model))
    if hasattr(trainer, "reference_start"):
        result["reference_full_bytes"] = trainer.reference_full_bytes
        after = weights(trainer.reference_model, frozen=True)
        result["reference_whole"] = all(torch.equal(after[n], t) for n, t in trainer.reference_start.items())
        result["startup"] = trainer.startup
    if name == "dpo_cached":
        result["cached"] = [list(sums) for sums in trainer.cached_reference]
        result["cache_file"] = {k: v.clone() for k, v in load_file(str(run_dir / CACHE_FILE)).items()}
        again = _Unused(trainer.reference_model, fused=True, backend="torch")
        pad = build_tokenizer().pad_token_id
        reread = precompute_reference(again, trainer.items_built, pad_token_id=pad, device=CPU, cache_dir=run_dir)
        result["cache_hit"] = [list(sums) for sums in reread] == result["cached"]
    return result
