"""Spread a model over the ranks: DDP (a replica per rank) or FSDP2 (``fully_shard``, sharded).

The trainers do not call the wrapped model's own ``forward`` (the fused LM-head path runs the
decoder and the head apart), so the model is wrapped together with the function a trainer
runs on it: ``Forward(model, fn)`` whose ``forward(*args)`` is ``fn(model, *args)``. DDP's
and FSDP2's hooks then see one forward per micro-batch, whatever the function does inside:
under FSDP2 the root's parameters (embeddings, final norm, LM head) are gathered for the whole
call, so the fused LM head receives the full weight as a plain tensor.

DDP wraps the model in place (its parameters are the model's). FSDP2 replaces parameters
with DTensor shards, so it shards a copy and ``Sharded.copy_into`` gathers the weights
back into the plain model for evaluation, generation and the final ``save_pretrained``; while
the shards train, the plain model's parameters hold no memory (``Sharded.release``).
The copy is made on the meta device (a skeleton: no parameter memory), sharded there, then
each rank allocates only its shards and fills them from the plain model, as torchtitan does:
a rank never holds a second full copy of the weights, at start-up either. Ranks other than 0
may even hand over a skeleton (their plain model built on the meta device, no weights read):
rank 0 then sends each parameter's shards, and the skeleton takes memory only when the first
``copy_into`` gathers the weights into it (an evaluation point, the end).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from prefcore.distributed.process_group import Parallel

__all__ = [
    "Forward",
    "Sharded",
    "broadcast_weights",
    "decoder_layers",
    "local_parameter_bytes",
    "wrap_frozen",
    "wrap_model",
]


class Forward(torch.nn.Module):
    """``forward(*args, **kwargs)`` = ``fn(model, *args, **kwargs)``: what DDP and FSDP2 wrap."""

    def __init__(self, model: torch.nn.Module, fn: Callable[..., Any]) -> None:
        super().__init__()
        self.model = model
        self._fn = fn

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self._fn(self.model, *args, **kwargs)


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The transformer blocks FSDP2 shards one by one: transformers' ``_no_split_modules`` classes,
    else the members of every ``layers``/``h``/``blocks`` ModuleList."""
    names: set[str] = set()
    for module in model.modules():
        names.update(getattr(module, "_no_split_modules", None) or [])
    layers = [module for module in model.modules() if type(module).__name__ in names]
    if layers:
        return layers
    return [
        child
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.ModuleList) and name.rsplit(".", 1)[-1] in ("layers", "h", "blocks")
        for child in module
    ]


@dataclass
class Sharded:
    """A model spread over the ranks: call ``module``; ``sync`` wraps the backward of each micro-batch."""

    module: torch.nn.Module
    original: torch.nn.Module
    strategy: str
    world_size: int
    released: bool = False
    device: torch.device | None = None  # where a skeleton plain model is allocated by ``copy_into``

    def parameters(self) -> list[torch.nn.Parameter]:
        return [parameter for parameter in self.module.parameters() if parameter.requires_grad]

    @contextlib.contextmanager
    def sync(self, final: bool) -> Iterator[None]:
        """Gradients are reduced across ranks on the last micro-batch of a step only (``no_sync`` before)."""
        if self.strategy == "ddp" and not final:
            with self.module.no_sync():  # type: ignore[operator]
                yield
            return
        if self.strategy == "fsdp":
            self.module.set_requires_gradient_sync(final)  # type: ignore[operator]
        yield

    def release(self) -> None:
        """Free the plain model's parameters while the shards train (FSDP2), so that a rank holds its
        shards and not a full copy besides; ``copy_into`` fills them again."""
        if self.strategy != "fsdp" or self.released:
            return
        with torch.no_grad():
            for parameter in self.original.parameters():
                parameter.data = torch.empty(0, dtype=parameter.dtype, device=parameter.device)
        self.released = True

    def copy_into(self) -> None:
        """Gather the full weights into the plain model (FSDP2; DDP shares them already). Collective."""
        if self.strategy != "fsdp":
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        full = get_model_state_dict(self.module, options=StateDictOptions(full_state_dict=True))
        prefix = "model."
        plain = {name[len(prefix) :]: value for name, value in full.items() if name.startswith(prefix)}
        _materialize(self.original, self.module.model, self.device or torch.device("cpu"))
        with torch.no_grad():
            for name, tensor in self.original.state_dict(keep_vars=True).items():
                if name in plain:
                    tensor.data = plain[name].to(tensor.device, tensor.dtype).clone()
        self.released = False


def wrap_model(model: torch.nn.Module, fn: Callable[..., Any], parallel: Parallel) -> Sharded:
    """``Forward(model, fn)`` under DDP, or a copy of it sharded with FSDP2 (per decoder layer, then root).

    The FSDP2 copy is built on the meta device and only this rank's shards are allocated, filled from
    ``model`` (``_shard_copy``): no second full copy. Every rank starts from rank 0's weights
    (broadcast), whatever each built. Under FSDP2, ranks other than 0 may pass a skeleton (``model``
    on the meta device): rank 0 sends their shards, and their plain model stays empty until ``copy_into``.
    """
    skeleton = _skeleton_ranks(model, parallel)
    if not skeleton:
        broadcast_weights(model)
    if parallel.strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        device = parallel.device
        wrapped = DistributedDataParallel(
            Forward(model, _autocast(fn, parallel)),
            device_ids=[device.index] if device.type == "cuda" else None,
        )
        return Sharded(wrapped, model, "ddp", parallel.world_size)
    if parallel.strategy != "fsdp":
        raise ValueError(f"strategy must be 'ddp' or 'fsdp'. Got {parallel.strategy!r}.")
    root = _shard_copy(model, _no_view(fn), parallel, from_rank0=skeleton)
    return Sharded(root, model, "fsdp", parallel.world_size, device=parallel.device)


def wrap_frozen(model: torch.nn.Module, fn: Callable[..., Any], parallel: Parallel) -> Sharded:
    """A frozen model that only runs forwards (the reference), spread like the policy; call ``module`` under no_grad.

    FSDP2 shards a copy per decoder layer, then root (made on the meta device, so only the shards
    take memory: see ``wrap_model``); once the caller frees the plain model's
    parameters (``release``, at its first forward, as for the policy) each rank holds 1/N of the
    weights. Every layer, the root included (embeddings, final norm, LM head), is gathered for its
    forward and resharded right after, as there is no backward to keep it for. DDP keeps
    ``Forward(model, fn)`` on the model itself: a full copy per rank, with nothing to synchronise.
    Every rank starts from rank 0's weights (broadcast), whatever each built; under FSDP2 ranks other
    than 0 may pass a skeleton (meta device), as for ``wrap_model``.
    """
    skeleton = _skeleton_ranks(model, parallel)
    if not skeleton:
        broadcast_weights(model)
    if parallel.strategy == "ddp":
        return Sharded(Forward(model, fn), model, "ddp", parallel.world_size)
    if parallel.strategy != "fsdp":
        raise ValueError(f"strategy must be 'ddp' or 'fsdp'. Got {parallel.strategy!r}.")
    root = _shard_copy(model, fn, parallel, from_rank0=skeleton, reshard_after_forward=True)
    root.eval()
    return Sharded(root, model, "fsdp", parallel.world_size, device=parallel.device)


def local_parameter_bytes(module: torch.nn.Module) -> int:
    """Bytes of ``module``'s parameters held by this rank: a DTensor counts its local shard only, a meta
    tensor (a skeleton's) nothing."""
    total = 0
    for parameter in module.parameters():
        to_local = getattr(parameter, "to_local", None)
        local = to_local() if callable(to_local) else parameter
        total += 0 if local.is_meta else local.numel() * local.element_size()
    return total


def _fully_shard(root: Forward, parallel: Parallel, **extra: Any) -> Forward:
    """``fully_shard`` each decoder layer of ``root.model``, then ``root``, with the run's precision and offload."""
    from torch.distributed.fsdp import CPUOffloadPolicy
    from torch.distributed.fsdp import MixedPrecisionPolicy
    from torch.distributed.fsdp import fully_shard

    options: dict[str, Any] = dict(extra)
    if parallel.mixed_precision == "bf16":
        options["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    if parallel.cpu_offload and parallel.device.type != "cpu":  # on CPU the parameters are there already
        options["offload_policy"] = CPUOffloadPolicy()
    for layer in decoder_layers(root.model):
        fully_shard(layer, **options)
    fully_shard(root, **options)
    return root


def _shard_copy(
    model: torch.nn.Module, fn: Callable[..., Any], parallel: Parallel, *, from_rank0: bool = False, **extra: Any
) -> Forward:
    """``Forward(copy of model, fn)`` sharded with FSDP2, its shards filled from ``model``'s weights.

    The copy's parameters are meta tensors (no memory), so ``fully_shard`` makes meta shards;
    ``to_empty`` then allocates this rank's shards alone, which take their slice of each of
    ``model``'s parameters, and the buffers (not sharded, small) are copied whole. The peak is
    the plain model plus this rank's shards, instead of two full copies. ``from_rank0``: the
    other ranks hold skeletons, so rank 0 broadcasts each tensor and every rank keeps its slice.
    """
    root = _fully_shard(Forward(_meta_copy(model), fn), parallel, **extra)
    sources = [tensor for tensor in [*model.parameters(), *model.buffers()] if not tensor.is_meta]
    device = sources[0].device if sources else parallel.device
    if parallel.cpu_offload and parallel.device.type != "cpu":
        device = torch.device("cpu")  # FSDP2's offloaded shards live in CPU memory
    root.to_empty(device=device)
    _fill_shards(root, model, parallel, from_rank0=from_rank0)
    return root


def _meta_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A deep copy of ``model`` whose parameters are meta tensors of the same shapes (tied ones stay tied)."""
    memo: dict[int, Any] = {}
    for parameter in model.parameters():
        memo[id(parameter)] = torch.nn.Parameter(
            torch.empty_like(parameter, device="meta"), requires_grad=parameter.requires_grad
        )
    return copy.deepcopy(model, memo)


@torch.no_grad()
def _fill_shards(root: Forward, model: torch.nn.Module, parallel: Parallel, *, from_rank0: bool = False) -> None:
    """Each of ``root``'s parameter shards takes its slice of ``model``'s weights (FSDP2 shards dim 0
    in ``torch.chunk`` pieces, the last ranks' possibly empty); every buffer its whole value.

    Every rank reads its own plain model (``broadcast_weights`` made it rank 0's), so no weights travel;
    ``from_rank0``: rank 0 broadcasts one tensor at a time, so a rank holds one full tensor at most.
    """
    sources = dict(model.named_parameters(remove_duplicate=False))
    for name, parameter in root.model.named_parameters():
        source = _from_rank0(sources[name], parallel) if from_rank0 else sources[name]
        local = parameter.to_local() if hasattr(parameter, "to_local") else parameter
        if hasattr(parameter, "to_local"):
            pieces = torch.chunk(source, parallel.world_size, dim=0)
            piece = pieces[parallel.rank] if parallel.rank < len(pieces) else source[:0]
        else:  # not sharded (FSDP2 shards every parameter it manages; kept for safety)
            piece = source
        if piece.shape != local.shape:
            raise RuntimeError(f"FSDP2 shard of {name} has shape {tuple(local.shape)}, expected {tuple(piece.shape)}")
        local.copy_(piece)
    buffers = dict(model.named_buffers(remove_duplicate=False))
    for name, buffer in root.model.named_buffers(remove_duplicate=False):
        buffer.copy_(_from_rank0(buffers[name], parallel) if from_rank0 else buffers[name])


def _from_rank0(tensor: torch.Tensor, parallel: Parallel) -> torch.Tensor:
    """Rank 0's ``tensor`` on every rank (a skeleton's meta tensor gives its shape and dtype). Collective."""
    full = tensor.detach() if parallel.is_main else torch.empty_like(tensor, device=parallel.device)
    if full.device != parallel.device:  # the process group's device (e.g. NCCL needs CUDA)
        full = full.to(parallel.device)
    dist.broadcast(full, src=0)
    return full


def _skeleton_ranks(model: torch.nn.Module, parallel: Parallel) -> bool:
    """True when some rank other than 0 holds ``model`` on the meta device (a skeleton). Collective.

    Either every rank holds weights or every rank but 0 holds a skeleton; anything else is refused.
    """
    tensors = [*model.parameters(), *model.buffers()]
    on_meta = [tensor.is_meta for tensor in tensors]
    mine = 2 if all(on_meta) and tensors else (1 if any(on_meta) else 0)
    states: list[Any] = [None] * parallel.world_size
    dist.all_gather_object(states, mine)
    if not any(states):
        return False
    if states[0] != 0 or any(state != 2 for state in states[1:]) or parallel.strategy != "fsdp":
        raise ValueError(
            "a model on the meta device (a skeleton) is accepted only under FSDP2, on every rank but 0, "
            f"whole, while rank 0 holds the weights. Per rank (0 weights, 1 partly meta, 2 meta): {states}."
        )
    return True


def _materialize(model: torch.nn.Module, filled: torch.nn.Module, device: torch.device) -> None:
    """A skeleton's tensors allocated in place (the same Parameter objects, ties kept), its buffers
    taken from ``filled`` (the sharded copy, whose buffers are whole); a no-op for a real model."""
    if not any(tensor.is_meta for tensor in [*model.parameters(), *model.buffers()]):
        return
    with torch.no_grad():
        done: set[int] = set()
        for _, parameter in model.named_parameters(remove_duplicate=False):
            if parameter.is_meta and id(parameter) not in done:
                done.add(id(parameter))
                empty = torch.nn.Parameter(torch.empty_like(parameter, device=device), parameter.requires_grad)
                torch.utils.swap_tensors(parameter, empty)
        buffers = dict(filled.named_buffers(remove_duplicate=False))
        for module_name, module in model.named_modules(remove_duplicate=False):
            for name, buffer in list(module._buffers.items()):
                if buffer is not None and buffer.is_meta:
                    key = f"{module_name}.{name}" if module_name else name
                    module._buffers[name] = buffers[key].detach().to(device, copy=True)


def _no_view(fn: Callable[..., Any]) -> Callable[..., Any]:
    """FSDP2 hooks the root's output for its backward; an output that is a view is cloned so that an
    in-place op on it downstream cannot drop that hook."""

    def run(model: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        output = fn(model, *args, **kwargs)
        return output.clone() if isinstance(output, torch.Tensor) and output._base is not None else output

    return run


def _autocast(fn: Callable[..., Any], parallel: Parallel) -> Callable[..., Any]:
    """DDP's mixed precision: the forward under bf16 autocast (FSDP2 casts through its policy instead)."""
    if parallel.mixed_precision != "bf16":
        return fn

    def run(model: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        with torch.autocast(parallel.device.type, dtype=torch.bfloat16):
            return fn(model, *args, **kwargs)

    return run


def broadcast_weights(model: torch.nn.Module) -> None:
    """Rank 0's parameters and buffers on every rank (a model built from a seed is already equal)."""
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            dist.broadcast(tensor.data, src=0)
