"""Checkpoints in safetensors (never pickle), written atomically, resumable exactly.

A checkpoint folder ``step-000120/`` holds ``model.safetensors`` (trainable parameters),
``optimizer.safetensors`` (every optimizer state tensor), ``rng.safetensors`` (torch RNG
states) and ``state.json`` (step, optimizer hyper-parameters, scheduler, Python RNG,
trainer counters). It is written through ``prefcore.atomic.atomic_directory``: into a hidden
staging sibling, fsynced, then renamed into place, so a run killed mid-write (or a full disk)
leaves the previous checkpoint intact and no partial one. Staging folders a kill left behind
(``.step-*``) are never listed and are removed on the next save or resume.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from safetensors.torch import save_file

from prefcore.atomic import atomic_directory
from prefcore.atomic import remove_directory
from prefcore.atomic import remove_stale_staging
from prefcore.errors import StorageError

CHECKPOINT_DIR = re.compile(r"^step-(\d+)$")
# staging folders of a killed save: ours (.step-000120.<token>.tmp) and those of earlier
# versions, which used tempfile.mkdtemp (.step-000120.<random>)
_STAGING_DIR = re.compile(r"^\.step-\d+\.")


def checkpoint_name(step: int) -> str:
    return f"step-{step:06d}"


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Parameters that training changes, contiguous and unshared (safetensors refuses aliases)."""
    return {
        name: parameter.detach().to("cpu").clone().contiguous()
        for name, parameter in model.named_parameters()
        if parameter.requires_grad
    }


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param_id, param_state in state["state"].items():
        for key, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{param_id}.{key}"] = value.detach().to("cpu").contiguous()
            else:
                scalars.setdefault(str(param_id), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _optimizer_state_dict(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, tensor in tensors.items():
        param_id, key = name.split(".", 1)
        state.setdefault(int(param_id), {})[key] = tensor
    for param_id, values in meta["scalars"].items():
        state.setdefault(int(param_id), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def python_rng_to_json(rng_state: tuple) -> list:
    """``random.getstate()`` as JSON lists, for a checkpoint's ``state.json`` (the single and sharded ones)."""
    version, internal, gauss = rng_state
    return [version, list(internal), gauss]


def python_rng_from_json(data: list) -> tuple:
    """The ``random.setstate`` argument back from ``python_rng_to_json``'s lists."""
    version, internal, gauss = data
    return (version, tuple(internal), gauss)


def save_checkpoint(
    run_dir: Path,
    step: int,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    trainer_state: Mapping[str, Any],
    keep_last: int = 2,
) -> Path:
    """Write ``run_dir/checkpoints/step-NNNNNN`` atomically and prune to the ``keep_last`` newest.

    Raises:
        StorageError: the checkpoint could not be written (e.g. the disk is full); the
            previous checkpoints are intact and a resume continues from the newest.
    """
    root = Path(run_dir) / "checkpoints"
    final = root / checkpoint_name(step)
    try:
        clean_staging(run_dir)
    except OSError as exc:
        raise StorageError(root, exc, what="checkpoint folder") from exc
    with atomic_directory(final) as staging:
        save_file(trainable_state(model), str(staging / "model.safetensors"))
        optimizer_tensors, optimizer_meta = _optimizer_tensors(optimizer)
        save_file(optimizer_tensors, str(staging / "optimizer.safetensors"))
        rng = {"torch_cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            for index, cuda_state in enumerate(torch.cuda.get_rng_state_all()):
                rng[f"torch_cuda_{index}"] = cuda_state
        save_file(rng, str(staging / "rng.safetensors"))
        state = {
            "step": step,
            "optimizer": optimizer_meta,
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "python_rng": python_rng_to_json(random.getstate()),
            "trainer": dict(trainer_state),
        }
        (staging / "state.json").write_text(json.dumps(state, indent=1), encoding="utf-8")
    for old in list_checkpoints(run_dir)[:-keep_last] if keep_last > 0 else []:
        remove_directory(old)  # renamed away first: a kill midway never leaves a half-deleted step-N
    return final


def clean_staging(run_dir: Path) -> list[Path]:
    """Remove the staging folders a killed save left in ``run_dir/checkpoints``; returns them."""
    root = Path(run_dir) / "checkpoints"
    removed = remove_stale_staging(root)
    if root.is_dir():
        for entry in root.iterdir():
            if _STAGING_DIR.match(entry.name) and entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
    return removed


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (staging folders are never listed)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(match.group(1)), path) for path in root.iterdir() if (match := CHECKPOINT_DIR.match(path.name))]
    return [path for _, path in sorted(found)]


@dataclass(frozen=True)
class RestoredState:
    step: int
    trainer: Mapping[str, Any]


def load_checkpoint(
    path: Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any
) -> RestoredState:
    """Restore model, optimizer, scheduler and RNG states from a checkpoint folder."""
    path = Path(path)
    weights = load_file(str(path / "model.safetensors"))
    parameters = dict(model.named_parameters())
    missing = [name for name, parameter in parameters.items() if parameter.requires_grad and name not in weights]
    if missing:
        raise ValueError(f"checkpoint {path} lacks trainable parameters {missing[:3]}; it belongs to another model.")
    with torch.no_grad():
        for name, tensor in weights.items():
            parameters[name].copy_(tensor)
    state = json.loads((path / "state.json").read_text(encoding="utf-8"))
    optimizer_tensors = load_file(str(path / "optimizer.safetensors"))
    optimizer.load_state_dict(_optimizer_state_dict(optimizer_tensors, state["optimizer"]))
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    rng = load_file(str(path / "rng.safetensors"))
    torch.set_rng_state(rng["torch_cpu"])
    if torch.cuda.is_available():
        cuda_states = [rng[key] for key in sorted(k for k in rng if k.startswith("torch_cuda_"))]
        if cuda_states:
            torch.cuda.set_rng_state_all(cuda_states)
    random.setstate(python_rng_from_json(state["python_rng"]))
    return RestoredState(step=int(state["step"]), trainer=state["trainer"])
