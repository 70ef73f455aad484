"""The embedded demo: its language, rule, split, tokenizer, tiny model and feedback source."""

from __future__ import annotations

import random

import pytest
import torch
from transformers import AutoTokenizer

from prefcore.config import build_config
from prefcore.data import BinaryLabel
from prefcore.data import PairwiseComparison
from prefcore.data import Ranking
from prefcore.demo import task
from prefcore.demo.model import build_tiny_model
from prefcore.demo.rule import assess_reply
from prefcore.demo.rule import judge
from prefcore.demo.rule import parse_request
from prefcore.demo.rule import score_reply
from prefcore.demo.tokenizer import build_tokenizer
from prefcore.demo.tokenizer import format_completion
from prefcore.demo.tokenizer import format_example
from prefcore.demo.tokenizer import format_prompt
from prefcore.demo.world import FILLERS
from prefcore.demo.world import POLITE_CLOSERS
from prefcore.demo.world import POLITE_OPENERS
from prefcore.demo.world import RUDE_CLOSERS
from prefcore.demo.world import RUDE_OPENERS
from prefcore.demo.world import category
from prefcore.demo.world import facts
from prefcore.demo.world import vocabulary
from prefcore.errors import ConfigError
from prefcore.plugins.feedback import demo_rule
from prefcore.plugins.feedback.demo_rule import DemoRule
from prefcore.plugins.feedback.demo_rule import DemoRuleConfig
from prefcore.plugins.feedback.demo_rule import prefcore_register_feedback
from prefcore.registry import PrefcorePluginManager
from prefcore.registry import Provenance
from prefcore.registry import Registry

SKY = "please what colour is the sky ?"

# (better, worse) replies to SKY, each pair isolating one preference of the rule.
PREFERENCES = [
    ("blue", "red"),  # correct beats wrong
    ("blue", "i do not know"),  # correct beats a refusal
    ("i do not know", "red"),  # a refusal beats a wrong answer
    ("sure , blue", "blue"),  # polite beats neutral
    ("blue", "ugh , blue"),  # neutral beats rude
    ("blue", "the sky is blue"),  # short beats long
    ("sure , blue", "sure , well , let me think , the sky is blue"),  # rambling costs
    ("blue", "blue red"),  # hedging with a wrong answer counts as wrong
]

# Exact scores: correctness + manners - 0.1 × tokens.
SCORES = [
    ("sure , blue", 2 + 1 - 0.3),
    ("blue thank you", 2 + 1 - 0.3),
    ("the sky is blue", 2 - 0.4),
    ("obviously , the sky is blue", 2 - 1 - 0.6),
    ("sure , red", -1 + 1 - 0.3),
    ("i do not know", -0.4),
    ("", 0.0),
]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def test_vocabulary_and_sequences_stay_small() -> None:
    assert len(vocabulary()) <= 300
    prompt_words = max(len(request.text.split()) for request in task.requests())
    longest_reply = [max(group, key=lambda text: len(text.split())) for group in (POLITE_OPENERS, FILLERS)]
    longest_reply.append(
        max(
            (category(fact.category).long_answer.format(*fact.subject, answer=fact.answer) for fact in facts()),
            key=lambda text: len(text.split()),
        )
    )
    longest_reply.append(max(POLITE_CLOSERS + RUDE_CLOSERS, key=lambda text: len(text.split())))
    reply_words = len(" ".join(longest_reply).split())
    assert prompt_words + reply_words + 3 <= 32  # <bos>, <sep>, <eos>


def test_data_is_a_function_of_the_seed() -> None:
    assert task.sft_examples(40, seed=3) == task.sft_examples(40, seed=3)
    assert task.preference_pairs(20, seed=3) == task.preference_pairs(20, seed=3)
    assert task.rankings(10, seed=3) == task.rankings(10, seed=3)
    assert task.sft_examples(40, seed=3) != task.sft_examples(40, seed=4)
    assert task.split_requests() == task.split_requests()


@pytest.mark.parametrize(("better", "worse"), PREFERENCES)
def test_rule_prefers_correct_polite_short(better: str, worse: str) -> None:
    assert score_reply(SKY, better) > score_reply(SKY, worse)
    assert judge(SKY, better, worse) == 1.0
    assert judge(SKY, worse, better) == 0.0


@pytest.mark.parametrize(("reply", "expected"), SCORES)
def test_rule_scores_exactly(reply: str, expected: float) -> None:
    assert score_reply(SKY, reply) == pytest.approx(expected)


def test_rule_ties_and_request_words() -> None:
    assert judge(SKY, "sure , blue", "blue thank you") == 0.5
    # The summands are words of the request, not answers.
    assert assess_reply("what is two plus three ? thanks", "two plus three is five").correctness == 2
    assert assess_reply("hey tell me the opposite of hot", "the opposite of hot is cold").correctness == 2
    assert assess_reply("add one and two", "four").correctness == -1


def test_every_request_parses_to_its_fact() -> None:
    for request in task.requests():
        assert parse_request(request.text) == request.fact
    with pytest.raises(ValueError, match="not a request of the demo task"):
        parse_request("what is the meaning of life ?")


def test_heldout_prompts_are_unseen_wordings_of_known_facts() -> None:
    split = task.split_requests()
    assert {request.text for request in split.train}.isdisjoint(request.text for request in split.heldout)
    assert {request.fact for request in split.heldout} == {request.fact for request in split.train} == set(facts())
    assert set(task.heldout_prompts()) == {request.text for request in split.heldout}
    train = set(task.train_prompts())
    assert {pair.prompt for pair in task.preference_pairs(200, seed=7)} <= train
    assert {example.prompt for example in task.sft_examples(200, seed=7)} <= train


def test_pairs_are_labelled_by_the_rule() -> None:
    for pair in task.preference_pairs(100, seed=2):
        chosen, rejected = score_reply(pair.prompt, pair.chosen), score_reply(pair.prompt, pair.rejected)
        assert chosen > rejected
        assert pair.margin == pytest.approx(chosen - rejected)
        assert pair.source == "rule" and not pair.tie


def test_sft_speaker_is_mediocre() -> None:
    scores = [score_reply(example.prompt, example.completion) for example in task.sft_examples(2000, seed=0)]
    best = 2.7
    assert -1.0 < sum(scores) / len(scores) < 1.0
    assert 0.0 < sum(score == best for score in scores) / len(scores) < 0.1


def test_tokenizer_frames_prompts_the_same_way_everywhere(tokenizer) -> None:
    reply = "sure , blue thank you"
    framed = tokenizer(format_prompt(SKY), add_special_tokens=False)["input_ids"]
    assert tokenizer(SKY)["input_ids"] == framed
    chat = tokenizer.apply_chat_template([{"role": "user", "content": SKY}], add_generation_prompt=True)
    assert list(chat.get("input_ids", chat)) == framed
    whole = tokenizer(format_example(SKY, reply), add_special_tokens=False)["input_ids"]
    completion = tokenizer(format_completion(reply), add_special_tokens=False)["input_ids"]
    assert whole == framed + completion == tokenizer(SKY, reply)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(framed)[0 :: len(framed) - 1] == ["<bos>", "<sep>"]
    assert completion[-1] == tokenizer.eos_token_id


def test_tokenizer_round_trips_through_save_pretrained(tokenizer, tmp_path) -> None:
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    reply = "happy to help , well , let me think , the opposite of hot is cold hope that helps"
    ids = tokenizer(SKY, reply)["input_ids"]
    assert loaded(SKY, reply)["input_ids"] == ids
    assert loaded.decode(ids, skip_special_tokens=True) == f"{SKY} {reply}"
    for name in ("pad_token_id", "bos_token_id", "eos_token_id", "unk_token_id", "sep_token_id"):
        assert getattr(loaded, name) == getattr(tokenizer, name)
    assert loaded.chat_template == tokenizer.chat_template
    assert len(loaded) == len(tokenizer)


def test_every_word_the_task_writes_is_in_the_vocabulary(tokenizer) -> None:
    rng = random.Random(0)
    texts = [request.text for request in task.requests()]
    texts += [task.sample_reply(request, rng) for request in task.requests()]
    texts += [*POLITE_OPENERS, *RUDE_OPENERS, *RUDE_CLOSERS, *FILLERS]
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.unk_token_id not in ids, text
        assert tokenizer.decode(ids) == text


def test_model_builds_deterministically_and_runs(tokenizer) -> None:
    model = build_tiny_model(tokenizer, seed=1)
    again = build_tiny_model(tokenizer, seed=1)
    state = torch.random.get_rng_state()
    other = build_tiny_model(tokenizer, seed=2)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's random state is untouched
    assert torch.equal(model.lm_head.weight, again.lm_head.weight)
    assert not torch.equal(model.lm_head.weight, other.lm_head.weight)
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()
    assert model.config.vocab_size == len(tokenizer)
    assert model.config.pad_token_id == tokenizer.pad_token_id
    batch = tokenizer([SKY, "add one and two"], ["sure , blue", "three"], padding=True, return_tensors="pt")
    logits = model(**batch).logits
    assert logits.shape == (2, batch["input_ids"].shape[1], len(tokenizer))
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize(
    ("kind", "record_type"), [("pairwise", PairwiseComparison), ("binary", BinaryLabel), ("ranking", Ranking)]
)
def test_feedback_source_yields_rule_records(kind: str, record_type: type) -> None:
    source = DemoRule(DemoRuleConfig(count=30, kind=kind, demonstrations=10))
    records = list(source.records())
    assert len(records) == 30
    assert all(isinstance(record, record_type) and record.source == "rule" for record in records)
    assert {record.prompt for record in records} <= set(task.train_prompts())
    demonstrations = source.demonstrations()
    assert len(demonstrations) == 10 and all(record.label for record in demonstrations)
    assert source.evaluation_prompts() == task.heldout_prompts()
    assert source.judge()(SKY, "sure , blue", "red") == 1.0


def test_feedback_source_registers_and_checks_its_options() -> None:
    assert prefcore_register_feedback() == [DemoRule]
    manager = PrefcorePluginManager()
    manager.register_plugin(demo_rule, Provenance(plugin="demo_rule"))
    registry = Registry(manager)
    source = registry.create("feedback", "demo_rule", {"count": 3, "kind": "binary"})
    assert registry.errors == []
    assert len(list(source.records())) == 3
    assert DemoRule(DemoRuleConfig(demonstrations=0)).demonstrations() is None
    with pytest.raises(ConfigError, match="kind must be one of"):
        build_config(DemoRuleConfig, {"kind": "scores"}, method="feedback source 'demo_rule'")
