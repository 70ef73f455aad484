"""Chat templates: a conversation's prompt and assistant turn exactly as the template renders them.

A chat model learns to stop by emitting its template's end-of-turn marker: ChatML closes an
assistant turn with ``<|im_end|>`` and a newline, Llama-3 with ``<|eot_id|>``. That marker is
often not the tokenizer's ``eos_token`` (a base model's tokenizer carrying a ChatML
template ends sequences with ``<|endoftext|>``), so a label built as "reply text + eos"
teaches the model a stop it never sees at inference and unteaches the one it needs. Here
the label is the template's own rendering of the assistant turn: the prompt is the
rendering of the conversation up to the generation prompt, the completion is what the
rendering of the whole conversation adds after it.

The same templates tell generation where to stop: ``stop_token_ids`` collects every
end-of-turn id that the tokenizer, the model's generation config and the template declare.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefcore.errors import ConfigError
from prefcore.errors import DataError

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
"""ChatML, for ``[model] chat_template = "chatml"`` (needs ``<|im_start|>``/``<|im_end|>`` tokens)."""

BUILTIN_TEMPLATES = {"chatml": CHATML_TEMPLATE}
_TEMPLATE_TOKENS = {"chatml": ("<|im_start|>", "<|im_end|>")}
_MARKER = "\u2063prefcore-end-of-turn-probe\u2063"


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def is_conversation(value: Any) -> bool:
    """A tuple/list of messages (anything with ``role`` and ``content``), not plain text."""
    return not isinstance(value, str) and isinstance(value, Sequence)


def resolve_chat_template(spec: str, tokenizer: Any) -> str:
    """The Jinja text of ``[model] chat_template``: a built-in name, a file path, or the template itself.

    A built-in name is checked against the vocabulary: rendering ChatML's markers as
    ordinary text would train the model on strings it can never emit as one token.
    """
    if spec in BUILTIN_TEMPLATES:
        vocabulary = tokenizer.get_vocab()
        missing = [token for token in _TEMPLATE_TOKENS[spec] if token not in vocabulary]
        if missing:
            raise ConfigError(
                f"[model] chat_template = {spec!r} needs the tokens {', '.join(missing)}, which this tokenizer "
                "lacks. Give a template that uses tokens of this vocabulary (a file path or the Jinja text).",
                field="model.chat_template",
            )
        return BUILTIN_TEMPLATES[spec]
    if "{" not in spec:
        path = Path(spec)
        if not path.is_file():
            raise ConfigError(
                f"[model] chat_template {spec!r} is neither a built-in ({', '.join(BUILTIN_TEMPLATES)}), "
                "nor a file, nor Jinja template text.",
                field="model.chat_template",
            )
        return path.read_text(encoding="utf-8")
    return spec


def _as_chat(messages: Sequence[Any]) -> list[dict[str, str]]:
    return [{"role": message.role, "content": message.content} for message in messages]


def _completion_messages(completion: Any) -> list[dict[str, str]]:
    if isinstance(completion, str):
        return [{"role": "assistant", "content": completion}]
    return _as_chat(completion)


def _require_template(tokenizer: Any, where: str) -> None:
    if not has_chat_template(tokenizer):
        raise ConfigError(
            f"{where}: conversational data (message lists) needs a chat template, and this tokenizer has none. "
            'Set [model] chat_template = "chatml", a path to a Jinja file, or the template text; '
            "or give the prompt and completion as plain text.",
            field="model.chat_template",
        )


def render(tokenizer: Any, chat: list[dict[str, str]], *, add_generation_prompt: bool) -> str:
    """The template's text for ``chat``; tokenise it without special tokens (the template has them)."""
    text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=add_generation_prompt)
    return text if isinstance(text, str) else str(text)


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def chat_prompt_ids(tokenizer: Any, prompt: Sequence[Any], *, prefix: str = "", where: str = "record") -> list[int]:
    """Ids of the conversation rendered up to and including the generation prompt."""
    _require_template(tokenizer, where)
    return _ids(tokenizer, render(tokenizer, _prompt_chat(prompt, prefix), add_generation_prompt=True))


def _prompt_chat(prompt: Sequence[Any], prefix: str) -> list[dict[str, str]]:
    chat = _as_chat(prompt)
    if prefix:
        chat = [{"role": "system", "content": prefix}, *chat]
    return chat


def chat_sequence_ids(
    tokenizer: Any, prompt: Sequence[Any], completion: Any, *, prefix: str = "", where: str = "record"
) -> tuple[list[int], list[int]]:
    """``(prompt_ids, completion_ids)``: the completion is the template's assistant turn, end-of-turn included.

    The whole conversation is tokenised at once when its ids start with the prompt's ids
    (the usual case), so the completion ids are exactly those the model sees in context;
    otherwise the rendered completion text is tokenised on its own.
    """
    _require_template(tokenizer, where)
    chat = _prompt_chat(prompt, prefix)
    prompt_text = render(tokenizer, chat, add_generation_prompt=True)
    full_text = render(tokenizer, chat + _completion_messages(completion), add_generation_prompt=False)
    if not full_text.startswith(prompt_text):
        raise DataError(
            "the chat template renders the conversation's prompt differently with and without the reply, so "
            "the reply's tokens cannot be separated from the prompt's. Use a template whose rendering of the "
            "earlier turns does not depend on the last one.",
            source=where,
            field="completion",
        )
    prompt_ids = _ids(tokenizer, prompt_text)
    full_ids = _ids(tokenizer, full_text)
    if full_ids[: len(prompt_ids)] == prompt_ids:
        return prompt_ids, full_ids[len(prompt_ids) :]
    return prompt_ids, _ids(tokenizer, full_text[len(prompt_text) :])


def end_of_turn_id(tokenizer: Any) -> int | None:
    """The id that closes an assistant turn in the tokenizer's template, if it is a special token.

    Found by rendering a probe conversation and reading the first token after the reply, so
    it works for any template (ChatML, Llama-3, the demo's) without a table of names.
    """
    if not has_chat_template(tokenizer):
        return None
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _MARKER}]
    try:
        text = render(tokenizer, chat, add_generation_prompt=False)
    except Exception:  # a template that rejects the probe declares nothing
        return None
    if _MARKER not in text:
        return None
    suffix = text[text.rindex(_MARKER) + len(_MARKER) :]
    ids = _ids(tokenizer, suffix.lstrip(" "))
    special = set(getattr(tokenizer, "all_special_ids", ())) | set(getattr(tokenizer, "added_tokens_decoder", {}))
    return ids[0] if ids and ids[0] in special else None


def stop_token_ids(tokenizer: Any, model: Any = None) -> tuple[int, ...]:
    """Every id that ends a reply: the tokenizer's eos, the generation config's eos list, the template's end of turn."""
    found: list[int] = []
    if tokenizer.eos_token_id is not None:
        found.append(int(tokenizer.eos_token_id))
    generation_config = getattr(model, "generation_config", None)
    declared = getattr(generation_config, "eos_token_id", None)
    if isinstance(declared, int):
        found.append(declared)
    elif declared is not None:
        found += [int(value) for value in declared]
    turn_end = end_of_turn_id(tokenizer)
    if turn_end is not None:
        found.append(turn_end)
    return tuple(dict.fromkeys(found))
