"""Host-side chunk plan of the loss-aware fused head: pairs grouped so that a chunk's logits tile fits.

A chunk holds whole pairs (both sequences of a pair), filled pair by pair up to a byte budget for
its ``[tokens, V]`` tile, at least one pair each. The plan is built from CPU tensors with numpy, so
sizing the buffers never reads the device (``kernels/fused_linear_pairwise.py`` runs it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from prefcore.kernels.fused_linear_logprobs import DEFAULT_CHUNK_BYTES

__all__ = ["PairChunk", "PairChunkPlan", "plan_pair_chunks"]

_FN = "fused_linear_pairwise_loss"


@dataclass(frozen=True)
class PairChunk:
    """One closed group of pairs: its pairs, its sequences, and their completion-token rows."""

    pairs: torch.Tensor  # [p] int64 pair ids
    sequences: torch.Tensor  # [s] int64 sequence ids (each once)
    chosen: torch.Tensor  # [p] int64 position of each pair's chosen sequence in ``sequences``
    rejected: torch.Tensor  # [p] int64 likewise for the rejected one
    rows: torch.Tensor  # [n] int64 flattened [S·T] rows of the chunk's completion tokens
    segments: torch.Tensor  # [n] int64 position in ``sequences`` of each row's sequence
    columns: torch.Tensor  # [n] int64 token position of each row in its sequence
    counts: torch.Tensor  # [s] int64 completion tokens per sequence

    def to(self, device: torch.device) -> PairChunk:
        fields = {name: getattr(self, name).to(device, non_blocking=True) for name in self.__dataclass_fields__}
        return PairChunk(**fields)


@dataclass(frozen=True)
class PairChunkPlan:
    """The chunks of one batch, built on the host; ``max_rows`` sizes the one logits tile."""

    chunks: tuple[PairChunk, ...]
    n_seqs: int
    seq_len: int
    n_pairs: int
    max_rows: int

    def to(self, device: torch.device) -> PairChunkPlan:
        return PairChunkPlan(
            tuple(c.to(device) for c in self.chunks), self.n_seqs, self.seq_len, self.n_pairs, self.max_rows
        )


def _host_array(tensor: torch.Tensor) -> np.ndarray:
    # numpy, not .tolist(): the planning reads host tensors only and must not count as a device read.
    return tensor.detach().to("cpu").numpy()


def plan_pair_chunks(
    completion_mask: torch.Tensor,
    chosen_index: torch.Tensor,
    rejected_index: torch.Tensor,
    *,
    vocab: int,
    dtype: torch.dtype,
    budget_bytes: int = DEFAULT_CHUNK_BYTES,
    pairs_per_chunk: int | None = None,
) -> PairChunkPlan:
    """Group pairs into chunks whose ``[tokens, vocab]`` tile fits ``budget_bytes`` (at least one pair each).

    Arguments are host (CPU) tensors: ``completion_mask`` ``[S, T]`` bool (the tokens in the loss;
    ``targets != ignore_index``), ``chosen_index``/``rejected_index`` ``[P]``. ``pairs_per_chunk``
    caps the pairs of a chunk as well. Raises ValueError for an index out of range or a sequence
    of a pair with no completion token (it has no log-prob to learn from; drop the pair).
    """
    mask = _host_array(completion_mask).astype(bool)
    if mask.ndim != 2:
        raise ValueError(f"{_FN}: the completion mask must be [S, T]; got shape {mask.shape}.")
    chosen, rejected = _host_array(chosen_index).astype(np.int64), _host_array(rejected_index).astype(np.int64)
    n_seqs, seq_len = mask.shape
    counts = mask.sum(axis=1)
    for role, index in (("chosen", chosen), ("rejected", rejected)):
        outside = np.flatnonzero((index < 0) | (index >= n_seqs))
        if outside.size:
            pair = int(outside[0])
            raise ValueError(
                f"{_FN}: {role}_index[{pair}] = {int(index[pair])} is out of range for {n_seqs} sequences."
            )
        empty = np.flatnonzero(counts[index] == 0)
        if empty.size:
            pair = int(empty[0])
            raise ValueError(
                f"{_FN}: sequence {int(index[pair])} ({role} in pair {pair}) has no completion tokens "
                f"(every target is ignore_index), so it has no log-prob to compare; drop the pair or fix its mask."
            )
    if pairs_per_chunk is not None and (not isinstance(pairs_per_chunk, int) or pairs_per_chunk < 1):
        raise ValueError(f"{_FN}: pairs_per_chunk must be a positive int or None; got {pairs_per_chunk!r}.")
    row_bytes = vocab * torch.empty((), dtype=dtype).element_size()
    max_pairs = pairs_per_chunk or len(chosen)
    groups: list[list[int]] = []
    current: list[int] = []
    seen: set[int] = set()
    tokens = 0
    for pair, (c, r) in enumerate(zip(chosen, rejected, strict=True)):
        new = {int(c), int(r)} - seen
        extra = int(sum(counts[s] for s in new))
        if current and (len(current) >= max_pairs or (tokens + extra) * row_bytes > budget_bytes):
            groups.append(current)
            current, seen, tokens = [], set(), 0
            new = {int(c), int(r)}
            extra = int(sum(counts[s] for s in new))
        current.append(pair)
        seen |= new
        tokens += extra
    if current:
        groups.append(current)
    chunks = []
    for group in groups:
        sequences: list[int] = []
        for pair in group:
            for s in (int(chosen[pair]), int(rejected[pair])):
                if s not in sequences:
                    sequences.append(s)
        position = {s: i for i, s in enumerate(sequences)}
        # Rows ascending, as the recompute path gathers them: with every pair in one chunk the logits
        # GEMM then sees the same rows in the same order, and the sums come out bit for bit the same.
        rows = np.sort(np.concatenate([np.flatnonzero(mask[s]) + s * seq_len for s in sequences]))
        segments = np.asarray([position[int(s)] for s in rows // seq_len], dtype=np.int64)
        chunks.append(
            PairChunk(
                pairs=torch.as_tensor(np.asarray(group, dtype=np.int64)),
                sequences=torch.as_tensor(np.asarray(sequences, dtype=np.int64)),
                chosen=torch.as_tensor(np.asarray([position[int(chosen[p])] for p in group], dtype=np.int64)),
                rejected=torch.as_tensor(np.asarray([position[int(rejected[p])] for p in group], dtype=np.int64)),
                rows=torch.as_tensor(rows.astype(np.int64)),
                segments=torch.as_tensor(segments),
                columns=torch.as_tensor((rows % seq_len).astype(np.int64)),
                counts=torch.as_tensor(counts[sequences].astype(np.int64)),
            )
        )
    max_rows = max(int(chunk.rows.shape[0]) for chunk in chunks)
    return PairChunkPlan(tuple(chunks), n_seqs, seq_len, len(chosen), max_rows)


# ----------------------------------------------------------------------------------------------
# Per-pair term and d loss / d sum (one chunk)
