"""Sample completions from a causal LM, reproducibly and from exactly the trained-on prompt text.

Prompts go through ``prompt_token_ids``, the same function training uses, so a chat
template, a conditioning prefix or a plain-text prompt yields the very token ids the
policy was trained to continue. Batches are left-padded so every row's new tokens start
at the same column. Sampling is seeded inside a forked RNG: a given ``GenerationSettings``
gives the same completions every time, and the caller's global RNG stream (the training
loop's dropout and data order) is left exactly as it was.

Evaluators share completions through ``EvaluationContext.cache`` (``cached_completions``):
one evaluation pass samples each model once per (prompts, settings, prefix), whichever
evaluators ask.
"""

from __future__ import annotations

from collections.abc import Iterator
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import replace
from typing import TYPE_CHECKING
from typing import Any
from typing import Literal

from prefcore.engine.chat import stop_token_ids
from prefcore.lazy import lazy_module

__all__ = [
    "GeneratedCompletions",
    "cached_completions",
    "eval_mode",
    "generate",
    "generate_completions",
    "greedy",
    "prompts_key",
]

# Evaluators import this module when they register; torch and transformers load on first use.
torch = lazy_module("torch")
transformers = lazy_module("transformers")
sequences = lazy_module("prefcore.engine.sequences")

if TYPE_CHECKING:
    from transformers import GenerationConfig

    from prefcore.evaluation import EvaluationContext
    from prefcore.evaluation import GenerationSettings

ModelRole = Literal["policy", "reference"]


@dataclass(frozen=True)
class GeneratedCompletions:
    """Sampled completions as token ids and text, ``num_samples`` per prompt, prompt-major.

    Row ``i * num_samples + k`` is sample ``k`` of prompt ``i``. ``completion_ids`` holds
    the new tokens up to and including the first stop token (EOS or the chat template's end
    of turn; none if ``max_new_tokens`` ran out), so log-probs can be computed on exactly the
    sampled tokens; ``texts`` are those tokens decoded without special tokens. ``prompts``
    are the prompts as given, once each; ``prompt_ids`` the ids generation started from, one entry per row.
    """

    prompts: tuple[Any, ...]
    prompt_ids: tuple[tuple[int, ...], ...]
    completion_ids: tuple[tuple[int, ...], ...]
    texts: tuple[str, ...]
    num_samples: int

    def for_prompt(self, index: int) -> tuple[str, ...]:
        """The ``num_samples`` texts sampled for prompt ``index``."""
        start = index * self.num_samples
        return self.texts[start : start + self.num_samples]


@contextmanager
def _seeded_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Seed the CPU (and the model's CUDA device) RNG, restoring the previous states on exit.

    The generators are seeded directly rather than through ``torch.manual_seed``, which
    would also queue a seed for every CUDA device and change state outside the fork.
    """
    cuda_devices: list[int] = []
    if device.type == "cuda":
        cuda_devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=cuda_devices):
        torch.random.default_generator.manual_seed(seed)
        for index in cuda_devices:
            torch.cuda.default_generators[index].manual_seed(seed)
        yield


@contextmanager
def eval_mode(model: Any) -> Iterator[Any]:
    """The model in eval mode (no dropout) for the block, its train/eval mode restored after."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _generation_config(settings: GenerationSettings, pad_token_id: int, stop_ids: Sequence[int]) -> GenerationConfig:
    """Sampling fully defined by ``settings``: no top-k, repetition penalty or other model defaults."""
    if settings.temperature > 0:
        sampling: dict[str, Any] = {
            "do_sample": True,
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "top_k": 0,
        }
    else:
        sampling = {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    return transformers.GenerationConfig(
        max_new_tokens=settings.max_new_tokens,
        num_return_sequences=settings.num_samples,
        pad_token_id=pad_token_id,
        eos_token_id=list(stop_ids),
        **sampling,
    )


def _left_pad(rows: Sequence[Sequence[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    longest = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), longest), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for index, row in enumerate(rows):
        if row:
            input_ids[index, longest - len(row) :] = torch.tensor(row, dtype=torch.long)
            attention_mask[index, longest - len(row) :] = 1
    return input_ids, attention_mask


def _until_stop(tokens: Sequence[int], stop_ids: Sequence[int]) -> tuple[int, ...]:
    """The tokens up to and including the first stop id (all of them if none occurs)."""
    stops = set(stop_ids)
    for index, token in enumerate(tokens):
        if token in stops:
            return tuple(tokens[: index + 1])
    return tuple(tokens)


def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Any],
    settings: GenerationSettings,
    *,
    prefix: str = "",
    batch_size: int = 16,
    device: str | torch.device = "cpu",
) -> GeneratedCompletions:
    """Sample ``settings.num_samples`` completions per prompt, keeping their token ids.

    Arguments:
        model: a transformers causal LM; its train/eval mode is restored afterwards.
        tokenizer: the tokenizer the model was trained with; generation stops at any of
            ``stop_token_ids(tokenizer, model)`` (EOS, the generation config's, the template's end of turn).
        prompts: text prompts or tuples of chat messages.
        settings: sampling settings; ``temperature == 0`` means greedy decoding.
        prefix: condition text put before each prompt, as the usage objective trained it.
        batch_size: prompts per ``generate`` call.
        device: where the model lives.
    Returns:
        the completions, prompt-major (see ``GeneratedCompletions``).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    stop_ids = stop_token_ids(tokenizer, model)
    if not stop_ids:
        raise ValueError(
            "the tokenizer has no eos_token_id and its template no end of turn; generation could never stop."
        )
    pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[0]
    config = _generation_config(settings, pad_token_id, stop_ids)
    device = torch.device(device)
    all_prompt_ids = [tuple(sequences.prompt_token_ids(tokenizer, prompt, prefix=prefix)) for prompt in prompts]
    completion_ids: list[tuple[int, ...]] = []
    with eval_mode(model), _seeded_rng(settings.seed, device), torch.no_grad():
        for start in range(0, len(all_prompt_ids), batch_size):
            input_ids, attention_mask = _left_pad(all_prompt_ids[start : start + batch_size], pad_token_id)
            output = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                generation_config=config,
            )
            new_tokens = output[:, input_ids.shape[1] :].tolist()
            completion_ids.extend(_until_stop(row, stop_ids) for row in new_tokens)
    texts = tuple(tokenizer.decode(list(ids), skip_special_tokens=True) for ids in completion_ids)
    repeated_prompts = tuple(ids for ids in all_prompt_ids for _ in range(settings.num_samples))
    return GeneratedCompletions(tuple(prompts), repeated_prompts, tuple(completion_ids), texts, settings.num_samples)


def generate_completions(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Any],
    settings: GenerationSettings,
    *,
    prefix: str = "",
    batch_size: int = 16,
    device: str | torch.device = "cpu",
) -> list[str]:
    """Completion texts, ``settings.num_samples`` per prompt, prompt-major (see ``generate``)."""
    generated = generate(model, tokenizer, prompts, settings, prefix=prefix, batch_size=batch_size, device=device)
    return list(generated.texts)


def cached_completions(
    context: EvaluationContext,
    prompts: Sequence[Any],
    *,
    role: ModelRole = "policy",
    settings: GenerationSettings | None = None,
    batch_size: int = 16,
) -> GeneratedCompletions:
    """Completions of the policy or the reference, sampled once per evaluation pass.

    The policy generates with ``context.generation_prefix``, the condition its objective
    trained it on; the reference never saw that condition and generates from the bare
    prompt. Results are kept in ``context.cache`` under
    ``("completions", role, settings, prefix, prompts)``, so every evaluator asking for
    the same samples gets the same ones.
    """
    settings = context.generation if settings is None else settings
    model = context.policy if role == "policy" else context.reference
    if model is None:
        raise ValueError(f"the evaluation context has no {role} model to generate with.")
    prefix = context.generation_prefix if role == "policy" else ""
    key = ("completions", role, settings, prefix, prompts_key(prompts))
    if key not in context.cache:
        context.cache[key] = _sharded_generate(
            model, context.tokenizer, prompts, settings, prefix=prefix, batch_size=batch_size, device=context.device
        )
    return context.cache[key]


def _sharded_generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Any],
    settings: GenerationSettings,
    *,
    prefix: str,
    batch_size: int,
    device: str | torch.device,
) -> GeneratedCompletions:
    """``generate`` in one process; under torchrun each rank samples its share of the prompts, all get the whole.

    Rank r samples with seed ``settings.seed + r`` (rank 0 draws what one process draws first), so
    greedy decoding gives one process's completions and sampling an equally likely draw.
    """
    from prefcore.distributed.process_group import current
    from prefcore.distributed.shards import gather_rows

    parallel = current()
    if parallel is None:
        return generate(model, tokenizer, prompts, settings, prefix=prefix, batch_size=batch_size, device=device)
    rank_settings = replace(settings, seed=settings.seed + parallel.rank)

    def sample(share: Sequence[Any]) -> list[tuple[tuple[tuple[int, ...], tuple[int, ...], str], ...]]:
        part = generate(model, tokenizer, share, rank_settings, prefix=prefix, batch_size=batch_size, device=device)
        rows = list(zip(part.prompt_ids, part.completion_ids, part.texts, strict=True))
        return [tuple(rows[i * part.num_samples : (i + 1) * part.num_samples]) for i in range(len(share))]

    per_prompt = gather_rows(list(prompts), sample)
    rows = [row for samples in per_prompt for row in samples]
    return GeneratedCompletions(
        tuple(prompts),
        tuple(row[0] for row in rows),
        tuple(row[1] for row in rows),
        tuple(row[2] for row in rows),
        settings.num_samples,
    )


def prompts_key(prompts: Sequence[Any]) -> tuple[Any, ...]:
    """The prompts as a hashable cache key (message lists become tuples)."""
    return tuple(prompt if isinstance(prompt, str) else tuple(prompt) for prompt in prompts)


def greedy(settings: GenerationSettings) -> GenerationSettings:
    """The same settings decoding greedily, one completion per prompt (answers, benchmarks)."""
    return replace(settings, temperature=0.0, top_p=1.0, num_samples=1)
