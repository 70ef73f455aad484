"""Human evaluation, export side: the held-out generations of two models as blind annotation items.

Pairwise human judgement, blind to which model wrote which answer and with positions
randomised, is the reference judges are measured against (Zheng et al. 2023, "Judging
LLM-as-a-Judge", https://arxiv.org/abs/2306.05685, section 4: MT-Bench human judgements).
The answers come back as the win rate of the policy:

    win_rate = mean over answers of s,  s = 1 policy chosen, 1/2 tie, 0 reference chosen

Writes one ``prefcore annotate`` item per held-out prompt with the policy's and the
reference's first sampled completion in a seeded random order, model names left out, and the
key (which model holds which position) to a file kept apart (``prefcore.human_eval``). The
answers come back with ``prefcore human-eval import DIR``, which reports the win rate with a
bootstrap interval and inter-annotator agreement. ``prefcore human-eval export RUN_DIR --out
DIR`` runs this evaluator on a finished run; in a run file it exports at every evaluation
pass (the last pass's items remain).
"""

from __future__ import annotations

from dataclasses import dataclass

from prefcore import hookimpl
from prefcore.errors import ConfigError
from prefcore.evaluation import EvaluationContext
from prefcore.evaluation import EvaluationInputError
from prefcore.evaluation import EvaluationResult
from prefcore.evaluation import cached_completions
from prefcore.evaluation import require_prompts
from prefcore.human_eval import export_items
from prefcore.methods import Evaluator
from prefcore.methods import option

NAME = "human_eval"


@dataclass(frozen=True)
class HumanEvalConfig:
    out: str = option(doc="folder of the blind items (items.jsonl) and of the annotators' answers (answers/)")
    key: str | None = option(None, doc="the key file, kept apart from the items (default <out>.key.json)")
    names: tuple[str, str] = option(("policy", "reference"), doc="the two models' names, written to the key only")
    batch_size: int = option(16, doc="prompts per generation batch")

    def __post_init__(self) -> None:
        if len(self.names) != 2 or self.names[0] == self.names[1]:
            raise ConfigError(f"names must be two different names; got {self.names!r}.", method=NAME, field="names")
        if self.batch_size < 1:
            raise ConfigError("batch_size must be at least 1.", method=NAME, field="batch_size")


class HumanEval(Evaluator):
    """Export the policy's and the reference's held-out completions as blind annotation items."""

    name = NAME
    config_cls = HumanEvalConfig

    def evaluate(self, context: EvaluationContext) -> EvaluationResult:
        if context.reference is None:
            raise EvaluationInputError(NAME, "a reference model", "Keep the reference model for evaluation.")
        prompts = require_prompts(context, NAME)
        policy = cached_completions(context, prompts, role="policy", batch_size=self.config.batch_size)
        reference = cached_completions(context, prompts, role="reference", batch_size=self.config.batch_size)
        first = [policy.texts[index * policy.num_samples] for index in range(len(prompts))]
        second = [reference.texts[index * reference.num_samples] for index in range(len(prompts))]
        items, _ = export_items(
            prompts, first, second, self.config.out, names=self.config.names, key=self.config.key, seed=context.seed
        )
        count = sum(1 for line in items.read_text(encoding="utf-8").splitlines() if line.strip())
        return EvaluationResult({"num_items": float(count), "num_identical": float(len(prompts) - count)})


@hookimpl
def prefcore_register_evaluators() -> list[type[Evaluator]]:
    return [HumanEval]
