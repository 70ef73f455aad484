"""Model feedback from an LLM judge: a local causal LM compares two completions under principles.

RLAIF replaces the human labeller with a language model asked which answer is better (Bai
et al. 2022, "Constitutional AI", https://arxiv.org/abs/2212.08073: a list of principles
in the judge's prompt; Lee et al. 2023, "RLAIF", https://arxiv.org/abs/2309.00267: the
judge's probabilities of the answer labels as a soft preference, both orders averaged).
Judges favour the answer they read first (Zheng et al. 2023, "Judging LLM-as-a-Judge",
https://arxiv.org/abs/2306.05685), so every pair (x, y) is judged in both orders:

    p_fwd = P(label₁) / (P(label₁) + P(label₂))   with x shown first   (P(x better), order 1)
    p_bwd = 1 − P(label₁) / (P(label₁) + P(label₂)) with y shown first (P(x better), order 2)
    probability(x better) = (p_fwd + p_bwd) / 2

P(label) is the judge's next-token probability of an answer label ("A"/"B", "1"/"2", ...)
right after the judge prompt, summed over the label's spellings with and without a leading
space; normalising over the two labels ignores whatever mass the judge puts elsewhere.
If both orders prefer the same completion it is ``chosen`` with that probability; if they
disagree the verdict is position noise and becomes a tie (``inconsistent = "tie"``) or is
dropped (``"drop"``). A judge that always picks the first position gives p = 0.5 for every
pair. ``judge()`` offers the same two-order verdict to evaluators (``judge_orders = "one"``
leaves the position control to the evaluator, e.g. ``win_rate``, which then measures the
judge's own position bias).

The judge model is any transformers causal LM in a local folder (``model_path``, loaded with
``local_files_only``: nothing is downloaded). From Python, a loaded ``model`` and
``tokenizer``, or any ``label_probabilities`` function (an API judge, a test double), can be
passed to ``LLMJudge`` instead.
"""

from __future__ import annotations

import itertools
import string
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from typing import Literal

from prefcore import hookimpl
from prefcore.annotate import Item
from prefcore.annotate import read_items
from prefcore.data import Message
from prefcore.data import PairwiseComparison
from prefcore.engine.generation import eval_mode
from prefcore.errors import ConfigError
from prefcore.lazy import lazy_module
from prefcore.methods import FeedbackSource
from prefcore.methods import option

torch = lazy_module("torch")
sequences = lazy_module("prefcore.engine.sequences")

NAME = "llm_judge"

DEFAULT_PRINCIPLES: tuple[str, ...] = (
    "Prefer the answer that does what the request asks, correctly and completely.",
    "Prefer the answer that is honest: no invented facts, uncertainty stated plainly.",
    "Prefer the answer that avoids harm: nothing dangerous, hateful or deceptive.",
    "Judge the content only: not the order of the answers, not their length.",
)

DEFAULT_TEMPLATE = (
    "You compare two answers to the same request.\n"
    "Principles:\n{principles}\n\n"
    "Request:\n{prompt}\n\n"
    "Answer {label_first}:\n{first}\n\n"
    "Answer {label_second}:\n{second}\n\n"
    "Which answer follows the principles better? Reply with {label_first} or {label_second} only.\n"
    "Better answer:"
)

TEMPLATE_FIELDS = frozenset({"principles", "prompt", "first", "second", "label_first", "label_second"})
REQUIRED_FIELDS = frozenset({"prompt", "first", "second"})
TIE_TOLERANCE = 1e-9

LabelProbabilities = Callable[[Sequence[tuple[Any, Any, Any]]], Sequence[float]]
"""``label_probabilities([(prompt, first, second), ...])`` → P(first-shown answer's label), normalised over the two."""


def _fail(message: str, field: str) -> ConfigError:
    return ConfigError(message, method=NAME, field=field)


@dataclass(frozen=True)
class LLMJudgeConfig:
    model_path: Path | None = option(None, doc="local folder of the judge: a transformers causal LM and tokenizer")
    path: Path | None = option(None, doc="JSONL of {prompt, completions} rows (or records) to label; none: judge only")
    principles: tuple[str, ...] = option(DEFAULT_PRINCIPLES, doc="constitution: one principle per entry, numbered")
    template: str = option(DEFAULT_TEMPLATE, doc="judge prompt with {principles} {prompt} {first} {second} {label_*}")
    labels: tuple[str, str] = option(("A", "B"), doc="answer labels of the first and second answer (single tokens)")
    inconsistent: Literal["tie", "drop"] = option("tie", doc="verdicts that flip with the order: 'tie' or 'drop'")
    judge_orders: Literal["both", "one"] = option("both", doc="judge(): both orders combined, or the raw single order")
    use_chat_template: bool = option(True, doc="send the judge prompt as a user turn if the tokenizer has a template")
    device: str = option("cpu", doc="device the judge runs on")
    dtype: Literal["float32", "bfloat16", "float16"] = option("float32", doc="dtype of the judge's weights")
    batch_size: int = option(8, doc="judge prompts per forward pass")

    def __post_init__(self) -> None:
        if not self.principles or not all(isinstance(p, str) and p.strip() for p in self.principles):
            raise _fail("principles must be a non-empty list of non-empty strings.", "principles")
        fields = set()
        for _, field, _, _ in string.Formatter().parse(self.template):
            if field is not None:
                fields.add(field)
        unknown = sorted(fields - TEMPLATE_FIELDS)
        if unknown:
            raise _fail(
                f"template has unknown placeholder(s) {unknown}; use {', '.join(sorted(TEMPLATE_FIELDS))}.", "template"
            )
        missing = sorted(REQUIRED_FIELDS - fields)
        if missing:
            raise _fail(f"template must contain {{{'}, {'.join(missing)}}}.", "template")
        if len(self.labels) != 2 or not all(isinstance(label, str) and label.strip() for label in self.labels):
            raise _fail(f"labels must be two non-empty strings, got {self.labels!r}.", "labels")
        if self.labels[0].strip() == self.labels[1].strip():
            raise _fail(f"the two labels must differ, got {self.labels!r}.", "labels")
        if self.inconsistent not in ("tie", "drop"):
            raise _fail(f"inconsistent must be 'tie' or 'drop', got {self.inconsistent!r}.", "inconsistent")
        if self.judge_orders not in ("both", "one"):
            raise _fail(f"judge_orders must be 'both' or 'one', got {self.judge_orders!r}.", "judge_orders")
        if self.batch_size < 1:
            raise _fail(f"batch_size must be 1 or more, got {self.batch_size}.", "batch_size")


def render(text: Any) -> str:
    """A prompt or completion as judge-prompt text (chat turns as ``role: content`` lines)."""
    if isinstance(text, str):
        return text
    return "\n".join(f"{message.role}: {message.content}" for message in text)


def judge_prompt(config: LLMJudgeConfig, prompt: Any, first: Any, second: Any) -> str:
    principles = "\n".join(f"{number}. {principle}" for number, principle in enumerate(config.principles, start=1))
    return config.template.format(
        principles=principles,
        prompt=render(prompt),
        first=render(first),
        second=render(second),
        label_first=config.labels[0],
        label_second=config.labels[1],
    )


def label_token_ids(tokenizer: Any, label: str) -> tuple[int, ...]:
    """The single-token spellings of ``label``: the label itself and with a leading space (BPE vocabularies)."""
    ids = set()
    for spelling in (label, " " + label):
        encoded = tokenizer.encode(spelling, add_special_tokens=False)
        if len(encoded) == 1 and encoded[0] != tokenizer.unk_token_id:
            ids.add(encoded[0])
    return tuple(sorted(ids))


class CausalLMLabelProbabilities:
    """``LabelProbabilities`` of a causal LM: its next-token probability of each label after the judge prompt."""

    def __init__(self, model: Any, tokenizer: Any, config: LLMJudgeConfig) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.label_ids = [label_token_ids(tokenizer, label) for label in config.labels]
        for label, ids in zip(config.labels, self.label_ids, strict=True):
            if not ids:
                raise _fail(
                    f"label {label!r} is not a single token of the judge's tokenizer (with or without a leading "
                    "space); pick labels the judge can answer with in one token, e.g. A/B or 1/2.",
                    "labels",
                )
        if set(self.label_ids[0]) & set(self.label_ids[1]):
            raise _fail(f"labels {config.labels!r} map to the same token of the judge's tokenizer.", "labels")

    @classmethod
    def load(cls, config: LLMJudgeConfig) -> CausalLMLabelProbabilities:
        """The judge in ``config.model_path``, from local files only."""
        from transformers import AutoModelForCausalLM
        from transformers import AutoTokenizer

        if config.model_path is None or not Path(config.model_path).is_dir():
            raise _fail(
                f"model_path {None if config.model_path is None else str(config.model_path)!r} is not a local "
                "folder. The judge loads from local files only: point it at a folder written by save_pretrained().",
                "model_path",
            )
        tokenizer = AutoTokenizer.from_pretrained(config.model_path, local_files_only=True)
        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[config.dtype]
        model = AutoModelForCausalLM.from_pretrained(config.model_path, local_files_only=True, dtype=dtype)
        return cls(model.to(config.device), tokenizer, config)

    def query_ids(self, prompt: Any, first: Any, second: Any) -> list[int]:
        text = judge_prompt(self.config, prompt, first, second)
        if self.config.use_chat_template and getattr(self.tokenizer, "chat_template", None):
            return sequences.prompt_token_ids(self.tokenizer, (Message("user", text),))
        return sequences.prompt_token_ids(self.tokenizer, text)

    def __call__(self, queries: Sequence[tuple[Any, Any, Any]]) -> list[float]:
        probabilities: list[float] = []
        for start in range(0, len(queries), self.config.batch_size):
            rows = [self.query_ids(*query) for query in queries[start : start + self.config.batch_size]]
            probabilities += self._first_label_probabilities(rows)
        return probabilities

    def _first_label_probabilities(self, rows: list[list[int]]) -> list[float]:
        # Right padding: causal attention never lets a row's last real token see the padding after it.
        lengths = torch.tensor([len(row) for row in rows])
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids = torch.full((len(rows), int(lengths.max())), pad_id, dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        for index, row in enumerate(rows):
            input_ids[index, : len(row)] = torch.tensor(row)
            attention_mask[index, : len(row)] = 1
        device = self.config.device
        with eval_mode(self.model), torch.no_grad():
            logits = self.model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits
        last = logits[torch.arange(len(rows)), (lengths - 1).to(logits.device)].float()
        log_probs = torch.log_softmax(last, dim=-1)
        first, second = (torch.logsumexp(log_probs[:, list(ids)], dim=-1) for ids in self.label_ids)
        return torch.sigmoid(first - second).tolist()


@dataclass(frozen=True)
class Verdict:
    """A two-order verdict on (x, y): each order's probability that x is better."""

    forward: float
    """P(x better) with x shown first."""
    backward: float
    """P(x better) with x shown second."""

    @property
    def probability(self) -> float:
        return (self.forward + self.backward) / 2

    @property
    def consistent(self) -> bool:
        """Both orders prefer the same completion (or both call it even)."""
        return _side(self.forward) == _side(self.backward)

    @property
    def winner(self) -> int:
        """+1 when x wins in both orders, -1 when y does, 0 for a tie or an order-inconsistent verdict."""
        return _side(self.forward) if self.consistent else 0


def _side(probability: float) -> int:
    if abs(probability - 0.5) <= TIE_TOLERANCE:
        return 0
    return 1 if probability > 0.5 else -1


def two_order_verdicts(label_probabilities: LabelProbabilities, pairs: Sequence[tuple[Any, Any, Any]]) -> list[Verdict]:
    """Ask every ``(prompt, x, y)`` in both orders, in one call, and pair up the answers."""
    queries = [query for prompt, x, y in pairs for query in ((prompt, x, y), (prompt, y, x))]
    answers = [float(p) for p in label_probabilities(queries)]
    if len(answers) != len(queries):
        raise ValueError(f"label_probabilities returned {len(answers)} values for {len(queries)} judge prompts.")
    return [Verdict(answers[2 * i], 1.0 - answers[2 * i + 1]) for i in range(len(pairs))]


class LLMJudge(FeedbackSource):
    """Model feedback: a local LLM judges pairs under principles, both orders, label probabilities as strength."""

    name = NAME
    config_cls = LLMJudgeConfig

    def __init__(
        self,
        config: LLMJudgeConfig,
        *,
        model: Any = None,
        tokenizer: Any = None,
        label_probabilities: LabelProbabilities | None = None,
    ) -> None:
        """``model`` + ``tokenizer`` (a loaded judge) or ``label_probabilities`` replace ``model_path``."""
        super().__init__(config)
        if (model is None) != (tokenizer is None):
            raise TypeError("LLMJudge takes a model together with its tokenizer.")
        if label_probabilities is None and model is not None:
            label_probabilities = CausalLMLabelProbabilities(model, tokenizer, config)
        self._label_probabilities = label_probabilities

    def label_probabilities(self) -> LabelProbabilities:
        if self._label_probabilities is None:
            self._label_probabilities = CausalLMLabelProbabilities.load(self.config)
        return self._label_probabilities

    def verdicts(self, pairs: Sequence[tuple[Any, Any, Any]]) -> list[Verdict]:
        """Two-order verdicts on ``(prompt, x, y)`` triples."""
        return two_order_verdicts(self.label_probabilities(), pairs)

    def records(self) -> Iterator[Any]:
        if self.config.path is None:
            raise _fail("feedback source 'llm_judge' has no items to label: set path = \"<items.jsonl>\".", "path")
        items = read_items(self.config.path, min_completions=2, purpose="an LLM judge")
        pairs = [(item, i, j) for item in items for i, j in itertools.combinations(range(len(item.completions)), 2)]
        triples = [(item.prompt, item.completions[i], item.completions[j]) for item, i, j in pairs]
        for (item, i, j), verdict in zip(pairs, self.verdicts(triples), strict=True):
            record = self._record(item, i, j, verdict)
            if record is not None:
                yield record

    def _record(self, item: Item, i: int, j: int, verdict: Verdict) -> PairwiseComparison | None:
        if not verdict.consistent and self.config.inconsistent == "drop":
            return None
        x, y = item.completions[i], item.completions[j]
        if verdict.winner == -1:
            chosen, rejected, orders = y, x, [1.0 - verdict.backward, 1.0 - verdict.forward]
        else:
            chosen, rejected, orders = x, y, [verdict.forward, verdict.backward]
        metadata = {"judge_orders": orders, "order_consistent": verdict.consistent}
        common: dict[str, Any] = {
            "source": "ai",
            "group_id": item.id,
            "metadata": metadata,
            "provenance": item.provenance,
        }
        if verdict.winner == 0:
            return PairwiseComparison(item.prompt, chosen, rejected, tie=True, probability=0.5, **common)
        probability = verdict.probability if verdict.winner == 1 else 1.0 - verdict.probability
        return PairwiseComparison(item.prompt, chosen, rejected, probability=probability, **common)

    def judge(self) -> Callable[[Any, str, str], float]:
        def judge(prompt: Any, first: str, second: str) -> float:
            if self.config.judge_orders == "one":
                return float(self.label_probabilities()([(prompt, first, second)])[0])
            return self.verdicts([(prompt, first, second)])[0].probability

        return judge


@hookimpl
def prefcore_register_feedback() -> list[type[FeedbackSource]]:
    return [LLMJudge]
