"""Inference-time alignment on the tiny demo model: best-of-n, checks and fallback, RA-LLM, the KL bound, the CLI."""

from __future__ import annotations

import json
import math
import random
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from prefcore.cli import main
from prefcore.demo import task
from prefcore.demo.model import build_tiny_model
from prefcore.demo.tokenizer import build_tokenizer
from prefcore.engine.models import save_model
from prefcore.errors import ConfigError
from prefcore.inference import AlignedGenerator
from prefcore.inference import GenerateSettings
from prefcore.inference import RobustnessConfig
from prefcore.inference import best_of_n_kl_bound
from prefcore.inference import best_of_n_kl_estimate
from prefcore.inference import build_checks
from prefcore.inference import build_generator
from prefcore.inference import dropped_copies
from prefcore.inference import read_prompts
from prefcore.inference import robust_refusals
from prefcore.inference import summarize
from prefcore.refusal import REFUSAL_TEXT
from prefcore.refusal import RefusalPatternError
from prefcore.rewards import build_reward
from prefcore.rewards import plan_rewards

TINY = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}
PROMPTS = task.heldout_prompts()[:4]
RULE = {"kind": "rule", "method": "demo_rule"}


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return build_tokenizer()


@pytest.fixture(scope="module")
def model(tokenizer: Any) -> Any:
    return build_tiny_model(tokenizer, seed=0, **TINY).eval()


def rule_reward() -> Any:
    return build_reward(plan_rewards([RULE], has_trained_model=False))


# ----------------------------------------------------------------------------------------------
# The KL of best-of-n: an exact PMF as the independent reference
# ----------------------------------------------------------------------------------------------


def exact_best_of_n_kl(probabilities: Sequence[float], n: int) -> float:
    """KL(π_n ‖ π) with π_n(y) = F(y)^n − F⁻(y)^n, outcomes listed by increasing reward (Beirami et al. 2024)."""
    below, kl = 0.0, 0.0
    for p in probabilities:
        mass = (below + p) ** n - below**n
        kl += mass * math.log(mass / p)
        below += p
    return kl


@pytest.mark.parametrize("probabilities", [(0.5, 0.3, 0.2), (0.25, 0.25, 0.25, 0.25), (0.9, 0.05, 0.05)])
@pytest.mark.parametrize("n", [1, 2, 4, 16])
def test_kl_estimate_lies_between_the_exact_kl_and_the_bound(probabilities: tuple[float, ...], n: int) -> None:
    exact = exact_best_of_n_kl(probabilities, n)
    estimate = best_of_n_kl_estimate(n, probabilities[-1])
    assert exact - 1e-12 <= estimate <= best_of_n_kl_bound(n) + 1e-12


def test_kl_estimate_limits_and_the_binary_case() -> None:
    assert best_of_n_kl_bound(4) == pytest.approx(math.log(4) - 3 / 4)
    assert best_of_n_kl_estimate(4, 1e-300) == pytest.approx(best_of_n_kl_bound(4))
    assert best_of_n_kl_estimate(4, 0.0) == best_of_n_kl_bound(4)
    assert best_of_n_kl_estimate(4, 1.0) == 0.0
    # uniform binary: the bound grows like log n, the true KL and the estimate stay below log 2
    assert best_of_n_kl_bound(64) > math.log(2)
    assert exact_best_of_n_kl((0.5, 0.5), 8) < best_of_n_kl_estimate(8, 0.5) <= math.log(2)
    assert exact_best_of_n_kl((0.5, 0.5), 64) <= best_of_n_kl_estimate(64, 0.5) + 1e-12
    assert best_of_n_kl_estimate(64, 0.5) == pytest.approx(math.log(2), abs=1e-6)


# ----------------------------------------------------------------------------------------------
# Best-of-n, checks and fallback
# ----------------------------------------------------------------------------------------------


def test_best_of_n_answers_the_highest_reward_candidate(model: Any, tokenizer: Any) -> None:
    reward = build_reward(
        plan_rewards(
            [RULE | {"weight": 2.0}, {"kind": "verifiable", "mode": "exact", "name": "right"}],
            has_trained_model=False,
        )
    )
    answers = [task.parse_request(prompt).answer for prompt in PROMPTS]
    generator = AlignedGenerator(model, tokenizer, reward=reward, settings=GenerateSettings(n=6, max_new_tokens=6))
    decisions = generator.generate(PROMPTS, answers)
    assert len(decisions) == len(PROMPTS)
    for prompt, decision in zip(PROMPTS, decisions, strict=True):
        rewards = [candidate.reward for candidate in decision.candidates]
        assert decision.reason == "best_of_n"
        assert decision.candidates[decision.chosen].reward == max(rewards)
        assert all(decision.candidates[decision.chosen].reward >= value for value in rewards)
        assert decision.completion == decision.candidates[decision.chosen].text
        for candidate in decision.candidates:  # every component recorded, the total their weighted sum
            assert candidate.components["demo_rule"] == pytest.approx(task.score_reply(prompt, candidate.text))
            assert candidate.reward == pytest.approx(
                2.0 * candidate.components["demo_rule"] + candidate.components["right"]
            )
        assert decision.kl_bound == pytest.approx(math.log(6) - 5 / 6)
        assert 0.0 <= decision.kl_estimate <= decision.kl_bound + 1e-12
    summary = summarize(decisions)
    assert summary["chosen_reward"] >= summary["candidate_reward"]
    assert summary["refusal_rate"] == 0.0


def test_a_candidate_failing_a_check_is_passed_over_and_all_failing_gives_the_fallback(
    model: Any, tokenizer: Any
) -> None:
    settings = GenerateSettings(n=6, max_new_tokens=6, fallback="no answer")
    unchecked = AlignedGenerator(model, tokenizer, reward=rule_reward(), settings=settings).generate(PROMPTS)
    # a check that fails every candidate scoring above the median of its prompt's candidates
    ceiling = sorted(c.reward for d in unchecked for c in d.candidates)[len(PROMPTS) * 3]
    checks = build_checks([RULE | {"name": "capped", "max": ceiling}])
    checked = AlignedGenerator(model, tokenizer, reward=rule_reward(), checks=checks, settings=settings).generate(
        PROMPTS
    )
    for before, after in zip(unchecked, checked, strict=True):
        assert [c.text for c in before.candidates] == [c.text for c in after.candidates]  # same seed, same draws
        passing = [k for k, c in enumerate(after.candidates) if c.reward <= ceiling]
        assert [k for k, c in enumerate(after.candidates) if c.passed] == passing
        for candidate in after.candidates:
            assert candidate.checks["capped"] == pytest.approx(candidate.components["demo_rule"])
            assert candidate.failed == (() if candidate.reward <= ceiling else ("capped",))
        if passing:
            assert after.chosen == max(passing, key=lambda k: (after.candidates[k].reward, -k))
        else:
            assert (after.chosen, after.reason, after.completion) == (None, "all_candidates_failed", "no answer")
    assert any(not c.passed for d in checked for c in d.candidates) and any(d.chosen is not None for d in checked)
    impossible = build_checks([RULE | {"min": 100.0}])
    decisions = AlignedGenerator(model, tokenizer, reward=rule_reward(), checks=impossible, settings=settings).generate(
        PROMPTS
    )
    assert all(d.refused and d.reason == "all_candidates_failed" and d.completion == "no answer" for d in decisions)
    assert summarize(decisions)["all_failed_rate"] == 1.0


def test_a_refusal_check_rejects_refusing_candidates() -> None:
    check = build_checks([{"kind": "refusal", "max": 0.5, "patterns": ["\\bbaa\\b"]}])[0]
    scores = check.scores(["q"] * 3, ["I'm sorry.", "the sky is blue", "sheep say baa"], None)
    assert scores == [1.0, 0.0, 1.0]
    assert [check.passes(score) for score in scores] == [False, True, False]


@pytest.mark.parametrize(
    ("entry", "error", "field"),
    [
        ({"kind": "refusal"}, ConfigError, "check.min"),
        ({"kind": "refusal", "max": 0.5, "patterns": ["(bad"]}, RefusalPatternError, "patterns"),
        ({"kind": "refusal", "max": 0.5, "colour": 1}, ConfigError, "check.colour"),
        ({"kind": "rule", "method": "demo_rule", "min": "low"}, ConfigError, "check.min"),
        ({"kind": "rules", "method": "demo_rule", "min": 0}, ConfigError, "reward.kind"),
    ],
)
def test_malformed_checks_are_named_errors(entry: dict[str, Any], error: type[Exception], field: str) -> None:
    with pytest.raises(error) as excinfo:
        build_checks([entry])
    assert excinfo.value.field == field  # type: ignore[attr-defined]


# ----------------------------------------------------------------------------------------------
# RA-LLM
# ----------------------------------------------------------------------------------------------


def test_token_dropped_copies_are_seeded_and_drop_floor_p_l_tokens(tokenizer: Any) -> None:
    prompt = "what is the colour of the sky ? thanks"  # 9 tokens
    config = RobustnessConfig(copies=8, drop_rate=0.3, seed=3)
    copies = dropped_copies(tokenizer, prompt, config, index=0)
    assert len(copies) == 8 and all(len(copy.split()) == 9 - 2 for copy in copies)
    assert copies == dropped_copies(tokenizer, prompt, config, index=0)
    assert copies != dropped_copies(tokenizer, prompt, RobustnessConfig(copies=8, drop_rate=0.3, seed=4), index=0)
    assert len(set(copies)) > 1


def test_ra_llm_refuses_when_the_check_fires_on_enough_copies(tokenizer: Any) -> None:
    prompts = ["what is the colour of the sky ? thanks", "what is two plus three ?"]
    config = RobustnessConfig(copies=10, drop_rate=0.3, threshold=0.5)

    def colour_check(copies: Sequence[str]) -> list[bool]:  # fires on every copy of the first prompt only
        return ["sky" in copy or "colour" in copy or "thanks" in copy for copy in copies]

    first, second = robust_refusals(prompts, tokenizer, config, colour_check)
    assert first.fraction == 1.0 and first.refused
    assert second.fraction == 0.0 and not second.refused

    def every_other(copies: Sequence[str]) -> list[bool]:  # f = 0.5 exactly: refused, since f >= threshold
        return [index % 2 == 0 for index in range(len(copies))]

    votes_only = RobustnessConfig(copies=10, drop_rate=0.3, threshold=0.5, check_original=False)
    results = robust_refusals(prompts, tokenizer, votes_only, every_other)
    assert all(r.fraction == 0.5 and r.refused and not r.original_fired for r in results)
    stricter = RobustnessConfig(copies=10, drop_rate=0.3, threshold=0.6, check_original=False)
    assert not any(r.refused for r in robust_refusals(prompts, tokenizer, stricter, every_other))


def test_ra_llm_first_refuses_a_prompt_whose_unchanged_form_fires(tokenizer: Any) -> None:
    prompts = ["what is the colour of the sky ? thanks", "what is two plus three ?"]

    def whole_first_prompt(copies: Sequence[str]) -> list[bool]:  # only the intact first prompt fires
        return [copy == prompts[0] for copy in copies]

    first, second = robust_refusals(prompts, tokenizer, RobustnessConfig(copies=5), whole_first_prompt)
    assert first.original_fired and first.fraction == 0.0 and first.refused
    assert not second.original_fired and not second.refused
    off = RobustnessConfig(copies=5, check_original=False)
    assert not any(r.refused for r in robust_refusals(prompts, tokenizer, off, whole_first_prompt))


def test_ra_llm_rates_match_the_binomial_reference(tokenizer: Any) -> None:
    """Cao et al.'s toy case: the check fires iff the keyword stays and a suffix token is dropped.

    Dropping k = ⌊pL⌋ of L tokens, one copy fires with q = [C(L−1, k) − C(L−1−s, k)] / C(L, k);
    a prompt is refused with P(Binomial(copies, q) ≥ t · copies).
    """
    prompt = "what is the colour of the sky ? thanks"  # L = 9; keyword "colour", suffix "? thanks" (s = 2)
    length, suffix, copies, threshold = 9, 2, 5, 0.4
    config = RobustnessConfig(copies=copies, drop_rate=0.3, threshold=threshold)
    k = math.floor(0.3 * length)
    q = (math.comb(length - 1, k) - math.comb(length - 1 - suffix, k)) / math.comb(length, k)
    refuse = sum(
        math.comb(copies, j) * q**j * (1 - q) ** (copies - j)
        for j in range(copies + 1)
        if j >= threshold * copies - 1e-9
    )

    def keyword_check(texts: Sequence[str]) -> list[bool]:
        return [("colour" in t.split()) and not ("?" in t.split() and "thanks" in t.split()) for t in texts]

    prompts = [prompt] * 600
    results = robust_refusals(prompts, tokenizer, config, keyword_check)
    fired = [f for r in results for f in r.fired]
    fire_rate = sum(fired) / len(fired)
    refuse_rate = sum(r.refused for r in results) / len(results)
    assert fire_rate == pytest.approx(q, abs=4 * math.sqrt(q * (1 - q) / len(fired)))
    assert refuse_rate == pytest.approx(refuse, abs=4 * math.sqrt(refuse * (1 - refuse) / len(results)))


def test_generator_answers_the_fallback_when_ra_llm_refuses(model: Any, tokenizer: Any) -> None:
    prompts = ["what is the colour of the sky ? thanks", "what is two plus three ?"]

    def fires_on_colour(copies: Sequence[str]) -> list[bool]:
        return ["two" not in copy.split() for copy in copies]  # the second prompt keeps "two" in most copies

    generator = AlignedGenerator(
        model,
        tokenizer,
        reward=rule_reward(),
        settings=GenerateSettings(n=3, max_new_tokens=4),
        robustness=RobustnessConfig(copies=10, drop_rate=0.2, threshold=0.5),
        robustness_check=fires_on_colour,
    )
    first, second = generator.generate(prompts)
    assert (first.reason, first.completion, first.chosen) == ("robustness_check", REFUSAL_TEXT, None)
    assert first.robustness is not None and first.robustness.fraction == 1.0
    assert len(first.candidates) == 3  # still recorded, for the audit
    assert second.reason == "best_of_n" and second.robustness is not None and not second.robustness.refused


def test_default_robustness_check_reads_the_models_own_short_replies(model: Any, tokenizer: Any) -> None:
    generator = AlignedGenerator(
        model,
        tokenizer,
        settings=GenerateSettings(n=2, max_new_tokens=4),
        robustness=RobustnessConfig(copies=3, max_new_tokens=3),
    )
    decisions = generator.generate(PROMPTS[:2])
    for decision in decisions:
        assert decision.robustness is not None and len(decision.robustness.fired) == 3
        # a random tiny model over the demo words never opens with a refusal prefix
        assert decision.robustness.fraction == 0.0


# ----------------------------------------------------------------------------------------------
# Run-file building and the command line
# ----------------------------------------------------------------------------------------------


def test_build_generator_reads_the_sections_and_refuses_unknown_options(model: Any, tokenizer: Any) -> None:
    generator = build_generator(
        model,
        tokenizer,
        {"generate": {"n": 3}, "reward": [RULE], "check": [{"kind": "refusal", "max": 0}], "robustness": {}},
    )
    assert generator.settings.n == 3 and generator.robustness == RobustnessConfig()
    assert [check.name for check in generator.checks] == ["refusal"]
    with pytest.raises(ConfigError, match="no option 'samples'"):
        build_generator(model, tokenizer, {"generate": {"samples": 3}})
    with pytest.raises(ConfigError, match="threshold"):
        build_generator(model, tokenizer, {"robustness": {"threshold": 0}})


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, model: Any, tokenizer: Any) -> Path:
    folder = tmp_path_factory.mktemp("run") / "model"
    save_model(model, tokenizer, folder)
    return folder.parent  # a run folder: generate finds model/ inside


def test_cli_generate_end_to_end(model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS[:3]), encoding="utf-8")
    config = tmp_path / "generate.toml"
    config.write_text(
        '[generate]\nmax_new_tokens = 5\nseed = 1\n\n[[reward]]\nkind = "rule"\nmethod = "demo_rule"\n\n'
        '[[check]]\nkind = "refusal"\nmax = 0.5\n\n[robustness]\ncopies = 3\n',
        encoding="utf-8",
    )
    out = tmp_path / "answers.jsonl"
    code = main(
        ["generate", str(model_dir), "--prompts", str(prompts), "--config", str(config), "--out", str(out), "--n", "4"]
    )
    assert code == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [row["prompt"] for row in rows] == list(PROMPTS[:3])
    for row in rows:
        assert len(row["candidates"]) == 4
        passing = [c["reward"] for c in row["candidates"] if c["passed"]]
        chosen = row["candidates"][row["chosen"]]
        assert row["completion"] == chosen["text"] and chosen["reward"] == max(passing)
        assert chosen["components"]["demo_rule"] == pytest.approx(task.score_reply(row["prompt"], chosen["text"]))
        assert set(chosen["checks"]) == {"refusal"} and len(row["robustness"]["copies"]) == 3
        assert row["kl_bound"] == pytest.approx(math.log(4) - 3 / 4)
    printed = capsys.readouterr().out
    assert "bound log n - (n-1)/n = 0.6363" in printed

    config.write_text('[[check]]\nkind = "refusal"\nmax = 0.5\npatterns = ["(oops"]\n', encoding="utf-8")
    code = main(["generate", str(model_dir), "--prompts", str(prompts), "--config", str(config), "--out", str(out)])
    assert code == 2
    assert "RefusalPatternError" in capsys.readouterr().err


def test_cli_generate_refuses_a_missing_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("what is two plus three ?\n", encoding="utf-8")
    code = main(["generate", str(tmp_path), "--prompts", str(prompts), "--out", str(tmp_path / "o.jsonl")])
    assert code == 2 and "neither a model folder" in capsys.readouterr().err


def test_seeded_sampling_is_reproducible(model: Any, tokenizer: Any) -> None:
    settings = GenerateSettings(n=3, max_new_tokens=5, seed=7)
    first = AlignedGenerator(model, tokenizer, settings=settings).generate(PROMPTS[:2])
    torch.manual_seed(123)
    random.seed(5)
    second = AlignedGenerator(model, tokenizer, settings=settings).generate(PROMPTS[:2])
    assert [d.to_dict() for d in first] == [d.to_dict() for d in second]


def test_cli_generate_on_a_run_folder_uses_its_rewards(model_dir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(model_dir / "model", run_dir / "model")
    (run_dir / "config.json").write_text(json.dumps({"model": {"demo": True}, "reward": [RULE]}), encoding="utf-8")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS[:2]) + "\n", encoding="utf-8")
    out = tmp_path / "answers.jsonl"
    args = ["generate", str(run_dir), "--prompts", str(prompts), "--out", str(out), "--n", "3"]
    assert main([*args, "--set", "generate.max_new_tokens=5"]) == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [row["prompt"] for row in rows] == list(PROMPTS[:2])
    for row in rows:
        assert set(row["candidates"][0]["components"]) == {"demo_rule"}  # the run file's [[reward]]
        assert row["candidates"][row["chosen"]]["reward"] == max(c["reward"] for c in row["candidates"])


def test_read_prompts_takes_chat_turns_and_answers(tmp_path: Path) -> None:
    good = tmp_path / "chat.jsonl"
    good.write_text(
        json.dumps({"prompt": [{"role": "user", "content": "hi"}], "answer": "x"}) + "\n" + json.dumps("plain") + "\n",
        encoding="utf-8",
    )
    prompts, answers = read_prompts(good)
    assert prompts[0][0].role == "user" and prompts[0][0].content == "hi" and prompts[1] == "plain"
    assert answers == ["x", None]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": [{"role": "user"}]}) + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="line 1"):
        read_prompts(bad)


def test_batches_keep_each_prompts_robustness_copies_and_answer_every_prompt(model: Any, tokenizer: Any) -> None:
    def never(copies: Sequence[str]) -> list[bool]:
        return [False] * len(copies)

    def run(batch_size: int) -> list[Any]:
        return AlignedGenerator(
            model,
            tokenizer,
            settings=GenerateSettings(n=2, max_new_tokens=3, batch_size=batch_size),
            robustness=RobustnessConfig(copies=4),
            robustness_check=never,
        ).generate(PROMPTS)

    one, all_at_once = run(1), run(len(PROMPTS))
    assert [d.prompt for d in one] == list(PROMPTS) and len(all_at_once) == len(PROMPTS)
    assert [d.robustness.copies for d in one] == [d.robustness.copies for d in all_at_once]  # type: ignore[union-attr]
    assert len({d.robustness.copies for d in one}) == len(PROMPTS)  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match="batch_size"):
        GenerateSettings(batch_size=0)


def test_best_of_n_on_a_categorical_policy_matches_the_exact_pmf() -> None:
    """Beirami et al.'s π_n(y) = F(y)^n − F⁻(y)^n, against best-of-4 on a one-token policy of six replies.

    The tiny Llama's decoder is zeroed so every prefix gives the same next-token logits: a known
    categorical π over six words (every other token has logit −30), one token per completion.
    """
    words = ("red", "blue", "green", "white", "black", "brown")
    tokenizer = build_tokenizer(words)
    logits = torch.full((len(tokenizer),), -30.0)
    for word, logit in zip(words, (1.0, 0.5, 0.8, 0.0, 1.2, 0.3), strict=True):
        logits[tokenizer.convert_tokens_to_ids(word)] = logit
    model = build_tiny_model(tokenizer, **TINY)
    with torch.no_grad():
        for parameter in model.model.layers.parameters():
            parameter.zero_()
        model.model.embed_tokens.weight.fill_(1.0)
        model.lm_head.weight.copy_(logits[:, None].expand(-1, model.config.hidden_size) / model.config.hidden_size)
    model.eval()
    base = torch.softmax(logits, dim=0)
    reward_of = {word: float(rank) for rank, word in enumerate(words)}  # "brown" best, "red" worst

    def table(prompts: Sequence[Any], completions: Sequence[str]) -> list[float]:
        return [reward_of[text.strip()] for text in completions]

    n, count = 4, 600
    settings = GenerateSettings(n=n, max_new_tokens=1, seed=11, batch_size=count)
    decisions = AlignedGenerator(model, tokenizer, reward=table, settings=settings).generate(["red"] * count)
    below = 0.0
    for word in words:  # increasing reward
        p = float(base[tokenizer.convert_tokens_to_ids(word)])
        exact = (below + p) ** n - below**n
        below += p
        frequency = sum(d.completion.strip() == word for d in decisions) / count
        assert frequency == pytest.approx(exact, abs=4 * math.sqrt(exact * (1 - exact) / count) + 1e-3), word
    for decision in decisions:  # each candidate's log-prob is its base probability: the KL estimate reads it
        for candidate in decision.candidates:
            assert math.exp(candidate.logp) == pytest.approx(
                float(base[tokenizer.convert_tokens_to_ids(candidate.text.strip())]), rel=1e-4
            )
        assert 0.0 <= decision.kl_estimate <= best_of_n_kl_bound(n)
