"""Count the tensor memory a block of code allocates: live bytes and their peak, on any device.

On a GPU ``torch.cuda.max_memory_allocated`` answers this; on a CPU there is no allocator
statistic, and peak RSS is too coarse for a small model. ``TensorBytes`` is a dispatch mode: it
sees every tensor an operator returns while it is active (``clone`` in a ``deepcopy``, the
shards ``fully_shard`` writes, ``to_empty``), counts each new storage's bytes once, and takes
them off when the storage is freed, so ``peak`` is the most memory the block's own tensors held
at one time. Tensors made before the block are not counted; meta tensors hold nothing. Storages
that grow in place later (FSDP2's all-gather buffers, from the first forward on) count at the
size they were made with, so measure start-up, not training steps.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

__all__ = ["TensorBytes"]


class TensorBytes(TorchDispatchMode):
    """``with TensorBytes() as count: ...``; then ``count.peak`` and ``count.live`` in bytes."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._sizes: dict[int, int] = {}

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        output = func(*args, **(kwargs or {}))
        # an in-place op or a view returns an input's storage: not new memory
        inputs = {id(storage) for storage in _storages((args, kwargs))}
        for storage in _storages(output):
            if id(storage) not in inputs:
                self._track(storage)
        return output

    def _track(self, storage: torch.UntypedStorage) -> None:
        key = id(storage)  # a storage keeps one Python object while alive, so the id is stable
        if key in self._sizes:
            return
        size = storage.nbytes()
        self._sizes[key] = size
        self.live += size
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._free, key)

    def _free(self, key: int) -> None:
        self.live -= self._sizes.pop(key, 0)


def _storages(tree: Any) -> list[torch.UntypedStorage]:
    """The storages of the real (not meta) tensors in ``tree``; a DTensor's is its local shard's."""
    found = []
    for leaf in tree_leaves(tree):
        if not isinstance(leaf, torch.Tensor):
            continue
        local = getattr(leaf, "_local_tensor", None)
        tensor = local if isinstance(local, torch.Tensor) else leaf
        if not tensor.is_meta and type(tensor) in (torch.Tensor, torch.nn.Parameter):
            found.append(tensor.untyped_storage())
    return found
