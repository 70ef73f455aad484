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
        "usage": {"method": "dpo", "beta": 0.3},
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
