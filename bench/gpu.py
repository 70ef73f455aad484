"""Side-by-side GPU comparison of prefcore's log-prob kernels with naive torch, torch.compile and peers.

Prints the issue's summary table first (workload | best peer | limit | prefcore | goal, then every
peer side by side; the limit is the roofline floor, max(bytes / HBM bandwidth, FLOPs / bf16 peak),
with the work each row must do counted by ``logprob_work``, ``linear_logprob_work`` and
``dpo_work``), then the detailed table: median time (CUDA events via ``triton.testing.do_bench``, warm-up,
providers interleaved round by round) and peak extra memory (``torch.cuda.max_memory_allocated``
minus what was allocated before the call: inputs are excluded, gradients and workspaces are not),
with the roofline of each row. Rows (bf16):

  logprob-fwd     per-token log-probs from materialised logits, N x V (default 16384 x 128256)
  logprob-fwdbwd  the same, forward + backward with a random per-token upstream gradient
  dpo             one DPO step through the LM head: P pairs x T tokens, H, V (default 4 x 1024,
                  4096, 128256); policy forward + backward, reference forward without grad

Usage:
  python bench/gpu.py                       # the full comparison on a CUDA machine
  python bench/gpu.py --dry-run             # tiny sizes on any device (CI smoke test)
  python bench/gpu.py --only dpo --rounds 9 --output bench/results-h100.md
"""

from __future__ import annotations

import argparse
import datetime
import gc
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field

import torch
import torch.nn.functional as F

# (name fragment, HBM bytes/s, dense bf16 tensor-core FLOP/s); first match wins, so the more
# specific names come first. Spec sheet numbers, used only for the roofline column.
GPU_PEAKS: tuple[tuple[str, float, float], ...] = (
    ("H100 PCIe", 2.0e12, 756e12),
    ("H100 NVL", 3.9e12, 835e12),
    ("H100", 3.35e12, 989e12),  # SXM5 (80GB HBM3)
    ("H200", 4.8e12, 989e12),
    ("A100", 2.039e12, 312e12),  # 80GB SXM
)
IGNORE = -100
BETA = 0.1
# The goals at the default sizes (bf16, H100): row key -> (time ms, peak extra memory GiB or None).
GOALS: dict[str, tuple[float, float | None]] = {
    "logprob-fwd": (1.55, None),
    "logprob-fwdbwd": (5.0, 4.0),
    "dpo": (51.0, 1.5),
}


@dataclass(frozen=True)
class Work:
    """The least work a workload must do: tensor-core FLOPs and HBM bytes; its floor is the larger time."""

    flops: float
    bytes: float
    formula: str

    def floor_s(self, peaks: tuple[float, float] | None) -> float | None:
        """max(bytes / bandwidth, FLOPs / bf16 peak): the roofline's limit on this GPU."""
        if peaks is None:
            return None
        bandwidth, flops_per_s = peaks
        return max(self.bytes / bandwidth, self.flops / flops_per_s)


def logprob_work(n_tokens: int, vocab: int, element: int, *, backward: bool) -> Work:
    """Log-probs from materialised logits: no matmul, so the bytes set the floor.

    Forward: one read of the N·V logits (the per-token outputs, O(N), are neglected). Forward +
    backward: that read, the backward's second read, and the N·V gradient written.
    """
    reads = 3 if backward else 1
    return Work(0.0, reads * n_tokens * vocab * element, f"{reads}·N·V·{element} B / HBM bandwidth")


def linear_logprob_work(n_tokens: int, hidden: int, vocab: int, *, backward: bool) -> Work:
    """Log-probs through the LM head (hidden states in): the N×H @ H×V matmul sets the floor.

    Forward 2·N·H·V FLOPs; the backward adds 2·N·H·V for dH and 2·N·H·V for dW (4·N·H·V), so
    forward + backward is 6·N·H·V. A kernel that recomputes the logits in the backward does
    2·N·H·V more than this floor.
    """
    factor = 6 if backward else 2
    return Work(float(factor * n_tokens * hidden * vocab), 0.0, f"{factor}·N·H·V FLOPs / bf16 peak")


def dpo_work(valid_tokens: int, hidden: int, vocab: int) -> Work:
    """One DPO step through the LM head: policy forward + backward (6·N·H·V) and reference forward (2·N·H·V).

    N counts the completion tokens only (ignored prompt tokens need no logits). 8·N·H·V in all;
    a provider that recomputes the policy's logits in its backward (prefcore, TRL) does 10·N·H·V.
    """
    policy = linear_logprob_work(valid_tokens, hidden, vocab, backward=True)
    reference = linear_logprob_work(valid_tokens, hidden, vocab, backward=False)
    return Work(policy.flops + reference.flops, 0.0, "8·N·H·V FLOPs / bf16 peak (policy 6·N·H·V + reference 2·N·H·V)")


class Unavailable(Exception):
    """A provider that cannot run here (missing package, needs CUDA); the table says why."""


@dataclass
class Row:
    """One table row group: several providers doing the same work, and that work's floor."""

    key: str
    title: str
    providers: dict[str, Callable[[], Callable[[], object]]]  # name -> factory of the timed callable
    work: Work
    notes: list[str] = field(default_factory=list)
    # The torch fp32 reference of what every provider's ``outputs()`` returns, and the largest
    # error allowed, relative to the reference's largest magnitude (bf16 inputs and outputs); a
    # provider that misses it is reported, never timed.
    expected: Callable[[], tuple[torch.Tensor, ...]] | None = None
    tolerance: float = 0.0
    roofline_s: float | None = None  # work.floor_s(peaks), set where the GPU's peaks are known
    goal: tuple[float, float | None] | None = None  # the goal, at the sizes only


@dataclass
class Result:
    provider: str
    median_ms: float | None = None
    peak_bytes: int | None = None
    status: str = ""


# ---------------------------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------------------------
def _is_cuda(device: torch.device) -> bool:
    return device.type == "cuda"


def _sync(device: torch.device) -> None:
    if _is_cuda(device):
        torch.cuda.synchronize(device)


def _time_ms(fn: Callable[[], object], device: torch.device, warmup_ms: int, rep_ms: int) -> float:
    if _is_cuda(device):
        import triton.testing

        # CUDA events around each call, L2 flushed between calls, median of the repetitions.
        return float(triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median"))
    fn()  # CPU smoke mode: wall clock, a few calls
    samples = []
    for _ in range(3):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


def _reset(fn: Callable[[], object]) -> None:
    """Free what a provider's previous call left behind (its gradients), so the next call's count includes them."""
    reset = getattr(fn, "reset", None)
    if callable(reset):
        reset()


def _peak_extra_bytes(fn: Callable[[], object], device: torch.device) -> int | None:
    """Peak bytes allocated during one call beyond what was allocated before it, gradients included.

    The gradients the previous call left are freed first (``fn.reset``): otherwise they count in
    ``before`` and the call's own gradients, which replace them, vanish from the figure. On CPU the
    storages created and alive are counted (``harness.LiveBytes``), the same accounting.
    """
    gc.collect()
    _reset(fn)
    if not _is_cuda(device):
        from harness import LiveBytes

        tracker = LiveBytes()
        with tracker:
            fn()
        return tracker.peak
    _sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    fn()
    _sync(device)
    return torch.cuda.max_memory_allocated(device) - before


def check(row: Row, fn: Callable[[], object]) -> str:
    """ "" when the provider's ``outputs()`` after a call match the row's torch reference, else why not."""
    outputs = getattr(fn, "outputs", None)
    if row.expected is None or not callable(outputs):
        return "unchecked: no reference for this provider"
    got, expected = outputs(), row.expected()
    if len(got) != len(expected):
        return f"wrong: {len(got)} outputs, the reference has {len(expected)}"
    for index, (ours, theirs) in enumerate(zip(got, expected, strict=True)):
        if ours is None or ours.shape != theirs.shape:
            return f"wrong: output {index} has shape {None if ours is None else tuple(ours.shape)}"
        if not ours.numel():
            continue
        scale = theirs.float().abs().max().item()
        error = (ours.float().reshape(theirs.shape) - theirs.float()).abs().max().item()
        if not error <= row.tolerance * scale:  # also catches NaN
            return f"wrong: output {index} is off by {error:.3g} > {row.tolerance:g} x {scale:.3g}"
    return ""


def measure(row: Row, device: torch.device, rounds: int, warmup_ms: int, rep_ms: int) -> list[Result]:
    """Build every provider, take its memory once, then time all providers round-robin."""
    results: dict[str, Result] = {}
    callables: dict[str, Callable[[], object]] = {}
    for name, factory in row.providers.items():
        result = results[name] = Result(name)
        try:
            fn = factory()
            fn()  # compile / autotune / allocator warm-up outside every measurement
            _sync(device)
            result.status = check(row, fn)
            if result.status.startswith("wrong"):  # a wrong result is never timed
                continue
            result.peak_bytes = _peak_extra_bytes(fn, device)
            callables[name] = fn
        except Unavailable as exc:
            result.status = f"skipped: {exc}"
        except torch.cuda.OutOfMemoryError:
            result.status = "out of memory"
        except Exception as exc:  # a broken peer must not take the whole table down
            result.status = f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
        gc.collect()
        if _is_cuda(device):
            torch.cuda.empty_cache()
    samples: dict[str, list[float]] = {name: [] for name in callables}
    for _ in range(rounds):
        # Interleaved: every provider sees the same clocks and thermal state within a round.
        for name, fn in list(callables.items()):
            try:
                samples[name].append(_time_ms(fn, device, warmup_ms, rep_ms))
            except Exception as exc:  # e.g. a recompilation that fails on a later call
                results[name].status = f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
                del callables[name], samples[name]
    for name, values in samples.items():
        results[name].median_ms = statistics.median(values)
    return list(results.values())


# ---------------------------------------------------------------------------------------------
# Rows
# ---------------------------------------------------------------------------------------------
def _need_cuda(device: torch.device, what: str) -> None:
    if not _is_cuda(device):
        raise Unavailable(f"{what} needs CUDA")


def _naive_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return logits.float().log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def returning(call: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    """A forward-only provider whose last output is its ``outputs()`` and is freed by ``reset``."""
    kept: dict[str, torch.Tensor] = {}

    def step() -> torch.Tensor:
        kept["out"] = call()
        return kept["out"]

    step.outputs = lambda: (kept["out"].reshape(-1),)
    step.reset = kept.clear
    return step


def _compiled(fn: Callable, device: torch.device, allow_cpu_compile: bool) -> Callable:
    if not _is_cuda(device) and not allow_cpu_compile:
        raise Unavailable("torch.compile on CPU is off in smoke mode (pass --compile)")
    return torch.compile(fn)


def logprob_rows(args: argparse.Namespace, device: torch.device, peaks: tuple[float, float] | None) -> list[Row]:
    from prefcore.kernels.logprobs import selective_log_softmax

    n_rows, vocab = args.rows, args.vocab
    dtype = torch.bfloat16
    # One spare row so Liger's [B, L + 1, V] layout can view the same storage.
    storage = (torch.randn(n_rows + 1, vocab, device=device, dtype=torch.float32) * 3).to(dtype)
    logits = storage[:n_rows]
    targets = torch.randint(0, vocab, (n_rows,), device=device)
    upstream = torch.randn(n_rows, device=device)
    element = logits.element_size()

    def fwd_providers() -> dict[str, Callable[[], Callable[[], object]]]:
        def prefcore():
            return returning(lambda: selective_log_softmax(logits, targets))

        def naive():
            return returning(lambda: _naive_logprobs(logits, targets))

        def compiled():
            fn = _compiled(_naive_logprobs, device, args.compile)
            return returning(lambda: fn(logits, targets))

        def liger():
            _need_cuda(device, "Liger's Triton kernel")
            try:
                from liger_kernel.ops.grpo_loss import fused_selective_log_softmax
            except ImportError as exc:
                raise Unavailable(f"liger-kernel: {exc}") from exc
            view = storage.view(1, n_rows + 1, vocab)
            ids = targets.view(1, n_rows)
            return returning(lambda: fused_selective_log_softmax(view, ids, temperature=1.0))

        def trl():
            _need_cuda(device, "TRL's Triton kernel")
            try:
                from trl.kernels import selective_log_softmax_and_entropy
            except ImportError as exc:
                raise Unavailable(f"trl.kernels: {exc}") from exc
            return returning(lambda: selective_log_softmax_and_entropy(logits, targets)[0])

        return {"prefcore": prefcore, "naive torch": naive, "torch.compile": compiled, "liger": liger, "trl": trl}

    def with_grad(forward: Callable[[torch.Tensor], torch.Tensor], leaf: torch.Tensor) -> Callable[[], None]:
        def step() -> None:
            leaf.grad = None
            forward(leaf).backward(upstream)

        step.outputs = lambda: (leaf.grad,)
        step.reset = lambda: setattr(leaf, "grad", None)
        return step

    def expected_logps() -> tuple[torch.Tensor, ...]:
        return (_naive_logprobs(logits.float(), targets),)

    def expected_grad() -> tuple[torch.Tensor, ...]:
        leaf = logits.detach().float().requires_grad_()
        _naive_logprobs(leaf, targets).backward(upstream)
        return (leaf.grad,)

    def fwdbwd_providers() -> dict[str, Callable[[], Callable[[], object]]]:
        leaf = logits.detach().requires_grad_()

        def prefcore():
            return with_grad(lambda x: selective_log_softmax(x, targets), leaf)

        def naive():
            return with_grad(lambda x: _naive_logprobs(x, targets), leaf)

        def compiled():
            fn = _compiled(_naive_logprobs, device, args.compile)
            return with_grad(lambda x: fn(x, targets), leaf)

        def liger():
            _need_cuda(device, "Liger's Triton kernel")
            try:
                from liger_kernel.ops.cross_entropy import LigerCrossEntropyFunction
            except ImportError as exc:
                raise Unavailable(f"liger-kernel: {exc}") from exc

            # reduction="none" gives -log p per token; the gradient is computed during the forward
            # and written over the input, so this leaf holds gradients after the first call.
            def forward(x: torch.Tensor) -> torch.Tensor:
                return -LigerCrossEntropyFunction.apply(x, targets, None, IGNORE, 0.0, 0.0, "none")[0]

            return with_grad(forward, logits.detach().clone().requires_grad_())

        def trl():
            _need_cuda(device, "TRL's Triton kernel")
            try:
                from trl.kernels import selective_log_softmax_and_entropy
            except ImportError as exc:
                raise Unavailable(f"trl.kernels: {exc}") from exc
            return with_grad(lambda x: selective_log_softmax_and_entropy(x, targets)[0], leaf)

        return {"prefcore": prefcore, "naive torch": naive, "torch.compile": compiled, "liger": liger, "trl": trl}

    fwd_work = logprob_work(n_rows, vocab, element, backward=False)
    fwdbwd_work = logprob_work(n_rows, vocab, element, backward=True)
    at_goal_sizes = (n_rows, vocab) == (16384, 128256)
    rows = [
        Row(
            "logprob-fwd",
            f"log-prob forward, logits {n_rows} x {vocab} bf16",
            fwd_providers(),
            fwd_work,
            ["trl also computes the entropy in the same pass"],
            expected_logps,
            1e-2,
        ),
        Row(
            "logprob-fwdbwd",
            f"log-prob forward + backward, logits {n_rows} x {vocab} bf16",
            fwdbwd_providers(),
            fwdbwd_work,
            ["liger computes the gradient inside its forward and writes it over the logits"],
            expected_grad,
            2e-2,
        ),
    ]
    for row in rows:
        row.roofline_s = row.work.floor_s(peaks)
        row.goal = GOALS[row.key] if at_goal_sizes else None
    return rows


def _dpo_loss(policy_logps, mask, chosen, rejected, ref_logps) -> torch.Tensor:
    """prefcore's dpo_loss when importable, else the same sigmoid DPO on masked sequence sums."""
    try:
        from prefcore.kernels.preference_losses import dpo_loss
    except ImportError:
        dpo_loss = None
    if dpo_loss is not None:
        return dpo_loss(policy_logps, mask, chosen, rejected, ref_logps=ref_logps, beta=BETA).loss
    weights = mask.to(policy_logps.dtype)
    policy_sums = (policy_logps * weights).sum(-1)
    ref_sums = (ref_logps * weights).sum(-1)
    margin = (policy_sums[chosen] - ref_sums[chosen]) - (policy_sums[rejected] - ref_sums[rejected])
    return -F.logsigmoid(BETA * margin).mean()


def dpo_row(args: argparse.Namespace, device: torch.device, peaks: tuple[float, float] | None) -> Row:
    from prefcore.kernels.fused_linear_logprobs import fused_linear_logprobs

    pairs, seq_len, width, vocab = args.pairs, args.seq_len, args.hidden, args.vocab_dpo
    n_seqs = 2 * pairs
    dtype = torch.bfloat16
    hidden = (torch.randn(n_seqs, seq_len, width, device=device, dtype=torch.float32)).to(dtype)
    ref_hidden = (hidden.float() + 0.1 * torch.randn_like(hidden, dtype=torch.float32)).to(dtype)
    weight = (torch.randn(vocab, width, device=device, dtype=torch.float32) / width**0.5).to(dtype)
    ref_weight = weight.clone()
    targets = torch.randint(0, vocab, (n_seqs, seq_len), device=device)
    n_prompt = int(seq_len * args.prompt_fraction)
    targets[:, :n_prompt] = IGNORE
    mask = targets != IGNORE
    # Liger's layout: the chosen sequences first, then the rejected ones.
    chosen = torch.arange(pairs, device=device)
    rejected = torch.arange(pairs, 2 * pairs, device=device)

    def leaves() -> tuple[torch.Tensor, torch.Tensor]:
        return hidden.detach().requires_grad_(), weight.detach().requires_grad_()

    def with_loss(policy_fn, ref_fn) -> Callable[[], None]:
        policy_hidden, policy_weight = leaves()

        def step() -> None:
            policy_hidden.grad = policy_weight.grad = None
            policy_logps = policy_fn(policy_hidden, policy_weight)
            with torch.no_grad():
                ref_logps = ref_fn(ref_hidden, ref_weight)
            _dpo_loss(policy_logps, mask, chosen, rejected, ref_logps).backward()

        return with_grads(step, policy_hidden, policy_weight)

    def with_grads(step: Callable[[], None], *grad_leaves: torch.Tensor) -> Callable[[], None]:
        """The step with its gradients as outputs (the correctness check) and freed by ``reset`` (memory)."""
        step.outputs = lambda: tuple(leaf.grad for leaf in grad_leaves)
        step.reset = lambda: [setattr(leaf, "grad", None) for leaf in grad_leaves]
        return step

    def expected() -> tuple[torch.Tensor, ...]:
        """fp32 reference gradients of the DPO loss w.r.t. the policy's hidden states and LM-head weight."""
        policy_hidden, policy_weight = hidden.float().requires_grad_(), weight.float().requires_grad_()
        with torch.no_grad():
            ref_logps = naive_logps(ref_hidden.float(), ref_weight.float())
        _dpo_loss(naive_logps(policy_hidden, policy_weight), mask, chosen, rejected, ref_logps).backward()
        return policy_hidden.grad, policy_weight.grad

    def naive_logps(h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        logits = h @ w.T
        logps = logits.float().log_softmax(-1).gather(-1, targets.clamp_min(0).unsqueeze(-1)).squeeze(-1)
        return logps * mask

    def prefcore():
        fn = lambda h, w: fused_linear_logprobs(h, w, targets)
        return with_loss(fn, fn)

    def loss_aware():
        """prefcore's loss-aware head: loss and gradients in one pass over the logits (no recompute)."""
        from prefcore.kernels.fused_linear_pairwise import fused_linear_pairwise_loss

        policy_hidden, policy_weight = leaves()

        def step() -> None:
            policy_hidden.grad = policy_weight.grad = None
            with torch.no_grad():
                ref_sums = fused_linear_logprobs(ref_hidden, ref_weight, targets).sum(-1)
            out = fused_linear_pairwise_loss(
                policy_hidden, policy_weight, targets, chosen, rejected, beta=BETA, ref_sequence_logps=ref_sums
            )
            out.loss.backward()

        return with_grads(step, policy_hidden, policy_weight)

    def naive():
        return with_loss(naive_logps, naive_logps)

    def compiled():
        fn = _compiled(naive_logps, device, args.compile)
        return with_loss(fn, fn)

    def liger():
        try:
            from liger_kernel.chunked_loss import LigerFusedLinearDPOLoss
        except ImportError as exc:
            raise Unavailable(f"liger-kernel: {exc}") from exc
        if not _is_cuda(device) and not args.compile:
            raise Unavailable("Liger's chunked DPO compiles its chunk loss; CPU smoke mode skips it (pass --compile)")
        loss_fn = LigerFusedLinearDPOLoss(ignore_index=IGNORE, beta=BETA, use_ref_model=True)
        policy_hidden, policy_weight = leaves()
        # Liger marks its inputs' sequence dimension dynamic for torch.compile: a private copy keeps
        # that mark off the tensors the compiled naive provider specialises on.
        liger_targets = targets.clone()

        def step() -> None:
            policy_hidden.grad = policy_weight.grad = None
            loss = loss_fn(policy_weight, policy_hidden, liger_targets, ref_input=ref_hidden, ref_weight=ref_weight)
            (loss[0] if isinstance(loss, tuple) else loss).backward()

        return with_grads(step, policy_hidden, policy_weight)

    def trl():
        try:
            from trl.kernels import ChunkedLogProbFunction
        except ImportError as exc:
            raise Unavailable(f"trl.kernels: {exc}") from exc
        flat_targets = targets.clamp_min(0).reshape(-1)

        def fn(h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
            # (hidden, weight, bias, targets, temperature, vocabulary chunk, softcap, logit_scale, outputs)
            logps = ChunkedLogProbFunction.apply(h.reshape(-1, width), w, None, flat_targets, 1.0, 8192, None, 1.0, ())[
                0
            ]
            return logps.view(n_seqs, seq_len) * mask

        return with_loss(fn, fn)

    work = dpo_work(n_seqs * (seq_len - n_prompt), width, vocab)
    at_goal_sizes = (pairs, seq_len, width, vocab, n_prompt) == (4, 1024, 4096, 128256, 0)
    return Row(
        "dpo",
        f"DPO step, {pairs} pairs x {seq_len} tokens, H={width}, V={vocab} bf16 "
        f"(prompt fraction {args.prompt_fraction:g})",
        {
            "prefcore": prefcore,
            "prefcore loss-aware": loss_aware,
            "naive torch": naive,
            "torch.compile": compiled,
            "liger": liger,
            "trl": trl,
        },
        work,
        [
            "trl and prefcore recompute logits in the backward (10·N·H·V); prefcore loss-aware "
            "(fused_linear_pairwise_loss) and liger compute the gradients in their forward (8·N·H·V)"
        ],
        expected,
        3e-2,
        work.floor_s(peaks),
        GOALS["dpo"] if at_goal_sizes else None,
    )


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------
def _peaks_for(name: str) -> tuple[float, float] | None:
    for fragment, bandwidth, flops in GPU_PEAKS:
        if fragment.lower() in name.lower():
            return bandwidth, flops
    return None


def _format_bytes(value: int | None) -> str:
    if value is None:
        return "n/a"
    return f"{value / 2**30:.2f} GiB" if value >= 2**30 else f"{value / 2**20:.1f} MiB"


def _cell(result: Result | None) -> str:
    if result is None:
        return "–"
    if result.median_ms is None:  # the reason is in the detailed table below
        return result.status.split(":")[0] or "–"
    return f"{result.median_ms:.3f} ms, {_format_bytes(result.peak_bytes)}"


def summary(rows: list[tuple[Row, list[Result]]]) -> list[str]:
    """The issue's table: workload | best peer | limit | prefcore | goal, then every peer side by side."""
    peers = list(dict.fromkeys(r.provider for _, results in rows for r in results if r.provider != "prefcore"))
    lines = [
        "| workload | best peer | limit | prefcore | goal | " + " | ".join(peers) + " |",
        "|---|---|---:|---|---|" + "---|" * len(peers),
    ]
    for row, results in rows:
        by_name = {result.provider: result for result in results}
        # prefcore's own variants (the loss-aware head) stand beside the peers but are not a peer
        timed = [r for r in results if not r.provider.startswith("prefcore") and r.median_ms is not None]
        best = min(timed, key=lambda r: r.median_ms) if timed else None
        best_cell = f"{best.provider} {_cell(best)}" if best else "–"
        limit = f"{row.roofline_s * 1e3:.2f} ms" if row.roofline_s else "n/a"
        if row.goal is None:
            goal = "– (other sizes)"
        else:
            goal = f"≤ {row.goal[0]:g} ms" + (f", ≤ {row.goal[1]:g} GiB" if row.goal[1] is not None else "")
        cells = [_cell(by_name.get(peer)) for peer in peers]
        lines.append(
            f"| {row.key} | {best_cell} | {limit} | {_cell(by_name.get('prefcore'))} | {goal} | "
            + " | ".join(cells)
            + " |"
        )
    return lines


def render(rows: list[tuple[Row, list[Result]]], header: list[str]) -> str:
    lines = [*header, "", *summary(rows), ""]
    lines.append("| op | provider | median ms | vs prefcore | peak extra memory | roofline ms | % of roofline |")
    lines.append("|---|---|---:|---:|---:|---:|---:|")
    notes: list[str] = []
    for row, results in rows:
        ours = next((r.median_ms for r in results if r.provider == "prefcore"), None)
        roofline_ms = row.roofline_s * 1e3 if row.roofline_s else None
        for result in results:
            if result.median_ms is None:
                lines.append(f"| {row.key} | {result.provider} | – | – | – | – | {result.status} |")
                continue
            ratio = f"{result.median_ms / ours:.2f}x" if ours else "–"
            roof = f"{roofline_ms:.3f}" if roofline_ms else "n/a"
            share = f"{100 * roofline_ms / result.median_ms:.0f}%" if roofline_ms else "n/a"
            status = f" · {result.status}" if result.status else ""
            lines.append(
                f"| {row.key} | {result.provider} | {result.median_ms:.3f} | {ratio} | "
                f"{_format_bytes(result.peak_bytes)} | {roof} | {share}{status} |"
            )
        notes.append(f"- **{row.key}**: {row.title}; roofline = {row.work.formula}.")
        notes.extend(f"  {note}." for note in row.notes)
    return "\n".join([*lines, "", *notes])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Sizes default to the issue's H100 targets; --dry-run shrinks everything for a CPU smoke test.",
    )
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes, one round; runs on CPU too")
    parser.add_argument("--only", default="logprob-fwd,logprob-fwdbwd,dpo", help="comma-separated rows to run")
    parser.add_argument("--rows", type=int, default=16384, help="tokens N of the log-prob rows")
    parser.add_argument("--vocab", type=int, default=128256, help="vocabulary V of the log-prob rows")
    parser.add_argument("--pairs", type=int, default=4, help="preference pairs in the DPO step")
    parser.add_argument("--seq-len", type=int, default=1024, help="tokens per sequence in the DPO step")
    parser.add_argument("--hidden", type=int, default=4096, help="hidden size H of the DPO step")
    parser.add_argument("--vocab-dpo", type=int, default=128256, help="vocabulary V of the DPO step")
    parser.add_argument(
        "--prompt-fraction", type=float, default=0.0, help="leading tokens of each sequence set to ignore_index"
    )
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (median over rounds)")
    parser.add_argument("--warmup-ms", type=int, default=50, help="do_bench warm-up per measurement")
    parser.add_argument("--rep-ms", type=int, default=300, help="do_bench repetition budget per measurement")
    parser.add_argument("--compile", action="store_true", help="allow torch.compile providers on CPU")
    parser.add_argument("--output", help="also write the markdown table to this file")
    args = parser.parse_args(argv)
    if args.dry_run:
        args.rows, args.vocab = 64, 1000
        args.pairs, args.seq_len, args.hidden, args.vocab_dpo = 2, 32, 64, 1000
        args.rounds, args.warmup_ms, args.rep_ms = 1, 5, 20
    if not 0.0 <= args.prompt_fraction < 1.0:
        parser.error("--prompt-fraction must lie in [0, 1)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not _is_cuda(device) and not args.dry_run:
        print("No CUDA device: these figures are GPU figures. Use --dry-run for a CPU smoke test.", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    name = torch.cuda.get_device_name(device) if _is_cuda(device) else f"CPU {platform.machine()}"
    peaks = _peaks_for(name) if _is_cuda(device) else None
    wanted = {key.strip() for key in args.only.split(",") if key.strip()}
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "not installed"
    header = [
        f"# prefcore log-prob kernels on {name}",
        "",
        f"{datetime.date.today().isoformat()} · torch {torch.__version__} · triton {triton_version}"
        + (" · **dry run: tiny sizes, not a measurement**" if args.dry_run else ""),
        f"Timing: median of {args.rounds} interleaved rounds, each a do_bench median "
        f"(warm-up {args.warmup_ms} ms, {args.rep_ms} ms of repetitions, L2 flushed)."
        if _is_cuda(device)
        else "Timing: CPU wall clock (smoke mode).",
        "Peak extra memory: max_memory_allocated during one call minus memory allocated before it, the "
        "previous call's gradients and outputs freed first (inputs excluded; gradients, outputs and workspaces "
        "included). Every result was checked against an fp32 torch reference before it was timed.",
    ]
    if peaks is None and _is_cuda(device):
        header.append(f"No peak numbers known for {name!r}: the roofline columns are n/a.")
    rows: list[tuple[Row, list[Result]]] = []
    builders = []
    if wanted & {"logprob-fwd", "logprob-fwdbwd"}:
        builders.append(logprob_rows)
    if "dpo" in wanted:
        builders.append(lambda a, d, p: [dpo_row(a, d, p)])
    for build in builders:
        for row in build(args, device, peaks):
            if row.key in wanted:
                print(f"measuring {row.key} ...", file=sys.stderr, flush=True)
                rows.append((row, measure(row, device, args.rounds, args.warmup_ms, args.rep_ms)))
                row.providers = {}  # drop the closures, and with them this row's inputs
        gc.collect()
        if _is_cuda(device):
            torch.cuda.empty_cache()
    report = render(rows, header)
    print(report)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as handle:
            handle.write(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
