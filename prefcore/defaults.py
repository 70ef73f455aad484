"""The embedded default job of ``prefcore run``: learning you can watch on a 2-core CPU.

A tiny Llama-architecture model and a word-level tokenizer are built offline; the demo
task's rule provides the feedback. SFT on a mediocre speaker's replies gives the
reference policy, DPO on rule-labelled pairs then trains the policy, and evaluation
judges policy against reference on held-out prompts with the same rule.
The same job as a file: ``examples/demo_dpo.toml``.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any

DEMO_USAGE_OPTIONS: dict[str, dict[str, Any]] = {
    # A stronger β than DPO's paper default keeps the tiny policy near its reference over 300 steps.
    "dpo": {"beta": 0.3},
    # The demo's word-level tokenizer only knows its own words: condition with words it has, so
    # that the quality levels are distinct tokens rather than one <unk>.
    "reward_conditioned_sft": {"levels": ["poor", "sure", "rich"], "condition_template": "{level} "},
}
"""Options the demo model needs for an objective, on top of the objective's own defaults."""

DEMO_FEEDBACK_KIND: dict[str, str] = {"listwise": "ranking", "unpaired": "binary"}
"""The demo feedback ``kind`` that gives an objective its preferred data format (pairs otherwise)."""


def with_usage_method(
    data: Mapping[str, Any], method: str, data_formats: Sequence[str] = ("pairwise",)
) -> dict[str, Any]:
    """``data`` with its whole ``[usage]`` section replaced by ``method`` and that method's defaults.

    Nothing of the previous objective carries over (DPO's ``beta`` would be wrong for SimPO
    and unknown to SFT). On the demo model the objective gets the demo's options for it
    (``DEMO_USAGE_OPTIONS``), and the demo feedback gives the format the objective trains on
    (rankings for listwise, labels for unpaired objectives) unless the file sets ``kind``.
    """
    result = dict(data)
    demo_model = isinstance(data.get("model"), Mapping) and data["model"].get("demo") is True
    result["usage"] = {"method": method, **(DEMO_USAGE_OPTIONS.get(method, {}) if demo_model else {})}
    feedback = data.get("feedback")
    kind = DEMO_FEEDBACK_KIND.get(data_formats[0]) if data_formats else None
    if isinstance(feedback, Mapping) and feedback.get("method") == "demo_rule" and "kind" not in feedback and kind:
        result["feedback"] = {**feedback, "kind": kind}
    return result


def default_run_data() -> dict[str, Any]:
    """The default run file as plain data (what ``examples/demo_dpo.toml`` spells out)."""
    return {
        "run": {
            "name": "demo",
            "seed": 0,
            "reference": "precomputed",
            "eval_prompts": 78,
            "samples_per_prompt": 2,
            "max_new_tokens": 24,
            "temperature": 0.7,
            "threads": 1,
        },
        "model": {"demo": True},
        "feedback": {"method": "demo_rule", "count": 4000, "demonstrations": 8000},
        "warm_start": {"steps": 800, "lr": 3e-3, "batch_size": 64, "warmup_steps": 20},
        "usage": {"method": "dpo", **DEMO_USAGE_OPTIONS["dpo"]},
        "evaluation": [
            {"method": "win_rate"},
            {"method": "preference_accuracy"},
            {"method": "kl"},
            {"method": "samples", "count": 6},
        ],
        "train": {
            "steps": 300,
            "batch_size": 32,
            "lr": 2e-4,
            "warmup_steps": 10,
            "schedule": "constant",
            "eval_every": 100,
            "checkpoint_every": 100,
        },
    }
