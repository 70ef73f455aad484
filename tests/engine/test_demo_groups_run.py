"""examples/demo_groups.toml in miniature: whose preferences a policy learns, and per-group evaluation.

The full example (see the README) shows that DPO on the majority vote serves the minority
community worse and that a group-conditioned policy closes most of the gap. Here a tiny
version checks the mechanics end to end: the run file passes the dry-run checks, a
conditioned run trains on tagged prompts, and every group evaluator reports each community
over exactly the held-out items it should.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from prefcore.config import load_run_config
from prefcore.demo import groups
from prefcore.demo import task
from prefcore.engine.reward_heldout import split_records
from prefcore.pipeline import run_pipeline
from prefcore.plugins.feedback.demo_groups import DemoGroups
from prefcore.plugins.feedback.demo_groups import DemoGroupsConfig
from prefcore.validation import check_run_config

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "demo_groups.toml"

TINY = [
    "feedback.count=120",
    "feedback.demonstrations=256",
    "feedback.heldout_pairs=12",
    "warm_start.steps=20",
    "train.steps=6",
    "train.batch_size=8",
    "train.eval_every=0",
    "train.checkpoint_every=0",
    "train.progress=false",
    "run.eval_prompts=156",
    "run.samples_per_prompt=1",
    "run.max_new_tokens=6",
    "run.report_to=[]",
]


def test_the_example_and_its_conditioned_variant_pass_the_dry_run_checks() -> None:
    for extra in ([], ["feedback.conditioned=true", "run.eval_prompts=156"]):
        checked = check_run_config(load_run_config(EXAMPLE, extra))
        assert checked.data_format == "pairwise"


@pytest.mark.slow
def test_a_tiny_conditioned_run_evaluates_each_community(tmp_path: Path) -> None:
    result = run_pipeline(load_run_config(EXAMPLE, [*TINY, "feedback.conditioned=true"]), out=str(tmp_path / "run"))
    metrics = result.metrics
    prompts = len(task.heldout_prompts())
    # every held-out prompt under each community's tag, judged by that community only
    assert metrics["group_win_rate/num_pairs/fast"] == metrics["group_win_rate/num_pairs/full"] == prompts
    # held out: each community's verdict on 12 pairs of held-out prompts, and the run's 10 % split of training
    source = DemoGroups(DemoGroupsConfig(count=120, demonstrations=0, heldout_pairs=12, conditioned=True))
    _, split = split_records(list(source.records()), 0.1, 0)
    for group in groups.GROUPS:
        untied = sum(1 for pair in groups.heldout_group_pairs(12, 0) if pair.share(group) != 0.5)
        untied += sum(1 for record in split if record.annotator_groups["community"] == group and not record.tie)
        assert metrics[f"group_preference_accuracy/num_pairs/{group}"] == untied
    for name in ("group_win_rate/win_rate", "group_preference_accuracy/accuracy"):
        values = [metrics[f"{name}/{group}"] for group in groups.GROUPS]
        worst = name.replace("/", "/worst_group_")
        assert metrics[worst] == min(values)
        assert metrics[f"{name}_gap"] == pytest.approx(max(values) - min(values))
    distances = [metrics[f"distributional_alignment/js_distance/{group}"] for group in groups.GROUPS]
    assert metrics["distributional_alignment/alignment"] == pytest.approx(1 - sum(distances) / 2)
    assert all(0.0 <= value <= 1.0 for value in distances)
