"""Sequence KL divergence of the policy from the reference, estimated on the policy's samples.

KL(π‖π_ref) = E_{y ~ π(·|x)} [ Σ_t log π(y_t | x, y_<t) − log π_ref(y_t | x, y_<t) ]

is estimated by Monte Carlo on completions sampled from the policy itself, with two
per-token estimators summed over the completion's tokens (Schulman 2020, "Approximating
KL divergence", http://joschu.net/blog/kl-approx.html), where r_t = log π_ref − log π:

    k1 = Σ_t −r_t                     unbiased, can be negative on few samples
    k3 = Σ_t (exp(r_t) − 1 − r_t)     unbiased per token, never negative, lower variance

Both are averaged over samples (``kl`` and ``kl_k3``). The estimate is only valid for
samples drawn from π itself, so sampling here always uses temperature 1 and top_p 1,
whatever the run's generation settings; the seed, sample count and ``max_new_tokens``
come from them (a sequence cut at ``max_new_tokens`` measures the KL of its first tokens).
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import replace

from prefcore import hookimpl
from prefcore.errors import ConfigError
from prefcore.evaluation import EvaluationContext
from prefcore.evaluation import EvaluationInputError
from prefcore.evaluation import EvaluationResult
from prefcore.evaluation import GeneratedCompletions
from prefcore.evaluation import cached_completions
from prefcore.evaluation import completion_token_logps
from prefcore.evaluation import prompt_token_ids
from prefcore.evaluation import require_prompts
from prefcore.lazy import lazy_module
from prefcore.methods import Evaluator
from prefcore.methods import option

torch = lazy_module("torch")


@dataclass(frozen=True)
class KLConfig:
    batch_size: int = option(16, doc="sequences per generation and scoring batch")

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError("batch_size must be at least 1.", method="kl", field="batch_size")


@dataclass(frozen=True)
class KLEstimates:
    """Per-sample sequence estimates ``[N]`` and completion lengths in tokens ``[N]``."""

    k1: torch.Tensor
    k3: torch.Tensor
    lengths: torch.Tensor


def kl_estimates(context: EvaluationContext, samples: GeneratedCompletions, *, batch_size: int) -> KLEstimates:
    """k1 and k3 of each sampled completion, on exactly the sampled token ids.

    The policy is scored on the prompt it generated from (with the generation prefix),
    the reference on the bare prompt, as each of them is used.
    """
    bare_prompt_ids = [tuple(prompt_token_ids(context.tokenizer, prompt)) for prompt in samples.prompts]
    k1: list[torch.Tensor] = []
    k3: list[torch.Tensor] = []
    lengths = torch.tensor([len(ids) for ids in samples.completion_ids], dtype=torch.float64)
    for start in range(0, len(samples.completion_ids), batch_size):
        rows = range(start, min(start + batch_size, len(samples.completion_ids)))
        policy_logps = completion_token_logps(
            context.policy, [(samples.prompt_ids[row], samples.completion_ids[row]) for row in rows], context
        )
        reference_logps = completion_token_logps(
            context.reference,
            [(bare_prompt_ids[row // samples.num_samples], samples.completion_ids[row]) for row in rows],
            context,
        )
        log_ratio = reference_logps - policy_logps  # r_t, one entry per completion token
        owner = torch.repeat_interleave(torch.arange(len(rows)), lengths[start : start + len(rows)].long())
        k1.append(torch.zeros(len(rows), dtype=torch.float64).index_add_(0, owner, -log_ratio))
        k3.append(
            torch.zeros(len(rows), dtype=torch.float64).index_add_(0, owner, torch.exp(log_ratio) - 1.0 - log_ratio)
        )
    return KLEstimates(torch.cat(k1), torch.cat(k3), lengths)


class KL(Evaluator):
    """Monte-Carlo KL(π‖π_ref) on the policy's own samples (k1 and k3 estimators)."""

    name = "kl"
    config_cls = KLConfig

    def evaluate(self, context: EvaluationContext) -> EvaluationResult:
        if context.reference is None:
            raise EvaluationInputError(
                self.name, "a reference model", "Keep the reference model for evaluation to measure drift from it."
            )
        prompts = require_prompts(context, self.name)
        settings = replace(context.generation, temperature=1.0, top_p=1.0)
        samples = cached_completions(
            context, prompts, role="policy", settings=settings, batch_size=self.config.batch_size
        )
        estimates = kl_estimates(context, samples, batch_size=self.config.batch_size)
        count = len(estimates.k1)
        return EvaluationResult(
            {
                "kl": estimates.k1.mean().item(),
                "kl_k3": estimates.k3.mean().item(),
                "kl_stderr": (estimates.k1.std().item() / count**0.5) if count > 1 else float("nan"),
                "completion_length": estimates.lengths.mean().item(),
                "num_samples": float(count),
            }
        )


@hookimpl
def prefcore_register_evaluators() -> list[type[Evaluator]]:
    return [KL]
