"""Record types: validation (type and payload of every error), normalisation, JSON round trips."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from prefcore.data import FORMATS
from prefcore.data import BinaryLabel
from prefcore.data import Critique
from prefcore.data import FeedbackRecord
from prefcore.data import Message
from prefcore.data import PairwiseComparison
from prefcore.data import Provenance
from prefcore.data import Ranking
from prefcore.data import Scores
from prefcore.data import Span
from prefcore.data import detect_format
from prefcore.data import record_from_dict
from prefcore.errors import ConfigError
from prefcore.errors import DataError

USER = {"role": "user", "content": "What color is the sky?"}
BLUE = {"role": "assistant", "content": "It is blue."}
GREEN = {"role": "assistant", "content": "It is green."}


def json_round_trip(record: Any) -> Any:
    """to_dict → strict JSON text → record_from_dict."""
    return record_from_dict(json.loads(json.dumps(record.to_dict(), allow_nan=False)))


# ---------------------------------------------------------------- strategies

texts = st.text(min_size=1, max_size=12).filter(lambda text: bool(text.strip()))
names = st.text(alphabet="abcdefghij_", min_size=1, max_size=6)


def messages(*roles: str) -> st.SearchStrategy[Message]:
    return st.builds(Message, role=st.sampled_from(roles), content=texts)


# A prompt: optional system messages first, any turns, and the user's (or a tool's) message last.
prompt_conversations = st.tuples(
    st.lists(messages("system"), max_size=1),
    st.lists(messages("user", "assistant", "tool"), max_size=2),
    messages("user", "tool"),
).map(lambda parts: (*parts[0], *parts[1], parts[2]))
# A completion: what the model says, the assistant's messages only.
completion_conversations = st.lists(messages("assistant"), min_size=1, max_size=3).map(tuple)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3),
    max_leaves=6,
)
annotations = st.fixed_dictionaries(
    {},
    optional={
        "annotator_id": names,
        "group_id": names,
        "source": st.sampled_from(["human", "ai", "rule"]),
        "metadata": st.dictionaries(st.text(max_size=4), json_values, max_size=3),
    },
)


def texts_of(kind: str, part: str = "completion") -> st.SearchStrategy[Any]:
    if kind == "text":
        return texts
    return prompt_conversations if part == "prompt" else completion_conversations


@st.composite
def pairwise_records(draw: st.DrawFn, prompt: Any = None) -> PairwiseComparison:
    kind = "text" if isinstance(prompt, str) else "chat" if prompt else draw(st.sampled_from(["text", "chat"]))
    chosen, rejected = draw(st.lists(texts_of(kind), min_size=2, max_size=2, unique=True))
    tie = draw(st.booleans())
    return PairwiseComparison(
        prompt or draw(texts_of(kind, "prompt")),
        chosen,
        rejected,
        tie=tie,
        margin=None if tie else draw(st.none() | st.floats(0, 10)),
        probability=None if tie else draw(st.none() | st.floats(0, 1)),
        aspect=draw(st.none() | names),
        **draw(annotations),
    )


@st.composite
def rankings(draw: st.DrawFn, prompt: Any = None) -> Ranking:
    kind = "text" if isinstance(prompt, str) else "chat" if prompt else draw(st.sampled_from(["text", "chat"]))
    completions = draw(st.lists(texts_of(kind), min_size=2, max_size=4, unique=True))
    ranks = draw(st.lists(st.integers(1, 4), min_size=len(completions), max_size=len(completions)))
    return Ranking(prompt or draw(texts_of(kind, "prompt")), completions, ranks, **draw(annotations))


@st.composite
def score_records(draw: st.DrawFn, prompt: Any = None) -> Scores:
    kind = "text" if isinstance(prompt, str) else "chat" if prompt else draw(st.sampled_from(["text", "chat"]))
    completions = draw(st.lists(texts_of(kind), min_size=1, max_size=3, unique=True))
    aspects = draw(st.lists(names, min_size=1, max_size=3, unique=True))
    low = draw(st.floats(-100, 100))
    high = low + draw(st.floats(0.5, 100))
    rows = [{aspect: draw(st.floats(low, high)) for aspect in aspects} for _ in completions]
    return Scores(prompt or draw(texts_of(kind, "prompt")), completions, rows, (low, high), **draw(annotations))


@st.composite
def binary_labels(draw: st.DrawFn, prompt: Any = None) -> BinaryLabel:
    kind = "text" if isinstance(prompt, str) else "chat" if prompt else draw(st.sampled_from(["text", "chat"]))
    completion = draw(texts_of(kind))
    spans: list[tuple[int, int, bool]] = []
    if isinstance(completion, str) or len(completion) == 1:
        text = completion if isinstance(completion, str) else completion[0].content
        cuts = sorted(draw(st.sets(st.integers(0, len(text)), max_size=4)))
        spans = [(cuts[i], cuts[i + 1], draw(st.booleans())) for i in range(0, len(cuts) - 1, 2)]
    return BinaryLabel(
        prompt or draw(texts_of(kind, "prompt")),
        completion,
        draw(st.booleans()),
        aspect=draw(st.none() | names),
        spans=spans,
        **draw(annotations),
    )


@st.composite
def critiques(draw: st.DrawFn, prompt: Any = None) -> Critique:
    kind = "text" if isinstance(prompt, str) else "chat" if prompt else draw(st.sampled_from(["text", "chat"]))
    completion, revision = draw(st.lists(texts_of(kind), min_size=2, max_size=2, unique=True))
    return Critique(
        prompt or draw(texts_of(kind, "prompt")),
        completion,
        draw(texts),
        revision=draw(st.none() | st.just(revision)),
        **draw(annotations),
    )


ITEM_STRATEGIES = (pairwise_records, rankings, score_records, binary_labels, critiques)


@st.composite
def feedback_records(draw: st.DrawFn) -> FeedbackRecord:
    prompt = draw(texts | prompt_conversations)
    strategies = draw(st.lists(st.sampled_from(ITEM_STRATEGIES), min_size=1, max_size=3))
    return FeedbackRecord(prompt, [draw(strategy(prompt)) for strategy in strategies], **draw(annotations))


# ---------------------------------------------------------------- round trips


@settings(max_examples=60, deadline=None)
@given(st.one_of(*(strategy() for strategy in ITEM_STRATEGIES), feedback_records()))
def test_every_record_type_round_trips_through_json(record: Any) -> None:
    assert json_round_trip(record) == record
    assert record.to_dict()["type"] == record.format


def test_every_format_has_a_record_type() -> None:
    assert FORMATS == ("pairwise", "ranking", "scores", "binary", "critique", "feedback")


def test_lists_and_message_dicts_are_normalised_to_tuples_and_messages() -> None:
    pair = PairwiseComparison([USER], [BLUE], [GREEN])
    assert pair.prompt == (Message("user", "What color is the sky?"),)
    assert pair.chosen == (Message("assistant", "It is blue."),)
    ranking = Ranking("q", ["a", "b"], [1, 2.0])
    assert ranking.completions == ("a", "b") and ranking.ranks == (1, 2)
    assert isinstance(ranking.ranks[1], int)
    scores = Scores("q", ["a"], [{"h": 3}], [1, 5])
    assert scores.scale == (1.0, 5.0) and scores.scores == ({"h": 3.0},)
    label = BinaryLabel("q", "hello world", True, spans=[[0, 5, False], {"start": 6, "end": 11, "label": True}])
    assert label.spans == (Span(0, 5, False), Span(6, 11, True))


def test_metadata_is_copied_into_json_types() -> None:
    metadata = {"votes": (3, 1), "judge": {"name": "x"}}
    pair = PairwiseComparison("q", "a", "b", metadata=metadata)
    metadata["judge"]["name"] = "changed"
    assert pair.metadata == {"votes": [3, 1], "judge": {"name": "x"}}


def test_provenance_is_kept_out_of_equality_and_to_dict() -> None:
    read = record_from_dict({"prompt": "q", "chosen": "a", "rejected": "b"}, source="f.jsonl", line=4)
    assert read.provenance == Provenance("f.jsonl", 4)
    assert str(read.provenance) == "f.jsonl line 4"
    assert read == PairwiseComparison("q", "a", "b")
    assert "provenance" not in read.to_dict()


def test_to_dict_leaves_out_defaults() -> None:
    assert PairwiseComparison("q", "a", "b").to_dict() == {
        "type": "pairwise",
        "prompt": "q",
        "chosen": "a",
        "rejected": "b",
    }


def test_feedback_record_states_the_prompt_once_and_lists_completions() -> None:
    pair = PairwiseComparison("q", "a", "b")
    critique = Critique("q", "b", "wrong", revision="c")
    bundle = FeedbackRecord("q", [pair, critique])
    assert bundle.items == (pair, critique)
    assert all("prompt" not in item for item in bundle.to_dict()["items"])
    assert bundle.completions == ("a", "b", "c")


def test_ranking_reports_ties() -> None:
    assert Ranking("q", ["a", "b", "c"], [1, 2, 2]).has_ties
    assert not Ranking("q", ["a", "b", "c"], [1, 3, 2]).has_ties


# ---------------------------------------------------------------- validation: (constructor, field, words)

INVALID = [
    pytest.param(lambda: Message("", "hi"), "role", "non-empty string", id="message-empty-role"),
    pytest.param(lambda: Message("user", 3), "content", "non-empty string", id="message-content-not-text"),
    pytest.param(lambda: PairwiseComparison("", "a", "b"), "prompt", "empty or blank", id="empty-prompt"),
    pytest.param(lambda: PairwiseComparison("  ", "a", "b"), "prompt", "empty or blank", id="blank-prompt"),
    pytest.param(lambda: PairwiseComparison("q", "a", []), "rejected", "empty list", id="empty-conversation"),
    pytest.param(lambda: PairwiseComparison("q", "a", 7), "rejected", "list of messages", id="number-completion"),
    pytest.param(lambda: PairwiseComparison("q", "a", "a"), "rejected", "identical", id="chosen-is-rejected"),
    pytest.param(
        lambda: PairwiseComparison("q", "a", [BLUE]), "rejected", "all text or all messages", id="mixed-kinds"
    ),
    pytest.param(
        lambda: PairwiseComparison([USER], [BLUE], [{"role": "assistant"}]),
        "rejected[0]",
        "'role' and 'content'",
        id="message-missing-content",
    ),
    pytest.param(
        lambda: PairwiseComparison([USER], [BLUE], [{"role": "", "content": "x"}]),
        "rejected[0].role",
        "non-empty",
        id="message-empty-role-nested",
    ),
    pytest.param(lambda: PairwiseComparison("q", "a", "b", tie="yes"), "tie", "true or false", id="tie-not-bool"),
    pytest.param(lambda: PairwiseComparison("q", "a", "b", margin=-1), "margin", "0 or more", id="negative-margin"),
    pytest.param(lambda: PairwiseComparison("q", "a", "b", margin=math.inf), "margin", "finite", id="inf-margin"),
    pytest.param(lambda: PairwiseComparison("q", "a", "b", margin=True), "margin", "number", id="bool-margin"),
    pytest.param(
        lambda: PairwiseComparison("q", "a", "b", probability=1.5), "probability", "[0, 1]", id="probability-above-1"
    ),
    pytest.param(
        lambda: PairwiseComparison("q", "a", "b", tie=True, margin=1.0), "margin", "tie", id="tie-with-margin"
    ),
    pytest.param(
        lambda: PairwiseComparison("q", "a", "b", tie=True, probability=0.9),
        "probability",
        "tie",
        id="tie-with-probability",
    ),
    pytest.param(lambda: PairwiseComparison("q", "a", "b", source=""), "source", "non-empty", id="empty-source"),
    pytest.param(
        lambda: PairwiseComparison("q", "a", "b", metadata=[1]), "metadata", "object", id="metadata-not-object"
    ),
    pytest.param(
        lambda: PairwiseComparison("q", "a", "b", metadata={"when": {1, 2}}),
        "metadata.when",
        "JSON-compatible",
        id="metadata-set",
    ),
    pytest.param(
        lambda: PairwiseComparison("q", "a", "b", metadata={"x": [math.nan]}),
        "metadata.x[0]",
        "non-finite",
        id="metadata-nan",
    ),
    pytest.param(lambda: Ranking("q", ["a"], [1]), "completions", "at least 2", id="one-completion-ranking"),
    pytest.param(lambda: Ranking("q", "ab", [1, 2]), "completions", "list of completions", id="completions-string"),
    pytest.param(
        lambda: Ranking("q", ["a", "b", "a"], [1, 2, 3]), "completions[2]", "distinct", id="repeated-completion"
    ),
    pytest.param(lambda: Ranking("q", ["a", "b"], [1]), "ranks", "one rank per completion", id="ranks-short"),
    pytest.param(lambda: Ranking("q", ["a", "b"], [1, 0]), "ranks[1]", "1 or more", id="rank-zero"),
    pytest.param(lambda: Ranking("q", ["a", "b"], [1, 1.5]), "ranks[1]", "whole number", id="rank-fraction"),
    pytest.param(lambda: Ranking("q", ["a", "b"], [True, 2]), "ranks[0]", "whole number", id="rank-bool"),
    pytest.param(
        lambda: Scores("q", ["a", "b"], [{"h": 1}, {"h": 9}], (1, 5)),
        "scores[1].h",
        "outside the scale [1, 5]",
        id="score-out-of-scale",
    ),
    pytest.param(lambda: Scores("q", ["a"], [{"h": math.nan}], (1, 5)), "scores[0].h", "finite", id="score-nan"),
    pytest.param(lambda: Scores("q", ["a"], [{"h": "4"}], (1, 5)), "scores[0].h", "number", id="score-string"),
    pytest.param(
        lambda: Scores("q", ["a", "b"], [{"h": 1}, {"x": 1}], (1, 5)), "scores[1]", "same aspects", id="aspects-differ"
    ),
    pytest.param(
        lambda: Scores("q", ["a", "b"], [{"h": 1}], (1, 5)), "scores", "one per completion", id="scores-short"
    ),
    pytest.param(lambda: Scores("q", ["a"], [{}], (1, 5)), "scores[0]", "non-empty", id="no-aspects"),
    pytest.param(lambda: Scores("q", ["a"], [{"h": 1}], (5, 1)), "scale", "low < high", id="scale-reversed"),
    pytest.param(lambda: Scores("q", ["a"], [{"h": 1}], (1, 5, 9)), "scale", "[low, high]", id="scale-three"),
    pytest.param(lambda: BinaryLabel("q", "a", 1), "label", "true or false", id="label-int"),
    pytest.param(
        lambda: BinaryLabel("q", "abc", True, spans=[(0, 4, True)]), "spans[0].end", "past the end", id="span-past-end"
    ),
    pytest.param(
        lambda: BinaryLabel("q", "abc", True, spans=[(2, 2, True)]),
        "spans[0].end",
        "greater than start",
        id="span-empty",
    ),
    pytest.param(
        lambda: BinaryLabel("q", "abc", True, spans=[(-1, 2, True)]), "spans[0].start", "0 or more", id="span-negative"
    ),
    pytest.param(
        lambda: BinaryLabel("q", "abcd", True, spans=[(0, 3, True), (2, 4, False)]),
        "spans[1]",
        "overlaps span 0",
        id="spans-overlap",
    ),
    pytest.param(
        lambda: BinaryLabel("q", "abcd", True, spans=[(0, 3)]), "spans[0]", "[start, end, label]", id="span-two-items"
    ),
    pytest.param(
        lambda: BinaryLabel([USER], [BLUE, GREEN], True, spans=[(0, 2, True)]),
        "spans",
        "2 messages",
        id="spans-on-multi-message",
    ),
    pytest.param(lambda: Critique("q", "a", ""), "critique", "empty", id="empty-critique"),
    pytest.param(lambda: Critique("q", "a", "bad", revision="a"), "revision", "identical", id="revision-unchanged"),
    pytest.param(lambda: FeedbackRecord("q", []), "items", "at least one", id="empty-bundle"),
    pytest.param(
        lambda: FeedbackRecord("q", [PairwiseComparison("other", "a", "b")]),
        "items[0].prompt",
        "same prompt",
        id="bundle-prompt-differs",
    ),
    pytest.param(
        lambda: FeedbackRecord("q", [FeedbackRecord("q", [PairwiseComparison("q", "a", "b")])]),
        "items[0]",
        "PairwiseComparison",
        id="nested-bundle",
    ),
    # Built in Python rather than read: the same gate as the readers.
    pytest.param(lambda: Message("User", "hi"), "role", "Did you mean 'user'?", id="role-capitalised"),
    pytest.param(lambda: Message("human", "hi"), "role", "Did you mean 'user'?", id="role-sharegpt"),
    pytest.param(lambda: Message("narrator", "hi"), "role", "system, user, assistant, tool", id="role-unknown"),
    pytest.param(lambda: Message("user", "h\udce9"), "content", "byte 0xe9, which is not UTF-8", id="surrogate"),
    pytest.param(lambda: PairwiseComparison("q\ud83d", "a", "b"), "prompt", "lone surrogate", id="half-emoji"),
    pytest.param(
        lambda: PairwiseComparison("q", "a", "b", metadata={"k\ud800": 1}), "metadata", "lone surrogate", id="meta-key"
    ),
    pytest.param(
        lambda: PairwiseComparison("q", "a", "b", metadata={"n": 10**5000}),
        "metadata.n",
        "5001 digits; JSON text holds at most 4300",
        id="meta-int-too-long",
    ),
    pytest.param(
        lambda: PairwiseComparison("q", "a", "b", metadata={"x": _nested(150)}),
        "metadata.x" + "[0]" * 100,
        "100 levels",
        id="meta-too-deep",
    ),
    pytest.param(
        lambda: PairwiseComparison("q", "a", "b", margin=10**400), "margin", "too large", id="margin-overflow"
    ),
    pytest.param(lambda: Ranking("q", ["a", "b"], [1, 2**60]), "ranks[1]", "at most 2**53", id="rank-too-large"),
    pytest.param(
        lambda: PairwiseComparison([BLUE], [BLUE], [GREEN]), "prompt[0].role", "must be the user's", id="prompt-by-bot"
    ),
    pytest.param(
        lambda: PairwiseComparison([USER], [USER, BLUE], [GREEN]),
        "chosen[0].role",
        "must be 'assistant' in a completion",
        id="completion-with-user",
    ),
    pytest.param(
        lambda: Ranking([USER], [[BLUE], [{"role": "tool", "content": "42"}]], [1, 2]),
        "completions[1][0].role",
        "must be 'assistant' in a completion",
        id="completion-by-tool",
    ),
    pytest.param(
        lambda: Critique([USER], [BLUE], "vague", revision=[{"role": "system", "content": "x"}]),
        "revision[0].role",
        "must be 'assistant'",
        id="revision-by-system",
    ),
    pytest.param(
        lambda: BinaryLabel([USER, {"role": "system", "content": "s"}], [BLUE], True),
        "prompt[1].role",
        "system messages come first",
        id="late-system",
    ),
]


def _nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


def test_sensible_conversations_are_accepted() -> None:
    system = Message("system", "Be brief.")
    tool = Message("tool", '{"temperature": 21}')
    ask = Message("assistant", "Calling the weather tool.")
    # Several leading system messages, a tool's output last, several assistant messages in a completion.
    pair = PairwiseComparison([system, system, USER, ask, tool], [BLUE, GREEN], [GREEN])
    assert pair.prompt[-1] == tool and len(pair.chosen) == 2


@pytest.mark.parametrize(("build", "field", "words"), INVALID)
def test_invalid_records_raise_data_error_naming_the_field(build: Any, field: str, words: str) -> None:
    with pytest.raises(DataError) as excinfo:
        build()
    assert excinfo.value.field == field
    assert words in excinfo.value.reason
    assert excinfo.value.source is None and excinfo.value.line is None


# ---------------------------------------------------------------- record_from_dict


def test_record_from_dict_names_source_and_line_in_errors() -> None:
    with pytest.raises(DataError) as excinfo:
        record_from_dict({"prompt": "q", "chosen": "a"}, source="data/pairs.jsonl", line=17)
    error = excinfo.value
    assert (error.source, error.line, error.field) == ("data/pairs.jsonl", 17, "rejected")
    assert str(error) == (
        "data/pairs.jsonl line 17: field 'rejected': is missing. A pairwise record needs 'prompt', "
        "'chosen' and 'rejected' (strings or message lists)."
    )


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"prompt": "q", "chosen": "a", "rejected": "b"}, "pairwise"),
        ({"chosen": "q a", "rejected": "q b"}, "pairwise"),
        ({"prompt": "q", "completions": ["a", "b"], "ranks": [1, 2]}, "ranking"),
        ({"prompt": "q", "completions": ["a"], "scores": [{"h": 1}], "scale": [0, 1]}, "scores"),
        ({"prompt": "q", "completion": "a", "label": True}, "binary"),
        ({"prompt": "q", "completion": "a", "critique": "c"}, "critique"),
        ({"prompt": "q", "items": []}, "feedback"),
        ({"type": "scores", "prompt": "q", "chosen": "a"}, "scores"),
    ],
)
def test_format_detection_by_type_or_field_set(data: dict[str, Any], expected: str) -> None:
    assert detect_format(data) == expected


def test_unknown_type_names_the_known_formats() -> None:
    with pytest.raises(DataError) as excinfo:
        record_from_dict({"type": "pairs", "prompt": "q"}, source="x.jsonl", line=2)
    assert (excinfo.value.field, excinfo.value.line) == ("type", 2)
    assert "Known formats: pairwise, ranking" in excinfo.value.reason


def test_fields_of_no_format_are_reported_with_the_accepted_layouts() -> None:
    with pytest.raises(DataError) as excinfo:
        record_from_dict({"prompt": "q", "answer": "a"})
    assert excinfo.value.field is None
    assert "cannot tell the record format from the fields ['answer', 'prompt']" in excinfo.value.reason
    assert "pairwise (prompt, chosen, rejected)" in excinfo.value.reason


def test_fields_of_two_formats_ask_for_a_type() -> None:
    with pytest.raises(DataError) as excinfo:
        record_from_dict({"prompt": "q", "chosen": "a", "rejected": "b", "ranks": [1, 2]})
    assert "several formats (pairwise, ranking)" in excinfo.value.reason
    record = record_from_dict({"type": "pairwise", "prompt": "q", "chosen": "a", "rejected": "b", "ranks": [1, 2]})
    assert record.metadata == {"ranks": [1, 2]}


def test_format_override_reads_that_format_and_refuses_a_contradicting_type() -> None:
    data = {"prompt": "q", "chosen": "a", "rejected": "b", "scores": [1]}
    assert record_from_dict(data, format="pairwise").metadata == {"scores": [1]}
    with pytest.raises(DataError) as excinfo:
        record_from_dict({"type": "ranking", "prompt": "q"}, format="pairwise")
    assert excinfo.value.field == "type"
    with pytest.raises(ConfigError) as config_error:
        record_from_dict(data, format="pairs")
    assert config_error.value.field == "format"


def test_unknown_fields_are_kept_in_metadata_never_dropped() -> None:
    record = record_from_dict(
        {"prompt": "q", "chosen": "a", "rejected": "b", "prompt_id": "7", "metadata": {"lang": "en"}}
    )
    assert record.metadata == {"lang": "en", "prompt_id": "7"}
    with pytest.raises(DataError) as excinfo:
        record_from_dict({"prompt": "q", "chosen": "a", "rejected": "b", "id": 1, "metadata": {"id": 2}})
    assert excinfo.value.field == "id"


def test_null_fields_count_as_absent() -> None:
    record = record_from_dict({"prompt": "q", "chosen": "a", "rejected": "b", "margin": None, "label": None})
    assert record == PairwiseComparison("q", "a", "b")


def test_record_must_be_an_object() -> None:
    with pytest.raises(DataError) as excinfo:
        record_from_dict(["q", "a", "b"], line=3)  # type: ignore[arg-type]
    assert excinfo.value.line == 3
    assert "must be a JSON object, got ['q', 'a', 'b'] (list)" in excinfo.value.reason


def test_scores_shorthands_bare_numbers_and_single_completion() -> None:
    record = record_from_dict({"prompt": "q", "completions": ["a", "b"], "scores": [7.5, 3], "scale": [0, 10]})
    assert record.scores == ({"overall": 7.5}, {"overall": 3.0})
    single = record_from_dict({"prompt": "q", "completion": "a", "scores": {"h": 4}, "scale": [1, 5]})
    assert single == Scores("q", ["a"], [{"h": 4}], (1, 5))


def test_bundle_items_take_the_bundle_prompt_and_name_their_index_in_errors() -> None:
    data = {"prompt": "q", "items": [{"chosen": "a", "rejected": "b"}, {"completion": "a", "label": "yes"}]}
    with pytest.raises(DataError) as excinfo:
        record_from_dict(data, source="b.jsonl", line=5)
    assert (excinfo.value.field, excinfo.value.line) == ("items[1].label", 5)
    with pytest.raises(DataError) as excinfo:
        record_from_dict({"prompt": "q", "items": [{"prompt": "other", "chosen": "a", "rejected": "b"}]})
    assert excinfo.value.field == "items[0].prompt"


@pytest.mark.parametrize(
    ("chosen", "rejected", "expected"),
    [
        pytest.param("The sky is blue.", "The sky is green.", ("The sky is", " blue.", " green."), id="trl-example"),
        pytest.param("It is blue", "It is black", ("It is", " blue", " black"), id="never-splits-a-word"),
        pytest.param("Q:\n\nA", "Q:\n\nB", ("Q:\n\n", "A", "B"), id="newlines-stay-in-prompt"),
        pytest.param(
            [USER, BLUE],
            [USER, GREEN],
            ((Message(**USER),), (Message(**BLUE),), (Message(**GREEN),)),
            id="conversation",
        ),
    ],
)
def test_implicit_prompt_is_the_shared_prefix(chosen: Any, rejected: Any, expected: tuple[Any, Any, Any]) -> None:
    record = record_from_dict({"chosen": chosen, "rejected": rejected})
    assert (record.prompt, record.chosen, record.rejected) == expected


@pytest.mark.parametrize(
    ("chosen", "rejected"),
    [
        pytest.param("blue", "green", id="nothing-shared"),
        pytest.param("x=5", "x=6", id="shared-part-of-a-word"),
        pytest.param("It is blue", "It is blue and more", id="one-is-a-prefix"),
        pytest.param([BLUE], [GREEN], id="conversations-differ-from-the-start"),
    ],
)
def test_implicit_prompt_without_a_shared_prefix_asks_for_a_prompt(chosen: Any, rejected: Any) -> None:
    with pytest.raises(DataError) as excinfo:
        record_from_dict({"chosen": chosen, "rejected": rejected}, source="p.jsonl", line=9)
    assert (excinfo.value.field, excinfo.value.line, excinfo.value.source) == ("prompt", 9, "p.jsonl")
    assert "Give 'prompt' explicitly" in excinfo.value.reason


def test_repr_shows_the_feedback_first_and_only_the_annotations_that_are_set() -> None:
    pair = PairwiseComparison("q", "a", "b", margin=1.0, annotator_id="x", provenance=Provenance("f", 1))
    assert repr(pair) == "PairwiseComparison(prompt='q', chosen='a', rejected='b', margin=1.0, annotator_id='x')"
