"""``prefcore annotate --agreement``: agreement per kind of answer across annotation files.

Reads the files, groups answers into units (``units``), keeps the units that two or more
annotators answered and applies the coefficient that suits each kind (``coefficients``).
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass

from prefcore.annotate.coefficients import cohen_kappa
from prefcore.annotate.coefficients import fleiss_kappa
from prefcore.annotate.coefficients import krippendorff_alpha
from prefcore.annotate.coefficients import percent_agreement
from prefcore.annotate.units import annotation_units
from prefcore.data.readers import load_preferences
from prefcore.data.records import PreferenceRecord

__all__ = ["AgreementReport", "IntervalAgreement", "NominalAgreement", "agreement"]


@dataclass(frozen=True)
class NominalAgreement:
    """Agreement on answers that are categories: pairwise choices, ranking pairs, binary labels."""

    kind: str
    units: int
    annotators: tuple[str, ...]
    percent: float
    cohen: Mapping[tuple[str, str], tuple[float, int]]
    """(annotator, annotator) → (κ, units both answered)."""
    fleiss: float


@dataclass(frozen=True)
class IntervalAgreement:
    """Agreement on Likert scores of one aspect."""

    kind: str
    units: int
    ratings: int
    annotators: tuple[str, ...]
    alpha: float


@dataclass(frozen=True)
class AgreementReport:
    """Agreement per kind of answer, over units answered by two or more annotators."""

    sources: tuple[str, ...]
    annotators: tuple[str, ...]
    sections: tuple[NominalAgreement | IntervalAgreement, ...]
    unattributed: int
    """Records without an ``annotator_id``, left out."""

    def section(self, kind: str) -> NominalAgreement | IntervalAgreement:
        for section in self.sections:
            if section.kind == kind:
                return section
        raise KeyError(f"no agreement section {kind!r}; have {[s.kind for s in self.sections]}.")

    def format(self) -> str:
        lines = [
            f"Agreement in {', '.join(self.sources)}: {len(self.annotators)} annotators ({', '.join(self.annotators)})"
        ]
        if self.unattributed:
            lines.append(f"({self.unattributed} records without annotator_id left out)")
        if not self.sections:
            lines.append("No unit was answered by two or more annotators: nothing to compare.")
        for section in self.sections:
            lines.append("")
            if isinstance(section, NominalAgreement):
                lines.append(f"{section.kind}: {section.units} units answered by 2+ annotators")
                lines.append(f"  percent agreement   {_number(section.percent)}")
                for (first, second), (kappa, shared) in section.cohen.items():
                    lines.append(
                        f"  Cohen's kappa       {_number(kappa)}  ({first} vs {second}, {shared} shared units)"
                    )
                lines.append(f"  Fleiss' kappa       {_number(section.fleiss)}")
            else:
                lines.append(f"{section.kind}: {section.units} units, {section.ratings} ratings by 2+ annotators")
                lines.append(f"  Krippendorff's alpha (interval)  {_number(section.alpha)}")
        return "\n".join(lines)


def _number(value: float) -> str:
    return "undefined (every answer was the same)" if math.isnan(value) else f"{value:.3f}"


def agreement(paths: Sequence[str | os.PathLike[str]]) -> AgreementReport:
    """Inter-annotator agreement over the records of one or more annotation files."""
    records: list[PreferenceRecord] = []
    for path in paths:
        records += load_preferences(path)[0]
    kinds, unattributed = annotation_units(records)
    sections: list[NominalAgreement | IntervalAgreement] = []
    everyone: set[str] = set()
    for kind in sorted(kinds):
        shared = {unit: answers for unit, answers in kinds[kind].items() if len(answers) >= 2}
        everyone.update(annotator for answers in kinds[kind].values() for annotator in answers)
        if not shared:
            continue
        annotators = tuple(sorted({annotator for answers in shared.values() for annotator in answers}))
        values = [list(answers.values()) for answers in shared.values()]
        if kind.startswith("likert"):
            alpha = krippendorff_alpha(values, "interval")
            sections.append(IntervalAgreement(kind, len(shared), sum(map(len, values)), annotators, alpha))
            continue
        cohen = {}
        for first, second in itertools.combinations(annotators, 2):
            both = [answers for answers in shared.values() if first in answers and second in answers]
            if both:
                kappa = cohen_kappa([a[first] for a in both], [a[second] for a in both])
                cohen[(first, second)] = (kappa, len(both))
        sections.append(
            NominalAgreement(kind, len(shared), annotators, percent_agreement(values), cohen, fleiss_kappa(values))
        )
    return AgreementReport(tuple(map(os.fspath, paths)), tuple(sorted(everyone)), tuple(sections), unattributed)
