"""report.md's per-group table: a row per group for each per-group metric, then the worst group and the gap."""

from __future__ import annotations

from prefcore.report import groups_section


def test_per_group_rows_worst_and_gap() -> None:
    metrics = {
        "group_win_rate/win_rate/fast": 0.75,
        "group_win_rate/win_rate/full": 0.5,
        "group_win_rate/worst_group_win_rate": 0.5,
        "group_win_rate/win_rate_gap": 0.25,
        "group_win_rate/num_pairs/fast": 3.0,  # no worst_group_num_pairs: not a per-group metric column
        "distributional_alignment/js_distance/fast": 0.1,
        "distributional_alignment/js_distance/full": 0.4,
        "distributional_alignment/worst_group_js_distance": 0.4,
        "distributional_alignment/js_distance_gap": 0.3,
        "kl/kl": 1.0,
    }
    lines = groups_section(metrics)
    assert lines[:2] == ["## Per group", ""]
    assert lines[2] == "| group | group_win_rate/win_rate | distributional_alignment/js_distance |"
    assert lines[4:8] == [
        "| fast | 0.75 | 0.1 |",
        "| full | 0.5 | 0.4 |",
        "| worst group | 0.5 | 0.4 |",
        "| best − worst gap | 0.25 | 0.3 |",
    ]


def test_no_group_metrics_no_section() -> None:
    assert groups_section({"win_rate/win_rate": 0.6, "kl/kl": 1.0}) == []
