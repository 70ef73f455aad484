"""Stage 8, report: the final model and ``report.md`` in the run folder, and the run's result."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefcore.engine.models import save_model
from prefcore.stages.evaluate import Evaluation
from prefcore.stages.session import RunContext

__all__ = ["RunResult", "write_outputs"]

logger = logging.getLogger("prefcore.pipeline")


@dataclass
class RunResult:
    """Where the run wrote its outputs, its final evaluation metrics, and the trained policy.

    ``model`` is the policy as trained (with its LoRA adapters, when ``lora_rank`` > 0; the
    folder ``run_dir / "model"`` holds it merged) and ``tokenizer`` its tokenizer. ``paused`` is
    what a run that stopped before its end waits for (the human loop's answers), else None.
    """

    run_dir: Path
    metrics: dict[str, float]
    model: Any = None
    tokenizer: Any = None
    paused: str | None = None


def write_outputs(
    run: RunContext, policy: Any, tokenizer: Any, evaluation: Evaluation, data: Mapping[str, Any]
) -> RunResult:
    """Save the model, write the report (with the data summary ``data``) and end the run."""
    from prefcore.report import write_report

    save_model(policy, tokenizer, run.run_dir / "model")
    write_report(
        run.run_dir,
        config=run.config.to_dict(),
        metrics_csv=run.run_dir / "metrics.csv",
        eval_metrics=evaluation.metrics,
        samples=evaluation.samples,
        title=f"prefcore run: {run.settings.name}",
        data=dict(data),
    )
    run.hooks.fire("prefcore_run_end", metrics=evaluation.metrics)
    logger.info("run folder: %s", run.run_dir)
    return RunResult(run_dir=run.run_dir, metrics=evaluation.metrics, model=policy, tokenizer=tokenizer)
