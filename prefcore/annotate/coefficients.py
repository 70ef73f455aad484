"""Agreement coefficients over answers grouped by unit: percent, Cohen's κ, Fleiss' κ, Krippendorff's α.

Plain functions of hashable answers and numbers, with no notion of records, so each formula
can be checked against its paper's worked examples. Nominal answers get percent agreement,
Cohen's κ for a pair of annotators (Cohen 1960) and Fleiss' κ over all (Fleiss 1971, in the
form that allows a different number of annotators per unit). Likert scores get
Krippendorff's α with the interval metric (Krippendorff 2011, "Computing Krippendorff's
Alpha-Reliability"): it takes any number of annotators and missing ratings and weighs
disagreements by the distance between scores, where Spearman's ρ would compare only two
annotators' orderings.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Hashable
from collections.abc import Sequence

__all__ = ["Units", "cohen_kappa", "fleiss_kappa", "krippendorff_alpha", "percent_agreement"]

Units = Sequence[Sequence[Hashable]]
"""Answers per unit: one sequence per unit, one answer per annotator of that unit."""


def percent_agreement(units: Units) -> float:
    """Mean over units of the share of annotator pairs that give the same answer."""
    shares = []
    for answers in units:
        pairs = list(itertools.combinations(answers, 2))
        shares.append(sum(first == second for first, second in pairs) / len(pairs))
    return sum(shares) / len(shares) if shares else math.nan


def cohen_kappa(first: Sequence[Hashable], second: Sequence[Hashable]) -> float:
    """Cohen's κ of two annotators' answers on the same units: (p_o − p_e) / (1 − p_e).

    p_o is the share of units they agree on, p_e = Σ_c p₁(c)·p₂(c) the agreement expected
    from each annotator's own answer frequencies. NaN when p_e = 1 (both always gave the same
    single answer: agreement beyond chance is undefined).
    """
    if len(first) != len(second) or not first:
        raise ValueError("cohen_kappa needs two equally long, non-empty answer lists.")
    n = len(first)
    observed = sum(a == b for a, b in zip(first, second, strict=True)) / n
    counts_first, counts_second = Counter(first), Counter(second)
    expected = sum(counts_first[c] * counts_second[c] for c in counts_first) / (n * n)
    return math.nan if expected == 1.0 else (observed - expected) / (1.0 - expected)


def fleiss_kappa(units: Units) -> float:
    """Fleiss' κ over units rated by two or more annotators each (the number may vary).

    P_u = Σ_c n_uc(n_uc − 1) / (n_u(n_u − 1)) is the agreeing share of annotator pairs in unit
    u, P̄ their mean; p_c = Σ_u n_uc / Σ_u n_u, P_e = Σ_c p_c². κ = (P̄ − P_e) / (1 − P_e).
    With the same number of annotators per unit this is Fleiss (1971) exactly.
    """
    if not units:
        return math.nan
    observed = percent_agreement(units)
    totals: Counter[Hashable] = Counter()
    for answers in units:
        totals.update(answers)
    answers_total = sum(totals.values())
    expected = sum((count / answers_total) ** 2 for count in totals.values())
    return math.nan if expected == 1.0 else (observed - expected) / (1.0 - expected)


def krippendorff_alpha(units: Sequence[Sequence[float]], metric: str = "interval") -> float:
    """Krippendorff's α = 1 − D_o / D_e over units with two or more values (missing ones left out).

    D_o = Σ_u 1/(m_u − 1) Σ_{i≠j in u} δ²(v_i, v_j) / n: disagreement within units, each unit
    weighted by its m_u values; D_e = Σ_{i≠j over all pairable values} δ²(v_i, v_j) / (n(n − 1)):
    disagreement between any two values. δ² is (v_i − v_j)² (``interval``) or 0/1 (``nominal``).
    """
    if metric not in ("interval", "nominal"):
        raise ValueError(f"metric must be 'interval' or 'nominal', got {metric!r}.")
    pairable = [list(values) for values in units if len(values) >= 2]
    distance = _squared_difference if metric == "interval" else _mismatch
    values = [value for unit in pairable for value in unit]
    n = len(values)
    if n < 2:
        return math.nan
    observed = 0.0
    for unit in pairable:
        within = sum(distance(a, b) for a, b in itertools.permutations(unit, 2))
        observed += within / (len(unit) - 1)
    observed /= n
    expected = sum(distance(a, b) for a, b in itertools.permutations(values, 2)) / (n * (n - 1))
    return math.nan if expected == 0.0 else 1.0 - observed / expected


def _squared_difference(first: float, second: float) -> float:
    return (float(first) - float(second)) ** 2


def _mismatch(first: Hashable, second: Hashable) -> float:
    return float(first != second)
