"""The run report: markdown sections from the metrics, PNG plots only for logged columns."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from prefcore.engine.metrics_log import MetricsCSVWriter
from prefcore.report import write_report

CONFIG = {
    "run": {"name": "demo", "seed": 0},
    "train": {"steps": 40, "learning_rate": 0.001},
    "feedback": {"method": "preference_file", "weight": 1.0, "path": "pairs.jsonl"},
    "usage": [{"method": "dpo", "weight": 1.0, "beta": 0.1}, {"method": "sft", "weight": 0.5}],
    "evaluation": [{"method": "win_rate", "weight": 1.0}, {"method": "kl", "weight": 1.0}],
}
FINAL = {
    "win_rate/win_rate": 0.7,
    "win_rate/win_rate_low": 0.6,
    "win_rate/win_rate_high": 0.8,
    "win_rate/tie_rate": 0.05,
    "win_rate/position_consistency": 0.9,
    "win_rate/num_prompts": 64.0,
    "kl/kl": 1.25,
    "kl/kl_k3": 1.5,
}
SAMPLES = [
    {"index": 3, "prompt": "what | is\nthe sky", "policy": "blue", "reference": "red", "judge": 0.75},
    {"index": 9, "prompt": "two plus two", "policy": "four", "reference": "five", "judge": 1.0},
]


def write_metrics(path: Path, *, evaluations: bool = True, rewards: bool = True) -> None:
    writer = MetricsCSVWriter(path)
    if evaluations:
        writer.write(
            0, {"win_rate/win_rate": 0.5, "win_rate/win_rate_low": 0.4, "win_rate/win_rate_high": 0.6, "kl/kl": 0.0}
        )
    for step in range(1, 41):
        metrics = {"loss": 0.7 - step * 0.01}
        if rewards:
            metrics.update({"rewards/margin": step * 0.02, "rewards/accuracy": min(1.0, 0.5 + step * 0.01)})
        writer.write(step, metrics)
        if evaluations and step % 20 == 0:
            logged = {key: value for key, value in FINAL.items() if not key.endswith(("tie_rate", "num_prompts"))}
            writer.write(step, logged)


def assert_png(path: Path) -> None:
    assert path.exists()
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size[0] > 100 and image.size[1] > 100
        image.verify()


def test_full_report(tmp_path: Path) -> None:
    write_metrics(tmp_path / "metrics.csv")
    report = write_report(
        tmp_path,
        config=CONFIG,
        metrics_csv=tmp_path / "metrics.csv",
        eval_metrics=FINAL,
        samples=SAMPLES,
        title="prefcore run: demo",
    )
    assert report == tmp_path / "report.md"
    text = report.read_text()
    for name in ("loss.png", "reward_margin.png", "win_rate.png"):
        assert_png(tmp_path / name)
        assert f"]({name})" in text
    assert text.startswith("# prefcore run: demo\n")
    assert "| usage | dpo (weight 1) | beta=0.1 |" in text
    assert "| feedback | preference_file | path='pairs.jsonl' |" in text
    assert "| win_rate/win_rate | 0.7 |" in text
    assert "**0.7** (95% interval 0.6–0.8); 64 prompts, ties 0.05, judge order-consistent on 0.9" in text
    assert "KL(π‖π_ref)** on policy samples: 1.25 nats per sequence, k3 estimate 1.5" in text
    assert "| win_rate/win_rate | 0.5 (step 0) | 0.7 (step 40) | 0.2 |" in text
    assert "| kl/kl_k3 | 1.5 (step 20) | 1.5 (step 40) | 0 |" in text
    assert "| 3 | what \\| is<br>the sky | blue | red | 0.75 |" in text


def test_only_plots_whose_columns_exist(tmp_path: Path) -> None:
    write_metrics(tmp_path / "metrics.csv", evaluations=False, rewards=False)
    report = write_report(tmp_path, config={}, metrics_csv=tmp_path / "metrics.csv", eval_metrics={}, samples=[])
    text = report.read_text()
    assert_png(tmp_path / "loss.png")
    assert not (tmp_path / "reward_margin.png").exists()
    assert not (tmp_path / "win_rate.png").exists()
    assert "win_rate.png" not in text
    assert "No evaluator ran." in text
    assert "## Samples" not in text


def test_without_metrics_file_the_report_still_says_what_ran(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    text = write_report(
        run_dir, config=CONFIG, metrics_csv=run_dir / "metrics.csv", eval_metrics=FINAL, samples=SAMPLES
    ).read_text()
    assert "## What ran" in text
    assert "## Training curves" not in text
    assert sorted(path.name for path in run_dir.iterdir()) == ["report.md"]


@pytest.mark.parametrize("value", [float("nan"), 3.0, 0.123456])
def test_metric_formatting(tmp_path: Path, value: float) -> None:
    text = write_report(
        tmp_path, config={}, metrics_csv=tmp_path / "none.csv", eval_metrics={"x/m": value}, samples=[]
    ).read_text()
    expected = {3.0: "3", 0.123456: "0.1235"}.get(value, "n/a")
    assert f"| x/m | {expected} |" in text


def test_the_data_section_reports_the_split(tmp_path: Path) -> None:
    data = {"training records": 86, "held-out records": 10, "evaluation prompts": 4, "held-out from": "split"}
    text = write_report(
        tmp_path, config={}, metrics_csv=tmp_path / "none.csv", eval_metrics={}, samples=[], data=data
    ).read_text()
    assert "## Data" in text
    assert "| training records | 86 |" in text and "| held-out records | 10 |" in text
    assert "| evaluation prompts | 4 |" in text
