"""The report's safety section: refusal against over-refusal per category, attack success per transformation.

OR-Bench's lesson (Cui et al. 2024) is that refusal of disallowed requests and over-refusal
of harmless look-alikes move together, so the report never shows one without the other:
one bar chart puts every policy category's refusal rate side by side (for the policy and,
when measured, the reference), disallowed categories marked "should refuse" and allowed
ones "should comply"; a second shows attack success per jailbreak transformation without
and with the inference-time defences. Both read the final evaluation metrics of the
``refusal`` and ``attack_success`` evaluators (``<evaluator>/<category>/refusal_rate``,
``<evaluator>/<transformation>/attack_success[_defended]``); a run without them has no
safety section.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["ATTACK_PLOT", "REFUSAL_PLOT", "plot_attack_success", "plot_refusal", "safety_section"]

REFUSAL_PLOT = "refusal.png"
ATTACK_PLOT = "attack_success.png"


def _categories(metrics: Mapping[str, float]) -> list[tuple[str, str, bool]]:
    """``(evaluator, category, disallowed)`` of every category the refusal evaluator reported."""
    found = []
    for key, value in metrics.items():
        if key.endswith("/disallowed") and key.count("/") == 2:
            evaluator, category, _ = key.split("/")
            found.append((evaluator, category, bool(value)))
    return found


def _transformations(metrics: Mapping[str, float]) -> list[tuple[str, str]]:
    """``(evaluator, transformation)`` of every transformation the attack evaluator reported."""
    return [
        tuple(key.split("/")[:2])  # type: ignore[misc]
        for key in metrics
        if key.count("/") == 2 and key.endswith("/attack_success")
    ]


def _value(metrics: Mapping[str, float], key: str) -> float:
    value = metrics.get(key)
    return float(value) if value is not None and math.isfinite(value) else math.nan


def _bars(title: str, labels: list[str], series: dict[str, list[float]], ylabel: str, path: Path) -> Path:
    figure = Figure(figsize=(max(6.4, 1.2 * len(labels) + 2), 3.8), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.set_title(title)
    axes.set_ylabel(ylabel)
    axes.set_ylim(0.0, 1.05)
    width = 0.8 / max(1, len(series))
    for index, (name, values) in enumerate(series.items()):
        positions = [i + (index - (len(series) - 1) / 2) * width for i in range(len(labels))]
        axes.bar(positions, [0.0 if math.isnan(v) else v for v in values], width, label=name)
    axes.set_xticks(range(len(labels)))
    axes.set_xticklabels(labels, fontsize="small")
    axes.grid(axis="y", alpha=0.3)
    axes.legend(fontsize="small")
    from prefcore.report import save_figure  # prefcore.report imports this module

    return save_figure(figure, path)


def plot_refusal(metrics: Mapping[str, float], path: Path) -> Path | None:
    """Refusal rate per category (policy, and reference when measured); None without refusal metrics."""
    categories = _categories(metrics)
    if not categories:
        return None
    labels = [f"{category}\n({'should refuse' if bad else 'should comply'})" for _, category, bad in categories]
    series = {"policy": [_value(metrics, f"{e}/{c}/refusal_rate") for e, c, _ in categories]}
    reference = [_value(metrics, f"{e}/reference_{c}/refusal_rate") for e, c, _ in categories]
    if not all(math.isnan(value) for value in reference):
        series = {"reference": reference, **series}
    return _bars("Refusal (disallowed) and over-refusal (allowed) per category", labels, series, "refusal rate", path)


def plot_attack_success(metrics: Mapping[str, float], path: Path) -> Path | None:
    """Attack success per transformation, without and with the defences; None without attack metrics."""
    found = _transformations(metrics)
    if not found:
        return None
    series = {"no defence": [_value(metrics, f"{e}/{t}/attack_success") for e, t in found]}
    defended = [_value(metrics, f"{e}/{t}/attack_success_defended") for e, t in found]
    if not all(math.isnan(value) for value in defended):
        series["AlignedGenerator + RA-LLM"] = defended
    labels = [t for _, t in found]
    return _bars("Attack success per jailbreak transformation", labels, series, "attack success rate", path)


def safety_section(run_dir: Path, metrics: Mapping[str, float]) -> list[str]:
    """The report's "Safety" lines, plots written into ``run_dir``; empty when no safety evaluator ran."""
    lines: list[str] = []
    categories = _categories(metrics)
    if categories:
        rows = []
        for evaluator, category, bad in categories:
            rows.append(
                (
                    category,
                    "refuse" if bad else "comply",
                    _value(metrics, f"{evaluator}/reference_{category}/refusal_rate"),
                    _value(metrics, f"{evaluator}/{category}/refusal_rate"),
                    _value(metrics, f"{evaluator}/{category}/partial_refusal"),
                )
            )
        from prefcore.report import markdown_table

        lines += markdown_table(("Category", "Expected", "Reference refusal", "Policy refusal", "Partial"), rows)
        lines += [""]
    if plot_refusal(metrics, Path(run_dir) / REFUSAL_PLOT) is not None:
        lines += [f"![Refusal and over-refusal per category]({REFUSAL_PLOT})", ""]
    if plot_attack_success(metrics, Path(run_dir) / ATTACK_PLOT) is not None:
        lines += [f"![Attack success per transformation, with and without defences]({ATTACK_PLOT})", ""]
    return ["## Safety", "", *lines] if lines else []
