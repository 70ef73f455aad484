"""The folder a reward network is saved in: metadata, tensors and tokenizer.

Every kind of network writes ``reward_model.json`` (its ``kind``, a format version and the
options that rebuild it) beside its weights, so that ``load_reward_network`` can tell which
class reads a folder before loading anything. Weights are safetensors; the caller writes
the folder inside ``prefcore.atomic.atomic_directory``, so a crash never leaves half a model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import load_file
from safetensors.torch import save_file
from torch import nn

from prefcore.errors import ConfigError

__all__ = [
    "FORMAT_VERSION",
    "METADATA_FILE",
    "load_tensors",
    "load_tokenizer",
    "read_metadata",
    "save_tensors",
    "write_metadata",
]

METADATA_FILE = "reward_model.json"
FORMAT_VERSION = 1


def write_metadata(folder: Path, kind: str, options: dict[str, Any]) -> None:
    """Write the metadata JSON: ``kind``, the format version, then ``options``."""
    metadata = {"kind": kind, "format_version": FORMAT_VERSION, **options}
    (folder / METADATA_FILE).write_text(json.dumps(metadata, indent=1), encoding="utf-8")


def read_metadata(path: Path, kind: str | None = None) -> dict[str, Any]:
    """The metadata of a saved network; ``ConfigError`` if ``path`` holds none, or another ``kind``."""
    file = Path(path) / METADATA_FILE
    if not file.is_file():
        raise ConfigError(f"{path} is not a saved reward model: it has no {METADATA_FILE}.")
    metadata = json.loads(file.read_text(encoding="utf-8"))
    if kind is not None and metadata.get("kind") != kind:
        raise ConfigError(f"{path} holds a reward network of kind {metadata.get('kind')!r}, not {kind!r}.")
    return metadata


def load_tokenizer(path: Path) -> Any:
    """The tokenizer saved beside the weights, read from disk only."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)


def save_tensors(module: nn.Module, file: Path) -> None:
    """Write a module's state dict (on the CPU, contiguous) as one safetensors file."""
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in module.state_dict().items()}
    save_file(tensors, str(file))


def load_tensors(module: nn.Module, file: Path) -> None:
    """Load a safetensors file written by ``save_tensors`` into ``module``."""
    module.load_state_dict(load_file(str(file)))
