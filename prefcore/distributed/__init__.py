"""Training on several processes with torch.distributed: torchrun process groups, DDP and FSDP2.

- ``process_group``: ``init`` from torchrun's environment, ``rank``, ``world_size``, ``is_main``,
  ``barrier``, ``teardown``; ``current()`` is what the trainers read.
- ``sampler``: each rank's slice of the seeded global micro-batches (resumable on any world size).
- ``wrap``: DDP or FSDP2 (``fully_shard`` per decoder layer, then root; bf16 policy; CPU offload);
  ``wrap_frozen`` shards the frozen reference the same way, for forwards only.
- ``reduce``: metrics and token counts summed across ranks.
- ``fingerprint``: every rank must load the same plugins.
- ``checkpoint``: sharded checkpoints (torch.distributed.checkpoint), convertible to safetensors,
  resumable on any number of processes, one plain process (no torchrun) included.
- ``launch``: ``prefcore run --nproc N`` re-executes itself under torchrun.
- ``memory``: ``TensorBytes`` counts the tensor bytes a block allocates and their peak (start-up, CPU too).
"""

from __future__ import annotations

from prefcore.distributed.process_group import Parallel
from prefcore.distributed.process_group import barrier
from prefcore.distributed.process_group import current
from prefcore.distributed.process_group import init
from prefcore.distributed.process_group import is_main
from prefcore.distributed.process_group import launched_by_torchrun
from prefcore.distributed.process_group import rank
from prefcore.distributed.process_group import teardown
from prefcore.distributed.process_group import world_size

__all__ = [
    "Parallel",
    "barrier",
    "current",
    "init",
    "is_main",
    "launched_by_torchrun",
    "rank",
    "teardown",
    "world_size",
]
