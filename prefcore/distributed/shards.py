"""Work split across ranks and gathered back in order: how evaluation runs under torchrun.

Every rank runs the evaluators on the same inputs. The expensive calls (sampling completions,
scoring log-probs) each take the rank's contiguous share of their rows and gather the results,
so every rank ends with the whole, in the order one process would have produced, and computes
the same metrics from it; rank 0 reports them. In one process these are plain calls.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence
from typing import TypeVar

import torch
import torch.distributed as dist

from prefcore.distributed.process_group import current
from prefcore.distributed.sampler import shard_indices

__all__ = ["gather_rows", "gather_tensor_rows", "local_rows"]

Row = TypeVar("Row")
Result = TypeVar("Result")


def local_rows(count: int) -> list[int]:
    """This rank's contiguous share of ``range(count)`` (all of it in one process)."""
    parallel = current()
    if parallel is None:
        return list(range(count))
    return shard_indices(range(count), parallel.rank, parallel.world_size)


def gather_rows(rows: Sequence[Row], compute: Callable[[Sequence[Row]], list[Result]]) -> list[Result]:
    """``compute(rows)``, with each rank computing its share and every rank receiving the whole, in order.

    ``compute`` returns one result per row; a rank whose share is empty does not call it. Every rank
    must call this with the same number of rows (a collective).
    """
    parallel = current()
    if parallel is None:
        return list(compute(rows))
    share = [rows[index] for index in local_rows(len(rows))]
    part = list(compute(share)) if share else []
    if len(part) != len(share):
        raise ValueError(f"compute returned {len(part)} results for {len(share)} rows.")
    parts: list[list[Result] | None] = [None] * parallel.world_size
    dist.all_gather_object(parts, part)
    return [result for piece in parts for result in (piece or [])]


def gather_tensor_rows(
    rows: Sequence[Row], compute: Callable[[Sequence[Row]], torch.Tensor], *, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """``compute(rows)`` for a tensor with one leading entry per row, split and gathered like ``gather_rows``."""
    if current() is None:
        return compute(rows)

    def per_row(share: Sequence[Row]) -> list[torch.Tensor]:
        return list(compute(share).detach().cpu().unbind(0))

    pieces = gather_rows(rows, per_row)
    return torch.stack(pieces).to(device) if pieces else torch.zeros(0, device=device)
