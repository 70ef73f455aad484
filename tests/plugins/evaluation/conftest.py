"""Tiny models with known behaviour for the evaluator tests.

``random_llama`` is an ordinary randomly initialised tiny Llama. ``context_free_llama``
is a tiny Llama whose next-token distribution is the same after every prefix, so the
log-probability of any completion is known in closed form: its decoder layers are
zeroed (the residual stream is just the token embedding), every token embeds to the
all-ones vector, and the LM head maps that constant hidden state to chosen logits.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Mapping

import pytest
import torch
from transformers import LlamaForCausalLM
from transformers import PreTrainedTokenizerFast

from prefcore.demo.model import build_tiny_model
from prefcore.demo.tokenizer import build_tokenizer
from prefcore.evaluation import EvaluationContext
from prefcore.evaluation import GenerationSettings

WORDS = (
    "good",
    "bad",
    "fine",
    "poor",
    "what",
    "is",
    "the",
    "colour",
    "of",
    "sky",
    "sea",
    "grass",
    "sun",
    "snow",
    "two",
    "plus",
    "three",
    "four",
    "five",
    "red",
    "blue",
    "green",
    "yellow",
    "white",
    "yes",
    "no",
    "please",
    "thanks",
    "answer",
)
"""About 35 tokens with the five special ones: small, but enough for distinct prompts."""

PROMPTS = tuple(
    f"what is the colour of {thing} {courtesy}"
    for thing in ("sky", "sea", "grass", "sun", "snow")
    for courtesy in ("please", "thanks", "yes", "no")
)
"""Twenty distinct held-out prompts."""

TINY = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny matrices run fastest on one thread; two threads only contend on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tokenizer() -> PreTrainedTokenizerFast:
    return build_tokenizer(WORDS)


@pytest.fixture
def random_llama(tokenizer: PreTrainedTokenizerFast) -> Callable[[int], LlamaForCausalLM]:
    def make(seed: int = 0) -> LlamaForCausalLM:
        return build_tiny_model(tokenizer, seed=seed, **TINY).eval()

    return make


def next_token_logits(tokenizer: PreTrainedTokenizerFast, logits: Mapping[str, float]) -> torch.Tensor:
    """A vocabulary-sized logit vector: the given words' logits, 0 for every other token."""
    vector = torch.zeros(len(tokenizer))
    for word, logit in logits.items():
        vector[tokenizer.convert_tokens_to_ids(word)] = logit
    return vector


@pytest.fixture
def context_free_llama(tokenizer: PreTrainedTokenizerFast) -> Callable[..., LlamaForCausalLM]:
    def make(logits: Mapping[str, float] | torch.Tensor) -> LlamaForCausalLM:
        if not isinstance(logits, torch.Tensor):
            logits = next_token_logits(tokenizer, logits)
        model = build_tiny_model(tokenizer, **TINY)
        hidden_size = model.config.hidden_size
        with torch.no_grad():
            for parameter in model.model.layers.parameters():
                parameter.zero_()
            model.model.embed_tokens.weight.fill_(1.0)
            # The final RMSNorm maps the all-ones state to (almost exactly) all ones.
            model.lm_head.weight.copy_(logits[:, None].expand(-1, hidden_size) / hidden_size)
        return model.eval()

    return make


@pytest.fixture
def make_context(tokenizer: PreTrainedTokenizerFast) -> Callable[..., EvaluationContext]:
    def make(policy: LlamaForCausalLM, **overrides: object) -> EvaluationContext:
        fields: dict[str, object] = {
            "prompts": PROMPTS,
            "generation": GenerationSettings(max_new_tokens=6, temperature=1.0, seed=0),
        }
        fields.update(overrides)
        return EvaluationContext(policy=policy, tokenizer=tokenizer, **fields)

    return make


@pytest.fixture
def prompts() -> tuple[str, ...]:
    return PROMPTS


@pytest.fixture
def good_word_judge() -> Callable[[object, str, str], float]:
    """A fair judge: the completion with more 'good' words wins, equal counts tie."""

    def judge(prompt: object, first: str, second: str) -> float:
        difference = first.split().count("good") - second.split().count("good")
        return 0.5 if difference == 0 else float(difference > 0)

    return judge
