"""Tokenise prompts and completions into sequences whose completion tokens carry the loss.

Plain text: prompt and completion are tokenised separately and the completion ends with
the tokenizer's EOS, so the boundary is exact and the loss mask covers completion tokens
only. Conversations go through the chat template (``prefcore.engine.chat``): the prompt
is the rendering up to the generation prompt, the completion is the template's own
rendering of the assistant turn, ending with its end-of-turn marker (``<|im_end|>``,
``<|eot_id|>``, ...), so training sees exactly the text that generation starts from and
the stop that generation waits for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from typing import Literal

import torch

from prefcore.data.records import Message
from prefcore.engine.chat import chat_prompt_ids
from prefcore.engine.chat import chat_sequence_ids
from prefcore.engine.chat import is_conversation
from prefcore.errors import DataError

Truncation = Literal["error", "truncate"]
Side = Literal["left", "right"]
"""Which end of a token sequence truncation drops."""


@dataclass(frozen=True)
class TokenizedSequence:
    """Token ids of one prompt + completion; the completion ends with EOS or the template's end of turn."""

    prompt_ids: tuple[int, ...]
    completion_ids: tuple[int, ...]

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + len(self.completion_ids)


def completion_text(completion: Any) -> str:
    """The text of a completion given as a string or as assistant message(s)."""
    if isinstance(completion, str):
        return completion
    return "".join(message.content for message in completion)


def prompt_token_ids(tokenizer: Any, prompt: Any, *, prefix: str = "", where: str = "record") -> list[int]:
    """Token ids the model is conditioned on, identical for training and generation.

    Arguments:
        tokenizer: a transformers tokenizer.
        prompt: text, or a tuple of chat messages (needs the tokenizer's chat template).
        prefix: condition text put before the prompt (hindsight / reward-conditioned methods).
        where: how to name the record in errors.
    """
    if isinstance(prompt, str):
        return list(tokenizer(prefix + prompt, add_special_tokens=True)["input_ids"])
    return chat_prompt_ids(tokenizer, prompt, prefix=prefix, where=where)


def _keep(ids: list[int], count: int, side: Side) -> list[int]:
    """The ``count`` tokens that remain when the others are dropped from ``side``."""
    return ids[len(ids) - count :] if side == "left" else ids[:count]


def tokenize_sequence(
    tokenizer: Any,
    prompt: Any,
    completion: Any,
    *,
    max_length: int,
    prefix: str = "",
    truncation: Truncation = "truncate",
    where: str = "record",
    max_prompt_length: int = 0,
    prompt_truncation_side: Side = "left",
    completion_truncation_side: Side = "right",
    allow_empty: bool = False,
) -> TokenizedSequence:
    """Tokenise one prompt/completion pair, enforcing ``max_prompt_length`` and ``max_length``.

    ``truncate`` first cuts a prompt longer than ``max_prompt_length`` (0: no limit of its
    own) to that length; then, while prompt + completion exceed ``max_length``, drops
    prompt tokens first (the completion carries the loss; one prompt token always stays),
    then completion tokens. Each is cut on its declared side: by default the prompt's start
    (``"left"``, keeping the text next to the completion, as TRL does) and the completion's
    end (``"right"``). ``error`` refuses over-long records instead. An empty completion is
    an error (it has no token to learn from) unless ``allow_empty``: a reward model scores a
    sampled reply that stopped at once, as the prompt and the end-of-sequence token.
    """
    text = completion_text(completion)
    if not text.strip() and not allow_empty:
        raise DataError("the completion is empty; there is nothing to train on.", source=where, field="completion")
    if is_conversation(prompt) or is_conversation(completion):
        chat_prompt = (Message("user", prompt),) if isinstance(prompt, str) else prompt
        prompt_ids, completion_ids = chat_sequence_ids(tokenizer, chat_prompt, completion, prefix=prefix, where=where)
    else:
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no eos_token_id; completions must end with an end-of-sequence token.")
        prompt_ids = prompt_token_ids(tokenizer, prompt, prefix=prefix)
        completion_ids = [*tokenizer(text, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
    if not prompt_ids:
        raise DataError(
            "the prompt is empty after tokenisation (this tokenizer adds no BOS token), so the first completion "
            "token has nothing to be predicted from and the row would carry no loss. Give a non-empty prompt.",
            source=where,
            field="prompt",
        )
    if max_prompt_length and len(prompt_ids) > max_prompt_length:
        if truncation == "error":
            raise DataError(
                f"the prompt is {len(prompt_ids)} tokens, over max_prompt_length={max_prompt_length}. Raise "
                '[train] max_prompt_length or set truncation = "truncate".',
                source=where,
                field="prompt",
            )
        prompt_ids = _keep(prompt_ids, max_prompt_length, prompt_truncation_side)
    overflow = len(prompt_ids) + len(completion_ids) - max_length
    if overflow > 0:
        if truncation == "error":
            raise DataError(
                f"prompt + completion is {len(prompt_ids) + len(completion_ids)} tokens, over max_length="
                f'{max_length}. Raise [train] max_length or set truncation = "truncate".',
                source=where,
                field="completion",
            )
        prompt_ids = _keep(prompt_ids, max(1, len(prompt_ids) - overflow), prompt_truncation_side)
        completion_ids = _keep(completion_ids, max_length - len(prompt_ids), completion_truncation_side)
        if not completion_ids:
            raise DataError(f"no completion token fits in max_length={max_length}.", source=where, field="completion")
    return TokenizedSequence(tuple(prompt_ids), tuple(completion_ids))


@dataclass(frozen=True)
class PaddedSequences:
    """Right-padded token ids with the attention mask and the next-token loss mask.

    ``completion_mask[s, t]`` says whether target ``input_ids[s, t + 1]`` is a completion
    token, so it lines up with log-probs of shape ``[S, L - 1]``.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    completion_mask: torch.Tensor

    def to(self, device: torch.device | str) -> PaddedSequences:
        return PaddedSequences(
            self.input_ids.to(device), self.attention_mask.to(device), self.completion_mask.to(device)
        )


def pad_sequences(sequences: Sequence[TokenizedSequence], pad_token_id: int) -> PaddedSequences:
    """Right-pad to the longest sequence of this micro-batch (not a global maximum)."""
    longest = max(sequence.length for sequence in sequences)
    count = len(sequences)
    input_ids = torch.full((count, longest), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((count, longest), dtype=torch.long)
    completion_mask = torch.zeros((count, longest - 1), dtype=torch.bool)
    for row, sequence in enumerate(sequences):
        ids = sequence.prompt_ids + sequence.completion_ids
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
        start = len(sequence.prompt_ids) - 1  # target index of the first completion token
        completion_mask[row, start : start + len(sequence.completion_ids)] = True
    return PaddedSequences(input_ids, attention_mask, completion_mask)
