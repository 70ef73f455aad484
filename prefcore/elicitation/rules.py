"""The rules file of a norm-elicitation round: proposed policy rules with worked examples.

A TOML file, so a community facilitator can write and review it by hand::

    round = 2
    revises = { brief = "Replies are at most three sentences." }   # optional: id -> text it replaces

    [[rule]]
    id = "brief"
    text = "Replies are short unless the user asks for detail."
    examples = [{ prompt = "Explain tides.", reply = "The moon's pull.", verdict = "follows the rule" }]

``round`` numbers the revisions (1, 2, ...); a revision is a new file with a higher round
and the same rule ids, new text. Every problem is a ``DataError`` naming the file and the
key (``rule[2].text``), since a facilitator fixes these files by hand.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefcore.errors import DataError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["RULES_FORMAT", "Example", "Rule", "RuleSet", "read_rules"]

RULES_FORMAT = (
    "A rules file is TOML: 'round = N' (a whole number >= 1), optional 'revises = {id = \"previous text\"}', "
    "and one or more [[rule]] tables with 'id', 'text' and optional 'examples = [{prompt, reply, verdict}]'."
)

_TOP_KEYS = frozenset({"round", "rule", "revises"})
_RULE_KEYS = frozenset({"id", "text", "examples"})
_EXAMPLE_KEYS = frozenset({"prompt", "reply", "verdict"})


@dataclass(frozen=True)
class Example:
    """A prompt and reply that show what the rule means; ``verdict`` says how the rule judges it."""

    prompt: str
    reply: str
    verdict: str | None = None


@dataclass(frozen=True)
class Rule:
    """One proposed rule; ``previous`` is the text it replaces, when the file's ``revises`` names it."""

    id: str
    text: str
    examples: tuple[Example, ...] = ()
    previous: str | None = None


@dataclass(frozen=True)
class RuleSet:
    """The rules of one round, in file order."""

    round: int
    rules: tuple[Rule, ...]
    source: str


def _text(value: Any, source: str, key: str, *, what: str = "a non-empty string") -> str:
    if not isinstance(value, str) or not value.strip():
        got = repr(value) if isinstance(value, str) else type(value).__name__
        raise DataError(f"must be {what}, got {got}. {RULES_FORMAT}", source=source, field=key)
    return value.strip()


def _unknown_keys(table: Mapping[str, Any], allowed: frozenset[str], source: str, where: str) -> None:
    extra = sorted(set(table) - allowed)
    if extra:
        raise DataError(
            f"has unknown key(s) {', '.join(map(repr, extra))}; accepted: {', '.join(sorted(allowed))}.",
            source=source,
            field=where,
        )


def _example(value: Any, source: str, key: str) -> Example:
    if not isinstance(value, Mapping):
        raise DataError(
            f"must be a table {{prompt, reply, verdict}}, got {type(value).__name__}.", source=source, field=key
        )
    _unknown_keys(value, _EXAMPLE_KEYS, source, key)
    verdict = value.get("verdict")
    return Example(
        _text(value.get("prompt"), source, f"{key}.prompt"),
        _text(value.get("reply"), source, f"{key}.reply"),
        None if verdict is None else _text(verdict, source, f"{key}.verdict"),
    )


def _rule(value: Any, source: str, key: str, revises: Mapping[str, str]) -> Rule:
    if not isinstance(value, Mapping):
        raise DataError(f"must be a [[rule]] table, got {type(value).__name__}.", source=source, field=key)
    _unknown_keys(value, _RULE_KEYS, source, key)
    identity = value.get("id")
    if isinstance(identity, int) and not isinstance(identity, bool):
        identity = str(identity)
    identity = _text(identity, source, f"{key}.id", what="a non-empty string or whole number")
    text = _text(value.get("text"), source, f"{key}.text", what="the rule's text, a non-empty string")
    examples = value.get("examples", [])
    if not isinstance(examples, list):
        raise DataError(
            f"must be a list of {{prompt, reply, verdict}} tables, got {type(examples).__name__}.",
            source=source,
            field=f"{key}.examples",
        )
    shown = tuple(_example(example, source, f"{key}.examples[{index}]") for index, example in enumerate(examples))
    return Rule(identity, text, shown, revises.get(identity))


def read_rules(path: str | os.PathLike[str]) -> RuleSet:
    """The rules file at ``path``, checked; ``DataError`` names the file and key of any problem."""
    source = os.fspath(path)
    if not Path(source).is_file():
        raise DataError("no such file.", source=source)
    try:
        with open(source, "rb") as file:
            data = tomllib.load(file)
    except tomllib.TOMLDecodeError as error:
        raise DataError(f"is not valid TOML: {error}. {RULES_FORMAT}", source=source) from None
    except UnicodeDecodeError:
        raise DataError("is not UTF-8 text.", source=source) from None
    _unknown_keys(data, _TOP_KEYS, source, "(top level)")
    number = data.get("round")
    if isinstance(number, bool) or not isinstance(number, int) or number < 1:
        raise DataError(f"must be a whole number >= 1, got {number!r}. {RULES_FORMAT}", source=source, field="round")
    revises = data.get("revises", {})
    if not isinstance(revises, Mapping):
        raise DataError('must be a table {id = "previous text"}.', source=source, field="revises")
    previous = {str(rule_id): _text(text, source, f"revises.{rule_id}") for rule_id, text in revises.items()}
    raw = data.get("rule")
    if not isinstance(raw, list) or not raw:
        raise DataError(f"needs at least one [[rule]] table. {RULES_FORMAT}", source=source, field="rule")
    rules = tuple(_rule(value, source, f"rule[{index}]", previous) for index, value in enumerate(raw))
    seen: dict[str, int] = {}
    for index, rule in enumerate(rules):
        if rule.id in seen:
            raise DataError(
                f"repeats the id {rule.id!r} of rule[{seen[rule.id]}]; each rule has its own id.",
                source=source,
                field=f"rule[{index}].id",
            )
        seen[rule.id] = index
    stray = sorted(set(previous) - set(seen))
    if stray:
        raise DataError(
            f"names rule(s) {', '.join(map(repr, stray))} that this file does not have; "
            "'revises' maps an id of this file to the text it replaces.",
            source=source,
            field="revises",
        )
    return RuleSet(number, rules, source)
