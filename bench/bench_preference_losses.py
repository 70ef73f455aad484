"""Benchmarks for prefcore.kernels.preference_losses: masked sequence sums + pair loss + token broadcast.

Run:  pytest bench/bench_preference_losses.py                 (CPU: reference vs naive torch)
      pytest bench/bench_preference_losses.py --benchmark-json=out.json
On a CUDA machine the ``triton`` provider joins in; ``torch_compile`` needs PREFCORE_BENCH_COMPILE=1
on CPU. These ops move O(S·T) bytes, so on a GPU they are launch-bound: the figure to watch is the
median time against a few kernel launches (~5-10 µs each), not GB/s. Memory runs record peak bytes
allocated beyond the inputs; ``extra_info["device"]`` names the machine the numbers belong to.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from harness import DEVICE
from harness import MODES
from harness import Case
from harness import measure_memory
from harness import record
from harness import rounds
from harness import skip_unavailable
from harness import time_case

from prefcore.kernels import preference_losses as pl

ROUNDS = rounds("20")
PROVIDERS = ["torch", "naive", "torch_compile", "triton"]
# S sequences (P = S/2 pairs, chosen first as TRL lays them out) of T tokens; the engine's cached
# reference sums stand in for the reference model.
_SEQS = int(os.environ.get("PREFCORE_BENCH_SEQS", "64"))
_TOKENS = int(os.environ.get("PREFCORE_BENCH_TOKENS", "512" if DEVICE == "cpu" else "4096"))
_CONFIGS = [{"loss": loss, "seqs": _SEQS, "tokens": _TOKENS} for loss in ("dpo", "ipo", "simpo", "orpo", "kto")]


# ---------------------------------------------------------------------------------------------
# Naive torch: what a trainer writes (TRL's layout and formulas, materialising every intermediate)
# ---------------------------------------------------------------------------------------------


def naive_loss(name: str, logps: torch.Tensor, mask: torch.Tensor, ref_sums: torch.Tensor, labels: torch.Tensor):
    n_pairs = logps.shape[0] // 2
    maskf = mask.float()
    sums = (logps * maskf).sum(-1)
    if name in ("ipo", "simpo", "orpo"):
        means = sums / maskf.sum(-1)
    if name == "dpo":
        ratios = sums - ref_sums
        return -F.logsigmoid(0.1 * (ratios[:n_pairs] - ratios[n_pairs:])).mean()
    if name == "ipo":
        ratios = (sums - ref_sums) / maskf.sum(-1)
        return ((ratios[:n_pairs] - ratios[n_pairs:] - 1 / (2 * 0.1)) ** 2).mean()
    if name == "simpo":
        return -F.logsigmoid(2.0 * (means[:n_pairs] - means[n_pairs:]) - 1.0).mean()
    if name == "orpo":
        chosen, rejected = means[:n_pairs], means[n_pairs:]
        log_odds = (chosen - rejected) - (torch.log1p(-chosen.exp()) - torch.log1p(-rejected.exp()))
        nll = -(logps[:n_pairs] * maskf[:n_pairs]).sum() / maskf[:n_pairs].sum()
        return nll - 0.1 * F.logsigmoid(log_odds).mean()
    if name == "kto":
        ratios = sums - ref_sums
        losses = torch.where(labels, 1 - torch.sigmoid(0.1 * ratios), 1 - torch.sigmoid(-0.1 * ratios))
        return losses.mean()
    raise ValueError(name)


_FUNCTIONS = {
    "dpo": (pl.dpo_loss, pl.dpo_loss_ref),
    "ipo": (pl.ipo_loss, pl.ipo_loss_ref),
    "simpo": (pl.simpo_loss, pl.simpo_loss_ref),
    "orpo": (pl.orpo_loss, pl.orpo_loss_ref),
    "kto": (pl.kto_loss, pl.kto_loss_ref),
}


def prefcore_loss(fn: Callable, name: str, logps, mask, chosen, rejected, ref_sums, labels, **extra) -> torch.Tensor:
    """One call of a prefcore loss (public or reference) with the engine's cached reference sums."""
    if name == "kto":
        return fn(logps, mask, labels, ref_sequence_logps=ref_sums, **extra).loss
    kwargs = {"ref_sequence_logps": ref_sums} if name in ("dpo", "ipo") else {}
    if name == "simpo":
        kwargs["gamma"] = 1.0
    return fn(logps, mask, chosen, rejected, **kwargs, **extra).loss


# ---------------------------------------------------------------------------------------------
# Setup factory, shared by the speed and memory runs
# ---------------------------------------------------------------------------------------------


def setup_preference_loss(config: dict, provider: str) -> Case:
    name, seqs, tokens = config["loss"], config["seqs"], config["tokens"]
    logps = (-torch.rand(seqs, tokens, device=DEVICE) * 3 - 1e-3).requires_grad_()
    mask = torch.rand(seqs, tokens, device=DEVICE) > 0.3
    mask[:, -1] = True
    ref_sums = (logps.detach() * mask).sum(-1) + torch.randn(seqs, device=DEVICE)
    chosen = torch.arange(seqs // 2, device=DEVICE)
    rejected = torch.arange(seqs // 2, seqs, device=DEVICE)
    labels = torch.arange(seqs, device=DEVICE) % 2 == 0
    args = (logps, mask, chosen, rejected, ref_sums, labels)
    public, reference = _FUNCTIONS[name]
    if provider == "torch":
        fn = lambda: prefcore_loss(reference, name, *args)
    elif provider == "naive":
        fn = lambda: naive_loss(name, logps, mask, ref_sums, labels)
    elif provider == "torch_compile":
        compiled = torch.compile(lambda *a: prefcore_loss(reference, name, *a))
        fn = lambda: compiled(*args)
    elif provider == "triton":
        fn = lambda: prefcore_loss(public, name, *args, backend="triton")
    else:
        raise ValueError(provider)
    return Case(
        forward=fn,
        upstream=lambda out: None,  # a scalar loss: its backward needs no upstream gradient
        leaves=(logps,),
        forward_work=seqs * tokens * (4 + 1) + seqs * 4,  # read logps (fp32) and mask (bool); cached ref sums
        backward_work=seqs * tokens * (1 + 4),  # read mask; write grad logps (fp32)
    )


@pytest.mark.parametrize("config", _CONFIGS, ids=lambda c: f"{c['loss']}-{c['seqs']}x{c['tokens']}")
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_preference_loss_speed(benchmark, provider, mode, config):
    skip_unavailable(provider)
    case = setup_preference_loss(config, provider)
    time_case(benchmark, mode, case, ROUNDS)
    record(benchmark, mode, case, config | {"provider": provider})


@pytest.mark.parametrize("config", _CONFIGS[:1], ids=lambda c: f"{c['loss']}-{c['seqs']}x{c['tokens']}")
@pytest.mark.parametrize("provider", PROVIDERS)
def test_preference_loss_memory(benchmark, provider, config):
    skip_unavailable(provider)
    case = setup_preference_loss(config, provider)
    measure_memory(benchmark, case, {"logps_bytes": config["seqs"] * config["tokens"] * 4})
    record(benchmark, "full", case, config | {"provider": provider})
