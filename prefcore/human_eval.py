"""Human evaluation that closes the loop with ``prefcore annotate``: blind items out, answers back in.

Export: each held-out prompt with one completion of each of two models (the run's policy and
its reference, or any two) becomes an annotation item, ``{"id", "prompt", "completions"}``,
with the two completions in a seeded random order and no model name anywhere in the file.
Which model wrote which position is written to a separate key file (by default beside the
items folder, ``<DIR>.key.json``), so the folder handed to annotators reveals nothing:

    DIR/items.jsonl        blind items: prefcore annotate DIR/items.jsonl --out DIR/answers/<name>.jsonl
    DIR.key.json           {"models": [A, B], "items": {item id: [model of position 0, model of position 1]}}

Import reads every answer file under ``DIR/answers`` (``pairwise``/``tie`` comparisons and
``likert`` scores, as ``prefcore annotate`` writes them), maps each answer back to its model
through the key, and reports the win rate of model A (the policy) over B with the statistics
the judged win rate uses (``prefcore.plugins.evaluation.win_rate``):

    pairwise   score = 1 when A's completion is chosen, 0 when B's, 1/2 on a tie
    likert     score = 1 when A's completion is rated higher by that annotator, 0 lower, 1/2 equal
    win_rate   = mean score; the interval a percentile bootstrap over items (``bootstrap_interval``,
                 several annotators of one item are one cluster)

and inter-annotator agreement (``prefcore.annotate.agreement``: percent agreement, Cohen's and
Fleiss' κ for comparisons, Krippendorff's α for Likert scores) over items answered by two or
more annotators.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from typing import TextIO

from prefcore.annotate import agreement
from prefcore.annotate import item_id
from prefcore.atomic import atomic_write_text
from prefcore.console import write_line
from prefcore.data.records import text_to_json
from prefcore.errors import ConfigError
from prefcore.errors import DataError

__all__ = [
    "ANSWERS_FOLDER",
    "ITEMS_FILE",
    "HumanEvalResult",
    "default_key_path",
    "export_items",
    "export_run",
    "human_eval_from_cli",
    "import_answers",
]

ITEMS_FILE = "items.jsonl"
ANSWERS_FOLDER = "answers"


def default_key_path(out: str | os.PathLike[str]) -> Path:
    """``<DIR>.key.json``: beside the items folder, never inside it."""
    out = Path(out)
    return out.parent / f"{out.name}.key.json"


def export_items(
    prompts: Sequence[Any],
    first: Sequence[str],
    second: Sequence[str],
    out: str | os.PathLike[str],
    *,
    names: tuple[str, str] = ("policy", "reference"),
    key: str | os.PathLike[str] | None = None,
    seed: int = 0,
) -> tuple[Path, Path]:
    """Write blind items (positions shuffled with ``seed``) and the key apart; returns both paths.

    Arguments:
        prompts: the prompts, one per item.
        first, second: the completions of model ``names[0]`` and ``names[1]``, aligned with ``prompts``.
        out: the items folder (created).
        key: the key file (default ``default_key_path(out)``); refused inside ``out``.
    A prompt whose two completions are identical gives no item: there is nothing to compare.
    """
    if not len(prompts) == len(first) == len(second):
        raise ValueError(f"got {len(prompts)} prompts and {len(first)}, {len(second)} completions.")
    out = Path(out)
    key_path = Path(key) if key is not None else default_key_path(out)
    if out.resolve() in key_path.resolve().parents:
        raise DataError("the key must be kept apart from the items handed to annotators.", source=str(key_path))
    rng = random.Random(f"human_eval:{seed}")
    rows: list[str] = []
    positions: dict[str, list[str]] = {}
    for prompt, a, b in zip(prompts, first, second, strict=True):
        if a == b:
            continue
        swap = rng.random() < 0.5
        completions = [b, a] if swap else [a, b]
        identifier = item_id(prompt, completions)
        if identifier in positions:
            continue
        positions[identifier] = [names[1], names[0]] if swap else [names[0], names[1]]
        rows.append(json.dumps({"id": identifier, "prompt": text_to_json(prompt), "completions": completions}))
    out.mkdir(parents=True, exist_ok=True)
    (out / ANSWERS_FOLDER).mkdir(exist_ok=True)
    items = out / ITEMS_FILE
    atomic_write_text(items, "".join(row + "\n" for row in rows))
    atomic_write_text(key_path, json.dumps({"models": list(names), "seed": seed, "items": positions}, indent=1))
    return items, key_path


@dataclass(frozen=True)
class HumanEvalResult:
    """Win rate of the first model over the second from human answers, with agreement."""

    metrics: Mapping[str, float]
    models: tuple[str, str]
    agreement: Any

    def format(self) -> str:
        lines = [f"{self.models[0]} against {self.models[1]}"]
        lines += [f"  {name:<32} {value:.4g}" for name, value in self.metrics.items()]
        return "\n".join([*lines, "", self.agreement.format()])


def _answer_files(out: Path) -> list[Path]:
    folder = out / ANSWERS_FOLDER
    files = sorted(folder.glob("*.jsonl")) if folder.is_dir() else []
    if not files:
        raise DataError(
            f"no answer files: run prefcore annotate {out / ITEMS_FILE} --out {folder}/<annotator>.jsonl first.",
            source=str(folder),
        )
    return files


def _scores(records: Sequence[Any], key: Mapping[str, Any], texts: Mapping[str, list[Any]]) -> dict[str, list[float]]:
    """Per item, the first model's score from each answer (pairwise) or annotator (Likert)."""
    first = key["models"][0]
    per_item: dict[str, list[float]] = {}
    likert: dict[tuple[str, str], dict[str, float]] = {}
    for record in records:
        identifier = (record.metadata or {}).get("item_id")
        if identifier not in key["items"]:
            continue
        owners = dict(zip(map(json.dumps, map(text_to_json, texts[identifier])), key["items"][identifier], strict=True))
        kind = type(record).__name__
        if kind == "PairwiseComparison":
            winner = owners[json.dumps(text_to_json(record.chosen))]
            score = 0.5 if record.tie else float(winner == first)
            per_item.setdefault(identifier, []).append(score)
        elif kind == "Scores":
            owner = owners[json.dumps(text_to_json(record.completions[0]))]
            value = next(iter(record.scores[0].values()))
            likert.setdefault((identifier, str(record.annotator_id)), {})[owner] = float(value)
    for (identifier, _), ratings in likert.items():
        if len(ratings) == 2:
            mine, theirs = ratings[first], next(v for k, v in ratings.items() if k != first)
            per_item.setdefault(f"likert:{identifier}", []).append(0.5 if mine == theirs else float(mine > theirs))
    return per_item


def import_answers(
    out: str | os.PathLike[str],
    *,
    key: str | os.PathLike[str] | None = None,
    bootstrap_samples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> HumanEvalResult:
    """Human answers under ``out/answers`` as the first model's win rate, its interval and agreement."""
    import numpy as np

    from prefcore.annotate import read_items
    from prefcore.data import load_preferences
    from prefcore.plugins.evaluation.win_rate import bootstrap_interval

    out = Path(out)
    key_path = Path(key) if key is not None else default_key_path(out)
    try:
        key_data = json.loads(key_path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DataError("the key file does not exist (pass --key).", source=str(key_path)) from exc
    texts = {item.id: list(item.completions) for item in read_items(out / ITEMS_FILE)}
    files = _answer_files(out)
    records = [record for path in files for record in load_preferences(path)[0]]
    per_item = _scores(records, key_data, texts)
    pairwise = {k: v for k, v in per_item.items() if not k.startswith("likert:")}
    likert = {k: v for k, v in per_item.items() if k.startswith("likert:")}
    metrics: dict[str, float] = {}
    for prefix, groups in (("", pairwise), ("likert_", likert)):
        if not groups:
            continue
        sums = np.array([sum(values) for values in groups.values()])
        counts = np.array([float(len(values)) for values in groups.values()])
        scores = np.array([value for values in groups.values() for value in values])
        low, high = bootstrap_interval(sums, counts, resamples=bootstrap_samples, confidence=confidence, seed=seed)
        metrics.update(
            {
                f"{prefix}win_rate": float(scores.mean()),
                f"{prefix}win_rate_low": low,
                f"{prefix}win_rate_high": high,
                f"{prefix}tie_rate": float((scores == 0.5).mean()),
                f"{prefix}num_items": float(len(groups)),
                f"{prefix}num_answers": float(len(scores)),
            }
        )
    if not metrics:
        raise DataError("no pairwise or Likert answer matches an item of the key.", source=str(out / ANSWERS_FOLDER))
    report = agreement(files)
    for section in report.sections:
        for name in ("percent", "fleiss", "alpha"):
            value = getattr(section, name, None)
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                metrics[f"agreement/{section.kind}/{name}"] = float(value)
    return HumanEvalResult(metrics, (key_data["models"][0], key_data["models"][1]), report)


def export_run(
    run_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    key: str | os.PathLike[str] | None = None,
    reference: str | None = None,
) -> tuple[Path, Path]:
    """``prefcore human-eval export``: the run's held-out generations, policy against reference, as blind items.

    The run's own run file, its evaluations replaced by the ``human_eval`` evaluator, runs
    through ``prefcore evaluate`` (``prefcore.evaluate_model``), so the models, prompts and
    sampling settings are exactly those the run's evaluation used; ``reference`` names any
    other model folder to compare against.
    """
    import tempfile

    from prefcore.config import load_run_dir_config
    from prefcore.evaluate_model import evaluate_model
    from prefcore.toml_writer import dumps

    data = load_run_dir_config(run_dir).to_dict()
    out = Path(out).resolve()
    key_path = Path(key).resolve() if key is not None else default_key_path(out)
    data["evaluation"] = {"method": "human_eval", "out": str(out), "key": str(key_path)}
    with tempfile.TemporaryDirectory() as folder:
        run_file = Path(folder) / "human_eval.toml"
        run_file.write_text(dumps(data), encoding="utf-8")
        evaluate_model(run_dir, config_file=str(run_file), reference=reference)
    return out / ITEMS_FILE, key_path


def human_eval_from_cli(args: Any, stdout: TextIO | None = None) -> int:
    """``prefcore human-eval export RUN_DIR --out DIR`` / ``prefcore human-eval import DIR``."""
    out = stdout or sys.stdout
    if args.action == "export":
        if not args.out:
            raise ConfigError("prefcore human-eval export RUN_DIR needs --out DIR, the folder of the items.")
        items, key_path = export_run(args.target, args.out, key=args.key, reference=args.reference)
        count = sum(1 for line in items.read_text(encoding="utf-8").splitlines() if line.strip())
        write_line(out, f"{count} blind items in {items}; the key (keep it from annotators) in {key_path}")
        write_line(out, f"annotate: prefcore annotate {items} --out {items.parent / ANSWERS_FOLDER}/<annotator>.jsonl")
        return 0
    result = import_answers(args.target, key=args.key)
    write_line(out, result.format())
    if args.json:
        atomic_write_text(Path(args.json), json.dumps(dict(result.metrics), indent=1))
    return 0
