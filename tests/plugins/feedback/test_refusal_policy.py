"""refusal_policy: pairs by hand from a file, the demo speaker's pairs checked by the safety rule, bad input."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from prefcore.demo import rule
from prefcore.errors import ConfigError
from prefcore.errors import DataError
from prefcore.plugins.feedback.refusal_policy import RefusalPolicy
from prefcore.plugins.feedback.refusal_policy import RefusalPolicyConfig
from prefcore.plugins.feedback.refusal_policy import sides
from prefcore.safety_policy import PolicyFileError
from prefcore.safety_policy import load_policy

POLICY = """
prompts = "prompts.jsonl"

[[category]]
name = "weapons"
behaviour = "refuse"
compliance_patterns = ["\\\\bstep\\\\b"]

[[category]]
name = "alt"
behaviour = "refuse_with_alternative"
alternative_patterns = ["\\\\binstead\\\\b"]

[[category]]
name = "kill_process"
behaviour = "comply"
lookalike_of = "weapons"
compliance_patterns = ["\\\\bkill\\\\b"]
"""

PROMPTS = [
    {"prompt": "how do i build a bomb", "category": "weapons"},
    {"prompt": "how do i pick a lock", "category": "alt"},
    {"prompt": "how do i kill a process", "category": "kill_process"},
    {"prompt": "how do i kill a python process", "category": "kill_process", "split": "heldout"},
]


def write_jsonl(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture
def policy_path(tmp_path: Path) -> Path:
    write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    path = tmp_path / "policy.toml"
    path.write_text(POLICY, encoding="utf-8")
    return path


def test_sides_follow_the_behaviour(policy_path: Path) -> None:
    policy = load_policy(policy_path)
    replies = ["I cannot help.", "Step 1: ...", "I cannot, but step 1 ...", "Sure."]
    refused = [True, False, True, False]
    # disallowed: only the full refusal may win; compliance and the partial refusal lose
    assert sides(policy.category("weapons"), replies, refused) == (["I cannot help."], replies[1:])
    # allowed: compliance that carries the request out wins; "Sure." says nothing of it and is neither
    allowed = ["I cannot help.", "kill -9 it", "Sure."]
    assert sides(policy.category("kill_process"), allowed, [True, False, False]) == (["kill -9 it"], ["I cannot help."])
    # refuse_with_alternative: a bare refusal is not chosen, one offering an alternative is
    alt = ["I cannot help.", "I cannot; call a locksmith instead.", "Use a pin."]
    assert sides(policy.category("alt"), alt, [True, True, False]) == ([alt[1]], ["Use a pin."])


def test_pairs_from_a_completions_file(policy_path: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    completions = write_jsonl(
        tmp_path / "completions.jsonl",
        [
            {"prompt": "how do i build a bomb", "completion": "I cannot help with that."},
            {"prompt": "how do i build a bomb", "completion": "Step 1: buy ..."},
            {"prompt": "how do i pick a lock", "completion": "I cannot help."},  # no alternative: no pair
            {"prompt": "how do i kill a process", "completion": "I'm sorry, I can't."},
            {"prompt": "how do i kill a process", "completion": "Use kill PID."},
        ],
    )
    source = RefusalPolicy(RefusalPolicyConfig(policy=str(policy_path), completions=completions))
    with caplog.at_level(logging.INFO, logger="prefcore"):
        pairs = list(source.records())
    assert [(p.prompt, p.chosen, p.rejected) for p in pairs] == [
        ("how do i build a bomb", "I cannot help with that.", "Step 1: buy ..."),
        ("how do i kill a process", "Use kill PID.", "I'm sorry, I can't."),
    ]
    assert pairs[0].metadata == {"category": "weapons", "behaviour": "refuse", "detector": "patterns"}
    assert pairs[1].metadata["behaviour"] == "comply" and pairs[1].source == "refusal_policy"
    assert "weapons 1 pairs, alt 0 pairs, kill_process 1 pairs" in caplog.text
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "'alt' has no usable pair" in warnings[0]
    assert source.evaluation_prompts() == ("how do i kill a python process",)


def test_the_demo_speakers_pairs_agree_with_the_safety_rule() -> None:
    source = RefusalPolicy(RefusalPolicyConfig(policy="demo", speaker="demo", samples=6, pairs_per_prompt=2))
    pairs = list(source.records())
    harmful = [p for p in pairs if p.metadata["category"] == "animal_harm"]
    care = [p for p in pairs if p.metadata["category"] == "animal_care"]
    assert len(harmful) > 100 and len(care) > 100
    # the safety rule, independent of the detector: chosen refusals are safe, rejected replies comply
    assert all(rule.harm(p.prompt, p.chosen) == 0.0 and rule.harm(p.prompt, p.rejected) == 1.0 for p in harmful)
    # look-alikes: the chosen reply names a way to make the animal happy, the rejected one declines
    care_ways = set(rule.category("lookalike").answers)
    assert all(set(rule.words(p.chosen)) & care_ways and not set(rule.words(p.rejected)) & care_ways for p in care)
    assert all(p.metadata["behaviour"] == "refuse" for p in harmful)
    assert list(source.records()) == pairs  # seeded
    assert len(source.evaluation_prompts()) == 28
    assert source.demonstrations() is None


def test_bad_input_is_refused_before_anything_runs(policy_path: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="exactly one of"):
        RefusalPolicyConfig(policy="demo")
    with pytest.raises(ConfigError, match="exactly one of"):
        RefusalPolicyConfig(policy="demo", speaker="demo", completions=tmp_path / "c.jsonl")
    with pytest.raises(PolicyFileError):
        RefusalPolicyConfig(policy=str(tmp_path / "missing.toml"), speaker="demo")
    with pytest.raises(ConfigError, match="demo requests only"):
        RefusalPolicyConfig(policy=str(policy_path), speaker="demo")
    with pytest.raises(PolicyFileError, match=r"detector\.kind"):
        RefusalPolicyConfig(policy="demo", speaker="demo", detector={"kind": "oracle"})
    stray = write_jsonl(tmp_path / "stray.jsonl", [{"prompt": "not in the policy", "completion": "ok"}])
    source = RefusalPolicy(RefusalPolicyConfig(policy=str(policy_path), completions=stray))
    with pytest.raises(DataError, match="not a training prompt"):
        list(source.records())


def test_replies_sampled_from_a_local_model(tmp_path: Path) -> None:
    import re

    from prefcore.demo.model import build_tiny_model
    from prefcore.demo.tokenizer import build_tokenizer
    from prefcore.engine.generation import generate_completions
    from prefcore.evaluation import GenerationSettings

    tokenizer = build_tokenizer()
    tiny = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}
    model = build_tiny_model(tokenizer, **tiny)
    model.save_pretrained(tmp_path / "generator")
    tokenizer.save_pretrained(tmp_path / "generator")
    prompts = ["how do i make the cat sad ?", "how do i make the cat happy ?"]
    write_jsonl(
        tmp_path / "prompts.jsonl",
        [{"prompt": prompts[0], "category": "bad"}, {"prompt": prompts[1], "category": "good"}],
    )
    policy = tmp_path / "policy.toml"
    policy.write_text(
        'prompts = "prompts.jsonl"\n[detector]\nprefixes = []\npatterns = ["^[a-m]"]\n'
        '[[category]]\nname = "bad"\nbehaviour = "refuse"\n'
        '[[category]]\nname = "good"\nbehaviour = "comply"\n',
        encoding="utf-8",
    )
    config = RefusalPolicyConfig(
        policy=str(policy), model_path=tmp_path / "generator", samples=6, max_new_tokens=3, seed=5, pairs_per_prompt=99
    )
    pairs = list(RefusalPolicy(config).records())
    settings = GenerationSettings(max_new_tokens=3, temperature=1.0, num_samples=6, seed=5)
    replies = generate_completions(model, tokenizer, prompts, settings)
    expected = set()
    for index, prompt in enumerate(prompts):
        own = list(dict.fromkeys(replies[index * 6 : (index + 1) * 6]))
        refusals = [r for r in own if re.search("^[a-m]", r.strip().lower())]
        answers = [r for r in own if r not in refusals]
        good, bad = (refusals, answers) if index == 0 else (answers, refusals)
        expected |= {(prompt, g, b) for g in good for b in bad}
    assert {(p.prompt, p.chosen, p.rejected) for p in pairs} == expected
    assert expected  # the seed gives both kinds of reply
