"""Online objectives through run files: the checks of [[reward]] and [online], resume, and the two demos.

``examples/demo_rlvr.toml`` is the issue's first end-to-end demonstration: SFT on the demo's
mediocre speaker, then GRPO with a verifiable exact-answer reward on its arithmetic requests;
held-out exact-answer accuracy must rise clearly above the SFT start. ``examples/demo_rlhf.toml``
is the second: GRPO against a Bradley–Terry model that the run trains on the rule's pairs, with
the rule logged beside it as a weight-0 gold score and plotted with the KL (``overoptimisation.png``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from prefcore.config import load_run_config
from prefcore.config import parse_run_config
from prefcore.demo.tokenizer import build_tokenizer
from prefcore.engine.online_trainer import OnlineTrainer
from prefcore.engine.reward_model import build_reward_model
from prefcore.errors import ConfigError
from prefcore.pipeline import run_pipeline
from prefcore.registry import Registry
from prefcore.report import OVEROPTIMISATION
from prefcore.report import gold_columns
from prefcore.report import plot_overoptimisation
from prefcore.report import write_plots
from prefcore.rollout import ROLLOUT_FORMAT
from prefcore.validation import check_run_config

sys.path.insert(0, str(Path(__file__).parent))  # the online run-file helpers beside this file

from online_runs import assert_same_weights
from online_runs import metric_rows
from online_runs import quick_online_run
from online_runs import run_killed_and_resumed

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "demo_rlvr.toml"
RLHF_EXAMPLE = EXAMPLE.with_name("demo_rlhf.toml")


def _rows(run_dir: Path) -> list[dict[str, str]]:
    return metric_rows(run_dir)


def _accuracy(run_dir: Path) -> dict[int, float]:
    return {
        int(row["step"]): float(row["benchmark_accuracy/accuracy"])
        for row in _rows(run_dir)
        if row.get("benchmark_accuracy/accuracy")
    }


def _small(**sections: Any) -> dict[str, Any]:
    """A quick online run on the demo's sums: a short warm start, a few online steps."""
    return quick_online_run("grpo", **sections)


# -- checks of the run file ----------------------------------------------------------------


def test_the_example_passes_the_dry_run_checks() -> None:
    checked = check_run_config(load_run_config(EXAMPLE))
    assert checked.data_format == "rollout"
    assert checked.sections["reward"].names == ("verifiable",)
    assert checked.sections["online"].samples_per_prompt == 8


def test_the_rlhf_example_optimises_the_trained_model_and_logs_the_rule_as_gold() -> None:
    checked = check_run_config(load_run_config(RLHF_EXAMPLE))
    rewards = checked.sections["reward"]
    assert checked.data_format == "rollout" and rewards.needs_trained_model
    assert [(spec.name, spec.kind, spec.weight) for spec in rewards.specs] == [
        ("proxy", "preference_model", 1.0),
        ("gold", "rule", 0.0),
    ]
    assert gold_columns(load_run_config(RLHF_EXAMPLE).to_dict()) == ["reward/gold"]


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"reward": None}, "has no [[reward]]"),
        ({"usage": {"method": "dpo"}}, "[[reward]] and [online] configure online training"),
        ({"usage": {"method": "dpo"}, "reward": None}, "[online] configures online training"),
        ({"usage": [{"method": "grpo"}, {"method": "sft"}]}, "an online objective trains alone"),
        ({"self_play": {"rounds": 1}}, "drop [self_play]"),
        ({"online": {"temperature": 0.0}}, "temperature must be a finite number > 0"),
        ({"online": {"prompts_per_step": 0}}, "prompts_per_step must be >= 1"),
        ({"online": {"dynamic_sampling": True, "samples_per_prompt": 1}}, "needs samples_per_prompt >= 2"),
        ({"online": {"max_sampling_rounds": -1}}, "max_sampling_rounds must be >= 0"),
    ],
)
def test_online_run_files_are_checked(sections: dict[str, Any], message: str) -> None:
    data = _small(**sections)
    if message == "[online] configures online training":
        message = "configure online training"
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        check_run_config(parse_run_config(data))


# -- a run, and a run killed and resumed -------------------------------------------------------


def test_an_online_run_logs_per_step_metrics_and_evaluates_before_and_after(tmp_path: Path) -> None:
    result = run_pipeline(parse_run_config(_small()), out=str(tmp_path / "run"))
    rows = [row for row in _rows(result.run_dir) if row.get("reward/mean")]
    assert [int(row["step"]) for row in rows] == [1, 2, 3, 4]
    for key in ("reward/verifiable", "kl/k1", "kl/k3", "entropy", "completion_length", "zero_std_groups", "loss"):
        assert all(row[key] != "" for row in rows), key
    assert set(_accuracy(result.run_dir)) == {0, 4}
    assert (result.run_dir / "model" / "model.safetensors").is_file()
    assert (result.run_dir / "online.png").is_file()  # reward, KL, entropy, length and accuracy curves


def test_a_killed_online_run_resumes_to_the_same_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    straight, resumed = run_killed_and_resumed(parse_run_config(_small()), OnlineTrainer, tmp_path, monkeypatch)
    assert_same_weights(straight.run_dir, resumed.run_dir)


def test_dynamic_sampling_from_a_run_file_trains_only_on_groups_with_signal(tmp_path: Path) -> None:
    data = _small(online={"dynamic_sampling": True, "max_sampling_rounds": 2}, train={"steps": 3})
    result = run_pipeline(parse_run_config(data), out=str(tmp_path / "run"))
    rows = [row for row in _rows(result.run_dir) if row.get("reward/mean")]
    assert len(rows) == 3
    for row in rows:
        kept, rounds = float(row["dynamic_sampling/kept_groups"]), float(row["dynamic_sampling/rounds"])
        assert 1 <= rounds <= 3 and float(row["dynamic_sampling/sampled_prompts"]) >= 4
        if kept:  # the groups trained on all have rewards that differ
            assert float(row["zero_std_groups"]) == 0.0
        assert kept == 4 or rounds == 3  # the step is full, or its rounds ran out


def _online_objectives() -> list[str]:
    registry = Registry.from_environment()
    names = registry.names("usage")
    return [name for name in names if ROLLOUT_FORMAT in registry.create("usage", name, {}).data_formats]


@pytest.mark.parametrize("name", _online_objectives())
def test_every_online_objective_trains_from_a_run_file(name: str, tmp_path: Path) -> None:
    """Each registered online objective through the whole loop, with β·KL in its default place."""
    data = _small(usage={"method": name, "beta": 0.05}, train={"checkpoint_every": 0, "steps": 2})
    if getattr(Registry.from_environment().get("usage", name), "uses_costs", False):  # safe_rlhf needs a cost
        data["reward"] = [*data["reward"], {"kind": "rule", "method": "demo_rule", "score": "harm", "role": "cost"}]
    result = run_pipeline(parse_run_config(data), out=str(tmp_path / name))
    rows = [row for row in _rows(result.run_dir) if row.get("reward/mean")]
    assert len(rows) == 2 and all(float(row["kl/k1"]) == float(row["kl/k1"]) for row in rows)


@pytest.mark.parametrize(
    "usage",
    [
        {"method": "rloo", "beta": 0.05, "kl_location": "reward", "kl_estimator": "k1"},  # summed into R
        {"method": "reinforce_pp", "beta": 0.05, "kl_location": "reward", "kl_estimator": "k1"},  # per token
        {"method": "grpo", "beta": 0.04, "kl_target": 0.1},  # adaptive β, checkpointed
    ],
)
def test_kl_in_the_reward_and_an_adaptive_beta_run(usage: dict[str, Any], tmp_path: Path) -> None:
    result = run_pipeline(parse_run_config(_small(usage=usage)), out=str(tmp_path / "run"))
    assert (result.run_dir / "checkpoints" / "step-000004").is_dir()


# -- RLHF through a learned reward ----------------------------------------------------------------


def test_a_reward_model_scores_a_reply_that_stopped_at_once() -> None:
    """A sampled completion may be empty (end of turn first); a learned reward scores it, prompt + EOS."""
    tokenizer = build_tokenizer()
    model = build_reward_model(tokenizer, demo=True, max_length=64)
    scores = model.score(["what colour is the sky ?"] * 2, ["", "sure , blue"])
    (empty,) = model.tokenize(["what colour is the sky ?"], [""])
    assert empty.completion_ids == (tokenizer.eos_token_id,)
    assert scores.shape == (2, 1) and bool(torch.isfinite(scores).all())


def test_the_overoptimisation_plot_stacks_proxy_gold_and_kl(tmp_path: Path) -> None:
    rows = [
        {"step": float(step), "reward/mean": step / 10, "reward/proxy": step / 10, "reward/gold": -abs(step - 12) / 10}
        | {"kl/k1": step / 20}
        for step in range(1, 31)
    ]
    config = {"reward": [{"kind": "preference_model", "path": "trained", "name": "proxy"}, GOLD]}
    assert gold_columns(config) == ["reward/gold"]
    assert gold_columns({"reward": [{"kind": "rule", "method": "demo_rule", "weight": 0}]}) == ["reward/demo_rule"]
    assert plot_overoptimisation(rows, tmp_path / "over.png", gold_columns(config)) is not None
    assert plot_overoptimisation(rows, tmp_path / "none.png", []) is None  # no gold score: no plot
    assert ("overoptimisation.png", OVEROPTIMISATION[1]) in write_plots(tmp_path, rows, config)


GOLD = {"kind": "rule", "method": "demo_rule", "name": "gold", "weight": 0}


@pytest.mark.slow
def test_rlhf_demo_raises_the_proxy_reward_and_logs_the_gold_score_and_kl(tmp_path: Path) -> None:
    """The example, smaller (about 40 s on 2 cores): the learned reward rises; gold and KL are logged and plotted.

    Measured (these settings): proxy 0.0 → 1.0 over 20 steps (mean of the last 5 minus the first 3 ≈ +0.9),
    gold rule score −1.17 → −0.42, per-token KL 0 → 0.56. The full example's gold score rises and then falls.
    """
    overrides = [
        "warm_start.steps=300",
        "reward_model.steps=150",
        "online.prompts_per_step=8",
        "train.steps=20",
        "train.eval_every=0",
        "train.checkpoint_every=0",
        "train.progress=false",
        "run.report_to=[]",
    ]
    result = run_pipeline(load_run_config(RLHF_EXAMPLE, overrides), out=str(tmp_path / "rlhf"))
    rows = [row for row in _rows(result.run_dir) if row.get("reward/mean")]
    assert len(rows) == 20
    proxy = [float(row["reward/proxy"]) for row in rows]
    assert sum(proxy[-5:]) / 5 >= sum(proxy[:3]) / 3 + 0.3, proxy
    for row in rows:  # the gold score and the KL are logged at every step
        assert row["reward/gold"] != "" and row["kl/k1"] != ""
    assert [float(row["reward/mean"]) for row in rows] == proxy  # the gold score has weight 0
    assert (result.run_dir / "overoptimisation.png").is_file()
    assert "overoptimisation.png" in (result.run_dir / "report.md").read_text(encoding="utf-8")


# -- the RLVR demo -----------------------------------------------------------------------------


@pytest.mark.slow
def test_rlvr_demo_raises_heldout_exact_answer_accuracy_above_the_sft_start(tmp_path: Path) -> None:
    """The example with fewer online steps (about 30 s on 2 cores): accuracy must clearly rise."""
    overrides = ["train.steps=30", "train.eval_every=0", "train.checkpoint_every=0", "run.report_to=[]"]
    result = run_pipeline(load_run_config(EXAMPLE, overrides), out=str(tmp_path / "rlvr"))
    accuracy = _accuracy(result.run_dir)
    assert accuracy[0] <= 0.2  # the SFT start answers in sentences, rarely with the bare answer
    assert accuracy[30] >= accuracy[0] + 0.5, accuracy
