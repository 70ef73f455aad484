"""Reference log-probs: a frozen model run alongside, or sums precomputed once and cached.

Precomputing runs the reference once over every training sequence (forward only, through
the same fused LM-head kernel) and stores the summed completion log-probs in a
safetensors file keyed by a fingerprint of the token ids and the reference weights; a
resumed or repeated run reuses it, and the reference model leaves memory for training.

Under torchrun (``prefcore.distributed``) the reference is spread like the policy
(``spread_reference``): FSDP2 shards it, so each rank holds 1/N of it, and DDP keeps a full copy
per rank. Precomputing splits the sequences across the ranks; rank 0 writes the one cache file
and every rank gets every sum.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors.torch import load_file
from safetensors.torch import save

from prefcore.atomic import atomic_write_bytes
from prefcore.distributed.process_group import Parallel
from prefcore.distributed.process_group import current
from prefcore.distributed.sampler import shard_indices
from prefcore.distributed.wrap import Sharded
from prefcore.distributed.wrap import broadcast_weights
from prefcore.distributed.wrap import local_parameter_bytes
from prefcore.distributed.wrap import wrap_frozen
from prefcore.engine.batching import SequenceBatch
from prefcore.engine.batching import TrainingItem
from prefcore.engine.logprobs import completion_token_logps
from prefcore.engine.sequences import pad_sequences

__all__ = [
    "CACHE_FILE",
    "ModelReference",
    "ShardedReference",
    "fingerprint",
    "precompute_reference",
    "spread_reference",
]

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


class ShardedReference:
    """A ``ModelReference`` whose frozen model FSDP2 shards over the ranks: each holds 1/N of it.

    Every rank must call it once per micro-batch (a rank without data calls it on a filler batch,
    as the trainers do for the policy): each call gathers the layers one by one, the root's
    embeddings, final norm and LM head for the whole call (the fused LM head receives the full
    weight), and reshards them after. From the first call on the plain model's parameters are empty
    (until then it stays whole, for an evaluation before training); ``gather`` fills them again
    (collective) for whoever reads the plain model (evaluation), and the next call empties them.
    Ranks other than 0 may hold a skeleton (the plain model on the meta device): rank 0 sends their
    shards (``wrap_frozen``), and their plain model takes memory at the first ``gather`` only.
    """

    def __init__(self, reference: ModelReference, parallel: Parallel) -> None:
        self.reference = reference
        self.sharded: Sharded = wrap_frozen(reference.model, _call, parallel)

    @property
    def model(self) -> torch.nn.Module:
        """The plain model (empty while sharded; full after ``gather``)."""
        return self.reference.model

    @torch.no_grad()
    def __call__(self, batch: SequenceBatch) -> torch.Tensor:
        return self.run(_token_logps(self.reference.fused, self.reference.backend), batch.sequences)

    @torch.no_grad()
    def run(self, fn: Any, *args: Any) -> Any:
        """``fn(model, *args)`` on the shards (the online trainers' rollout log-probs); collective, as a call."""
        self.sharded.release()  # after a gather: back to the shards alone
        return self.sharded.module(fn, *args)

    def gather(self) -> None:
        """The full weights back in the plain model, on every rank (collective)."""
        self.sharded.copy_into()

    def local_bytes(self) -> int:
        """Bytes of the reference's weights this rank holds: its shards, plus the plain model's if gathered."""
        return local_parameter_bytes(self.sharded.module) + local_parameter_bytes(self.reference.model)


def _call(model: torch.nn.Module, fn: Any, *args: Any) -> Any:
    """What the sharded root runs: ``fn(model, *args)``, the caller naming the computation."""
    return fn(model, *args)


def _token_logps(fused: bool, backend: str) -> Any:
    def run(model: torch.nn.Module, sequences: Any) -> torch.Tensor:
        return completion_token_logps(model, sequences, fused=fused, backend=backend)

    return run


def spread_reference(reference: Any, parallel: Parallel | None) -> Any:
    """The reference a trainer calls under torchrun: FSDP2 shards a frozen ``ModelReference``
    (``ShardedReference``); DDP keeps the full copy, made rank 0's. Anything else, or one process: unchanged.

    Collective: every rank calls it, at the same point. A LoRA policy's own base (``disable_adapter``)
    is the policy's model, which the trainer spreads already.
    """
    if parallel is None or type(reference) is not ModelReference or reference.disable_adapter:
        return reference
    if parallel.strategy == "fsdp":
        return ShardedReference(reference, parallel)
    broadcast_weights(reference.model)
    return reference


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
    """Summed reference log-probs per item (in ``all_sequences`` order), from cache when valid.

    Under torchrun (collective): every rank takes rank 0's reference weights, computes a contiguous
    share of the batches with its full copy, and the shares are gathered; rank 0 reads and writes the
    cache file, and every rank returns every sum (the batches are those of one process, so the sums are too).
    """
    parallel = current()
    if parallel is not None:
        broadcast_weights(reference.model)
    cache_path = Path(cache_dir) / CACHE_FILE
    key = fingerprint(items, reference.model) if parallel is None or parallel.is_main else ""
    counts = torch.tensor([len(item.all_sequences) for item in items], dtype=torch.long)
    cached = _read(cache_path, key) if key and cache_path.exists() else None
    if parallel is not None:
        box: list[Any] = [(key, cached)]
        dist.broadcast_object_list(box, src=0)
        key, cached = box[0]
    if cached is not None:
        return _split(cached, counts)
    sequences = [sequence for item in items for sequence in item.all_sequences]
    starts = list(range(0, len(sequences), batch_size))
    if parallel is not None:
        starts = shard_indices(starts, parallel.rank, parallel.world_size)
    sums: list[torch.Tensor] = [torch.zeros(0)]
    for start in starts:
        padded = pad_sequences(sequences[start : start + batch_size], pad_token_id).to(device)
        sums.append(reference(SequenceBatch(sequences=padded, data_format="sft")).sum(dim=-1).float().cpu())
    flat = torch.cat(sums)
    if parallel is not None:
        shares: list[torch.Tensor | None] = [None] * parallel.world_size
        dist.all_gather_object(shares, flat)
        flat = torch.cat([share for share in shares if share is not None])
    if parallel is None or parallel.is_main:
        atomic_write_bytes(cache_path, save({"logps": flat, "counts": counts}, metadata={"fingerprint": key}))
    return _split(flat, counts)


def _split(flat: torch.Tensor, counts: torch.Tensor) -> list[tuple[float, ...]]:
    values = flat.tolist()
    result, offset = [], 0
    for count in counts.tolist():
        result.append(tuple(values[offset : offset + count]))
        offset += count
    return result


def _read(path: Path, key: str) -> torch.Tensor | None:
    """The cached flat sums, or None when the file was written for other sequences or weights."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        if (handle.metadata() or {}).get("fingerprint") != key:
            return None
    return load_file(str(path))["logps"]
