"""The evaluator author's surface: what an evaluator receives, returns and may reuse.

An evaluator gets the trained policy, the reference it started from, a held-out
dataset and whatever judges or scorers the run has; it returns metrics plus samples.
Judges and scorers are plain callables so that a rule, an LLM judge or a reward model
plug in the same way.

The helpers below are what the built-in evaluators use, so a third-party evaluator can
do the same: read the inputs (``require_prompts``, ``held_out_pairs``, ``metadata_answers``,
``EvaluationInputError``), sample completions once per pass (``cached_completions``,
``greedy``), score completions with a model (``tokenize_completion``, ``sequence_logps``,
``completion_token_logps``) or a scorer (``batched_scores``) and ask the judge in both
orders (``judged_verdicts``, ``Verdict``, ``judge_against_reference``). Judge verdicts are cached in
``EvaluationContext.cache`` next to the completions, so ``win_rate`` and ``samples`` show
the same verdict for the same pair and a costly judge is asked once per order.

This module loads no torch: the scoring helpers import the engine on first use.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from typing import TYPE_CHECKING
from typing import Any
from typing import Literal
from typing import Protocol
from typing import runtime_checkable

from prefcore.data import PairwiseComparison
from prefcore.engine.generation import GeneratedCompletions
from prefcore.engine.generation import cached_completions
from prefcore.engine.generation import eval_mode
from prefcore.engine.generation import greedy
from prefcore.engine.generation import prompts_key
from prefcore.errors import ConfigError
from prefcore.errors import PrefcoreError
from prefcore.lazy import lazy_module

if TYPE_CHECKING:
    from prefcore.methods import UsageObjective

torch = lazy_module("torch")
logprobs = lazy_module("prefcore.engine.logprobs")
sequences = lazy_module("prefcore.engine.sequences")

__all__ = [
    "DEFAULT_BETA",
    "JUDGE_HINT",
    "TIE_TOLERANCE",
    "AnswerMatch",
    "EvaluationContext",
    "EvaluationInputError",
    "EvaluationResult",
    "GeneratedCompletions",
    "GenerationSettings",
    "Judge",
    "JudgedPairs",
    "Scorer",
    "TokenIds",
    "Verdict",
    "answer_matches",
    "batched_scores",
    "cached_completions",
    "check_judge",
    "check_scorer",
    "completion_token_logps",
    "eval_mode",
    "evaluation_beta",
    "evaluation_prompts",
    "greedy",
    "held_out_pairs",
    "judge_against_reference",
    "judged_verdicts",
    "metadata_answers",
    "pad_token_id",
    "prompt_display",
    "prompt_token_ids",
    "require_prompts",
    "sequence_logps",
    "tokenize_completion",
]


@runtime_checkable
class Judge(Protocol):
    """``judge(prompt, first, second)`` → probability that ``first`` is better (0.5 = tie).

    Any callable of that shape is a judge: a rule function, an LLM judge's closure, a
    reward model's score gap. ``check_judge`` refuses anything else where a run takes one.
    """

    def __call__(self, prompt: Any, first: str, second: str, /) -> float: ...


@runtime_checkable
class Scorer(Protocol):
    """``scorer(prompts, completions)`` → one scalar score per completion, batched."""

    def __call__(self, prompts: Sequence[Any], completions: Sequence[str], /) -> Sequence[float]: ...


def _accepts(function: Any, count: int) -> bool:
    try:
        inspect.signature(function).bind(*range(count))
    except TypeError:
        return False
    except ValueError:  # no signature to read (some builtins): trust the call
        return True
    return True


def check_judge(judge: Any, owner: str) -> Judge:
    """``judge`` if it is callable as ``judge(prompt, first, second)``; a ``ConfigError`` naming ``owner`` if not."""
    if not (callable(judge) and _accepts(judge, 3)):
        raise ConfigError(
            f"{owner} returned {judge!r} as its judge, which is not callable as judge(prompt, first, second) "
            "-> P(first is better). Return such a callable, or None if it cannot judge."
        )
    return judge


def check_scorer(scorer: Any, owner: str) -> Scorer:
    """``scorer`` if it is callable as ``scorer(prompts, completions)``; a ``ConfigError`` naming ``owner`` if not."""
    if not (callable(scorer) and _accepts(scorer, 2)):
        raise ConfigError(
            f"{owner} gave {scorer!r} as its scorer, which is not callable as scorer(prompts, completions) "
            "-> one score per completion."
        )
    return scorer


TokenIds = tuple[Sequence[int], Sequence[int]]
"""``(prompt_ids, completion_ids)`` of one sequence to score."""

DEFAULT_BETA = 0.1
"""β of implicit-reward metrics when the run's objective declares none (SFT, for example)."""


JUDGE_HINT = (
    'Add a [judge] section to the run file (kind = "rule", "preference_model" or "llm"; see prefcore.judges), '
    "or pass judge= to EvaluationContext from Python."
)
"""What to tell a user whose evaluator needs a judge the run does not have."""

TIE_TOLERANCE = 1e-9
"""Verdicts this close to 0.5 are ties (judges return floats)."""


# -------------------------------------------------------------------------
# What an evaluator receives and returns
# -------------------------------------------------------------------------


@dataclass(frozen=True)
class GenerationSettings:
    """How evaluators sample completions; fixed per run so results are reproducible."""

    max_new_tokens: int = 24
    temperature: float = 0.7
    top_p: float = 1.0
    num_samples: int = 1
    seed: int = 0


@dataclass
class EvaluationContext:
    """Everything an evaluator may use; absent parts are None and evaluators say what they need.

    Attributes:
        policy: the trained causal LM (eval mode).
        reference: the model the policy started from, or None.
        tokenizer: the tokenizer both share.
        prompts: held-out prompts (text or message lists).
        preferences: held-out preference records (for accuracy metrics).
        judge: a pairwise judge (rule, LLM judge, reward model; a run file's ``[judge]``, see
            ``prefcore.judges``), or None. Evaluators that need one set ``needs_judge = True``.
        scorer: a batched scalar scorer (reward model), or None.
        generation: sampling settings.
        generation_prefix: text the usage objective wants before each prompt when generating.
        beta: β of the implicit reward r = β · (log π − log π_ref), for implicit-reward
            metrics: the run's objective declares it (``UsageObjective.implicit_reward_beta``);
            ``DEFAULT_BETA`` when it declares none.
        device: where the models live.
        seed: the seed of random draws (which samples are shown).
        cache: shared by the evaluators of one pass (completions, verdicts, a ``checker``).
        training: the training records (for checks against the training data, ``contamination``).
    """

    policy: Any
    tokenizer: Any
    reference: Any = None
    prompts: Sequence[Any] = ()
    preferences: Sequence[Any] = ()
    judge: Judge | None = None
    scorer: Scorer | None = None
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    generation_prefix: str = ""
    beta: float = DEFAULT_BETA
    device: str = "cpu"
    seed: int = 0
    cache: dict[str, Any] = field(default_factory=dict)
    training: Sequence[Any] = ()


@dataclass(frozen=True)
class EvaluationResult:
    """Named scalar metrics plus example rows (dicts) for the report."""

    metrics: Mapping[str, float]
    samples: Sequence[Mapping[str, Any]] = ()


class EvaluationInputError(PrefcoreError, ValueError):
    """An evaluator was asked to run without an input it cannot do without.

    Attributes:
        evaluator: the evaluator's name.
        missing: what it needs (``"a judge"``, ``"held-out prompts"``, ...).
    """

    def __init__(self, evaluator: str, missing: str, hint: str) -> None:
        self.evaluator = evaluator
        self.missing = missing
        super().__init__(f"Evaluator {evaluator!r} needs {missing}, but the evaluation context has none. {hint}")


# -------------------------------------------------------------------------
# Reading the inputs
# -------------------------------------------------------------------------


def evaluation_beta(objective: UsageObjective) -> float:
    """The β evaluators scale implicit rewards with: the one ``objective`` declares, else ``DEFAULT_BETA``.

    An objective declares it through ``UsageObjective.implicit_reward_beta()`` (the bases in
    ``prefcore.objectives`` return ``config.beta``); one without an implicit reward returns None.
    """
    beta = objective.implicit_reward_beta()
    return DEFAULT_BETA if beta is None else float(beta)


def evaluation_prompts(context: EvaluationContext) -> list[Any]:
    """The held-out prompts, or else the distinct prompts of the held-out preference records."""
    if context.prompts:
        return list(context.prompts)
    seen: dict[Any, None] = {}
    for record in context.preferences:
        prompt = getattr(record, "prompt", None)
        if prompt is not None:
            seen.setdefault(prompt, None)
    return list(seen)


def require_prompts(context: EvaluationContext, evaluator: str) -> list[Any]:
    """``evaluation_prompts``, or an ``EvaluationInputError`` naming ``evaluator`` when there are none."""
    prompts = evaluation_prompts(context)
    if not prompts:
        raise EvaluationInputError(
            evaluator, "held-out prompts", "Give the run an evaluation split (prompts or preference records)."
        )
    return prompts


def held_out_pairs(context: EvaluationContext, evaluator: str) -> tuple[list[PairwiseComparison], int]:
    """The held-out pairwise records that carry an order, and how many ties were skipped.

    A pair labelled as a tie has no side to rank, so accuracy-style evaluators leave it out
    and report the count. Raises ``EvaluationInputError`` naming ``evaluator`` when the
    held-out records hold no pairwise comparison at all.
    """
    comparisons = [record for record in context.preferences if isinstance(record, PairwiseComparison)]
    if not comparisons:
        raise EvaluationInputError(
            evaluator,
            "held-out pairwise preference records",
            "Give the run an evaluation split of pairwise comparisons (prompt, chosen, rejected).",
        )
    pairs = [pair for pair in comparisons if not pair.tie]
    return pairs, len(comparisons) - len(pairs)


def metadata_answers(context: EvaluationContext, key: str = "answer") -> dict[Any, tuple[str, ...]]:
    """Prompt → accepted answers, from the held-out records' ``metadata[key]`` (a string, number or list).

    Each distinct prompt counts once, with the answer of its first record; records without
    the key are skipped.
    """
    answers: dict[Any, tuple[str, ...]] = {}
    for record in context.preferences:
        answer = getattr(record, "metadata", {}).get(key)
        prompt = getattr(record, "prompt", None)
        if answer is None or prompt is None or prompt in answers:
            continue
        accepted = answer if isinstance(answer, (list, tuple)) else [answer]
        answers[prompt] = tuple(str(item) for item in accepted)
    return answers


AnswerMatch = Literal["exact", "contains"]
"""How a completion gives an answer: ``exact`` (equals it) or ``contains`` (has it as a whole word or phrase)."""


def _normal(text: str, normalize: bool) -> str:
    return " ".join(text.lower().split()) if normalize else text.strip()


def answer_matches(completion: str, answers: Sequence[str], *, match: AnswerMatch, normalize: bool = True) -> bool:
    """Whether ``completion`` equals, or contains as a whole word or phrase, one of ``answers``.

    ``normalize`` compares lower-cased text with runs of whitespace collapsed (else stripped
    text as is); an empty answer never matches.
    """
    text = _normal(completion, normalize)
    for answer in answers:
        expected = _normal(answer, normalize)
        if not expected:
            continue
        if match == "exact" and text == expected:
            return True
        if match == "contains" and re.search(rf"(?<!\w){re.escape(expected)}(?!\w)", text):
            return True
    return False


def prompt_display(prompt: Any) -> str:
    """A prompt as one readable string: the text, or its chat turns as ``role: content``."""
    if isinstance(prompt, str):
        return prompt
    return "\n".join(f"{message.role}: {message.content}" for message in prompt)


# -------------------------------------------------------------------------
# Scoring completions with a model
# -------------------------------------------------------------------------


def batched_scores(
    scorer: Scorer, prompts: Sequence[Any], completions: Sequence[Any], *, batch_size: int, evaluator: str
) -> list[float]:
    """One float per completion, asking ``scorer`` ``batch_size`` completions at a time.

    ``prompts[i]`` is the prompt of ``completions[i]``. A scorer that returns another count
    than it was given is a bug in the scorer; the ``ValueError`` names ``evaluator``.
    """
    scores: list[float] = []
    for start in range(0, len(completions), batch_size):
        stop = start + batch_size
        batch = [float(score) for score in scorer(prompts[start:stop], completions[start:stop])]
        if len(batch) != len(completions[start:stop]):
            raise ValueError(
                f"Evaluator {evaluator!r}: the scorer returned {len(batch)} scores for "
                f"{len(completions[start:stop])} completions; it must return one per completion."
            )
        scores.extend(batch)
    return scores


def pad_token_id(tokenizer: Any) -> int:
    """The id that pads scored batches: the tokenizer's pad token, else its EOS."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def prompt_token_ids(tokenizer: Any, prompt: Any, *, prefix: str = "") -> list[int]:
    """The ids a model is conditioned on for ``prompt`` (chat template, ``prefix``), as in training."""
    return sequences.prompt_token_ids(tokenizer, prompt, prefix=prefix)


def tokenize_completion(
    tokenizer: Any,
    prompt: Any,
    completion: Any,
    *,
    max_length: int,
    prefix: str = "",
    where: str = "held-out record",
) -> TokenIds:
    """``(prompt_ids, completion_ids)`` of a text or chat completion, tokenised as training does.

    Arguments:
        tokenizer: the run's tokenizer.
        prompt, completion: text or chat messages.
        max_length: prompt + completion tokens; longer prompts are cut from the left.
        prefix: condition text before the prompt (``context.generation_prefix`` for the policy).
        where: how errors name the record.
    """
    tokenized = sequences.tokenize_sequence(
        tokenizer, prompt, completion, max_length=max_length, prefix=prefix, where=where
    )
    return tokenized.prompt_ids, tokenized.completion_ids


def _padded(rows: Sequence[TokenIds], context: EvaluationContext) -> Any:
    tokenized = [sequences.TokenizedSequence(tuple(prompt), tuple(completion)) for prompt, completion in rows]
    return sequences.pad_sequences(tokenized, pad_token_id(context.tokenizer)).to(context.device)


def sequence_logps(model: Any, rows: Sequence[TokenIds], context: EvaluationContext) -> torch.Tensor:
    """Summed completion log-probs of each row, ``[S]`` float64 on ``context.device``.

    log π(y | x) = Σ_t log π(y_t | x, y_<t), computed in eval mode (no dropout) without
    gradients, in one padded batch: pass as many rows as fit in memory at once.
    """

    from prefcore.distributed.shards import gather_tensor_rows  # torch-free import of this module

    def score(share: Sequence[TokenIds]) -> torch.Tensor:
        with eval_mode(model):
            return logprobs.sequence_logps(model, _padded(share, context)).double()

    return gather_tensor_rows(rows, score, device=context.device)  # under torchrun: each rank its share


def completion_token_logps(model: Any, rows: Sequence[TokenIds], context: EvaluationContext) -> torch.Tensor:
    """Log-probs of every completion token of every row, row after row, float64 on the CPU.

    Row ``i`` contributes ``len(rows[i][1])`` entries, in order; computed in eval mode
    without gradients, in one padded batch.
    """
    from prefcore.distributed.shards import gather_rows  # torch-free import of this module

    def score(share: Sequence[TokenIds]) -> list[torch.Tensor]:
        padded = _padded(share, context)
        with eval_mode(model), torch.no_grad():
            token_logps = logprobs.completion_token_logps(model, padded)
        flat = token_logps[padded.completion_mask].double().cpu()
        return list(flat.split([len(completion) for _, completion in share]))

    pieces = gather_rows(rows, score)  # under torchrun: each rank its share
    return torch.cat(pieces) if pieces else torch.zeros(0, dtype=torch.float64)


# -------------------------------------------------------------------------
# Asking a pairwise judge, position bias controlled
# -------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """A judge's view of one policy/reference pair, asked in both orders.

    ``policy_first``: judge(x, policy, reference), the probability the policy is better
    when shown first. ``reference_first``: judge(x, reference, policy).
    """

    policy_first: float
    reference_first: float

    @property
    def policy_second_score(self) -> float:
        """The policy's win probability read from the reversed order."""
        return 1.0 - self.reference_first

    @property
    def averaged(self) -> float:
        """p = (judge(x, a, b) + 1 − judge(x, b, a)) / 2: the position bias cancels."""
        return (self.policy_first + self.policy_second_score) / 2

    @property
    def consistent(self) -> bool:
        """Whether both orders give the same verdict (win, tie or loss for the policy)."""
        return _side(self.policy_first) == _side(self.policy_second_score)

    @property
    def first_position_preference(self) -> float:
        """Mean probability given to whichever completion was shown first; 0.5 = unbiased."""
        return (self.policy_first + self.reference_first) / 2


def _side(probability: float) -> int:
    if abs(probability - 0.5) <= TIE_TOLERANCE:
        return 0
    return 1 if probability > 0.5 else -1


def _judge_value(value: Any, evaluator: str) -> float:
    probability = float(value)
    if not 0.0 <= probability <= 1.0:
        raise ValueError(
            f"Evaluator {evaluator!r}: the judge returned {probability!r}; a judge returns the probability "
            f"(0 to 1) that the first completion is better."
        )
    return probability


def judged_verdicts(
    context: EvaluationContext,
    prompts: Sequence[Any],
    policy: GeneratedCompletions,
    reference: GeneratedCompletions,
    rows: Sequence[int],
    *,
    evaluator: str,
) -> dict[int, Verdict]:
    """Verdicts for the completion ``rows``, asking the judge only about rows not yet judged.

    Arguments:
        context: supplies the judge and the cache shared with other evaluators.
        prompts: the prompts both models completed, in the order they were sampled.
        policy, reference: their completions (``cached_completions``), rows aligned.
        rows: completion rows to judge (row ``i * num_samples + k`` is sample ``k`` of prompt ``i``).
        evaluator: the asking evaluator's name, for errors.
    Returns:
        row → its ``Verdict``.
    """
    if context.judge is None:
        raise EvaluationInputError(evaluator, "a judge", JUDGE_HINT)
    key = ("verdicts", prompts_key(prompts), policy.texts, reference.texts)
    cache: dict[int, Verdict] = context.cache.setdefault(key, {})
    for row in rows:
        if row in cache:
            continue
        prompt = prompts[row // policy.num_samples]
        policy_text, reference_text = policy.texts[row], reference.texts[row]
        cache[row] = Verdict(
            _judge_value(context.judge(prompt, policy_text, reference_text), evaluator),
            _judge_value(context.judge(prompt, reference_text, policy_text), evaluator),
        )
    return {row: cache[row] for row in rows}


@dataclass(frozen=True)
class JudgedPairs:
    """Policy and reference completions of the held-out prompts, each pair judged in both orders.

    Row ``i * num_samples + k`` of ``policy.texts``, ``reference.texts`` and ``verdicts`` is
    sample ``k`` of ``prompts[i]``; ``verdicts`` is in row order.
    """

    prompts: list[Any]
    policy: GeneratedCompletions
    reference: GeneratedCompletions
    verdicts: dict[int, Verdict]


def judge_against_reference(
    context: EvaluationContext, evaluator: str, *, batch_size: int, reference_hint: str
) -> JudgedPairs:
    """Sample both models on the held-out prompts and judge every pair in both orders.

    The common first half of judged win rates: it checks the judge, then the reference
    (``reference_hint`` tells the user what to do without one), then the prompts, so the
    errors come in that order.
    """
    if context.judge is None:
        raise EvaluationInputError(evaluator, "a judge", JUDGE_HINT)
    if context.reference is None:
        raise EvaluationInputError(evaluator, "a reference model", reference_hint)
    prompts = require_prompts(context, evaluator)
    policy = cached_completions(context, prompts, role="policy", batch_size=batch_size)
    reference = cached_completions(context, prompts, role="reference", batch_size=batch_size)
    verdicts = judged_verdicts(context, prompts, policy, reference, range(len(policy.texts)), evaluator=evaluator)
    return JudgedPairs(prompts, policy, reference, verdicts)
