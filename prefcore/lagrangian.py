"""A Lagrange multiplier for a cost bound: the dual variable of constrained RLHF (Safe-RLHF).

Safe-RLHF (Dai et al. 2023, "Safe RLHF: Safe Reinforcement Learning from Human Feedback",
https://arxiv.org/abs/2310.12773, Eq. 10) maximises the reward J_R subject to the expected
cost J_C ≤ d and solves the Lagrangian min_θ max_{λ≥0} [−J_R(θ) + λ·(J_C(θ) − d)]: the policy
descends on θ for the current λ, and λ ascends on the constraint gap. The gap is measured on
Ĉ, the mean of the last ``window`` episode costs (Safe-RLHF: 128), so one noisy step does not
swing λ. Two parametrisations:

    log   (Safe-RLHF's ``ppo_lag``: SGD on log λ with the loss −(Ĉ − d)·λ)
          log λ ← log λ + η·λ·(Ĉ − d)          λ > 0 always, steps scale with λ
    projected (plain dual ascent)
          λ ← max(0, λ + η·(Ĉ − d))            λ can reach 0 and switch the constraint off

then λ ≤ λ_max. With ``delay`` N the first N updates leave λ as it is (the costs still enter
the window), as Safe-RLHF's ``lambda_update_delay_steps``. Defaults are Safe-RLHF's
``scripts/ppo-lag.sh``: λ_init 1, η 0.1, λ_max 5, d 0 (a cost model's 0 separates safe from
unsafe, so d = 0 means "safe on average").

The multiplier is plain Python floats (no torch): the trainer checkpoints ``state_dict()``
and a resumed run continues with the same λ, window and step count.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from collections.abc import Mapping
from typing import Any

from prefcore.errors import ConfigError

__all__ = ["LAGRANGE_UPDATES", "LagrangeMultiplier", "check_lagrange_options"]

LAGRANGE_UPDATES: tuple[str, ...] = ("log", "projected")
"""How λ follows the gap: SGD on log λ (Safe-RLHF) or projected gradient ascent on λ."""


def _number(owner: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number for {owner!r}. Got {value!r}.", method=owner, field=name)
    return float(value)


def check_lagrange_options(
    owner: str,
    *,
    bound: float,
    init: float,
    lr: float,
    max_value: float | None,
    update: str,
    delay: int,
    window: int,
) -> None:
    """The multiplier's options, each named in the error (``owner``: the objective that holds it)."""
    _number(owner, "cost_bound", bound)
    if update not in LAGRANGE_UPDATES:
        raise ConfigError(
            f"lambda_update must be one of {', '.join(LAGRANGE_UPDATES)} for {owner!r}. Got {update!r}.",
            method=owner,
            field="lambda_update",
        )
    low = "> 0 (log λ is updated)" if update == "log" else ">= 0"
    init = _number(owner, "lambda_init", init)
    if (update == "log" and not init > 0) or init < 0:
        raise ConfigError(f"lambda_init must be {low} for {owner!r}. Got {init}.", method=owner, field="lambda_init")
    if not _number(owner, "lambda_lr", lr) >= 0:
        raise ConfigError(f"lambda_lr must be >= 0 for {owner!r}. Got {lr}.", method=owner, field="lambda_lr")
    if max_value is not None and not _number(owner, "lambda_max", max_value) >= init:
        raise ConfigError(
            f"lambda_max must be >= lambda_init ({init}) for {owner!r}, or unset. Got {max_value}.",
            method=owner,
            field="lambda_max",
        )
    for name, count, least in (("lambda_delay", delay, 0), ("cost_window", window, 1)):
        if isinstance(count, bool) or not isinstance(count, int) or count < least:
            raise ConfigError(
                f"{name} must be an integer >= {least} for {owner!r}. Got {count!r}.", method=owner, field=name
            )


class LagrangeMultiplier:
    """λ ≥ 0 for the constraint E[cost] ≤ ``bound``, updated from episode costs (see the module docstring).

    Arguments:
        bound: d, the bound on the mean episode cost.
        init: λ at the start.
        lr: η, the step size.
        max_value: λ_max, the clamp from above (None: no clamp).
        update: ``"log"`` (SGD on log λ, Safe-RLHF) or ``"projected"`` (λ ← max(0, λ + η·gap)).
        delay: updates before λ starts to move.
        window: how many of the latest episode costs make Ĉ.
    """

    def __init__(
        self,
        bound: float = 0.0,
        *,
        init: float = 1.0,
        lr: float = 0.1,
        max_value: float | None = 5.0,
        update: str = "log",
        delay: int = 0,
        window: int = 128,
    ) -> None:
        check_lagrange_options(
            "lagrange_multiplier",
            bound=bound,
            init=init,
            lr=lr,
            max_value=max_value,
            update=update,
            delay=delay,
            window=window,
        )
        self.bound = float(bound)
        self.lr = float(lr)
        self.max_value = None if max_value is None else float(max_value)
        self.update_rule = update
        self.delay = delay
        self.value = float(init)
        self.steps = 0
        self.costs: deque[float] = deque(maxlen=window)

    @property
    def window(self) -> int:
        return self.costs.maxlen or 0

    @property
    def cost_estimate(self) -> float:
        """Ĉ: the mean of the windowed episode costs (NaN before any cost)."""
        return sum(self.costs) / len(self.costs) if self.costs else math.nan

    @property
    def gap(self) -> float:
        """Ĉ − d: positive while the constraint is violated."""
        return self.cost_estimate - self.bound

    def update(self, costs: Iterable[float]) -> float:
        """Add one step's episode costs to the window, move λ on the gap (after ``delay`` steps); returns λ."""
        values = [float(cost) for cost in costs]
        bad = [value for value in values if not math.isfinite(value)]
        if bad:
            raise ValueError(f"episode costs must be finite numbers; got {bad[0]} (check the cost components).")
        self.costs.extend(values)
        self.steps += 1
        if self.steps <= self.delay or not self.costs:
            return self.value
        gap = self.gap
        if self.update_rule == "log":
            log_value = math.log(self.value) + self.lr * self.value * gap
            if self.max_value is not None:
                log_value = min(log_value, math.log(self.max_value))
            self.value = math.exp(log_value)
        else:
            self.value = max(0.0, self.value + self.lr * gap)
            if self.max_value is not None:
                self.value = min(self.value, self.max_value)
        return self.value

    def state_dict(self) -> dict[str, Any]:
        """λ, the update count and the cost window, for checkpoints."""
        return {"lambda": self.value, "steps": self.steps, "costs": list(self.costs)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.value = float(state["lambda"])
        self.steps = int(state["steps"])
        self.costs.clear()
        self.costs.extend(float(cost) for cost in state["costs"])
