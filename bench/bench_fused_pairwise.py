"""CPU: a DPO step through the LM head, loss-aware fused head against the recompute path, Liger and naive torch.

Run from the repository root::

    python bench/bench_fused_pairwise.py                 # 4 pairs x 256 tokens (half prompt), H 512, V 32000, fp32
    python bench/bench_fused_pairwise.py --dtype bf16 --threads 2
    python bench/bench_fused_pairwise.py --dtype bf16 --master-weight   # every step from the fp32 master weight
    python bench/bench_fused_pairwise.py --engine --pairs 8 --seq-len 96 --hidden 256   # Trainer steps, off vs on

Each provider computes the same thing from the last hidden states ``[2P, T, H]`` of the policy
and of the reference and the LM-head weight ``[V, H]``: the reference's summed completion
log-probs (no gradient), the policy's, the DPO loss (β = 0.1, mean over pairs) and its
gradients with respect to the policy's hidden states and LM-head weight. Providers:

* ``prefcore loss-aware``: ``fused_linear_pairwise_loss`` (loss and gradients in one pass over
  the logits: each completion token's logits once);
* ``prefcore recompute``: ``fused_linear_logprobs`` + ``dpo_loss`` (the backward recomputes the
  logits: twice per token);
* ``liger``: ``LigerFusedLinearDPOLoss(compiled=False)``, Liger-Kernel's chunked DPO on its
  torch path (``torch.func.grad_and_value`` per pair, in its forward);
* ``naive torch``: full ``[2P, T, V]`` logits, ``log_softmax``, gather, autograd.

``--master-weight`` (with ``--dtype bf16``): the policy's LM-head weight is an fp32 parameter, as
under mixed precision. prefcore's loss-aware head takes it as it is (it casts for its bf16 GEMMs
and its fp32 accumulation buffer is the gradient); every other provider casts it to bf16 inside
the step, and autograd casts their bf16 weight gradient back to fp32, as an autocast or
``bf16-params`` step does. A fifth provider, ``prefcore loss-aware, blocks``, casts the master
weight ``BLOCK_ROWS`` vocab rows at a time (``cast_block_rows``) instead of once per call.

The reference model's forward is part of every provider's step (prefcore's through
``fused_linear_logprobs`` under no_grad). Every provider's loss and gradients are checked
against an fp32 naive reference before it is timed; a mismatch is reported, not timed. Time:
median wall and CPU time of ``--repeats`` calls after the check; memory: the peak bytes of
torch storages created and alive during one call (``harness.LiveBytes``), gradients included.

``--engine`` times whole ``Trainer`` DPO steps instead (a random ``--layers`` x ``--hidden`` Llama
with the ``--vocab`` vocabulary, random token pairs, live reference), ``[train] loss_aware_head``
off and on in interleaved rounds, after checking that their first steps give the same loss.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import LiveBytes

__all__ = ["Inputs", "Result", "engine_table", "main", "make_inputs", "providers", "run", "table"]

BETA = 0.1
IGNORE = -100
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
BLOCK_ROWS = 8192  # vocab rows of the fp32 master weight cast at a time by ``prefcore loss-aware, blocks``
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 3e-2}  # relative to the reference's largest magnitude

Step = Callable[["Inputs", torch.Tensor, torch.Tensor], torch.Tensor]
"""``step(inputs, policy_hidden, policy_weight) -> loss``: forward only; the caller runs the backward."""


@dataclass
class Inputs:
    hidden: torch.Tensor  # [2P, T, H] policy, chosen sequences first
    ref_hidden: torch.Tensor
    weight: torch.Tensor  # [V, H]: hidden's dtype, or the fp32 master weight (``master=True``)
    ref_weight: torch.Tensor
    targets: torch.Tensor  # [2P, T], IGNORE on the prompt
    chosen: torch.Tensor
    rejected: torch.Tensor


@dataclass
class Result:
    provider: str
    median_ms: float | None = None
    cpu_ms: float | None = None
    peak_bytes: int | None = None
    max_error: float | None = None
    status: str = ""


def make_inputs(
    pairs: int, seq_len: int, hidden_size: int, vocab: int, dtype: torch.dtype, prompt: float, master: bool = False
) -> Inputs:
    """Random inputs; ``master``: the policy's weight stays fp32 (the master copy) whatever ``dtype`` is."""
    generator = torch.Generator().manual_seed(0)
    n_seqs = 2 * pairs
    hidden = torch.randn(n_seqs, seq_len, hidden_size, generator=generator)
    ref_hidden = hidden + 0.1 * torch.randn(hidden.shape, generator=generator)
    weight = torch.randn(vocab, hidden_size, generator=generator) / hidden_size**0.5
    targets = torch.randint(0, vocab, (n_seqs, seq_len), generator=generator)
    targets[:, : int(seq_len * prompt)] = IGNORE
    return Inputs(
        hidden.to(dtype),
        ref_hidden.to(dtype),
        weight if master else weight.to(dtype),
        weight.to(dtype).clone(),
        targets,
        torch.arange(pairs),
        torch.arange(pairs, n_seqs),
    )


def _naive_sums(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logps = F.linear(hidden, weight.to(hidden.dtype)).float().log_softmax(-1)
    mask = targets != IGNORE
    return (logps.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1) * mask).sum(-1)


def providers(master: bool = False) -> dict[str, Callable[[], Step]]:
    """Factories of each tool's DPO step; ImportError when the peer is missing.

    Each step gets the weight leaf the run trains: in hidden's dtype, or the fp32 master weight
    (``master``), which every provider but prefcore's loss-aware head casts to hidden's dtype first.
    """

    def reference_sums(inputs: Inputs) -> torch.Tensor:
        from prefcore.kernels.fused_linear_logprobs import fused_linear_logprobs

        with torch.no_grad():
            return fused_linear_logprobs(inputs.ref_hidden, inputs.ref_weight, inputs.targets, backend="torch").sum(-1)

    def loss_aware(cast_block_rows: int | None = None) -> Step:
        from prefcore.kernels.fused_linear_pairwise import fused_linear_pairwise_loss

        def step(inputs: Inputs, h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
            out = fused_linear_pairwise_loss(
                h,
                w,  # an fp32 master weight as it is: the kernel casts it for its GEMMs
                inputs.targets,
                inputs.chosen,
                inputs.rejected,
                beta=BETA,
                ref_sequence_logps=reference_sums(inputs),
                backend="torch",
                cast_block_rows=cast_block_rows,
            )
            return out.loss

        return step

    def recompute() -> Step:
        from prefcore.kernels.fused_linear_logprobs import fused_linear_logprobs
        from prefcore.kernels.preference_losses import dpo_loss

        def step(inputs: Inputs, h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
            logps = fused_linear_logprobs(h, w.to(h.dtype), inputs.targets, backend="torch")
            mask = inputs.targets != IGNORE
            return dpo_loss(
                logps, mask, inputs.chosen, inputs.rejected, ref_sequence_logps=reference_sums(inputs), beta=BETA
            ).loss

        return step

    def liger() -> Step:
        from liger_kernel.chunked_loss import LigerFusedLinearDPOLoss

        loss_fn = LigerFusedLinearDPOLoss(ignore_index=IGNORE, beta=BETA, compiled=False, use_ref_model=True)

        def step(inputs: Inputs, h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
            out = loss_fn(w.to(h.dtype), h, inputs.targets, ref_input=inputs.ref_hidden, ref_weight=inputs.ref_weight)
            return out[0] if isinstance(out, tuple) else out

        return step

    def naive() -> Step:
        def step(inputs: Inputs, h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                ref = _naive_sums(inputs.ref_hidden, inputs.ref_weight, inputs.targets)
            ratio = _naive_sums(h, w, inputs.targets) - ref
            return -F.logsigmoid(BETA * (ratio[inputs.chosen] - ratio[inputs.rejected])).mean()

        return step

    steps = {"prefcore loss-aware": loss_aware, "prefcore recompute": recompute, "liger": liger, "naive torch": naive}
    if master:  # the loss-aware head also casting the master weight by vocab blocks, listed next to it
        blocks = {"prefcore loss-aware, blocks": lambda: loss_aware(BLOCK_ROWS)}
        steps = {"prefcore loss-aware": loss_aware, **blocks, **steps}
    return steps


def _call(step: Step, inputs: Inputs) -> tuple[torch.Tensor, ...]:
    h, w = inputs.hidden.detach().requires_grad_(), inputs.weight.detach().requires_grad_()
    loss = step(inputs, h, w)
    loss.backward()
    return loss.detach().float().reshape(1), h.grad, w.grad


def run(inputs: Inputs, repeats: int, names: list[str] | None = None) -> list[Result]:
    """Check, then time and measure, every provider (or those in ``names``) on the same inputs."""
    fp32 = Inputs(*(t.float() if t.is_floating_point() else t for t in vars(inputs).values()))
    reference = _call(providers()["naive torch"](), fp32)
    dtype = inputs.hidden.dtype
    results = []
    for name, factory in providers(master=inputs.weight.dtype != dtype).items():
        if names is not None and name not in names:
            continue
        result = Result(name)
        results.append(result)
        try:
            step = factory()
        except ImportError as exc:
            result.status = f"skipped: {exc}"
            continue
        try:
            got = _call(step, inputs)
        except Exception as exc:  # a broken peer must not take the table down
            result.status = f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:100]}"
            continue
        result.max_error = max(
            float((ours.float() - theirs).abs().max() / theirs.abs().max())
            for ours, theirs in zip(got, reference, strict=True)
        )
        if not result.max_error <= TOLERANCE[dtype]:  # NaN too
            result.status = f"wrong: relative error {result.max_error:.3g} > {TOLERANCE[dtype]:g}; not timed"
            continue
        walls, cpus = [], []
        for _ in range(repeats):
            wall, cpu = time.perf_counter(), time.process_time()
            _call(step, inputs)
            walls.append((time.perf_counter() - wall) * 1e3)
            cpus.append((time.process_time() - cpu) * 1e3)
        result.median_ms, result.cpu_ms = statistics.median(walls), statistics.median(cpus)
        tracker = LiveBytes()
        with tracker:
            _call(step, inputs)
        result.peak_bytes = tracker.peak
    return results


def table(results: list[Result], header: str) -> str:
    ours = next((r.cpu_ms for r in results if r.provider == "prefcore loss-aware"), None)
    lines = [
        header,
        "",
        "| provider | wall ms | CPU ms | CPU vs loss-aware | peak MiB | max rel. error vs fp32 | note |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        if r.median_ms is None:
            lines.append(f"| {r.provider} | – | – | – | – | – | {r.status} |")
            continue
        ratio = f"{r.cpu_ms / ours:.2f}x" if ours else "–"
        lines.append(
            f"| {r.provider} | {r.median_ms:.0f} | {r.cpu_ms:.0f} | {ratio} | {r.peak_bytes / 2**20:.1f} | "
            f"{r.max_error:.2g} | {r.status} |"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Engine step: the trainer with [train] loss_aware_head off and on
# ----------------------------------------------------------------------------------------------
def _llama(vocab: int, hidden_size: int, layers: int, seed: int = 0) -> Any:
    from transformers import LlamaConfig
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden_size,
        intermediate_size=4 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config).float()


def _trainer(args: argparse.Namespace, loss_aware: bool, run_dir: Path) -> Any:
    from prefcore.engine.batching import TrainingItem
    from prefcore.engine.models import frozen_copy
    from prefcore.engine.reference import ModelReference
    from prefcore.engine.sequences import TokenizedSequence
    from prefcore.engine.trainer import TrainConfig
    from prefcore.engine.trainer import Trainer
    from prefcore.engine.trainer import WeightedObjective
    from prefcore.registry import Registry

    policy = _llama(args.vocab, args.hidden, args.layers)
    reference = frozen_copy(policy)
    generator = torch.Generator().manual_seed(1)

    def ids(count: int) -> tuple[int, ...]:
        return tuple(int(i) for i in torch.randint(3, args.vocab, (count,), generator=generator).numpy())

    items = []
    for _ in range(args.pairs):
        prompt = ids(args.seq_len // 2)
        chosen, rejected = ids(args.seq_len - len(prompt)), ids(args.seq_len - len(prompt))
        pair = (TokenizedSequence(prompt, chosen), TokenizedSequence(prompt, rejected))
        items.append(TrainingItem(sequences=pair, data_format="pairwise"))
    # bf16: CPU autocast with fp32 master weights, or the model on bf16 weight copies (--bf16-params)
    precision = ("bf16-params" if args.bf16_params else "bf16") if args.dtype == "bf16" else "fp32"
    config = TrainConfig(
        steps=10**6,
        batch_size=args.pairs,
        grad_accum=1,
        lr=1e-4,
        progress=False,
        precision=precision,
        loss_aware_head=loss_aware,
    )
    objective = Registry.from_environment(third_party=False).create("usage", "dpo", {"beta": BETA})
    return Trainer(
        policy,
        [WeightedObjective(objective)],
        items,
        config,
        pad_token_id=0,
        run_dir=run_dir,
        device=torch.device("cpu"),
        reference_logps=ModelReference(reference, fused=True, backend="torch"),
    )


def engine_table(args: argparse.Namespace) -> str:
    """Trainer steps with the loss-aware head off and on: same first loss checked, then CPU time and peak."""
    import tempfile

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {name: _trainer(args, name == "on", Path(tmp) / name) for name in ("off", "on")}
        first = {name: trainer.train_step()["loss"] for name, trainer in trainers.items()}
        tolerance = 1e-5 if args.dtype == "fp32" else 1e-2  # bf16 logits round at 2^-8
        if abs(first["on"] - first["off"]) > tolerance * max(1.0, abs(first["off"])):
            return f"engine step: the losses differ ({first}); not timed"
        samples: dict[str, list[float]] = {name: [] for name in trainers}
        for _ in range(args.repeats):  # interleaved rounds
            for name, trainer in trainers.items():
                started = time.process_time()
                trainer.train_step()
                samples[name].append((time.process_time() - started) * 1e3)
        for name, trainer in trainers.items():
            tracker = LiveBytes()
            with tracker:
                trainer.train_step()
            results[name] = (statistics.median(samples[name]), tracker.peak)
    base = results["off"][0]
    lines = [
        f"Trainer DPO step on CPU: Llama {args.layers}x{args.hidden}, V = {args.vocab}, {args.pairs} pairs of "
        f"{args.seq_len} tokens (half prompt), live reference, {_precision_name(args)}, {args.threads} thread(s); "
        f"first-step loss "
        f"{first['off']:.6f} (off) vs {first['on']:.6f} (on)",
        "",
        "| [train] loss_aware_head | CPU ms per step | vs off | peak MiB |",
        "|---|---:|---:|---:|",
    ]
    for name, (cpu_ms, peak) in results.items():
        lines.append(f"| {name} | {cpu_ms:.0f} | {base / cpu_ms:.2f}x | {peak / 2**20:.1f} |")
    return "\n".join(lines)


def _precision_name(args: argparse.Namespace) -> str:
    if args.dtype != "bf16":
        return args.dtype
    return "bf16 (bf16-params weight copies)" if args.bf16_params else "bf16 (autocast)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--prompt", type=float, default=0.5, help="leading fraction of each sequence ignored")
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--engine", action="store_true", help="time Trainer steps (a --layers x --hidden Llama) with the head off/on"
    )
    parser.add_argument("--layers", type=int, default=4, help="decoder layers of the --engine model")
    parser.add_argument(
        "--master-weight",
        action="store_true",
        help="with --dtype bf16: the policy's LM-head weight is an fp32 master weight (the others cast it)",
    )
    parser.add_argument(
        "--bf16-params", action="store_true", help="--engine --dtype bf16: precision = bf16-params, not autocast"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.engine:
        print(engine_table(args))
        return 0
    inputs = make_inputs(
        args.pairs, args.seq_len, args.hidden, args.vocab, DTYPES[args.dtype], args.prompt, args.master_weight
    )
    results = run(inputs, args.repeats)
    tokens = int((inputs.targets != IGNORE).sum())
    header = (
        f"DPO step through the LM head on CPU: {args.pairs} pairs x {args.seq_len} tokens ({tokens} completion "
        f"tokens), H = {args.hidden}, V = {args.vocab}, {args.dtype}"
        f"{' from the fp32 master weight' if args.master_weight else ''}, {args.threads} thread(s), "
        f"torch {torch.__version__}"
    )
    print(table(results, header))
    return 0


if __name__ == "__main__":
    sys.exit(main())
