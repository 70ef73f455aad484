"""Sharded checkpoints with torch.distributed.checkpoint (DCP), resumable on any number of processes.

A distributed checkpoint is a ``step-NNNNNN/`` folder like a single-process one, holding
``dcp/`` (each rank writes its shards of the model's trainable parameters and the optimiser
state, keyed by parameter name, so DCP reshards them on load for another world size),
``rng.safetensors`` and ``state.json`` (step, scheduler, Python RNG, trainer counters; rank 0
writes them). It is written into a staging sibling and renamed into place by rank 0 after
every rank has finished, so a killed run never leaves a partial ``step-N``.
``to_safetensors`` turns its model part into one ``model.safetensors`` file, also from the shell:
``python -m prefcore.distributed.checkpoint RUN/checkpoints/step-000120 model.safetensors``.
A sharded checkpoint also resumes in one plain process, without torchrun: ``load_sharded`` then
reads every rank's shards without a process group.
"""

from __future__ import annotations

import json
import random
import shutil
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors.torch import load_file
from safetensors.torch import save_file

from prefcore.distributed.process_group import barrier
from prefcore.distributed.process_group import is_main
from prefcore.engine.checkpoint import python_rng_from_json
from prefcore.engine.checkpoint import python_rng_to_json

__all__ = ["DCP_FOLDER", "is_sharded", "load_sharded", "save_sharded", "to_safetensors"]

DCP_FOLDER = "dcp"


def is_sharded(path: Path) -> bool:
    """Whether a checkpoint folder was written by ``save_sharded``."""
    return (Path(path) / DCP_FOLDER).is_dir()


def _options() -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(ignore_frozen_params=True)


def save_sharded(
    final: Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    step: int,
    trainer_state: Mapping[str, Any],
) -> Path:
    """Write checkpoint folder ``final`` from every rank (collective); returns it."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    final = Path(final)
    staging = final.parent / f".{final.name}.dcp.tmp"
    if is_main():
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    barrier()
    model_state, optimizer_state = get_state_dict(model, optimizer, options=_options())
    dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=str(staging / DCP_FOLDER))
    if is_main():
        save_file({"torch_cpu": torch.get_rng_state()}, str(staging / "rng.safetensors"))
        state = {
            "step": step,
            "world_size": dist.get_world_size(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "python_rng": python_rng_to_json(random.getstate()),
            "trainer": dict(trainer_state),
        }
        (staging / "state.json").write_text(json.dumps(state, indent=1), encoding="utf-8")
    barrier()
    if is_main():
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
    barrier()
    return final


def load_sharded(
    path: Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any
) -> tuple[int, dict[str, Any]]:
    """Restore a ``save_sharded`` folder on this world size (collective); returns ``(step, trainer state)``.

    Without a process group (one plain process, no torchrun) this process reads every rank's shards
    into ``model``, which must then name its parameters as the wrapped model did (``Forward(model, fn)``).
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict
    from torch.distributed.checkpoint.state_dict import set_state_dict

    path = Path(path)
    model_state, optimizer_state = get_state_dict(model, optimizer, options=_options())
    state = {"model": model_state, "optimizer": optimizer_state}
    no_dist = not (dist.is_available() and dist.is_initialized())
    with warnings.catch_warnings():
        if no_dist:  # DCP warns that it assumes one process: that is what the caller asked for
            warnings.filterwarnings("ignore", message="torch.distributed is disabled", category=UserWarning)
        dcp.load(state, checkpoint_id=str(path / DCP_FOLDER), no_dist=no_dist)
    set_state_dict(
        model,
        optimizer,
        model_state_dict=state["model"],
        optim_state_dict=state["optimizer"],
        options=_options(),
    )
    meta = json.loads((path / "state.json").read_text(encoding="utf-8"))
    if scheduler is not None and meta["scheduler"] is not None:
        scheduler.load_state_dict(meta["scheduler"])
    torch.set_rng_state(load_file(str(path / "rng.safetensors"))["torch_cpu"])
    random.setstate(python_rng_from_json(meta["python_rng"]))
    return int(meta["step"]), dict(meta["trainer"])


def to_safetensors(checkpoint: Path, out: Path, *, prefix: str = "model.") -> Path:
    """The model weights of a sharded checkpoint as one ``safetensors`` file, names without ``prefix``.

    Runs in one process, without a process group (DCP reads every shard).
    """
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    out = Path(out)
    scratch = out.with_suffix(".pt.tmp")
    dcp_to_torch_save(str(Path(checkpoint) / DCP_FOLDER), str(scratch))
    try:
        everything = torch.load(scratch, weights_only=True)
    finally:
        scratch.unlink(missing_ok=True)
    weights = {
        name[len(prefix) :] if name.startswith(prefix) else name: tensor.contiguous()
        for name, tensor in everything["model"].items()
    }
    save_file(weights, str(out))
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m prefcore.distributed.checkpoint CHECKPOINT OUT.safetensors``."""
    import argparse

    parser = argparse.ArgumentParser(description="Write a sharded checkpoint's model weights as one safetensors file.")
    parser.add_argument("checkpoint", help="a step-NNNNNN folder of a distributed run")
    parser.add_argument("out", help="the .safetensors file to write")
    args = parser.parse_args(argv)
    if not is_sharded(Path(args.checkpoint)):
        parser.error(f"{args.checkpoint} holds no {DCP_FOLDER}/ folder: it is not a distributed checkpoint.")
    sys.stdout.write(f"{to_safetensors(Path(args.checkpoint), Path(args.out))}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
