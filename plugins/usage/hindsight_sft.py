"""Chain-of-Hindsight SFT: learn from a worse answer shown in context, then imitate the better one.

Liu et al. 2024 (ICLR), "Chain of Hindsight Aligns Language Models with Feedback",
https://arxiv.org/abs/2302.02676.

Each comparison (x, y_w ≻ y_l) becomes one SFT example whose prompt carries the hindsight
chain and whose completion is the better answer:

    prompt'    = "A worse answer to the request below: {y_l}\n[Feedback on it: {c}\n]"
                 + "A better answer to the request below:\n" + x
    completion = y_w
    loss       = −Σ_{y ∈ B} Σ_t log π(y_t | prompt', y_<t) / Σ_{y ∈ B} |y|    (SFT, on y_w only)

x: the prompt; y_w, y_l: the better and worse completion; c: the critique when the feedback
is a critique with a revision (the revision is y_w); B: the batch; π: the policy. At
generation time the model is given the positive condition alone ("A better answer to the
request below:" before the prompt), so it produces the kind of answer that followed a
worse one in training. The condition sits before the prompt because that is where the
engine puts ``generation_prefix``; for conversations it is a leading system message.
The loss covers the completion only, never the hindsight text or the worse answer.

Records: pairs (ties are left out: neither answer is better), rankings and scores (every
pair they imply), binary labels (paired across the data) and critiques with a revision,
also inside ``FeedbackRecord`` bundles; a critique without a revision gives nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefcore import hookimpl
from prefcore.data import BinaryLabel
from prefcore.data import Critique
from prefcore.data import FeedbackRecord
from prefcore.data import PairwiseComparison
from prefcore.data import to_pairs
from prefcore.methods import UsageObjective
from prefcore.methods import option
from prefcore.objectives import check_template
from prefcore.objectives import conditioned_prompt
from prefcore.objectives import plain_text
from prefcore.plugins.usage.sft import SFT


@dataclass(frozen=True)
class HindsightSFTConfig:
    worse_template: str = option(
        "A worse answer to the request below: {rejected}\n", doc="hindsight text showing the worse answer {rejected}"
    )
    critique_template: str = option("Feedback on it: {critique}\n", doc="hindsight text of a critique {critique}")
    positive_condition: str = option(
        "A better answer to the request below:\n", doc="the condition before the prompt, in training and generation"
    )

    def __post_init__(self) -> None:
        check_template("hindsight_sft", "worse_template", self.worse_template, "rejected")
        check_template("hindsight_sft", "critique_template", self.critique_template, "critique")
        check_template("hindsight_sft", "positive_condition", self.positive_condition)


class HindsightSFT(SFT):
    """Chain-of-Hindsight: SFT on the better answer, conditioned on the worse one and its feedback."""

    name = "hindsight_sft"
    config_cls = HindsightSFTConfig
    data_formats = ("sft",)
    needs_reference = False

    def generation_prefix(self) -> str:
        return self.config.positive_condition

    def transform_records(self, records: list[Any]) -> list[Any]:
        """One SFT record (a desirable ``BinaryLabel``) per comparison the records imply."""
        critiques: list[Critique] = []
        others: list[Any] = []
        for record in records:
            for item in record.items if isinstance(record, FeedbackRecord) else (record,):
                (critiques if isinstance(item, Critique) else others).append(item)
        hindsight = [self._from_pair(pair, critique=None) for pair in to_pairs(others)]
        for critique in critiques:
            if critique.revision is not None:
                pair = PairwiseComparison(
                    critique.prompt, critique.revision, critique.completion, **critique.annotations()
                )
                hindsight.append(self._from_pair(pair, critique=critique.critique))
        return hindsight

    def _from_pair(self, pair: PairwiseComparison, *, critique: str | None) -> BinaryLabel:
        chain = self.config.worse_template.format(rejected=plain_text(pair.rejected))
        if critique is not None:
            chain += self.config.critique_template.format(critique=critique)
        condition = chain + self.config.positive_condition
        return BinaryLabel(conditioned_prompt(pair.prompt, condition), pair.chosen, True, **pair.annotations())


@hookimpl
def prefcore_register_usage_objectives() -> list[type[UsageObjective]]:
    return [HindsightSFT]
