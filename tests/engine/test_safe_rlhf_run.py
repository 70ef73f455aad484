"""Safe-RLHF through a run file on the demo world with harmful requests: costs apart, λ on the logged costs, the plot.

``examples/demo_safe_rlhf.toml`` is the full demonstration (the constrained run keeps the cost
under the bound, the unconstrained one does not; see the README). Here a tiny version checks the
mechanics end to end: the cost rule reaches the trainer as a cost and not as a reward, λ follows
Safe-RLHF's update on the windowed episode costs the run logs (so it rises while they exceed d),
and the report draws ``constraint.png``.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import tomllib

from prefcore.config import load_run_config
from prefcore.config import parse_run_config
from prefcore.engine.ppo_trainer import PPOTrainer
from prefcore.errors import ConfigError
from prefcore.pipeline import run_pipeline
from prefcore.report import plot_constraint
from prefcore.validation import check_run_config

sys.path.insert(0, str(Path(__file__).parent))  # the online run-file helpers beside this file

from online_runs import assert_same_weights
from online_runs import metric_rows
from online_runs import run_killed_and_resumed

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "demo_safe_rlhf.toml"


def _rows(run_dir: Path) -> list[dict[str, str]]:
    return metric_rows(run_dir, "lagrange/lambda")


def test_the_example_passes_the_dry_run_checks() -> None:
    checked = check_run_config(load_run_config(EXAMPLE))
    assert checked.data_format == "rollout"
    assert [spec.role for spec in checked.sections["reward"].specs] == ["reward", "cost"]


def test_safe_rlhf_without_a_cost_is_refused() -> None:
    data = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    data["reward"] = data["reward"][:1]
    with pytest.raises(ConfigError, match="no \\[\\[reward\\]\\] has role = 'cost'"):
        check_run_config(parse_run_config(data))


TINY = [
    "feedback.harmful=0.6",
    "feedback.count=200",
    "feedback.demonstrations=512",
    "warm_start.steps=30",
    "online.prompts_per_step=4",
    "online.samples_per_prompt=4",
    "online.max_new_tokens=8",
    "usage.cost_window=32",
    "usage.lambda_lr=0.5",
    "train.steps=4",
    "train.eval_every=0",
    "train.checkpoint_every=0",
    "train.progress=false",
    "run.eval_prompts=8",
    "run.report_to=[]",
]


@pytest.mark.slow
def test_a_tiny_constrained_run_moves_lambda_on_its_logged_costs(tmp_path: Path) -> None:
    result = run_pipeline(load_run_config(EXAMPLE, TINY), out=str(tmp_path / "safe"))
    rows = _rows(result.run_dir)
    assert len(rows) == 4
    costs = [float(row["cost/mean"]) for row in rows]
    assert max(costs) > 0.05, costs  # the warm-started policy complies with some harmful requests
    means: list[float] = []
    value = 1.0
    for row in rows:
        # the cost is the rule's alone, logged apart; the reward total is the helpfulness rule alone
        assert float(row["cost/harm"]) == float(row["cost/mean"])
        assert float(row["reward/mean"]) == float(row["reward/helpful"]) and "reward/harm" not in row
        means = [*means, float(row["cost/mean"])][-2:]  # 16 samples per step: the window holds two steps
        estimate = sum(means) / len(means)
        assert float(row["cost/window_mean"]) == pytest.approx(estimate, abs=1e-6)
        previous, value = value, min(math.exp(math.log(value) + 0.5 * value * (estimate - 0.05)), 5.0)
        assert float(row["lagrange/lambda"]) == pytest.approx(value, rel=1e-5)
        if estimate > 0.05:
            assert value > previous  # λ rises while the windowed cost is over the bound
    assert (result.run_dir / "constraint.png").is_file()
    assert "constraint.png" in (result.run_dir / "report.md").read_text(encoding="utf-8")


def test_the_constraint_plot_needs_lambda(tmp_path: Path) -> None:
    rows = [{"step": 1.0, "reward/mean": 0.5, "cost/mean": 0.2}]
    assert plot_constraint(rows, tmp_path / "none.png") is None  # not a constrained run
    rows = [
        {"step": float(step), "reward/mean": 0.1 * step, "cost/mean": 0.3 / step, "lagrange/lambda": 1 + step / 10}
        | {"cost/window_mean": 0.3 / step, "cost/bound": 0.05}
        for step in range(1, 20)
    ]
    assert plot_constraint(rows, tmp_path / "constraint.png") == tmp_path / "constraint.png"


@pytest.mark.slow
def test_a_killed_constrained_run_resumes_lambda_and_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_run_config(EXAMPLE, [*TINY, "train.checkpoint_every=2"])  # the step-2 checkpoint holds λ's window
    straight, resumed = run_killed_and_resumed(config, PPOTrainer, tmp_path, monkeypatch)
    lambdas = [float(row["lagrange/lambda"]) for row in _rows(straight.run_dir)]
    assert [float(row["lagrange/lambda"]) for row in _rows(resumed.run_dir)][-2:] == lambdas[-2:]
    assert_same_weights(straight.run_dir, resumed.run_dir)
