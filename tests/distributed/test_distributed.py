"""Two processes with the global batch split train exactly what one process does with the whole batch.

One torchrun launch (2 ranks, gloo, CPU) runs the registry check with rank 1 missing a plugin,
then DPO, a listwise objective (Plackett-Luce DPO), reward-model training (Bradley-Terry), DPO
on precomputed reference sums and a soup of two preference models under DDP and under FSDP2;
the test compares each with the same training in this process (``dist_cases``). The fused
LM-head path is on in every policy case: under FSDP2 it receives the gathered head weight inside
the wrapped forward, the policy's and the sharded reference's alike.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # the helpers the torchrun workers import too

import dist_cases
from dist_launch import GLOO
from dist_launch import torchrun

from prefcore.distributed.memory import TensorBytes

pytestmark = pytest.mark.skipif(not GLOO, reason="torch.distributed with gloo is not available")

# Bradley-Terry only sees reward differences: the head's bias gets a gradient of rounding noise,
# which AdamW turns into steps of ±lr whatever its size, so it is not comparable across batch splits.
SHIFT_INVARIANT = {"reward": {"head.bias"}, "soup": {"head.bias"}}
POLICY_CASES = [case for case in dist_cases.CASES if case not in ("reward", "soup")]


@pytest.fixture(scope="module")
def launched(tmp_path_factory: pytest.TempPathFactory) -> dict[int, dict[str, Any]]:
    out = tmp_path_factory.mktemp("dist")
    result = torchrun(2, "all", str(out), cwd=out)
    assert result.returncode == 0, result.stderr[-4000:]
    return {rank: torch.load(out / f"rank{rank}.pt", weights_only=False) | {"out": out} for rank in (0, 1)}


@pytest.fixture(scope="module")
def single() -> dict[str, dict[str, Any]]:
    """Each case in this one process, whole batch."""
    return {name: dist_cases.run_case(name, Path(tempfile.mkdtemp())) for name in dist_cases.CASES}


def test_registry_mismatch_is_caught_on_every_rank_naming_the_rank(launched: dict[int, dict[str, Any]]) -> None:
    for rank in (0, 1):
        message = launched[rank]["fingerprint"]
        assert message.startswith("ConfigError: the ranks loaded different plugins")
        assert "rank 1: methods missing there: usage:grpo" in message
        assert "rank 0:" not in message


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
@pytest.mark.parametrize("case", dist_cases.CASES)
def test_two_ranks_equal_one_process(
    launched: dict[int, dict[str, Any]], single: dict[str, dict[str, Any]], strategy: str, case: str
) -> None:
    got, want = launched[0][f"{strategy}/{case}"], single[case]
    assert len(got["losses"]) == dist_cases.STEPS * (2 if case == "soup" else 1)  # a soup trains 2 members
    torch.testing.assert_close(torch.tensor(got["losses"]), torch.tensor(want["losses"]), rtol=1e-5, atol=1e-6)
    assert got["weights"].keys() == want["weights"].keys()
    for name, tensor in want["weights"].items():
        if name in SHIFT_INVARIANT.get(case, set()):
            continue
        torch.testing.assert_close(got["weights"][name], tensor, rtol=0, atol=2e-4, msg=name)
    # the comparison is not vacuous: training moved the weights far beyond the tolerance
    start = dist_cases.weights(dist_cases.build_case(case, Path(tempfile.mkdtemp()))[1])
    assert max(float((want["weights"][n] - start[n]).abs().max()) for n in start) > 1e-3


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_every_rank_holds_the_trained_model(launched: dict[int, dict[str, Any]], strategy: str) -> None:
    """After training the plain model on each rank has the full weights (FSDP2 gathers them back)."""
    for case in dist_cases.CASES:
        for name, tensor in launched[0][f"{strategy}/{case}"]["weights"].items():
            torch.testing.assert_close(launched[1][f"{strategy}/{case}"]["weights"][name], tensor, rtol=0, atol=0)


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_bf16_mixed_precision_stays_near_float32(
    launched: dict[int, dict[str, Any]], single: dict[str, dict[str, Any]], strategy: str
) -> None:
    """bf16 compute changes the losses in their third or fourth digit, not more (float32 master weights)."""
    got, want = launched[0][f"{strategy}-bf16/dpo"], single["dpo"]
    torch.testing.assert_close(torch.tensor(got["losses"]), torch.tensor(want["losses"]), rtol=5e-3, atol=0)
    assert got["losses"][1:] != want["losses"][1:]  # it did compute in bf16
    assert all(tensor.dtype == torch.float32 for tensor in got["weights"].values())


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_fsdp_shards_the_reference_and_gathers_it_back(launched: dict[int, dict[str, Any]], strategy: str) -> None:
    """FSDP2: each rank held half of the reference's bytes while training (DDP: all of them); at the end
    the plain reference (what evaluation reads) is whole again on every rank."""
    for case in POLICY_CASES:
        if case == "dpo_cached":  # no reference model at all: the sums are cached
            assert "reference_bytes" not in launched[0][f"{strategy}/{case}"]
            continue
        held = [launched[rank][f"{strategy}/{case}"]["reference_bytes"] for rank in (0, 1)]
        full = launched[0][f"{strategy}/{case}"]["reference_full_bytes"]
        if strategy == "fsdp":
            assert sum(held) == full and max(held) <= 0.51 * full, (case, held, full)
        else:
            assert held == [full, full]
        assert all(launched[rank][f"{strategy}/{case}"]["reference_whole"] for rank in (0, 1))


def test_tensor_bytes_counts_new_storages_once_and_their_peak() -> None:
    """What the start-up check below measures: new storages (not in-place results or views) until freed."""
    before = torch.zeros(1000)
    with TensorBytes() as count:
        copied = before.clone()  # 4000 bytes
        before.add_(1)  # in place: nothing new
        view = copied[10:]  # a view: nothing new
        other = torch.empty(500)  # 2000 bytes: 6000 live, the peak
        del copied, view  # 4000 freed
        torch.empty(10**6, device="meta")  # no memory
    assert (count.peak, count.live) == (6000, 2000)
    del other
    assert count.live == 0


@pytest.mark.parametrize("key", ["fsdp/{case}", "fsdp-bf16/dpo"])
def test_fsdp_start_up_allocates_only_the_shards(launched: dict[int, dict[str, Any]], key: str) -> None:
    """Building an FSDP2 trainer allocates each rank's shards of the policy and the reference, about half
    of both on 2 ranks, and at no moment a second full copy: the shards are made from a meta-device
    skeleton and filled from the plain model. (Deep-copying each model before sharding it peaked at 1.7
    times both models' bytes.)"""
    for case in POLICY_CASES if "{case}" in key else ["dpo"]:
        for rank in (0, 1):
            startup = launched[rank][key.format(case=case)]["startup"]
            both = startup["policy"] + startup["reference"]
            assert startup["reference"] in (0, startup["policy"]), startup  # dpo_cached: no reference model
            assert 0.49 * both <= startup["peak"] <= 0.51 * both, (case, rank, startup)


def test_fsdp_ranks_given_a_skeleton_train_what_one_process_does(
    launched: dict[int, dict[str, Any]], single: dict[str, dict[str, Any]]
) -> None:
    """Rank 1 builds the policy and the reference on the meta device (no weights); rank 0 sends the
    shards. Building the trainer allocates only rank 1's shards (and a tensor or two in flight), the
    losses and final weights are one process's, and the gathered plain models are whole on both ranks."""
    want = single["dpo"]
    for rank in (0, 1):
        got = launched[rank]["fsdp/dpo_skeleton"]
        if rank == 0:  # the one that logs
            torch.testing.assert_close(torch.tensor(got["losses"]), torch.tensor(want["losses"]), rtol=1e-5, atol=1e-6)
        for name, tensor in want["weights"].items():
            torch.testing.assert_close(got["weights"][name], tensor, rtol=0, atol=2e-4, msg=name)
        assert got["reference_whole"]  # the reference gathered into the skeleton is rank 0's initialisation
        startup = got["startup"]
        both = startup["policy"] + startup["reference"]
        assert startup["plain"] == (both if rank == 0 else 0), startup  # rank 1 read no weights
        assert startup["peak"] <= 0.51 * both + (2 * startup["largest"] if rank else 0), (rank, startup)
    held = [launched[rank]["fsdp/dpo_skeleton"]["reference_bytes"] for rank in (0, 1)]
    assert sum(held) == launched[0]["fsdp/dpo_skeleton"]["reference_full_bytes"]


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_precomputed_reference_sums_are_those_of_one_process(
    launched: dict[int, dict[str, Any]], single: dict[str, dict[str, Any]], strategy: str
) -> None:
    """Each rank computed half of the batches; every rank got every sum, rank 0 wrote them once, and a
    second call on every rank read the file instead of running the reference."""
    want = torch.tensor([value for sums in single["dpo_cached"]["cached"] for value in sums])
    for rank in (0, 1):
        got = launched[rank][f"{strategy}/dpo_cached"]
        torch.testing.assert_close(torch.tensor([v for sums in got["cached"] for v in sums]), want, rtol=1e-5, atol=0)
        torch.testing.assert_close(got["cache_file"]["logps"], want, rtol=1e-5, atol=0)
        assert got["cache_hit"]
    assert want.numel() == 40 and bool((want < 0).all())


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_the_soup_is_written_once_with_every_rank_s_weights(launched: dict[int, dict[str, Any]], strategy: str) -> None:
    from prefcore.engine.reward_model import RewardModel

    saved = RewardModel.load(launched[0]["out"] / f"{strategy}-soup" / "soup").state_dict()
    for name, tensor in launched[0][f"{strategy}/soup"]["weights"].items():
        torch.testing.assert_close(saved[name], tensor, rtol=0, atol=0, msg=name)
