"""The report's safety section: its table and plots from hand-made final metrics, nothing without them."""

from __future__ import annotations

from pathlib import Path

from prefcore.report import write_report
from prefcore.safety_report import ATTACK_PLOT
from prefcore.safety_report import REFUSAL_PLOT
from prefcore.safety_report import safety_section

METRICS = {
    "refusal/refusal_rate": 0.9,
    "refusal/harm/refusal_rate": 0.9,
    "refusal/harm/partial_refusal": 0.1,
    "refusal/harm/disallowed": 1.0,
    "refusal/care/refusal_rate": 0.05,
    "refusal/care/partial_refusal": 0.0,
    "refusal/care/disallowed": 0.0,
    "refusal/reference_harm/refusal_rate": 0.25,
    "refusal/reference_care/refusal_rate": 0.2,
    "attack_success/role_play/attack_success": 0.6,
    "attack_success/role_play/attack_success_defended": 0.0,
    "attack_success/char_noise/attack_success": 0.3,
    "attack_success/char_noise/attack_success_defended": 0.25,
    "attack_success/attack_success": 0.45,  # the mean: not a transformation
}


def test_the_section_has_a_row_per_category_and_both_plots(tmp_path: Path) -> None:
    lines = safety_section(tmp_path, METRICS)
    assert lines[0] == "## Safety"
    assert "| harm | refuse | 0.25 | 0.9 | 0.1 |" in lines
    assert "| care | comply | 0.2 | 0.05 | 0 |" in lines
    assert f"![Refusal and over-refusal per category]({REFUSAL_PLOT})" in lines
    assert any(ATTACK_PLOT in line for line in lines)
    for name in (REFUSAL_PLOT, ATTACK_PLOT):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_safety_evaluator_no_section(tmp_path: Path) -> None:
    assert safety_section(tmp_path, {"win_rate/win_rate": 0.6}) == []
    assert not (tmp_path / REFUSAL_PLOT).exists() and not (tmp_path / ATTACK_PLOT).exists()


def test_the_report_carries_it(tmp_path: Path) -> None:
    path = write_report(tmp_path, config={}, metrics_csv=tmp_path / "none.csv", eval_metrics=METRICS, samples=[])
    text = path.read_text(encoding="utf-8")
    assert "## Safety" in text and REFUSAL_PLOT in text
    plain = write_report(tmp_path / "plain", config={}, metrics_csv=tmp_path / "x.csv", eval_metrics={}, samples=[])
    assert "## Safety" not in plain.read_text(encoding="utf-8")
