"""Generation backends: what samples the rollouts, behind one method.

The engine asks a backend for ``G`` continuations of each prompt and the log-prob of every
sampled token under the sampling distribution; it cuts, decodes and packs them itself
(``prefcore.engine.rollout.sampler``). So a faster engine (vLLM, SGLang, a hand-written KV
cache loop) plugs in by implementing ``GenerationBackend.sample``, and objectives never
learn which one ran.

Which log-prob is recorded. ``log softmax(logits / T)[token]`` of the *full* tempered
distribution, also when ``top_p < 1`` truncates what is sampled from: the training side
recomputes exactly that quantity (TRL and verl do the same), so the importance ratio
``π_θ / π_sampling`` is 1 at the first update up to float error. With ``T == 0``
(greedy decoding) the recorded log-probs are those of the untempered distribution
(``T = 1``), since ``logits / 0`` has none.
"""

from __future__ import annotations

from collections.abc import Iterator
from collections.abc import Sequence
from contextlib import contextmanager
from typing import Any
from typing import NamedTuple
from typing import Protocol
from typing import runtime_checkable

from prefcore.lazy import lazy_module

__all__ = ["GenerationBackend", "Sample", "TransformersBackend", "logprob_temperature", "seeded_rng"]

torch = lazy_module("torch")
transformers = lazy_module("transformers")


class Sample(NamedTuple):
    """One continuation: the new token ids and each one's log-prob under the sampling distribution.

    A backend may return tokens past the first stop id (padding of finished rows): the
    engine cuts after the first stop id. It must not return more than ``max_new_tokens``.
    """

    token_ids: tuple[int, ...]
    logps: tuple[float, ...]


@runtime_checkable
class GenerationBackend(Protocol):
    """Samples continuations of token-id prompts from a causal LM.

    The engine calls ``sample`` with the model already in eval mode and under
    ``torch.no_grad``; a backend must be deterministic for a given ``seed`` and must leave
    the caller's global RNG state as it found it.
    """

    def sample(
        self,
        model: Any,
        prompt_ids: Sequence[tuple[int, ...]],
        *,
        samples_per_prompt: int,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        stop_ids: Sequence[int],
        pad_token_id: int,
        seed: int,
    ) -> list[Sample]:
        """``len(prompt_ids) * samples_per_prompt`` samples, prompt-major (row ``i * G + k``).

        Arguments:
            model: the policy (a transformers causal LM, or whatever the backend serves).
            prompt_ids: the prompts as token ids, unpadded.
            samples_per_prompt: ``G``, continuations per prompt.
            max_new_tokens: the most tokens one continuation may have.
            temperature: sampling temperature; 0 means greedy decoding.
            top_p: nucleus sampling mass (1 = the whole distribution).
            stop_ids: ids that end a continuation (every end-of-turn id); a row may stop at any.
            pad_token_id: the id to pad prompts and finished rows with.
            seed: the sampling seed; the same seed gives the same samples.
        Returns:
            one ``Sample`` per continuation; ``logps`` at ``logprob_temperature(temperature)``
            of the full (not top-p truncated) distribution.
        """
        ...


def logprob_temperature(temperature: float) -> float:
    """The temperature the recorded log-probs are taken at: ``temperature``, or 1 for greedy (0)."""
    return temperature if temperature > 0 else 1.0


@contextmanager
def seeded_rng(seed: int, device: Any) -> Iterator[None]:
    """Seed the CPU (and the model's CUDA device) generator inside a fork; the caller's states come back on exit.

    The generators are seeded directly rather than through ``torch.manual_seed``, which
    would also queue a seed for every CUDA device and change state outside the fork.
    """
    device = torch.device(device)
    cuda_devices: list[int] = []
    if device.type == "cuda":
        cuda_devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=cuda_devices):
        torch.random.default_generator.manual_seed(seed)
        for index in cuda_devices:
            torch.cuda.default_generators[index].manual_seed(seed)
        yield


def _left_pad(rows: Sequence[Sequence[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left padding: every row's first new token lands in the same column."""
    longest = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), longest), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for index, row in enumerate(rows):
        if row:
            input_ids[index, longest - len(row) :] = torch.tensor(row, dtype=torch.long)
            attention_mask[index, longest - len(row) :] = 1
    return input_ids, attention_mask


def _model_device(model: Any) -> torch.device:
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    return next(model.parameters()).device


class TransformersBackend:
    """transformers' ``generate``: left-padded batches, KV cache, raw logits kept per step.

    Sampling is fully defined by the arguments: no top-k, repetition penalty or other
    defaults of the model's generation config. Each step's raw logits
    (``output_logits``, before temperature and top-p) give the recorded log-prob
    ``log softmax(logits / T)[token]``; generate holds them for a whole call
    (``batch_size · G`` rows × steps × vocabulary), which ``batch_size`` bounds. All batches draw from
    one forked RNG seeded once, as ``prefcore.engine.generation`` does, so the samples
    depend on ``batch_size``.

    Arguments:
        batch_size: prompts per ``generate`` call (each expanded to ``G`` rows).
    """

    def __init__(self, batch_size: int = 16) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1. Got {batch_size}.")
        self.batch_size = batch_size

    def sample(
        self,
        model: Any,
        prompt_ids: Sequence[tuple[int, ...]],
        *,
        samples_per_prompt: int,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        stop_ids: Sequence[int],
        pad_token_id: int,
        seed: int,
    ) -> list[Sample]:
        # Greedy decoding gives one continuation per prompt; its copies fill the group.
        copies = samples_per_prompt if temperature == 0 else 1
        rows_per_prompt = samples_per_prompt // copies
        config = _generation_config(rows_per_prompt, max_new_tokens, temperature, top_p, stop_ids, pad_token_id)
        device = _model_device(model)
        scale = logprob_temperature(temperature)
        samples: list[Sample] = []
        with seeded_rng(seed, device):
            for start in range(0, len(prompt_ids), self.batch_size):
                input_ids, attention_mask = _left_pad(prompt_ids[start : start + self.batch_size], pad_token_id)
                output = model.generate(
                    input_ids=input_ids.to(device),
                    attention_mask=attention_mask.to(device),
                    generation_config=config,
                )
                new_tokens = output.sequences[:, input_ids.shape[1] :]
                # One [rows, V] step at a time: no [rows, steps, V] copy next to generate's own.
                logps = torch.stack(
                    [
                        torch.log_softmax(step.float() / scale, dim=-1).gather(-1, new_tokens[:, [index]]).squeeze(-1)
                        for index, step in enumerate(output.logits)
                    ],
                    dim=1,
                )
                samples.extend(
                    Sample(tuple(ids), tuple(values))
                    for ids, values in zip(new_tokens.tolist(), logps.tolist(), strict=True)
                    for _ in range(copies)
                )
        return samples


def _generation_config(
    samples_per_prompt: int,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    stop_ids: Sequence[int],
    pad_token_id: int,
) -> Any:
    if temperature > 0:
        sampling: dict[str, Any] = {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0}
    else:
        sampling = {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    return transformers.GenerationConfig(
        max_new_tokens=max_new_tokens,
        num_return_sequences=samples_per_prompt,
        pad_token_id=pad_token_id,
        eos_token_id=list(stop_ids),
        use_cache=True,
        return_dict_in_generate=True,
        output_logits=True,
        **sampling,
    )
