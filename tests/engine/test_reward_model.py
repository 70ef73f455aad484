"""Reward networks: where the head reads, scoring as training tokenises, scorers, steps, saving, implicit rewards."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import LlamaModel

from prefcore.demo.model import build_tiny_model
from prefcore.demo.tokenizer import build_tokenizer
from prefcore.engine.logprobs import sequence_logps
from prefcore.engine.models import frozen_copy
from prefcore.engine.reward_model import ImplicitRewardModel
from prefcore.engine.reward_model import RewardModel
from prefcore.engine.reward_model import ScoringRule
from prefcore.engine.reward_model import build_reward_model
from prefcore.engine.reward_model import load_reward_network
from prefcore.engine.reward_model import separator_spans
from prefcore.engine.reward_model import step_end_positions
from prefcore.engine.sequences import pad_sequences
from prefcore.engine.sequences import tokenize_sequence
from prefcore.errors import ConfigError
from prefcore.errors import DataError

PROMPTS = ["what colour is the sky ?", "please what is two plus three ?", "tell me the colour of the leaf"]
COMPLETIONS = ["sure , blue", "two plus three is five hope that helps", "ugh , red"]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.fixture
def model(tokenizer) -> RewardModel:
    return build_reward_model(tokenizer, demo=True, aspects=("helpful", "harmless"), num_heads=2, max_length=64)


# ----------------------------------------------------------------------------------------------
# Where the head reads
# ----------------------------------------------------------------------------------------------


def test_reward_is_the_head_at_the_last_non_padding_token(model, tokenizer) -> None:
    sequences = pad_sequences(model.tokenize(PROMPTS, COMPLETIONS), tokenizer.pad_token_id)
    output = model(sequences)
    assert output.token_rewards is not None
    last = sequences.attention_mask.sum(-1) - 1
    assert bool((sequences.input_ids[torch.arange(3), last] == tokenizer.eos_token_id).all())
    torch.testing.assert_close(output.rewards, output.token_rewards[torch.arange(3), last])
    assert output.rewards.shape == (3, 2) and output.rewards.dtype == torch.float32


def test_padding_does_not_change_a_reward(model) -> None:
    alone = torch.cat(
        [model.score([prompt], [completion]) for prompt, completion in zip(PROMPTS, COMPLETIONS, strict=True)]
    )
    together = model.score(PROMPTS, COMPLETIONS, batch_size=3)
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)


def test_score_sees_exactly_the_training_tokens(model, tokenizer) -> None:
    """``score`` = the forward pass on ``tokenize_sequence`` output, in the caller's order, without gradients."""
    sequences = [tokenize_sequence(tokenizer, p, c, max_length=64) for p, c in zip(PROMPTS, COMPLETIONS, strict=True)]
    with torch.no_grad():
        expected = model(pad_sequences(sequences, tokenizer.pad_token_id)).rewards
    scores = model.score(PROMPTS, COMPLETIONS, batch_size=2)
    assert not scores.requires_grad
    torch.testing.assert_close(scores, expected, rtol=1e-5, atol=1e-6)
    assert model.training  # scoring restores the mode it found


def test_score_refuses_mismatched_lengths(model) -> None:
    with pytest.raises(ValueError, match="2 prompts for 3 completions"):
        model.score(PROMPTS[:2], COMPLETIONS)


def test_backbone_with_an_lm_head_is_refused(tokenizer) -> None:
    with pytest.raises(TypeError, match="get_decoder"):
        RewardModel(build_tiny_model(tokenizer), tokenizer)


@pytest.mark.parametrize(
    ("options", "match"),
    [({}, "exactly one"), ({"demo": True, "path": "x"}, "exactly one"), ({"demo": True, "num_heads": 0}, "num_heads")],
)
def test_build_refuses_bad_options(tokenizer, options, match) -> None:
    with pytest.raises(ConfigError, match=match):
        build_reward_model(tokenizer, **options)


def test_build_from_a_local_causal_lm_keeps_its_decoder(tokenizer, tmp_path: Path) -> None:
    causal_lm = build_tiny_model(tokenizer, seed=3)
    causal_lm.save_pretrained(tmp_path / "lm")
    model = build_reward_model(tokenizer, path=tmp_path / "lm")
    assert isinstance(model.backbone, LlamaModel)
    for name, tensor in causal_lm.get_decoder().state_dict().items():
        torch.testing.assert_close(model.backbone.state_dict()[name], tensor, rtol=0, atol=0)
    with pytest.raises(ConfigError, match="not a local directory"):
        build_reward_model(tokenizer, path=tmp_path / "missing")


def test_build_is_seeded_and_leaves_the_callers_rng_alone(tokenizer) -> None:
    state = torch.get_rng_state()
    first = build_reward_model(tokenizer, demo=True, seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    second = build_reward_model(tokenizer, demo=True, seed=5)
    other = build_reward_model(tokenizer, demo=True, seed=6)
    torch.testing.assert_close(first.head.weight, second.head.weight, rtol=0, atol=0)
    assert not torch.equal(first.head.weight, other.head.weight)


# ----------------------------------------------------------------------------------------------
# Scorers
# ----------------------------------------------------------------------------------------------


def test_scorer_weights_heads_by_name_position_or_rule(model) -> None:
    heads = model.score(PROMPTS, COMPLETIONS)
    torch.testing.assert_close(torch.tensor(model.scorer()(PROMPTS, COMPLETIONS)), heads.mean(-1))
    by_name = model.scorer({"harmless": 2.0})(PROMPTS, COMPLETIONS)
    torch.testing.assert_close(torch.tensor(by_name), 2.0 * heads[:, 1])
    by_position = model.scorer([0.25, 0.75])(PROMPTS, COMPLETIONS)
    torch.testing.assert_close(torch.tensor(by_position), heads @ torch.tensor([0.25, 0.75]))
    model.scoring = ScoringRule(aspect_weights=(1.0, -1.0))
    torch.testing.assert_close(torch.tensor(model.scorer()(PROMPTS, COMPLETIONS)), heads[:, 0] - heads[:, 1])


@pytest.mark.parametrize(("weights", "match"), [({"honest": 1.0}, "unknown aspect 'honest'"), ([1.0], "1 entries")])
def test_scorer_refuses_weights_that_do_not_fit(model, weights, match) -> None:
    with pytest.raises(ConfigError, match=match):
        model.scorer(weights)


# ----------------------------------------------------------------------------------------------
# Steps (process reward models)
# ----------------------------------------------------------------------------------------------


def test_separator_spans_skip_blank_steps() -> None:
    text = " first step \n\nsecond\n"
    assert [text[start:end] for start, end in separator_spans(text, "\n")] == ["first step", "second"]


def test_step_ends_are_the_tokens_holding_each_steps_last_character(tokenizer) -> None:
    text = "two plus three , is five"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    words = text.split(" ")
    positions = step_end_positions(tokenizer, text, [(0, 14), (15, 16), (17, 24)], [*ids, tokenizer.eos_token_id])
    assert [words[position] for position in positions] == ["three", ",", "five"]
    assert step_end_positions(tokenizer, text, [(17, 24)], ids[:3]) == [None]  # cut off by max_length
    with pytest.raises(DataError, match="holds no token"):
        step_end_positions(tokenizer, "a  b", [(1, 2)], tokenizer("a  b", add_special_tokens=False)["input_ids"])


@pytest.mark.parametrize("aggregate", ["min", "product"])
def test_process_scorer_aggregates_step_probabilities(tokenizer, aggregate) -> None:
    model = build_reward_model(tokenizer, demo=True, max_length=64)
    model.scoring = ScoringRule(step_aggregate=aggregate, step_separator=" , ")
    prompts, completions = PROMPTS[:2], ["sure , blue , hope that helps", "five"]
    sequences = model.tokenize(prompts, completions)
    with torch.no_grad():
        token_rewards = model.token_rewards(pad_sequences(sequences, tokenizer.pad_token_id))[..., 0]
    # step ends by hand: "sure" | "blue" | "helps" in the first completion, "five" alone in the second
    first_prompt = len(sequences[0].prompt_ids)
    expected = [
        torch.sigmoid(token_rewards[0, [first_prompt + 0, first_prompt + 2, first_prompt + 6]]),
        torch.sigmoid(token_rewards[1, [len(sequences[1].prompt_ids)]]),
    ]
    steps = model.step_scores(prompts, completions)
    for got, want in zip(steps, expected, strict=True):
        torch.testing.assert_close(got, want)
    reduce = (lambda values: values.min()) if aggregate == "min" else (lambda values: values.prod())
    torch.testing.assert_close(
        torch.tensor(model.scorer()(prompts, completions)), torch.stack([reduce(v) for v in expected])
    )
    with pytest.raises(ConfigError, match="one head"):
        model.scorer([1.0])


# ----------------------------------------------------------------------------------------------
# Saving and loading
# ----------------------------------------------------------------------------------------------


def test_save_load_round_trip(model, tmp_path: Path) -> None:
    model.scoring = ScoringRule(aspect_weights=(0.3, 0.7))
    with torch.no_grad():
        model.head.bias.fill_(0.5)
    model.save(tmp_path / "rm")
    loaded = RewardModel.load(tmp_path / "rm")
    assert (loaded.aspects, loaded.max_length, loaded.scoring) == (model.aspects, 64, model.scoring)
    torch.testing.assert_close(loaded.score(PROMPTS, COMPLETIONS), model.score(PROMPTS, COMPLETIONS), rtol=0, atol=0)
    assert sorted(path.name for path in (tmp_path / "rm").iterdir()) == [
        "backbone",
        "head.safetensors",
        "reward_model.json",
        "tokenizer",
    ]
    assert isinstance(load_reward_network(tmp_path / "rm"), RewardModel)


def test_save_replaces_an_older_model_and_leaves_no_staging_folder(model, tokenizer, tmp_path: Path) -> None:
    build_reward_model(tokenizer, demo=True, seed=9, num_heads=2, aspects=("helpful", "harmless")).save(tmp_path / "rm")
    model.save(tmp_path / "rm")
    torch.testing.assert_close(RewardModel.load(tmp_path / "rm").head.weight, model.head.weight, rtol=0, atol=0)
    assert [path.name for path in tmp_path.iterdir()] == ["rm"]


def test_a_save_that_fails_leaves_the_previous_model(model, tmp_path: Path, monkeypatch) -> None:
    model.save(tmp_path / "rm")
    before = RewardModel.load(tmp_path / "rm").head.weight.clone()

    def broken(*args, **kwargs) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("prefcore.engine.reward_model.storage.save_file", broken)
    with torch.no_grad():
        model.head.weight.add_(1.0)
    with pytest.raises(OSError, match="disk full"):
        model.save(tmp_path / "rm")
    torch.testing.assert_close(RewardModel.load(tmp_path / "rm").head.weight, before, rtol=0, atol=0)
    assert [path.name for path in tmp_path.iterdir()] == ["rm"]


def test_loading_a_folder_without_a_model_says_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no reward_model\.json"):
        RewardModel.load(tmp_path)


# ----------------------------------------------------------------------------------------------
# The implicit reward of a policy
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def implicit(tokenizer) -> ImplicitRewardModel:
    reference = frozen_copy(build_tiny_model(tokenizer, seed=0))
    policy = build_tiny_model(tokenizer, seed=1)
    return ImplicitRewardModel(policy, reference, tokenizer, beta=0.25, max_length=64)


def test_implicit_reward_is_beta_times_the_log_ratio(implicit, tokenizer) -> None:
    padded = pad_sequences(implicit.tokenize(PROMPTS, COMPLETIONS), tokenizer.pad_token_id)
    expected = 0.25 * (sequence_logps(implicit.policy, padded) - sequence_logps(implicit.reference, padded))
    torch.testing.assert_close(implicit.score(PROMPTS, COMPLETIONS)[:, 0], expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.tensor(implicit.scorer()(PROMPTS, COMPLETIONS)), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(implicit(padded).rewards[:, 0].detach(), expected, rtol=1e-5, atol=1e-5)


def test_implicit_reward_trains_only_the_policy(implicit, tokenizer) -> None:
    padded = pad_sequences(implicit.tokenize(PROMPTS, COMPLETIONS), tokenizer.pad_token_id)
    implicit.train()
    assert not implicit.reference.training
    implicit(padded).rewards.sum().backward()
    assert all(parameter.grad is not None for parameter in implicit.policy.parameters())
    assert all(not parameter.requires_grad for parameter in implicit.reference.parameters())


def test_implicit_reward_save_load_round_trip(implicit, tmp_path: Path) -> None:
    implicit.save(tmp_path / "implicit")
    loaded = load_reward_network(tmp_path / "implicit")
    assert isinstance(loaded, ImplicitRewardModel) and loaded.beta == 0.25
    torch.testing.assert_close(loaded.score(PROMPTS, COMPLETIONS), implicit.score(PROMPTS, COMPLETIONS), rtol=0, atol=0)
    with pytest.raises(ConfigError, match="not 'reward_model'"):
        RewardModel.load(tmp_path / "implicit")


def test_implicit_reward_refuses_bad_beta_and_a_shared_reference(tokenizer) -> None:
    policy = build_tiny_model(tokenizer)
    with pytest.raises(ConfigError, match="beta"):
        ImplicitRewardModel(policy, frozen_copy(policy), tokenizer, beta=0.0)
    with pytest.raises(ConfigError, match="separate"):
        ImplicitRewardModel(policy, policy, tokenizer, beta=0.1)
