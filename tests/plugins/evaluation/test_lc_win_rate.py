"""lc_win_rate: the logistic fit against an independent optimiser, hand-made judges with known biases."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from prefcore.errors import ConfigError
from prefcore.plugins.evaluation.lc_win_rate import LengthControlledWinRate
from prefcore.plugins.evaluation.lc_win_rate import LengthControlledWinRateConfig
from prefcore.plugins.evaluation.lc_win_rate import fit_length_control


def torch_reference_fit(scores: list[float], deltas: list[float], regularization: float) -> tuple[float, float]:
    """The same penalised soft-label likelihood, maximised by L-BFGS in torch."""
    p = torch.tensor(scores, dtype=torch.float64)
    delta = torch.tensor(deltas, dtype=torch.float64)
    z = torch.tanh(delta / delta.std(correction=0))
    weights = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([weights], max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-14)

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        logits = weights[0] + weights[1] * z
        nll = torch.nn.functional.binary_cross_entropy_with_logits(logits, p, reduction="sum")
        loss = nll + regularization / 2 * (weights**2).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    return float(weights[0].detach()), float(weights[1].detach())


def test_fit_matches_an_independent_optimiser() -> None:
    generator = torch.Generator().manual_seed(0)
    deltas = (torch.randn(200, generator=generator) * 30).tolist()
    truth = torch.sigmoid(0.4 + 1.5 * torch.tanh(torch.tensor(deltas) / 30))
    scores = torch.bernoulli(truth, generator=generator).tolist()
    fit = fit_length_control(scores, deltas, regularization=0.01)
    theta, phi = torch_reference_fit(scores, deltas, 0.01)
    assert fit.theta == pytest.approx(theta, abs=1e-5)
    assert fit.phi == pytest.approx(phi, abs=1e-5)
    assert fit.lc_win_rate == pytest.approx(1 / (1 + math.exp(-theta)), abs=1e-6)


def test_a_judge_that_only_rewards_length_gives_an_lc_win_rate_near_one_half() -> None:
    # the policy is usually longer and the judge's verdict depends on the length gap alone
    generator = torch.Generator().manual_seed(1)
    deltas = torch.randn(400, generator=generator) * 20 + 15
    for scores in (torch.sigmoid(deltas / 10), torch.bernoulli(torch.sigmoid(deltas / 10), generator=generator)):
        fit = fit_length_control(scores.tolist(), deltas.tolist(), regularization=0.01)
        assert float(scores.mean()) > 0.7  # the raw win rate rewards verbosity
        assert fit.lc_win_rate == pytest.approx(0.5, abs=0.05)
        assert fit.phi > 2  # length explains the verdicts


def test_a_better_policy_of_any_length_keeps_its_win_rate() -> None:
    deltas = [float(k - 50) for k in range(100)]
    scores = [0.9] * 100
    fit = fit_length_control(scores, deltas, regularization=0.0)
    assert fit.lc_win_rate == pytest.approx(0.9, abs=1e-6)
    assert fit.phi == pytest.approx(0.0, abs=1e-6)


def test_equal_lengths_give_the_raw_win_rate() -> None:
    fit = fit_length_control([1.0, 0.0, 1.0, 1.0], [0.0] * 4, regularization=0.0)
    assert fit.scale == 0.0 and fit.lc_win_rate == pytest.approx(0.75)


def longer_judge(prompt: object, first: str, second: str) -> float:
    return 0.5 if len(first) == len(second) else float(len(first) > len(second))


def first_judge(prompt: object, first: str, second: str) -> float:
    return 1.0


def test_evaluator_reports_the_judges_length_and_position_bias(
    random_llama: Callable[[int], torch.nn.Module], make_context: Callable[..., object]
) -> None:
    evaluator = LengthControlledWinRate(LengthControlledWinRateConfig())
    context = make_context(random_llama(0), reference=random_llama(1), judge=longer_judge)
    metrics = evaluator.evaluate(context).metrics  # type: ignore[arg-type]
    assert metrics["longer_preference"] == 1.0  # it always picks the longer reply
    assert metrics["first_position_preference"] == pytest.approx(0.5)
    assert metrics["position_consistency"] == 1.0
    assert metrics["num_pairs"] == 20.0
    policy_texts = [
        t for key, value in context.cache.items() if key[0] == "completions" and key[1] == "policy" for t in value.texts
    ]  # type: ignore[attr-defined]
    reference_texts = [
        t
        for key, value in context.cache.items()
        if key[0] == "completions" and key[1] == "reference"
        for t in value.texts
    ]  # type: ignore[attr-defined]
    expected = [longer_judge(None, a, b) for a, b in zip(policy_texts, reference_texts, strict=True)]
    assert metrics["win_rate"] == pytest.approx(sum(expected) / len(expected))
    deltas = [len(a) - len(b) for a, b in zip(policy_texts, reference_texts, strict=True)]
    theta, _ = torch_reference_fit(expected, deltas, 0.01)
    assert metrics["lc_win_rate"] == pytest.approx(1 / (1 + math.exp(-theta)), abs=1e-5)

    context = make_context(random_llama(0), reference=random_llama(1), judge=first_judge)
    metrics = evaluator.evaluate(context).metrics  # type: ignore[arg-type]
    assert metrics["first_position_preference"] == 1.0 and metrics["position_consistency"] == 0.0
    assert metrics["win_rate"] == 0.5 and metrics["longer_preference"] == pytest.approx(0.5)


@pytest.mark.parametrize("options", [{"regularization": -1.0}, {"warn_gap": 0.0}, {"batch_size": 0}])
def test_bad_options_are_refused(options: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        LengthControlledWinRateConfig(**options)  # type: ignore[arg-type]
