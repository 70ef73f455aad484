"""Which answers are about the same thing: records grouped into units per kind of answer.

A pair shown as (a, b) to one annotator and (b, a) to another is one unit; a ranking counts
as the pairs it orders; a ``FeedbackRecord`` bundle lends its annotator to its items. The
coefficients then compare the answers within each unit.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Hashable
from collections.abc import Iterable
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from prefcore.data.records import BinaryLabel
from prefcore.data.records import FeedbackRecord
from prefcore.data.records import PairwiseComparison
from prefcore.data.records import PreferenceRecord
from prefcore.data.records import Ranking
from prefcore.data.records import Scores
from prefcore.data.records import Text
from prefcore.data.records import text_to_json

__all__ = ["annotation_units", "flatten", "pair_unit"]


def _key(text: Text) -> str:
    return json.dumps(text_to_json(text), ensure_ascii=False, sort_keys=True)


def pair_unit(prompt: Text, first: Text, second: Text) -> tuple[tuple[str, str, str], bool]:
    """The unit of a comparison, whatever order it was shown in, and whether ``first`` is its first side.

    A pair's two sides are put in one fixed (sorted) order, so the answer "the first side is
    better" means the same for every annotator of the unit.
    """
    a, b = _key(first), _key(second)
    return (_key(prompt), min(a, b), max(a, b)), a <= b


def flatten(records: Iterable[PreferenceRecord]) -> Iterator[PreferenceRecord]:
    """Records with each ``FeedbackRecord`` bundle replaced by its items, which inherit its annotator."""
    for record in records:
        if not isinstance(record, FeedbackRecord):
            yield record
            continue
        for item in record.items:
            if item.annotator_id is None and record.annotator_id is not None:
                # the bundle's annotator answered it, as a member of the bundle's groups
                groups = item.annotator_groups or record.annotator_groups
                item = replace(item, annotator_id=record.annotator_id, annotator_groups=groups)
            yield item


def annotation_units(records: Iterable[PreferenceRecord]) -> tuple[dict[str, dict[Hashable, dict[str, Any]]], int]:
    """Answers by kind → unit → annotator, and how many records had no annotator.

    Kinds: ``pairwise`` (values first / second / tie), ``ranking`` (each ranked pair, same
    values), ``binary[:aspect]`` (True / False), ``likert:<aspect>`` (scores).
    """
    kinds: dict[str, dict[Hashable, dict[str, Any]]] = {}
    unattributed = 0

    def put(kind: str, unit: Hashable, annotator: str, value: Any) -> None:
        kinds.setdefault(kind, {}).setdefault(unit, {})[annotator] = value

    for record in flatten(records):
        annotator = record.annotator_id
        if annotator is None:
            unattributed += 1
            continue
        if isinstance(record, PairwiseComparison):
            unit, chosen_first = pair_unit(record.prompt, record.chosen, record.rejected)
            value = "tie" if record.tie else ("first" if chosen_first else "second")
            put("pairwise" + (f":{record.aspect}" if record.aspect else ""), unit, annotator, value)
        elif isinstance(record, Ranking):
            for i, j in itertools.combinations(range(len(record.completions)), 2):
                unit, i_first = pair_unit(record.prompt, record.completions[i], record.completions[j])
                if record.ranks[i] == record.ranks[j]:
                    value = "tie"
                else:
                    value = "first" if (record.ranks[i] < record.ranks[j]) == i_first else "second"
                put("ranking", unit, annotator, value)
        elif isinstance(record, BinaryLabel):
            unit = (_key(record.prompt), _key(record.completion))
            put("binary" + (f":{record.aspect}" if record.aspect else ""), unit, annotator, record.label)
        elif isinstance(record, Scores):
            for completion, row in zip(record.completions, record.scores, strict=True):
                for aspect, score in row.items():
                    put(f"likert:{aspect}", (_key(record.prompt), _key(completion)), annotator, score)
    return kinds, unattributed
