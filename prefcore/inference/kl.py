"""How far best-of-n moves from the base policy: the analytic bound and an estimate from log-probs.

Best-of-n draws n completions from the base policy π and keeps the one with the highest
reward. Its KL to π is at most (Beirami et al. 2024, https://arxiv.org/abs/2401.01879)

    bound(n) = log n − (n − 1) / n

which is tight only when no single completion carries much probability. Their estimator
reads the base probability ε = π(y*) of the best outcome y* from the samples' log-probs:

    KL̂(n, ε) = (1 − ε)^n · (log n + (n − 1) log(1 − ε) − (n − 1)/n)
              + (1 − (1 − ε)^n) · log((1 − (1 − ε)^n) / ε)

It lies between the true KL and the bound, equals the bound as ε → 0 (long completions, where
every sequence is rare) and 0 as ε → 1. Here ε is exp(Σ_t log π(y_t | x, y_<t)) of the
highest-reward candidate of a prompt, the log-probs those of the sampling distribution (the
base model at the sampling temperature), so the estimate is per prompt and plugs in the best
of the n drawn candidates for the best outcome of the whole support.
"""

from __future__ import annotations

import math

__all__ = ["best_of_n_kl_bound", "best_of_n_kl_estimate"]


def best_of_n_kl_bound(n: int) -> float:
    """log n − (n − 1)/n: the upper bound on KL(best-of-n ‖ base)."""
    if n < 1:
        raise ValueError(f"best-of-n needs n >= 1; got {n}.")
    return math.log(n) - (n - 1) / n


def best_of_n_kl_estimate(n: int, epsilon: float) -> float:
    """Beirami et al.'s KL̂(n, ε), with ε the base probability of the best outcome (0 < ε ≤ 1)."""
    if n < 1:
        raise ValueError(f"best-of-n needs n >= 1; got {n}.")
    if not 0.0 <= epsilon <= 1.0 or math.isnan(epsilon):
        raise ValueError(f"epsilon is a probability in [0, 1]; got {epsilon}.")
    if epsilon == 0.0:
        return best_of_n_kl_bound(n)
    if epsilon == 1.0:
        return 0.0
    hit = -math.expm1(n * math.log1p(-epsilon))  # 1 − (1 − ε)^n without cancellation for tiny ε
    if hit <= 0.0:  # ε below float resolution: the limit ε → 0
        return best_of_n_kl_bound(n)
    miss = 1.0 - hit  # probability that none of n draws is the best outcome
    first = miss * (math.log(n) + (n - 1) * math.log1p(-epsilon) - (n - 1) / n)
    second = hit * math.log(hit / epsilon)
    return first + second
