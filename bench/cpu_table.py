"""CPU table: LM-head log-probs forward + backward, prefcore against TRL, Liger and naive torch.

Run from the repository root::

    python bench/cpu_table.py                  # N = 2048 tokens, H = 512, V = 32000, fp32, one thread
    python bench/cpu_table.py --tokens 512 --vocab 8000 --dtype bf16

The CPU reference path of each tool on the same inputs: per-token ``log p(target)`` from the last
hidden states ``[N, H]`` and the LM-head weight ``[V, H]``, then the backward of a random upstream
gradient into both. Providers:

* ``prefcore``: ``fused_linear_logprobs(backend="torch")`` (chunked over tokens, no ``[N, V]`` logits);
* ``trl``: ``trl/kernels/chunked_logprob.py``'s ``ChunkedLogProbFunction`` (chunked over the vocabulary);
* ``liger``: ``liger_kernel/chunked_loss/fused_linear_ppo.py``'s ``_ChunkedSelectiveLogProbFunction``;
* ``naive torch``: ``F.linear`` then ``log_softmax`` and ``gather`` (the ``[N, V]`` logits in memory).

Liger's file is loaded on its own (its package ``__init__`` imports transformers and dynamo);
TRL's backward needs ``trl.trainer``, so TRL is imported as a package. A missing peer is skipped.
Every provider's log-probs and gradients are checked against an fp32 naive reference before it
is timed; a mismatch is reported and not timed. Time: median of ``--repeats`` calls after one
warm-up; memory: the peak bytes of torch storages created and alive during one call
(``harness.LiveBytes``), gradients included.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import LiveBytes

__all__ = ["Result", "main", "run", "table"]

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 3e-2}  # relative to the reference's largest magnitude


@dataclass
class Result:
    provider: str
    median_ms: float | None = None
    peak_bytes: int | None = None
    max_error: float | None = None
    status: str = ""


def _peer_file(package: str, relative_path: str) -> types.ModuleType:
    """One file of an installed peer package, without its ``__init__`` (which imports half the ecosystem)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"{package} is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / relative_path
    if not path.is_file():
        raise ImportError(f"{package} has no {relative_path}")
    module_spec = importlib.util.spec_from_file_location(f"_cpu_table_{package}_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def providers() -> dict[str, Callable[[], Callable[..., torch.Tensor]]]:
    """Factories of ``logps(hidden, weight, targets)`` per tool; ImportError when the peer is missing."""

    def prefcore():
        from prefcore.kernels.fused_linear_logprobs import fused_linear_logprobs

        return lambda h, w, t: fused_linear_logprobs(h, w, t, backend="torch")

    def trl():
        # the package import: the backward imports trl.trainer (transformers, accelerate, ...)
        from trl.kernels.chunked_logprob import ChunkedLogProbFunction as function

        # (hidden, weight, bias, targets, temperature, vocabulary chunk, softcap, logit_scale, outputs)
        return lambda h, w, t: function.apply(h, w, None, t, 1.0, 4096, None, 1.0, ())[0]

    def liger():
        function = getattr(
            _peer_file("liger_kernel", "chunked_loss/fused_linear_ppo.py"), "_ChunkedSelectiveLogProbFunction", None
        )
        if function is None:
            raise ImportError("this liger-kernel has no chunked selective log-prob")
        return lambda h, w, t: function.apply(h, w, t, None, 1.0, 1024)

    def naive():
        return lambda h, w, t: F.linear(h, w).float().log_softmax(-1).gather(-1, t.unsqueeze(-1)).squeeze(-1)

    return {"prefcore": prefcore, "trl": trl, "liger": liger, "naive torch": naive}


def _call(fn: Callable[..., torch.Tensor], hidden, weight, targets, upstream) -> tuple[torch.Tensor, ...]:
    h, w = hidden.detach().requires_grad_(), weight.detach().requires_grad_()
    logps = fn(h, w, targets)
    logps.float().backward(upstream)
    return logps.detach(), h.grad, w.grad


def run(tokens: int, hidden_size: int, vocab: int, dtype: torch.dtype, repeats: int, seed: int = 0) -> list[Result]:
    """Check, then time and measure, every provider on the same inputs."""
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(tokens, hidden_size, generator=generator).to(dtype)
    weight = (torch.randn(vocab, hidden_size, generator=generator) / hidden_size**0.5).to(dtype)
    targets = torch.randint(0, vocab, (tokens,), generator=generator)
    upstream = torch.randn(tokens, generator=generator)
    reference = _call(providers()["naive torch"](), hidden.float(), weight.float(), targets, upstream)
    results = []
    for name, factory in providers().items():
        result = Result(name)
        results.append(result)
        try:
            fn = factory()
        except ImportError as exc:
            result.status = f"skipped: {exc}"
            continue
        try:
            got = _call(fn, hidden, weight, targets, upstream)
        except Exception as exc:  # a broken peer must not take the table down
            result.status = f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:100]}"
            continue
        result.max_error = max(
            ((ours.float() - theirs).abs().max() / theirs.abs().max()).item()
            for ours, theirs in zip(got, reference, strict=True)
        )
        if not result.max_error <= TOLERANCE[dtype]:  # NaN too
            result.status = f"wrong: relative error {result.max_error:.3g} > {TOLERANCE[dtype]:g}; not timed"
            continue
        samples = []
        for _ in range(repeats):
            started = time.perf_counter()
            _call(fn, hidden, weight, targets, upstream)
            samples.append((time.perf_counter() - started) * 1e3)
        result.median_ms = statistics.median(samples)
        tracker = LiveBytes()
        with tracker:
            _call(fn, hidden, weight, targets, upstream)
        result.peak_bytes = tracker.peak
    return results


def table(results: list[Result], header: str) -> str:
    ours = next((result.median_ms for result in results if result.provider == "prefcore"), None)
    lines = [
        header,
        "",
        "| provider | median ms | vs prefcore | peak MiB | max rel. error vs fp32 | note |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for result in results:
        if result.median_ms is None:
            lines.append(f"| {result.provider} | – | – | – | – | {result.status} |")
            continue
        ratio = f"{result.median_ms / ours:.2f}x" if ours else "–"
        lines.append(
            f"| {result.provider} | {result.median_ms:.2f} | {ratio} | {result.peak_bytes / 2**20:.1f} | "
            f"{result.max_error:.2g} | {result.status} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = run(args.tokens, args.hidden, args.vocab, DTYPES[args.dtype], args.repeats)
    header = (
        f"LM-head log-probs forward + backward on CPU: N = {args.tokens}, H = {args.hidden}, V = {args.vocab}, "
        f"{args.dtype}, {args.threads} thread(s), torch {torch.__version__}"
    )
    print(table(results, header))
    return 0


if __name__ == "__main__":
    sys.exit(main())
