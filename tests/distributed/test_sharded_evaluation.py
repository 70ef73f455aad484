"""Evaluation under torchrun: every rank samples and scores its share, and the metrics are one process's.

``prefcore run --nproc 2`` (DDP) with greedy decoding, so that the draw does not depend on which
rank samples a prompt: the win rate (position-controlled judge, greedy completions of policy and
reference) and the preference accuracy (log-probs of held-out pairs) at steps 0, 2 and 4 must equal
the same run file's in one process. (The KL evaluator samples at temperature 1, where rank r draws
with seed + r: an equally likely draw, not the same one.) The split itself is checked
without a launch: ``local_rows`` covers every row once, in order, and a rank computes only its share.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from dist_launch import GLOO
from dist_launch import run_file_on_processes

from prefcore.config import parse_run_config
from prefcore.distributed.sampler import shard_indices
from prefcore.distributed.shards import gather_rows
from prefcore.distributed.shards import local_rows
from prefcore.pipeline import run_pipeline

RUN_FILE = {
    "run": {
        "seed": 3,
        "heldout_fraction": 0.25,
        "eval_prompts": 6,
        "max_new_tokens": 5,
        "temperature": 0.0,
        "threads": 1,
        "report_to": [],
    },
    "model": {"demo": True},
    "feedback": {"method": "demo_rule", "count": 48},
    "usage": {"method": "dpo", "beta": 0.1},
    "evaluation": [{"method": "win_rate"}, {"method": "preference_accuracy"}],
    "train": {"steps": 4, "batch_size": 8, "lr": 3e-3, "progress": False, "eval_every": 2},
    "distributed": {"strategy": "ddp", "timeout_s": 60},
}


def _evaluation_metrics(run_dir: Path) -> dict[tuple[str, str], float]:
    with open(run_dir / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    prefixes = ("win_rate/", "preference_accuracy/")
    return {
        (row["step"], key): float(value)
        for row in rows
        for key, value in row.items()
        if value and key.startswith(prefixes)
    }


def test_in_one_process_the_shares_are_the_whole_and_in_order() -> None:
    assert local_rows(5) == [0, 1, 2, 3, 4]
    assert gather_rows(["a", "b", "c"], lambda share: [row.upper() for row in share]) == ["A", "B", "C"]
    shares = [shard_indices(range(7), rank, 3) for rank in range(3)]
    assert [index for share in shares for index in share] == list(range(7))


def test_a_rank_computes_only_its_share_and_receives_the_whole_in_order(monkeypatch) -> None:
    """Rank 1 of 2, with rank 0's part arriving through the (stubbed) all-gather."""
    from prefcore.distributed import shards
    from prefcore.distributed.process_group import Parallel

    monkeypatch.setattr(shards, "current", lambda: Parallel(rank=1, world_size=2))

    def all_gather_object(parts: list, part: list) -> None:
        parts[0], parts[1] = ["R0", "R1", "R2"], part  # rank 0 computed rows 0-2 of 5

    monkeypatch.setattr(shards.dist, "all_gather_object", all_gather_object)
    computed: list[list[str]] = []

    def compute(share: list[str]) -> list[str]:
        computed.append(list(share))
        return [row.upper() for row in share]

    assert gather_rows(["r0", "r1", "r2", "r3", "r4"], compute) == ["R0", "R1", "R2", "R3", "R4"]
    assert computed == [["r3", "r4"]]  # rank 1's share only


@pytest.mark.slow
@pytest.mark.skipif(not GLOO, reason="torch.distributed with gloo is not available")
def test_two_processes_evaluate_what_one_process_does(tmp_path: Path) -> None:
    two = run_file_on_processes(RUN_FILE, tmp_path)

    single = {**RUN_FILE, "distributed": {"strategy": "none"}}
    result = run_pipeline(parse_run_config(single), out=str(tmp_path / "one"))
    want, got = _evaluation_metrics(result.run_dir), _evaluation_metrics(two)
    assert {step for step, _ in want} == {"0", "2", "4"}
    assert any(key.startswith("win_rate/") for _, key in want)
    assert any(key.startswith("preference_accuracy/") for _, key in want)
    assert set(got) == set(want)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
