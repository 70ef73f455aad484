"""The disagreement report as markdown, a heat map of group × category agreement, and a printed summary.

The plot uses matplotlib's object API on an Agg canvas, as the run report does, so writing
it changes no global backend or figure state.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from prefcore.atomic import atomic_write_bytes
from prefcore.atomic import atomic_write_text
from prefcore.data.records import Text
from prefcore.disagreement.stats import MIN_ANNOTATORS
from prefcore.disagreement.stats import Agreement
from prefcore.disagreement.stats import Disagreement
from prefcore.disagreement.stats import ItemRow
from prefcore.report import markdown_table

__all__ = ["HEAT_MAP", "NUMBERS", "REPORT", "plot_heat_map", "render_markdown", "summary", "write_disagreement_report"]

REPORT = "disagreement.md"
NUMBERS = "disagreement.json"
HEAT_MAP = "agreement_by_category.png"

_EXCERPT = 60


def _excerpt(text: Text) -> str:
    if not isinstance(text, str):
        text = " / ".join(f"{message.role}: {message.content}" for message in text)
    text = " ".join(text.split())
    return text if len(text) <= _EXCERPT else text[: _EXCERPT - 1] + "…"


def _alpha(agreement: Agreement) -> str:
    return f"{agreement.alpha:.3f}" if agreement.defined else f"n/a ({agreement.reason})"


def _share(item: ItemRow, group: str) -> str:
    if group not in item.groups:
        return "-"
    votes, share = item.groups[group]
    return f"{share:.2f} ({votes})"


def _notes(report: Disagreement) -> list[str]:
    notes = list(report.warnings)
    if report.ungrouped:
        notes.append(
            f"{len(report.ungrouped)} annotator(s) have no {report.by!r} group: {', '.join(report.ungrouped)}; "
            "their votes count in the overall α and the item splits' totals, in no group"
        )
    for row in report.groups:
        if row.annotators < MIN_ANNOTATORS:
            notes.append(
                f"group {row.group!r} has {row.annotators} annotator(s): too few for α "
                f"(it needs {MIN_ANNOTATORS}); its votes still count in the splits and gaps"
            )
    if report.unattributed:
        notes.append(f"{report.unattributed} record(s) without annotator_id left out")
    if report.not_pairs:
        notes.append(f"{report.not_pairs} record(s) that make no pair (binary labels, single ratings) left out")
    return notes


def render_markdown(report: Disagreement, *, top: int = 10, heat_map: str | None = HEAT_MAP) -> str:
    """The whole report as markdown; ``heat_map`` is the plot's file name beside it (None: no plot)."""
    groups = [row.group for row in report.groups]
    votes = sum(item.votes for item in report.items)
    lines = [
        f"# Disagreement between {report.by!r} groups",
        "",
        f"{report.annotators} annotators in {len(groups)} groups ({', '.join(groups) or 'none'}), "
        f"{votes} votes on {len(report.items)} items. Known attributes: {', '.join(report.known_attributes)}.",
        "",
        "A vote is 1 for the item's first completion, 0 for the second, ½ for a tie; a share is the first's "
        "share of a group's votes. Agreement is Krippendorff's α (nominal within groups and overall, interval "
        "between groups, each group one rater with its share): 1 is full agreement, 0 what chance gives.",
        "",
        f"- overall α: {_alpha(report.overall)}",
        f"- between-group α: {_alpha(report.between)}",
    ]
    notes = _notes(report)
    if notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in notes]
    lines += ["", "## Agreement within each group", ""]
    lines += markdown_table(
        ("group", "annotators", "votes", "items", "α within (nominal)"),
        [(row.group, row.annotators, row.votes, row.items, _alpha(row.agreement)) for row in report.groups],
    )
    gaps = report.largest_gaps(top)
    lines += ["", f"## Items with the largest between-group gaps (top {top})", ""]
    if gaps:
        lines += markdown_table(
            ("item", "category", "prompt", "first", "second", *(f"{g} share (votes)" for g in groups), "gap"),
            [
                (
                    item.item,
                    item.category,
                    _excerpt(item.prompt),
                    _excerpt(item.first),
                    _excerpt(item.second),
                    *(_share(item, group) for group in groups),
                    f"{item.gap:.2f}",
                )
                for item in gaps
            ],
        )
    else:
        lines.append("No item was answered by two or more groups.")
    lines += ["", f"## Categories where groups disagree most (field {report.category_field!r})", ""]
    lines += markdown_table(
        ("category", "items", "mean gap", "α between", *(f"α {g}" for g in groups)),
        [
            (
                row.category,
                row.items,
                "n/a" if math.isnan(row.mean_gap) else f"{row.mean_gap:.2f}",
                _alpha(row.between),
                *(_alpha(row.by_group[group]) for group in groups),
            )
            for row in report.categories_by_gap()
        ],
    )
    if heat_map:
        lines += ["", f"![agreement within each group, per category]({heat_map})"]
    lines += ["", "## Every item", ""]
    lines += markdown_table(
        ("item", "category", "votes", "share", *(f"{g} share (votes)" for g in groups)),
        [
            (item.item, item.category, item.votes, f"{item.share:.2f}", *(_share(item, g) for g in groups))
            for item in report.items
        ],
    )
    return "\n".join(lines) + "\n"


def plot_heat_map(report: Disagreement, path: Path) -> Path | None:
    """Group × category α (within each group) as a heat map; cells without α are grey and say n/a."""
    groups = [row.group for row in report.groups]
    categories = [row.category for row in report.categories]
    if not groups or not categories:
        return None
    values = [[row.by_group[group].alpha for row in report.categories] for group in groups]
    figure = Figure(figsize=(max(5.5, 1.2 * len(categories) + 2), max(2.5, 0.6 * len(groups) + 1.5)))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.set_facecolor("#d9d9d9")  # undefined cells show the background
    masked = [[value if not math.isnan(value) else float("nan") for value in row] for row in values]
    image = axes.imshow(masked, cmap="RdYlGn", vmin=-1.0, vmax=1.0, aspect="auto")
    axes.set_xticks(range(len(categories)), labels=categories, rotation=30, ha="right")
    axes.set_yticks(range(len(groups)), labels=groups)
    for y, row in enumerate(values):
        for x, value in enumerate(row):
            axes.text(x, y, "n/a" if math.isnan(value) else f"{value:.2f}", ha="center", va="center", fontsize=8)
    axes.set_title(f"Krippendorff's α within each {report.by} group,\nper {report.category_field}", fontsize=10)
    figure.colorbar(image, ax=axes, label="α")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    atomic_write_bytes(path, buffer.getvalue())
    return path


def summary(report: Disagreement, *, top: int = 3) -> str:
    """A few lines for the terminal: α overall and between groups, each group, the largest gaps and categories."""
    lines = [
        f"Disagreement between {report.by!r} groups: {report.annotators} annotators, {len(report.items)} items",
        f"  overall α {_alpha(report.overall)}; between groups α {_alpha(report.between)}",
    ]
    for row in report.groups:
        lines.append(f"  {row.group}: {row.annotators} annotators, α within {_alpha(row.agreement)}")
    for item in report.largest_gaps(top):
        shares = ", ".join(f"{g} {share:.2f}" for g, (_, share) in item.groups.items())
        lines.append(f"  gap {item.gap:.2f} on item {item.item} ({item.category}): {shares}")
    ranked = [row for row in report.categories_by_gap() if not math.isnan(row.mean_gap)]
    if ranked:
        lines.append(
            "  categories by mean gap: " + ", ".join(f"{row.category} {row.mean_gap:.2f}" for row in ranked[:top])
        )
    lines += [f"  note: {note}" for note in _notes(report)]
    return "\n".join(lines)


def write_disagreement_report(report: Disagreement, out_dir: str | Path, *, top: int = 10) -> tuple[Path, Path | None]:
    """``disagreement.md``, ``disagreement.json`` and the heat map in ``out_dir``.

    Returns the markdown's and the plot's paths (no plot without groups or categories).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plot = plot_heat_map(report, out / HEAT_MAP)
    markdown = out / REPORT
    atomic_write_text(markdown, render_markdown(report, top=top, heat_map=HEAT_MAP if plot else None))
    atomic_write_text(out / NUMBERS, json.dumps(report.to_dict(top=top), indent=2, ensure_ascii=False) + "\n")
    return markdown, plot
