"""The embedded default job of ``prefcore run``: learning you can watch on a 2-core CPU.

A tiny Llama-architecture model and a word-level tokenizer are built offline; the demo
task's rule provides the feedback. SFT on a mediocre speaker's replies gives the
reference policy, DPO on rule-labelled pairs then trains the policy, and evaluation
judges policy against reference on held-out prompts with the same rule.
The same job as a file: ``examples/demo_dpo.toml``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

DEMO_USAGE_OPTIONS: dict[str, dict[str, Any]] = {
    # A stronger β than DPO's paper default keeps the tiny policy near its reference over 300 steps.
    "dpo": {"beta": 0.3},
    # The demo's word-level tokenizer only knows its own words: condition with words it has, so
    # that the quality levels are distinct tokens rather than one <unk>.
    "reward_conditioned_sft": {"levels": ["poor", "sure", "rich"], "condition_template": "{level} "},
}
"""Options the demo model needs for an objective, on top of the objective's own defaults."""


def with_usage_method(data: Mapping[str, Any], method: str) -> dict[str, Any]:
    """``data`` with its whole ``[usage]`` section replaced by ``method`` and that method's defaults.

    Nothing of the previous objective carries over (DPO's ``beta`` would be wrong for SimPO
    and unknown to SFT). On the demo model the objective gets the demo's options for it
    (``DEMO_USAGE_OPTIONS``). The feedback is left alone: the engine turns pairs into what
    each objective trains on (two-item rankings for listwise objectives, desirable and
    undesirable labels for unpaired ones, the chosen completion for SFT), and the held-out
    pairs stay pairs for ``preference_accuracy``.
    """
    result = dict(data)
    demo_model = isinstance(data.get("model"), Mapping) and data["model"].get("demo") is True
    result["usage"] = {"method": method, **(DEMO_USAGE_OPTIONS.get(method, {}) if demo_model else {})}
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
