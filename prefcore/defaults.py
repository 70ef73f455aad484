"""The embedded default job of ``prefcore run``: learning you can watch on a 2-core CPU.

A tiny Llama-architecture model and a word-level tokenizer are built offline; the demo
task's rule provides the feedback. SFT on a mediocre speaker's replies gives the
reference policy, DPO on rule-labelled pairs then trains the policy, and evaluation
judges policy against reference on held-out prompts with the same rule.
The same job as a file: ``examples/demo_dpo.toml``.
"""

from __future__ import annotations

from typing import Any


def default_run_data() -> dict[str, Any]:
    """The default run file as plain data (what ``examples/demo_dpo.toml`` spells out)."""
    return {
        "run": {"name": "demo", "seed": 0, "eval_prompts": 64, "max_new_tokens": 16, "temperature": 0.7},
        "model": {"demo": True},
        "feedback": {"method": "demo_rule", "count": 2000, "demonstrations": 4000},
        "warm_start": {"steps": 150, "lr": 3e-3, "batch_size": 32, "warmup_steps": 10},
        "usage": {"method": "dpo", "beta": 0.1},
        "evaluation": [
            {"method": "win_rate"},
            {"method": "preference_accuracy"},
            {"method": "kl"},
            {"method": "samples", "count": 6},
        ],
        "train": {"steps": 120, "batch_size": 16, "lr": 1e-3, "warmup_steps": 10, "eval_every": 40},
    }
