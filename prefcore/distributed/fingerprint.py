"""Every rank must load the same plugins: compare the registries' fingerprints at start.

A plugin missing on one rank (not installed there, disabled by ``PREFCORE_DISABLE_PLUGINS``,
or failing to import there only) would otherwise surface much later as a different loss on
that rank, or a hang. Each rank gathers every rank's ``Registry.fingerprint()`` and the run
stops with the same error on every rank, naming the rank and what differs from rank 0.
"""

from __future__ import annotations

from typing import Any

import torch.distributed as dist

from prefcore.errors import ConfigError

__all__ = ["check_same_registry", "fingerprint_difference"]


def fingerprint_difference(reference: dict[str, list[str]], other: dict[str, list[str]]) -> str:
    """What ``other`` lacks and has beyond ``reference``, per part; empty when they agree."""
    parts = []
    for key in sorted(set(reference) | set(other)):
        ours, theirs = set(reference.get(key, [])), set(other.get(key, []))
        if theirs - ours:
            parts.append(f"{key} only there: {', '.join(sorted(theirs - ours))}")
        if ours - theirs:
            parts.append(f"{key} missing there: {', '.join(sorted(ours - theirs))}")
    return "; ".join(parts)


def check_same_registry(registry: Any) -> None:
    """Raise ``ConfigError`` on every rank when some rank's plugins differ from rank 0's (collective)."""
    if not dist.is_initialized():
        return
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, registry.fingerprint())
    problems = [
        f"rank {rank}: {difference}"
        for rank, fingerprint in enumerate(gathered)
        if rank and (difference := fingerprint_difference(gathered[0], fingerprint))
    ]
    if problems:
        raise ConfigError(
            "the ranks loaded different plugins (compared with rank 0): "
            + " | ".join(problems)
            + ". Install the same packages on every node and set the same PREFCORE_DISABLE_PLUGINS everywhere.",
            field="distributed",
        )
