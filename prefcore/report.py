"""The run report: ``report.md`` plus PNG plots, written into the run folder.

A reader should see in one page what ran (methods, options, settings), where the policy
ended (final evaluation metrics), how it compares with the reference it started from and
with itself before training, how training went (loss, reward margin and win-rate curves
from ``metrics.csv``) and what it actually writes (randomly drawn samples, never picked).

Plots use matplotlib's object API on an Agg canvas, never ``pyplot``, so writing a report
changes no global backend or figure state of the calling process.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from prefcore.atomic import atomic_write_bytes
from prefcore.engine.metrics_log import STEP
from prefcore.engine.metrics_log import read_metrics_csv
from prefcore.engine.metrics_log import write_text_atomically
from prefcore.methods import KINDS
from prefcore.safety_report import safety_section

MAX_CELL_CHARS = 600
"""Longer sample cells are cut so one runaway completion does not swamp the table."""

Rows = Sequence[Mapping[str, float]]


# -- metrics lookup ----------------------------------------------------------------------


def matching_columns(columns: Sequence[str], name: str) -> list[str]:
    """Columns that hold metric ``name``: ``name`` itself or ``<evaluator>/<name>``."""
    return [column for column in columns if column == name or column.endswith(f"/{name}")]


def _metric(metrics: Mapping[str, float], name: str) -> tuple[str, float] | None:
    for key in matching_columns(list(metrics), name):
        return key, float(metrics[key])
    return None


def _series(rows: Rows, column: str) -> tuple[list[float], list[float]]:
    steps: list[float] = []
    values: list[float] = []
    for row in rows:
        value = row.get(column)
        if value is not None and math.isfinite(value) and STEP in row:
            steps.append(row[STEP])
            values.append(value)
    return steps, values


def _columns(rows: Rows) -> list[str]:
    return list(dict.fromkeys(column for row in rows for column in row))


# -- plots -------------------------------------------------------------------------------


def _new_axes(title: str, ylabel: str) -> tuple[Figure, Any]:
    figure = Figure(figsize=(6.4, 3.8), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.set_title(title)
    axes.set_xlabel("step")
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    return figure, axes


def _moving_average(values: Sequence[float], window: int) -> list[float]:
    averaged: list[float] = []
    total = 0.0
    for index, value in enumerate(values):
        total += value
        if index >= window:
            total -= values[index - window]
        averaged.append(total / min(index + 1, window))
    return averaged


def save_figure(figure: Figure, path: Path) -> Path:
    """Lay out ``figure`` and write it as a PNG atomically (a killed run never leaves half an image)."""
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    atomic_write_bytes(path, buffer.getvalue())
    return path


def plot_loss(rows: Rows, path: Path) -> Path | None:
    """Training loss by step, with a moving average once there are enough points to need one."""
    steps, values = _series(rows, "loss")
    if not steps:
        return None
    figure, axes = _new_axes("Training loss", "loss")
    window = max(1, len(values) // 20)
    if window > 1:
        axes.plot(steps, values, color="tab:blue", alpha=0.3, linewidth=0.8, label="per step")
        axes.plot(steps, _moving_average(values, window), color="tab:blue", label=f"mean of {window} steps")
        axes.legend()
    else:
        axes.plot(steps, values, color="tab:blue", marker="." if len(values) < 50 else None)
    return save_figure(figure, path)


def plot_reward_margin(rows: Rows, path: Path) -> Path | None:
    """Implicit reward margin (and accuracy) on training batches, plus held-out margins."""
    columns = _columns(rows)
    margin_column = "rewards/margins" if "rewards/margins" in columns else "rewards/margin"  # TRL's name first
    train_steps, margins = _series(rows, margin_column)
    heldout = [column for column in matching_columns(columns, "reward_margin") if column != margin_column]
    if not train_steps and not heldout:
        return None
    figure, axes = _new_axes("Reward margin (chosen − rejected)", "margin")
    if train_steps:
        axes.plot(train_steps, margins, color="tab:green", label="train batches")
    for column in heldout:
        steps, values = _series(rows, column)
        axes.plot(steps, values, marker="o", linestyle="--", label=f"held out ({column})")
    axes.axhline(0.0, color="grey", linewidth=0.8)
    accuracy_column = "rewards/accuracies" if "rewards/accuracies" in columns else "rewards/accuracy"
    accuracy_steps, accuracy = _series(rows, accuracy_column)
    if accuracy_steps:
        twin = axes.twinx()
        twin.plot(accuracy_steps, accuracy, color="tab:orange", alpha=0.6, linewidth=0.8, label="train accuracy")
        twin.set_ylabel("accuracy")
        twin.set_ylim(0.0, 1.0)
        twin.legend(loc="lower right")
    axes.legend(loc="upper left")
    return save_figure(figure, path)


def plot_win_rate(rows: Rows, path: Path) -> Path | None:
    """Judged win rate against the reference by step, with its interval when logged."""
    columns = _columns(rows)
    win_columns = matching_columns(columns, "win_rate")
    if not win_columns:
        return None
    figure, axes = _new_axes("Win rate against the reference", "win rate")
    for column in win_columns:
        steps, values = _series(rows, column)
        line = axes.plot(steps, values, marker="o", label=column)[0]
        low_steps, low = _series(rows, f"{column}_low")
        high_steps, high = _series(rows, f"{column}_high")
        if low_steps and low_steps == high_steps:
            axes.fill_between(low_steps, low, high, color=line.get_color(), alpha=0.2, label="95% interval")
    axes.axhline(0.5, color="grey", linestyle=":", label="parity with the reference")
    axes.set_ylim(0.0, 1.0)
    axes.legend()
    return save_figure(figure, path)


def plot_online(rows: Rows, path: Path) -> Path | None:
    """An online run's curves side by side: reward (total and components), KL to the reference,
    entropy and completion length, held-out accuracy; a proxy reward rising while a gold
    component (weight 0) falls and the KL grows is over-optimisation, visible at a glance."""
    columns = _columns(rows)
    if "reward/mean" not in columns:
        return None
    figure = Figure(figsize=(10.0, 6.4), dpi=100)
    FigureCanvasAgg(figure)
    panels = figure.subplots(2, 2, sharex=True)
    series = (
        (panels[0][0], "Reward", [c for c in columns if c.startswith("reward/") and c != "reward/std"]),
        (panels[0][1], "KL to the reference (per token)", [c for c in ("kl/k1", "kl/k3") if c in columns]),
        (panels[1][0], "Entropy and completion length", [c for c in ("entropy", "completion_length") if c in columns]),
        (panels[1][1], "Held-out accuracy", matching_columns(columns, "accuracy")),
    )
    for axes, title, names in series:
        axes.set_title(title)
        axes.grid(alpha=0.3)
        for name in names:
            steps, values = _series(rows, name)
            if steps:
                axes.plot(steps, values, marker="o" if len(steps) < 12 else None, label=name)
        if names:
            axes.legend(fontsize="small")
    for axes in panels[1]:
        axes.set_xlabel("step")
    return save_figure(figure, path)


def plot_reward_kl(rows: Rows, path: Path) -> Path | None:
    """The reward–KL trajectory of an online run: each reward column against the per-token KL to the reference.

    RLHF buys reward with divergence from the reference (Ziegler et al. 2019, https://arxiv.org/abs/1909.08593;
    Gao et al. 2022 plot proxy and gold reward against the KL): the higher a curve at a given KL, the
    better the trade. Moving averages over a twelfth of the run; the first and last steps are marked.
    """
    columns = _columns(rows)
    if "reward/mean" not in columns or "kl/k1" not in columns:
        return None
    kl_steps, kl_values = _series(rows, "kl/k1")
    kl_by_step = dict(zip(kl_steps, kl_values, strict=True))
    figure, axes = _new_axes("Reward against KL to the reference", "reward")
    for name in (c for c in columns if c.startswith("reward/") and c != "reward/std"):
        steps, values = _series(rows, name)
        pairs = [(kl_by_step[step], value) for step, value in zip(steps, values, strict=True) if step in kl_by_step]
        if not pairs:
            continue
        window = max(1, len(pairs) // 12)
        x = _moving_average([kl for kl, _ in pairs], window)
        y = _moving_average([value for _, value in pairs], window)
        line = axes.plot(x, y, marker="." if len(pairs) < 40 else None, label=name)[0]
        axes.plot(x[:1], y[:1], marker="o", color=line.get_color(), linestyle="none")
        axes.plot(x[-1:], y[-1:], marker="s", color=line.get_color(), linestyle="none")
    axes.set_xlabel("KL to the reference (per token, k1)   ○ first step, □ last")
    axes.legend(fontsize="small")
    return save_figure(figure, path)


def gold_columns(config: Mapping[str, Any] | None) -> list[str]:
    """``reward/<name>`` of each weight-0 ``[[reward]]`` entry: scores logged beside the optimised reward.

    A component's name is its ``name``, else its plugin (``kind = "rule"``) or its kind, as
    ``prefcore.rewards.plan_rewards`` names it.
    """
    entries = (config or {}).get("reward") or []
    if isinstance(entries, Mapping):
        entries = [entries]
    columns = []
    for entry in entries:
        if isinstance(entry, Mapping) and entry.get("weight", 1.0) == 0:
            kind = entry.get("kind")
            name = entry.get("name") or (entry.get("method") if kind == "rule" else kind)
            columns.append(f"reward/{name}")
    return columns


def plot_overoptimisation(rows: Rows, path: Path, gold: Sequence[str]) -> Path | None:
    """The optimised (proxy) reward, the gold scores (weight 0, never optimised) and the KL, stacked on one step axis.

    Gao et al. 2022, "Scaling Laws for Reward Model Overoptimization" (https://arxiv.org/abs/2210.10760):
    as the policy moves away from the reference (KL up), the proxy keeps rising while the gold
    score peaks and falls. A dotted line marks where each gold score's moving average peaks.
    """
    columns = _columns(rows)
    gold = [column for column in gold if column in columns]
    if "reward/mean" not in columns or not gold:
        return None
    figure = Figure(figsize=(7.2, 7.6), dpi=100)
    FigureCanvasAgg(figure)
    panels = figure.subplots(3, 1, sharex=True)
    optimised = [c for c in columns if c.startswith("reward/") and c not in (*gold, "reward/mean", "reward/std")]
    label = optimised[0] if len(optimised) == 1 else "reward/mean"  # one optimised component is the total
    series = (
        (panels[0], "Proxy reward (optimised)", [("reward/mean", label)]),
        (panels[1], "Gold score (weight 0: logged, not optimised)", [(column, column) for column in gold]),
        (panels[2], "KL to the reference (per token)", [(c, c) for c in ("kl/k1", "kl/k3") if c in columns]),
    )
    for axes, title, names in series:
        axes.set_title(title)
        axes.grid(alpha=0.3)
        for column, name in names:
            steps, values = _series(rows, column)
            window = max(1, len(values) // 12)  # per-step rewards are noisy: a moving average shows the trend
            if window > 1:
                line = axes.plot(steps, values, alpha=0.3, linewidth=0.8)[0]
                smooth = _moving_average(values, window)
                axes.plot(steps, smooth, color=line.get_color(), label=f"{name} (mean of {window} steps)")
                if column in gold:
                    best = steps[max(range(len(smooth)), key=smooth.__getitem__)]
                    for panel in panels:
                        panel.axvline(best, color="grey", linestyle=":", linewidth=1.0)
            elif steps:
                axes.plot(steps, values, marker="o" if len(steps) < 12 else None, label=name)
        if names:
            axes.legend(fontsize="small")
    panels[2].set_xlabel("step")
    return save_figure(figure, path)


def plot_constraint(rows: Rows, path: Path) -> Path | None:
    """A constrained run (Safe-RLHF): the episode cost against its bound, the reward, and the multiplier λ."""
    columns = _columns(rows)
    if "lagrange/lambda" not in columns:
        return None
    figure = Figure(figsize=(7.2, 7.6), dpi=100)
    FigureCanvasAgg(figure)
    panels = figure.subplots(3, 1, sharex=True)
    series = (
        (panels[0], "Cost (mean episode cost; the bound d dashed)", ["cost/mean", "cost/window_mean"]),
        (panels[1], "Reward", ["reward/mean"]),
        (panels[2], "Lagrange multiplier λ", ["lagrange/lambda"]),
    )
    bound = _series(rows, "cost/bound")[1]
    if bound:
        panels[0].axhline(bound[-1], color="grey", linestyle="--", label="bound d")
    for axes, title, names in series:
        axes.set_title(title)
        axes.grid(alpha=0.3)
        for name in (name for name in names if name in columns):
            steps, values = _series(rows, name)
            axes.plot(steps, values, marker="o" if len(steps) < 12 else None, label=name)
        axes.legend(fontsize="small")
    panels[2].set_xlabel("step")
    return save_figure(figure, path)


def plot_reliability(rows: Rows, path: Path) -> Path | None:
    """Reliability diagram of the reward model (``reward_accuracy``'s bins at its last evaluation):
    accuracy against confidence per bin, on the diagonal when calibrated, each point labelled with its count."""
    columns = _columns(rows)
    found = matching_columns(columns, "reliability/0/confidence")
    if not found:
        return None
    prefix = found[0][: -len("0/confidence")]
    row = next((r for r in reversed(rows) if found[0] in r), None)
    if row is None:
        return None
    points = []
    for index in range(len(columns)):
        confidence, accuracy, count = (row.get(f"{prefix}{index}/{key}") for key in ("confidence", "accuracy", "count"))
        if confidence is None:
            break
        if count and accuracy is not None and math.isfinite(confidence) and math.isfinite(accuracy):
            points.append((confidence, accuracy, count))
    if not points:
        return None
    figure, axes = _new_axes("Reward-model calibration on held-out pairs", "accuracy")
    axes.set_xlabel("confidence sigmoid(r_chosen - r_rejected), folded")
    axes.plot([0.5, 1.0], [0.5, 1.0], color="grey", linestyle=":", label="perfect calibration")
    axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", label="bins")
    for confidence, accuracy, count in points:
        axes.annotate(f"{int(count)}", (confidence, accuracy), textcoords="offset points", xytext=(4, 4), fontsize=8)
    axes.set_xlim(0.5, 1.0)
    axes.set_ylim(0.0, 1.0)
    axes.legend()
    return save_figure(figure, path)


OVEROPTIMISATION = ("overoptimisation.png", "Proxy reward, gold score and KL (over-optimisation)")

PLOTS = (
    ("loss.png", "Training loss", plot_loss),
    ("online.png", "Online training: reward, KL, entropy, length, accuracy", plot_online),
    ("reward_kl.png", "Online training: the reward–KL trajectory", plot_reward_kl),
    ("constraint.png", "Constrained training: cost against its bound, reward, λ", plot_constraint),
    ("reward_margin.png", "Reward margin", plot_reward_margin),
    ("win_rate.png", "Win rate", plot_win_rate),
    ("reliability.png", "Reward-model calibration (reliability diagram)", plot_reliability),
)


def write_plots(run_dir: Path, rows: Rows, config: Mapping[str, Any] | None = None) -> list[tuple[str, str]]:
    """Every plot whose columns exist, as ``(file name, caption)`` of the files written.

    ``config`` (the run configuration) names the gold scores of the over-optimisation plot.
    """
    written = []
    for filename, caption, plot in PLOTS:
        if plot(rows, run_dir / filename) is not None:
            written.append((filename, caption))
    filename, caption = OVEROPTIMISATION
    if plot_overoptimisation(rows, run_dir / filename, gold_columns(config)) is not None:
        written.append((filename, caption))
    return written


# -- markdown ----------------------------------------------------------------------------


def format_value(value: Any) -> str:
    """A metric for a table: integers as such, floats to four significant digits, NaN as n/a."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if math.isnan(value):
        return "n/a"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.4g}"


def _cell(value: Any) -> str:
    text = format_value(value)
    if len(text) > MAX_CELL_CHARS:
        text = text[:MAX_CELL_CHARS] + "…"
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", "<br>") or " "


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(_cell(name) for name in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
    return lines


def _options(table: Mapping[str, Any]) -> str:
    return ", ".join(f"{key}={value!r}" for key, value in table.items() if key not in ("method", "weight"))


def what_ran(config: Mapping[str, Any]) -> list[str]:
    """The methods of each pipeline stage and every settings section."""
    lines = ["## What ran", ""]
    method_rows = []
    for kind in KINDS:
        tables = config.get(kind)
        if tables is None:
            continue
        for table in tables if isinstance(tables, list) else [tables]:
            weight = table.get("weight")
            name = str(table.get("method", "?"))
            if isinstance(tables, list) and weight is not None:
                name += f" (weight {format_value(weight)})"
            method_rows.append((kind.replace("_", " "), name, _options(table)))
    if method_rows:
        lines += [*markdown_table(("Stage", "Method", "Options"), method_rows), ""]
    settings = [
        (section, _options(values))
        for section, values in config.items()
        if section not in KINDS and isinstance(values, Mapping)
    ]
    if settings:
        lines += [*markdown_table(("Section", "Settings"), settings), ""]
    lines += [
        "<details><summary>Full configuration</summary>",
        "",
        "```json",
        json.dumps(config, indent=2, sort_keys=False, default=str),
        "```",
        "",
        "</details>",
        "",
    ]
    return lines


def comparison_with_reference(metrics: Mapping[str, float]) -> list[str]:
    """One sentence per reference comparison the evaluators measured."""
    found: list[str] = []
    win = _metric(metrics, "win_rate")
    if win is not None:
        key, value = win
        sentence = f"- **Judged win rate** (`{key}`): **{format_value(value)}**"
        low, high = metrics.get(f"{key}_low"), metrics.get(f"{key}_high")
        if low is not None and high is not None:
            sentence += f" (95% interval {format_value(low)}–{format_value(high)})"
        prefix = key[: -len("win_rate")]
        details = []
        if f"{prefix}num_prompts" in metrics:
            details.append(f"{format_value(metrics[f'{prefix}num_prompts'])} prompts")
        if f"{prefix}tie_rate" in metrics:
            details.append(f"ties {format_value(metrics[f'{prefix}tie_rate'])}")
        if f"{prefix}position_consistency" in metrics:
            details.append(f"judge order-consistent on {format_value(metrics[f'{prefix}position_consistency'])}")
        if details:
            sentence += "; " + ", ".join(details)
        found.append(sentence + ". 0.5 means no better than the reference; each pair is judged in both orders.")
    policy_score = _metric(metrics, "policy_score")
    reference_score = _metric(metrics, "reference_score")
    if policy_score is not None and reference_score is not None:
        found.append(
            f"- **Reward-model score**: policy {format_value(policy_score[1])} vs reference "
            f"{format_value(reference_score[1])} (difference {format_value(policy_score[1] - reference_score[1])})."
        )
    kl = _metric(metrics, "kl")
    if kl is not None:
        k3 = _metric(metrics, "kl_k3")
        extra = f", k3 estimate {format_value(k3[1])}" if k3 is not None else ""
        found.append(f"- **KL(π‖π_ref)** on policy samples: {format_value(kl[1])} nats per sequence{extra}.")
    accuracy = _metric(metrics, "preference_accuracy/accuracy")
    if accuracy is not None:
        found.append(
            f"- **Held-out preference accuracy** of the implicit reward: {format_value(accuracy[1])} "
            f"(0.5 when the policy still equals the reference)."
        )
    if not found:
        return []
    return ["## Policy vs reference", "", *found, ""]


def groups_section(metrics: Mapping[str, float]) -> list[str]:
    """One row per group for every per-group metric, then the worst group and the best − worst gap.

    A per-group metric is ``<evaluator>/<metric>/<group>`` beside ``<evaluator>/worst_group_<metric>``,
    as ``prefcore.group_evaluation`` writes them.
    """
    columns: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        parts = key.split("/")
        if len(parts) == 3 and f"{parts[0]}/worst_group_{parts[1]}" in metrics:
            columns.setdefault(f"{parts[0]}/{parts[1]}", {})[parts[2]] = value
    if not columns:
        return []
    groups = list(dict.fromkeys(group for values in columns.values() for group in values))
    rows: list[list[Any]] = [[group, *(values.get(group, "") for values in columns.values())] for group in groups]
    for label, suffix in (("worst group", "worst_group_"), ("best − worst gap", None)):
        row: list[Any] = [label]
        for name in columns:
            evaluator, metric = name.split("/")
            key = f"{evaluator}/{suffix}{metric}" if suffix else f"{name}_gap"
            row.append(metrics.get(key, ""))
        rows.append(row)
    return ["## Per group", "", *markdown_table(("group", *columns), rows), ""]


def before_and_after(rows: Rows, metrics: Mapping[str, float]) -> list[str]:
    """First and last logged value of every final evaluation metric that was logged more than once."""
    table = []
    for key in metrics:
        if key.rsplit("/", 1)[-1].startswith("num_"):
            continue
        steps, values = _series(rows, key)
        if len(values) < 2:
            continue
        table.append(
            (
                key,
                f"{format_value(values[0])} (step {format_value(steps[0])})",
                f"{format_value(values[-1])} (step {format_value(steps[-1])})",
                values[-1] - values[0],
            )
        )
    if not table:
        return []
    header = ("Metric", "first evaluation", "last evaluation", "change")
    return ["## Before and after training", "", *markdown_table(header, table), ""]


def samples_section(samples: Sequence[Mapping[str, Any]]) -> list[str]:
    if not samples:
        return []
    header = list(dict.fromkeys(key for row in samples for key in row))
    rows = [[row.get(key, "") for key in header] for row in samples]
    return [
        "## Samples",
        "",
        "Prompts drawn uniformly at random with the run's seed, not selected; "
        "`judge` is the position-controlled probability that the policy's completion is better.",
        "",
        *markdown_table(header, rows),
        "",
    ]


def data_section(data: Mapping[str, Any]) -> list[str]:
    """How the feedback was used: records trained on, held out, evaluation prompts, and where they came from."""
    if not data:
        return []
    return ["## Data", "", *markdown_table(("Data", "Value"), list(data.items())), ""]


def render_report(
    title: str,
    config: Mapping[str, Any],
    rows: Rows,
    eval_metrics: Mapping[str, float],
    samples: Sequence[Mapping[str, Any]],
    plots: Sequence[tuple[str, str]],
    data: Mapping[str, Any] | None = None,
    safety: Sequence[str] = (),
) -> str:
    """The text of ``report.md``; ``safety``: the lines of ``prefcore.safety_report.safety_section``."""
    lines = [f"# {title}", ""]
    outputs = ["`metrics.csv`" if rows else None, *[f"`{name}`" for name, _ in plots]]
    listed = ", ".join(item for item in outputs if item)
    if listed:
        lines += [f"Files in this folder: {listed}.", ""]
    lines += what_ran(config)
    lines += data_section(data or {})
    lines += ["## Final evaluation", ""]
    if eval_metrics:
        lines += [*markdown_table(("Metric", "Value"), list(eval_metrics.items())), ""]
    else:
        lines += ["No evaluator ran.", ""]
    lines += comparison_with_reference(eval_metrics)
    lines += groups_section(eval_metrics)
    lines += before_and_after(rows, eval_metrics)
    if plots:
        lines += ["## Training curves", ""]
        for filename, caption in plots:
            lines += [f"![{caption}]({filename})", ""]
    lines += list(safety)
    lines += samples_section(samples)
    return "\n".join(lines)


def write_report(
    run_dir: Path,
    *,
    config: Mapping[str, Any],
    metrics_csv: Path,
    eval_metrics: Mapping[str, float],
    samples: Sequence[Mapping[str, Any]],
    title: str = "prefcore run",
    data: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``report.md`` and the plots into ``run_dir``; returns the report's path.

    Arguments:
        run_dir: the run folder (created if missing).
        config: the resolved run configuration as plain data (``RunConfig.to_dict()``).
        metrics_csv: the run's metrics file; plots are drawn from it when it exists.
        eval_metrics: the final evaluation metrics, keyed ``<evaluator>/<metric>``.
        samples: sample rows from the evaluators, shown as a table.
        title: the report's heading.
        data: how the feedback was split (counts of training and held-out records, evaluation
            prompts, their sources), shown as the "Data" table.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    rows = read_metrics_csv(Path(metrics_csv)) if Path(metrics_csv).exists() else []
    plots = write_plots(run_dir, rows, config)
    path = run_dir / "report.md"
    safety = safety_section(run_dir, eval_metrics)
    write_text_atomically(path, render_report(title, config, rows, eval_metrics, samples, plots, data, safety))
    return path
