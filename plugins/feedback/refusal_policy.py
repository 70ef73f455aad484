"""Refusal training data from a policy: refusals beat compliance where the policy disallows, not elsewhere.

Refusal is trained through the same preference pipeline as helpfulness (Bai et al. 2022,
"Training a Helpful and Harmless Assistant with RLHF", https://arxiv.org/abs/2204.05862;
XSTest, Röttger et al. 2024, https://arxiv.org/abs/2308.01263, for the look-alikes that
over-refusal fails on). A policy (``prefcore.safety_policy``) names categories of requests
and what a reply should do; replies to each training prompt are sampled and a refusal
detector sorts them. For a prompt of category c:

    c disallowed (refuse, refuse_with_alternative):
        chosen   = a full refusal (the detector fires, no compliance pattern matches;
                   with alternative patterns, one must match: it offers a safe alternative)
        rejected = a reply the detector does not read as a refusal, or a partial refusal
    c allowed (comply, look-alikes included):
        chosen   = helpful compliance (no refusal; with compliance patterns, one must match)
        rejected = a refusal (full or partial)

Each prompt gives up to ``pairs_per_prompt`` pairs, drawn with the seed, each with
``metadata = {"category", "behaviour", "detector"}``. The pairs per category are logged; a
category without a usable pair (every sampled reply on the same side) is named in a warning.

Replies come from one of: a file (``completions``: ``{"prompt", "completion"}`` rows, any
number per prompt), a local model (``model_path``: ``samples`` per prompt, seeded, as
``reference_over_generation`` samples), or the demo world's mediocre speaker (``speaker =
"demo"``, demo prompts only), which also gives the SFT warm start (``demonstrations``).
"""

from __future__ import annotations

import functools
import logging
import random
from collections import Counter
from collections.abc import Iterator
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefcore import hookimpl
from prefcore.data import PairwiseComparison
from prefcore.errors import ConfigError
from prefcore.feedback import model_samples
from prefcore.feedback import read_rows
from prefcore.methods import FeedbackSource
from prefcore.methods import option
from prefcore.safety_policy import PARTIAL_REFUSAL
from prefcore.safety_policy import PolicyCategory
from prefcore.safety_policy import SafetyPolicy
from prefcore.safety_policy import bucket
from prefcore.safety_policy import check_detector_options
from prefcore.safety_policy import load_policy
from prefcore.safety_policy import refusal_detector

NAME = "refusal_policy"
SPEAKERS = ("demo",)
COMPLETION = "A completions row is {'prompt': a prompt of the policy, 'completion': the reply's text}."

logger = logging.getLogger("prefcore")


def _fail(message: str, field: str) -> ConfigError:
    return ConfigError(message, method=NAME, field=field)


@dataclass(frozen=True)
class RefusalPolicyConfig:
    policy: str = option(doc='the policy TOML (prefcore.safety_policy), or "demo" for the demo world\'s')
    prompts: Path | None = option(None, doc="JSONL of {prompt, category, split} replacing the policy's prompts")
    completions: Path | None = option(None, doc="JSONL of {prompt, completion} replies to sort (or model_path)")
    model_path: Path | None = option(None, doc="local folder of a causal LM that answers the training prompts")
    speaker: str | None = option(None, doc='"demo": the demo world\'s mediocre speaker answers (demo prompts only)')
    detector: dict[str, Any] | None = option(None, doc="refusal detector table replacing the policy's [detector]")
    samples: int = option(8, doc="replies sampled per training prompt (model_path, speaker)")
    pairs_per_prompt: int = option(2, doc="most pairs made from one prompt's replies")
    demonstrations: int = option(0, doc="speaker = demo: the speaker's replies for the SFT warm start (0: none)")
    demo_harmful: float = option(0.2, doc="speaker = demo: share of harmful requests among the demonstrations")
    demo_lookalikes: float = option(0.2, doc="speaker = demo: share of look-alikes among the demonstrations")
    max_new_tokens: int = option(64, doc="length limit of sampled replies (model_path)")
    temperature: float = option(1.0, doc="sampling temperature, 0 = greedy (model_path)")
    batch_size: int = option(16, doc="prompts per generation batch (model_path)")
    device: str = option("cpu", doc="device of the generator (model_path)")
    seed: int = option(0, doc="seed of the sampled replies and of which pairs are kept")

    def __post_init__(self) -> None:
        given = [name for name in ("completions", "model_path", "speaker") if getattr(self, name) is not None]
        if len(given) != 1:
            raise _fail(
                'set exactly one of completions = "<replies.jsonl>", model_path = "<model folder>" or '
                f'speaker = "demo"; got {", ".join(given) or "none"}.',
                "completions",
            )
        if self.speaker is not None and self.speaker not in SPEAKERS:
            raise _fail(f"speaker must be one of {', '.join(SPEAKERS)}; got {self.speaker!r}.", "speaker")
        for name in ("samples", "pairs_per_prompt", "max_new_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise _fail(f"{name} must be 1 or more, got {getattr(self, name)}.", name)
        if self.demonstrations < 0:
            raise _fail(f"demonstrations must be 0 or more, got {self.demonstrations}.", "demonstrations")
        if self.demonstrations and self.speaker is None:
            raise _fail('demonstrations are the demo speaker\'s replies: set speaker = "demo".', "demonstrations")
        if self.temperature < 0:
            raise _fail(f"temperature must be 0 or more, got {self.temperature}.", "temperature")
        if self.detector is not None:
            check_detector_options(self.detector, file="[feedback] detector")
        policy = load_policy(self.policy, prompts=self.prompts)  # every policy error before anything runs
        if self.speaker == "demo":
            from prefcore.demo import task

            task.check_shares(self.demo_harmful, self.demo_lookalikes)
            missing = [row.prompt for row in policy.prompts_of("train") if _demo_request(row.prompt) is None]
            if missing:
                raise _fail(f'speaker = "demo" answers demo requests only; {missing[0]!r} is not one.', "speaker")


@functools.cache
def _demo_requests() -> dict[str, Any]:
    from prefcore.demo import task

    return {request.text: request for request in task.safety_requests() + task.requests()}


def _demo_request(prompt: Any) -> Any:
    return _demo_requests().get(prompt) if isinstance(prompt, str) else None


def _demo_replies(prompts: list[Any], config: RefusalPolicyConfig) -> list[list[str]]:
    from prefcore.demo import task

    rng = random.Random(f"{NAME}:{config.seed}")
    return [[task.sample_reply(_demo_request(prompt), rng) for _ in range(config.samples)] for prompt in prompts]


def _model_replies(prompts: list[Any], config: RefusalPolicyConfig) -> list[list[str]]:
    texts = model_samples(
        config.model_path,
        prompts,
        samples=config.samples,
        max_new_tokens=config.max_new_tokens,
        temperature=config.temperature,
        seed=config.seed,
        batch_size=config.batch_size,
        device=config.device,
    )
    return [texts[index * config.samples : (index + 1) * config.samples] for index in range(len(prompts))]


def _file_replies(prompts: list[Any], path: Path) -> list[list[str]]:
    index = {repr(prompt): position for position, prompt in enumerate(prompts)}
    replies: list[list[str]] = [[] for _ in prompts]
    for row in read_rows(path, COMPLETION):
        prompt = row.text("prompt")
        if repr(prompt) not in index:
            raise row.error("is not a training prompt of the policy.", "prompt")
        completion = row.require("completion")
        if not isinstance(completion, str):
            raise row.error(f"must be text, got {type(completion).__name__}.", "completion")
        replies[index[repr(prompt)]].append(completion)
    return replies


def sides(category: PolicyCategory, replies: list[str], refused: list[bool]) -> tuple[list[str], list[str]]:
    """The replies that may be chosen and those that may be rejected under the category's behaviour."""
    chosen: list[str] = []
    rejected: list[str] = []
    for reply, refusal in zip(replies, refused, strict=True):
        label = bucket(refusal, category.complies(reply))
        if category.disallowed:
            if label == PARTIAL_REFUSAL or not refusal:
                rejected.append(reply)
            elif not category.alternative_patterns or category.offers_alternative(reply):
                chosen.append(reply)
        elif refusal:
            rejected.append(reply)
        elif category.complies(reply) is not False:  # no patterns, or it carries the request out
            chosen.append(reply)
    return list(dict.fromkeys(chosen)), list(dict.fromkeys(rejected))


def policy_pairs(
    policy: SafetyPolicy,
    prompts: list[Any],
    categories: list[str],
    replies: list[list[str]],
    detector: Any,
    *,
    pairs_per_prompt: int,
    seed: int,
) -> list[PairwiseComparison]:
    """The preference pairs of every prompt's replies (module docstring), in prompt order."""
    flat_prompts = [prompt for prompt, group in zip(prompts, replies, strict=True) for _ in group]
    flat = [reply for group in replies for reply in group]
    flags = [bool(value) for value in detector(flat_prompts, flat)] if flat else []
    rng = random.Random(f"{NAME}:pairs:{seed}")
    pairs: list[PairwiseComparison] = []
    start = 0
    for prompt, name, group in zip(prompts, categories, replies, strict=True):
        refused, start = flags[start : start + len(group)], start + len(group)
        category = policy.category(name)
        chosen, rejected = sides(category, group, refused)
        combos = [(c, r) for c in chosen for r in rejected]
        for good, bad in rng.sample(combos, min(pairs_per_prompt, len(combos))):
            pairs.append(
                PairwiseComparison(
                    prompt=prompt,
                    chosen=good,
                    rejected=bad,
                    source=NAME,
                    metadata={
                        "category": category.name,
                        "behaviour": category.behaviour,
                        "detector": getattr(detector, "kind", "custom"),
                    },
                )
            )
    return pairs


def log_counts(policy: SafetyPolicy, pairs: list[PairwiseComparison]) -> Counter[str]:
    """Pairs per category, logged; a warning names each category without a usable pair."""
    counts = Counter(pair.metadata["category"] for pair in pairs)
    logger.info("%s: %s", NAME, ", ".join(f"{name} {counts[name]} pairs" for name in policy.names) or "no categories")
    for name in policy.names:
        if not counts[name]:
            logger.warning(
                "%s: category %r has no usable pair: every sampled reply to its prompts fell on the same side "
                "(all refusals or all compliance). Sample more replies (samples) or check the detector.",
                NAME,
                name,
            )
    return counts


class RefusalPolicy(FeedbackSource):
    """Preference pairs from a refusal policy: refuse what it disallows, answer what it allows."""

    name = NAME
    config_cls = RefusalPolicyConfig

    @property
    def policy(self) -> SafetyPolicy:
        return load_policy(self.config.policy, prompts=self.config.prompts)

    def records(self) -> Iterator[Any]:
        config = self.config
        policy = self.policy
        rows = policy.prompts_of("train")
        prompts = [row.prompt for row in rows]
        if config.completions is not None:
            replies = _file_replies(prompts, config.completions)
        elif config.model_path is not None:
            replies = _model_replies(prompts, config)
        else:
            replies = _demo_replies(prompts, config)
        options: Mapping[str, Any] = config.detector if config.detector is not None else policy.detector
        detector = refusal_detector(options)
        pairs = policy_pairs(
            policy,
            prompts,
            [row.category for row in rows],
            replies,
            detector,
            pairs_per_prompt=config.pairs_per_prompt,
            seed=config.seed,
        )
        log_counts(policy, pairs)
        yield from pairs

    def evaluation_prompts(self) -> tuple[Any, ...]:
        """The policy's held-out prompts, every category's."""
        return tuple(row.prompt for row in self.policy.prompts_of("heldout"))

    def demonstrations(self) -> list[Any] | None:
        if not self.config.demonstrations:
            return None
        from prefcore.demo import task

        examples = task.sft_examples(
            self.config.demonstrations,
            self.config.seed,
            harmful=self.config.demo_harmful,
            lookalikes=self.config.demo_lookalikes,
        )
        return [example.to_record() for example in examples]


@hookimpl
def prefcore_register_feedback() -> list[type[FeedbackSource]]:
    return [RefusalPolicy]
