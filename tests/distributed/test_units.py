"""The pieces of prefcore.distributed that need no process group: sharding, fingerprints, settings, launch."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from prefcore.config import build_config
from prefcore.config import parse_run_config
from prefcore.demo.task import preference_pairs
from prefcore.demo.tokenizer import build_tokenizer
from prefcore.distributed.fingerprint import fingerprint_difference
from prefcore.distributed.launch import torchrun_command
from prefcore.distributed.launch import without_nproc
from prefcore.distributed.process_group import Parallel
from prefcore.distributed.sampler import MicroBatchSampler
from prefcore.distributed.sampler import shard_indices
from prefcore.engine.batching import build_items
from prefcore.engine.batching import micro_batches
from prefcore.engine.loop import OptimiserLoop
from prefcore.errors import ConfigError
from prefcore.registry import Registry
from prefcore.settings import DistributedConfig
from prefcore.settings import TrainConfig
from prefcore.validation import check_run_config

REGISTRY = Registry.from_environment(third_party=False)


@pytest.mark.parametrize("size", [0, 1, 2, 5, 6, 7])
@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_shards_partition_a_batch_in_order(size: int, world: int) -> None:
    batch = list(range(100, 100 + size))
    shards = [shard_indices(batch, rank, world) for rank in range(world)]
    assert [index for shard in shards for index in shard] == batch
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_sampler_gives_the_single_process_order_split_and_resumes_on_another_world_size() -> None:
    items = build_items(preference_pairs(count=23, seed=2), "pairwise", build_tokenizer(), max_length=48)
    expected = [batch for epoch in range(3) for batch in micro_batches(items, 4, seed=7, epoch=epoch)]
    two = [MicroBatchSampler(items, 4, 7, rank=rank, world_size=2) for rank in (0, 1)]
    drawn = [[sampler.next() for _ in range(len(expected))] for sampler in two]
    for step, want in enumerate(expected):
        assert drawn[0][step][0] == drawn[1][step][0] == want
        assert drawn[0][step][1] + drawn[1][step][1] == want
    # the position is global: a run checkpointed on 2 ranks continues on 3 at the same batch
    half = MicroBatchSampler(items, 4, 7, rank=0, world_size=2)
    for _ in range(9):
        half.next()
    three = MicroBatchSampler(items, 4, 7, rank=2, world_size=3)
    three.load_state_dict(half.state_dict())
    assert three.next() == (expected[9], shard_indices(expected[9], 2, 3))


def test_fingerprint_difference_names_what_one_rank_lacks_and_adds() -> None:
    reference = REGISTRY.fingerprint()
    assert "usage:dpo" in reference["methods"] and reference["broken"] == []
    assert fingerprint_difference(reference, reference) == ""
    fewer = Registry.from_environment(third_party=False, disabled=["grpo"]).fingerprint()
    assert fingerprint_difference(reference, fewer).startswith("methods missing there: usage:grpo; plugins missing")
    assert fingerprint_difference(fewer, reference).startswith("methods only there: usage:grpo")


def test_distributed_section_defaults_to_one_process_and_checks_its_options() -> None:
    assert build_config(DistributedConfig, {}, method="[distributed]").strategy == "none"
    for bad, field in (
        ({"strategy": "zero3"}, "strategy"),
        ({"strategy": "ddp", "cpu_offload": True}, "cpu_offload"),
        ({"mixed_precision": "fp16"}, "mixed_precision"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"strategy": "ddp", "bogus": 1}, "bogus"),
    ):
        with pytest.raises(ConfigError, match=field):
            build_config(DistributedConfig, bad, method="[distributed]")


def _run_file(**sections: dict) -> dict:
    data = {
        "model": {"demo": True},
        "feedback": {"method": "demo_rule"},
        "usage": {"method": "dpo"},
        "distributed": {"strategy": "fsdp"},
    }
    data.update(sections)
    return data


def test_dry_run_accepts_every_section_under_torchrun() -> None:
    checked = check_run_config(parse_run_config(_run_file()), registry=REGISTRY)
    assert checked.sections["distributed"].strategy == "fsdp"
    soup = [{"method": "bradley_terry"}, {"method": "margin_bradley_terry"}]
    for sections in ({"run": {"reference": "precomputed"}}, {"run": {"ensemble": "soup"}, "preference_model": soup}):
        check_run_config(parse_run_config(_run_file(**sections)), registry=REGISTRY)  # distributed now
    online = {"usage": {"method": "grpo"}, "reward": [{"kind": "rule", "method": "demo_rule"}]}
    for sections in (
        {**online, "usage": {"method": "ppo"}},
        {**online, "online": {"dynamic_sampling": True}},
        {**online, "usage": {"method": "ppo"}, "online": {"dynamic_sampling": True}},
        {"self_play": {"rounds": 1}},
        {
            "loop": {"kind": "best_of_n"},
            "usage": {"method": "sft"},
            "reward": [{"kind": "rule", "method": "demo_rule"}],
        },
    ):
        check_run_config(parse_run_config(_run_file(**sections)), registry=REGISTRY)  # distributed now


def test_a_loop_that_is_not_distributed_refuses_a_process_group() -> None:
    class Plain(OptimiserLoop):
        pass

    model = __import__("torch").nn.Linear(2, 2)
    parallel = Parallel(rank=0, world_size=2, strategy="ddp")
    with pytest.raises(ConfigError, match="Plain does not run distributed yet"):
        Plain(model, [1, 2], TrainConfig(steps=1), run_dir=Path("unused"), parallel=parallel)


def test_nproc_relaunches_the_same_command_under_torchrun() -> None:
    argv = ["run", "job.toml", "--nproc", "4", "--set", "train.steps=3", "--nproc=2"]
    assert without_nproc(argv) == ["run", "job.toml", "--set", "train.steps=3"]
    command = torchrun_command(4, argv)
    assert command[:5] == [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "4"]
    assert command[5:] == ["-m", "prefcore", "run", "job.toml", "--set", "train.steps=3"]
