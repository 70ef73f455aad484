"""The Lagrange multiplier against independent references of its two update rules.

- ``log``: Safe-RLHF's own mechanics (``safe_rlhf/algorithms/ppo_lag/trainer.py``): a torch
  parameter log λ, ``torch.optim.SGD`` on the loss −(Ĉ − d)·exp(log λ), then
  ``log_lambda.clamp_(max=log λ_max)``; Ĉ the mean of a ``deque(maxlen=window)`` of episode
  costs; no update while ``global_step < delay``.
- ``projected``: λ ← min(λ_max, max(0, λ + η·(Ĉ − d))), a plain Python loop.
"""

from __future__ import annotations

import itertools
import math
import random
from collections import deque

import pytest
import torch

from prefcore.errors import ConfigError
from prefcore.lagrangian import LagrangeMultiplier


def _cost_steps(seed: int, steps: int, per_step: int, centre: float) -> list[list[float]]:
    rng = random.Random(seed)
    return [[rng.gauss(centre, 1.0) for _ in range(per_step)] for _ in range(steps)]


def safe_rlhf_lambdas(
    steps: list[list[float]], *, bound: float, init: float, lr: float, max_value: float | None, delay: int, window: int
) -> list[float]:
    """λ after each step, as Safe-RLHF's PPO-Lag updates it (float64 here for a tight comparison)."""
    log_lambda = torch.nn.Parameter(torch.tensor(math.log(init), dtype=torch.float64))
    optimizer = torch.optim.SGD([log_lambda], lr=lr)
    episode_costs: deque[float] = deque(maxlen=window)
    values = []
    for global_step, costs in enumerate(steps):
        episode_costs.extend(costs)  # post_rollout appends before rl_step
        mean_cost = torch.tensor(list(episode_costs), dtype=torch.float64).mean()
        if global_step >= delay:
            loss = -(mean_cost - bound) * log_lambda.exp()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if max_value is not None:
                with torch.no_grad():
                    log_lambda.clamp_(max=math.log(max_value))
        values.append(float(log_lambda.detach().exp()))
    return values


def projected_lambdas(
    steps: list[list[float]], *, bound: float, init: float, lr: float, max_value: float | None, delay: int, window: int
) -> list[float]:
    value, history, values = init, [], []
    for index, costs in enumerate(steps):
        history += costs
        recent = history[-window:]
        if index >= delay:
            value = max(0.0, value + lr * (sum(recent) / len(recent) - bound))
            if max_value is not None:
                value = min(value, max_value)
        values.append(value)
    return values


CASES = [
    # (bound, init, lr, max_value, delay, window, cost centre): why
    (0.0, 1.0, 0.1, 5.0, 0, 128, 0.5),  # Safe-RLHF defaults, costs above d: λ climbs to the clamp
    (0.0, 1.0, 0.1, 5.0, 0, 128, -0.8),  # costs below d: λ decays
    (0.3, 0.5, 0.5, None, 3, 10, 0.3),  # short window, delay, no clamp, costs around d
    (-0.2, 2.0, 0.05, 2.5, 1, 7, 0.0),  # window shorter than one step's costs
]


UPDATES = [
    # (update, its independent reference, seed of the cost draws)
    ("log", safe_rlhf_lambdas, 0),  # Safe-RLHF's log-space step
    ("projected", projected_lambdas, 1),  # projected gradient ascent on λ
]


@pytest.mark.parametrize(("update", "reference", "seed"), UPDATES, ids=[update for update, _, _ in UPDATES])
@pytest.mark.parametrize(("bound", "init", "lr", "max_value", "delay", "window", "centre"), CASES)
def test_update_matches_its_reference(
    update, reference, seed, bound, init, lr, max_value, delay, window, centre
) -> None:
    steps = _cost_steps(seed, 40, 8, centre)
    multiplier = LagrangeMultiplier(
        bound, init=init, lr=lr, max_value=max_value, update=update, delay=delay, window=window
    )
    got = [multiplier.update(costs) for costs in steps]
    expected = reference(steps, bound=bound, init=init, lr=lr, max_value=max_value, delay=delay, window=window)
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert got[:delay] == [init] * delay  # λ holds still for the first ``delay`` steps


def test_direction_clamp_and_zero() -> None:
    rising = LagrangeMultiplier(0.0)
    values = [rising.update([1.0] * 4) for _ in range(60)]
    assert all(b >= a for a, b in itertools.pairwise(values)) and values[-1] == pytest.approx(5.0)
    falling = LagrangeMultiplier(0.0, update="projected", lr=0.5)
    assert [falling.update([-1.0]) for _ in range(3)] == [0.5, 0.0, 0.0]  # projected λ reaches 0 and stays
    log = LagrangeMultiplier(0.0)
    for _ in range(50):
        log.update([-1.0])
    assert 0.0 < log.value < 0.2  # log-parametrised λ decays towards 0 but stays positive


def test_state_round_trip_continues_exactly() -> None:
    steps = _cost_steps(2, 20, 5, 0.4)
    straight = LagrangeMultiplier(0.1, window=12, delay=2)
    expected = [straight.update(costs) for costs in steps]
    first = LagrangeMultiplier(0.1, window=12, delay=2)
    for costs in steps[:7]:
        first.update(costs)
    resumed = LagrangeMultiplier(0.1, window=12, delay=2)
    resumed.load_state_dict(first.state_dict())
    assert [resumed.update(costs) for costs in steps[7:]] == expected[7:]


def test_non_finite_costs_and_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="finite"):
        LagrangeMultiplier().update([0.0, math.nan])
    for options, field in (
        ({"init": 0.0}, "lambda_init"),
        ({"update": "dual"}, "lambda_update"),
        ({"max_value": 0.5}, "lambda_max"),
        ({"window": 0}, "cost_window"),
        ({"delay": -1}, "lambda_delay"),
        ({"lr": -0.1}, "lambda_lr"),
    ):
        with pytest.raises(ConfigError) as caught:
            LagrangeMultiplier(**options)
        assert caught.value.field == field
    assert LagrangeMultiplier(init=0.0, update="projected").value == 0.0
