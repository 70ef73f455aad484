"""``prefcore evaluate``: run a run file's ``[[evaluation]]`` sections on an already-trained model.

The evaluators are the same plugins a run calls after training, on the same inputs:

* the model: ``RUN_DIR/model`` of a run folder, or a ``save_pretrained`` folder;
* the run file: the run folder's saved config, or ``--config FILE`` (required for a bare
  model folder); ``--set section.key=value`` overrides apply as in ``prefcore run``, so
  ``--set evaluation.method=sycophancy`` swaps the evaluators;
* the held-out prompts and records, and the training records (for ``contamination``): the
  run file's feedback sources, split with its seed exactly as the run split them;
* the reference: ``--reference FOLDER``, else the run's warm-started model
  (``RUN_DIR/warm_start/model``), else the run file's starting ``[model]``, which is what
  the run's reference was when it had no warm start;
* the scorer: ``--reward-model FOLDER``, else the run folder's ``reward_model/model``;
* the judge: the run file's ``[judge]``, built as the run builds it.

Metrics print one per line and are written as JSON (``--out``, default
``RUN_DIR/evaluation.json`` for a run folder), with the sample rows.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any
from typing import TextIO

from prefcore.atomic import atomic_write_text
from prefcore.config import RunConfig
from prefcore.config import apply_overrides
from prefcore.config import load_run_dir_config
from prefcore.config import parse_run_config
from prefcore.config import read_run_file
from prefcore.console import write_line
from prefcore.errors import ConfigError
from prefcore.evaluation import EvaluationContext
from prefcore.registry import Registry

__all__ = ["EvaluationOutcome", "evaluate_from_cli", "evaluate_model"]

logger = logging.getLogger("prefcore.evaluation")


@dataclass(frozen=True)
class EvaluationOutcome:
    """Metrics (``<evaluator>/<metric>``) and sample rows of one evaluation pass."""

    metrics: Mapping[str, float]
    samples: Sequence[Mapping[str, Any]] = field(default_factory=tuple)
    model: str = ""
    reference: str | None = None

    def to_json(self) -> str:
        data = {
            "model": self.model,
            "reference": self.reference,
            "metrics": dict(self.metrics),
            "samples": [dict(row) for row in self.samples],
        }
        return json.dumps(data, indent=2, default=str) + "\n"


def _is_run_folder(path: Path) -> bool:
    return (path / "model" / "config.json").is_file() and (
        (path / "config.json").is_file() or (path / "config.toml").is_file()
    )


def _config(target: Path, config_file: str | None, overrides: Sequence[str]) -> RunConfig:
    if config_file:
        return parse_run_config(apply_overrides(read_run_file(config_file), overrides), source=config_file)
    if _is_run_folder(target):
        return load_run_dir_config(target, overrides)
    raise ConfigError(
        f"{target} is not a run folder (model/ and config.toml), so prefcore evaluate needs the run file whose "
        "[[evaluation]] sections to run: --config RUN_FILE."
    )


def _reward_folder(target: Path, reward_model: str | None) -> Path | None:
    if reward_model:
        return Path(reward_model)
    for folder in (target / "reward_model" / "model", target / "reward_model" / "soup" / "model"):
        if folder.is_dir():
            return folder
    return None


def evaluate_model(
    target: str | Path,
    *,
    config_file: str | None = None,
    overrides: Sequence[str] = (),
    reference: str | None = None,
    reward_model: str | None = None,
    registry: Registry | None = None,
) -> EvaluationOutcome:
    """Run the ``[[evaluation]]`` sections of the run file on the model in ``target`` (see the module docstring)."""
    from prefcore.engine.models import load_causal_lm
    from prefcore.engine.models import load_policy
    from prefcore.engine.models import resolve_device
    from prefcore.engine.reward_model.storage import load_tokenizer
    from prefcore.inference.files import model_folder
    from prefcore.stages.evaluate import run_sampling
    from prefcore.stages.feedback import gather_feedback
    from prefcore.validation import check_run_config

    target = Path(target)
    registry = registry or Registry.from_environment()
    config = _config(target, config_file, overrides)
    checked = check_run_config(config, registry=registry)
    evaluators = [entry.method for entry in checked.selected("evaluation")]
    if not evaluators:
        raise ConfigError(
            f'{config.source}: the run file selects no evaluator; add [[evaluation]] method = "..." sections or '
            "--set evaluation.method=<name> (prefcore list evaluation shows them)."
        )
    settings, model_config = checked.sections["run"], checked.sections["model"]
    device = resolve_device(model_config.device)
    folder = model_folder(target)
    policy = load_causal_lm(folder).to(device).eval()
    tokenizer = load_tokenizer(folder)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token

    warm = target / "warm_start" / "model"
    if reference is not None:
        reference_model, reference_name = load_causal_lm(model_folder(reference)), str(reference)
    elif warm.is_dir():
        reference_model, reference_name = load_causal_lm(warm), str(warm)
    else:
        reference_model = load_policy(model_config, tokenizer, seed=settings.seed)
        reference_name = "the run file's [model] (demo)" if model_config.demo else str(model_config.path)
    reference_model = reference_model.to(device).eval()

    sources = [entry.method for entry in checked.selected("feedback")]
    feedback = gather_feedback(sources, settings)
    scorer = None
    scorer_folder = _reward_folder(target, reward_model)
    if scorer_folder is not None:
        from prefcore.engine.reward_model import load_reward_network

        scorer = load_reward_network(scorer_folder, device=str(device)).scorer()
    judge = checked.sections["judge"].build(sources, trained_scorer=scorer, device=str(device))
    first = checked.selected("usage")[0].method
    context = EvaluationContext(
        policy=policy,
        tokenizer=tokenizer,
        reference=reference_model,
        prompts=feedback.prompts,
        preferences=feedback.heldout,
        training=feedback.train,
        judge=judge,
        scorer=scorer,
        device=str(device),
        **run_sampling(settings, first),
    )
    metrics: dict[str, float] = {}
    samples: list[Mapping[str, Any]] = []
    for evaluator in evaluators:
        result = evaluator.evaluate(context)
        metrics.update({f"{evaluator.name}/{key}": float(value) for key, value in result.metrics.items()})
        samples += list(result.samples)
    return EvaluationOutcome(metrics, tuple(samples), str(folder), reference_name)


def evaluate_from_cli(args: argparse.Namespace, stdout: TextIO | None = None) -> int:
    """``prefcore evaluate TARGET``: the evaluation's metrics on ``stdout``, written to ``evaluation.json``."""
    stream = stdout or sys.stdout
    target = Path(args.target)
    outcome = evaluate_model(
        target,
        config_file=args.config,
        overrides=args.overrides,
        reference=args.reference,
        reward_model=args.reward_model,
    )
    out = Path(args.out) if args.out else (target / "evaluation.json" if _is_run_folder(target) else None)
    if out is not None:
        atomic_write_text(out, outcome.to_json())
    write_line(stream, f"model {outcome.model} against reference {outcome.reference}")
    for name, value in sorted(outcome.metrics.items()):
        write_line(stream, f"  {name:<48} {value:.4g}")
    if out is not None:
        write_line(stream, f"written to {out}")
    return 0
