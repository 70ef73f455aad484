"""Inference-time alignment: best-of-n reranking, candidate checks with a fallback, RA-LLM's robustness check.

* ``generator``: ``AlignedGenerator`` around any causal LM and tokenizer, its ``Decision`` records;
* ``checks``: ``[[check]]`` entries (any ``[[reward]]`` scorer, or the refusal detector, with bounds);
* ``robustness``: RA-LLM's token-dropped copies and the refusal vote over them;
* ``kl``: the best-of-n KL bound and Beirami et al.'s estimate;
* ``files``: ``prefcore generate`` (run file, prompts file, JSONL out).
"""

from __future__ import annotations

from prefcore.inference.checks import CandidateCheck
from prefcore.inference.checks import build_checks
from prefcore.inference.files import build_generator
from prefcore.inference.files import read_prompts
from prefcore.inference.generator import AlignedGenerator
from prefcore.inference.generator import Candidate
from prefcore.inference.generator import Decision
from prefcore.inference.generator import GenerateSettings
from prefcore.inference.generator import model_refusal_check
from prefcore.inference.generator import summarize
from prefcore.inference.kl import best_of_n_kl_bound
from prefcore.inference.kl import best_of_n_kl_estimate
from prefcore.inference.robustness import RobustnessConfig
from prefcore.inference.robustness import RobustnessResult
from prefcore.inference.robustness import drop_tokens
from prefcore.inference.robustness import dropped_copies
from prefcore.inference.robustness import robust_refusals

__all__ = [
    "AlignedGenerator",
    "Candidate",
    "CandidateCheck",
    "Decision",
    "GenerateSettings",
    "RobustnessConfig",
    "RobustnessResult",
    "best_of_n_kl_bound",
    "best_of_n_kl_estimate",
    "build_checks",
    "build_generator",
    "drop_tokens",
    "dropped_copies",
    "model_refusal_check",
    "read_prompts",
    "robust_refusals",
    "summarize",
]
