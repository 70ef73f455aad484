"""Reference log-probs: a frozen model run alongside, or sums precomputed once and cached.

Precomputing runs the reference once over every training sequence (forward only, through
the same fused LM-head kernel) and stores the summed completion log-probs in a
safetensors file keyed by a fingerprint of the token ids and the reference weights; a
resumed or repeated run reuses it, and the reference model leaves memory for training.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file
from safetensors.torch import save

from prefcore.atomic import atomic_write_bytes
from prefcore.engine.batching import SequenceBatch
from prefcore.engine.batching import TrainingItem
from prefcore.engine.logprobs import completion_token_logps
from prefcore.engine.sequences import pad_sequences

CACHE_FILE = "reference_logps.safetensors"


def fingerprint(items: Sequence[TrainingItem], model: torch.nn.Module) -> str:
    """Hash of every token id and every reference weight: a stale cache can never be reused."""
    digest = hashlib.sha256()
    for item in items:
        for sequence in item.all_sequences:
            digest.update(json.dumps([sequence.prompt_ids, sequence.completion_ids]).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


class ModelReference:
    """Per-token reference log-probs from a frozen model (or the adapter-free base of a LoRA policy)."""

    def __init__(self, model: torch.nn.Module, *, fused: bool, backend: str, disable_adapter: bool = False) -> None:
        self.model = model
        self.fused = fused
        self.backend = backend
        self.disable_adapter = disable_adapter

    def _context(self) -> contextlib.AbstractContextManager:
        if self.disable_adapter:
            return self.model.disable_adapter()
        return contextlib.nullcontext()

    @torch.no_grad()
    def __call__(self, batch: SequenceBatch) -> torch.Tensor:
        was_training = self.model.training
        self.model.eval()
        try:
            with self._context():
                return completion_token_logps(self.model, batch.sequences, fused=self.fused, backend=self.backend)
        finally:
            self.model.train(was_training)


@torch.no_grad()
def precompute_reference(
    reference: ModelReference,
    items: Sequence[TrainingItem],
    *,
    pad_token_id: int,
    device: torch.device,
    cache_dir: Path,
    batch_size: int = 16,
) -> list[tuple[float, ...]]:
    """Summed reference log-probs per item (in ``all_sequences`` order), from cache when valid."""
    cache_path = Path(cache_dir) / CACHE_FILE
    key = fingerprint(items, reference.model)
    if cache_path.exists():
        cached = _read(cache_path, key)
        if cached is not None:
            return cached
    sequences = [sequence for item in items for sequence in item.all_sequences]
    sums: list[torch.Tensor] = []
    for start in range(0, len(sequences), batch_size):
        padded = pad_sequences(sequences[start : start + batch_size], pad_token_id).to(device)
        sums.append(reference(SequenceBatch(sequences=padded, data_format="sft")).sum(dim=-1).float().cpu())
    flat = torch.cat(sums) if sums else torch.zeros(0)
    counts = torch.tensor([len(item.all_sequences) for item in items], dtype=torch.long)
    atomic_write_bytes(cache_path, save({"logps": flat, "counts": counts}, metadata={"fingerprint": key}))
    return _split(flat, counts)


def _split(flat: torch.Tensor, counts: torch.Tensor) -> list[tuple[float, ...]]:
    values = flat.tolist()
    result, offset = [], 0
    for count in counts.tolist():
        result.append(tuple(values[offset : offset + count]))
        offset += count
    return result


def _read(path: Path, key: str) -> list[tuple[float, ...]] | None:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        if (handle.metadata() or {}).get("fingerprint") != key:
            return None
    tensors = load_file(str(path))
    return _split(tensors["logps"], tensors["counts"])
