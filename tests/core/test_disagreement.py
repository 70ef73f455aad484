"""``prefcore disagreement`` on hand-made votes with α values and gaps computed by hand.

Community A (a1, a2, a3), B (b1, b2) and C (c1, one annotator: too few for α) answer four
items, "f" for the item's first completion and "s" for its second:

    item   category   A          B       C     shares A / B / C     gap
    i1     brevity    f f f      s s     f     1   / 0   / 1        1
    i2     brevity    f f s      s s     -     2/3 / 0              2/3
    i3     safety     f f f      f f     f     1   / 1   / 1        0
    i4     safety     s s s      s f     -     0   / 1/2            1/2

Nominal α = 1 − (n − 1) · Σ_u Σ_{c≠k} n_uc·n_uk / (m_u − 1) / Σ_{c≠k} n_c·n_k (Krippendorff 2011):

    α_A = 1 − 11 · 2 / (2 · 8 · 4)   = 0.65625   (only i2 splits A: 2 f, 1 s)
    α_B = 1 − 7 · 2 / (2 · 3 · 5)    = 8 / 15    (only i4 splits B)
"""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter
from pathlib import Path

import pytest

from prefcore.cli import build_parser
from prefcore.cli import main
from prefcore.data import PairwiseComparison
from prefcore.data import Ranking
from prefcore.data import write_jsonl
from prefcore.disagreement import HEAT_MAP
from prefcore.disagreement import NUMBERS
from prefcore.disagreement import REPORT
from prefcore.disagreement import disagreement
from prefcore.disagreement import disagreement_from_cli
from prefcore.errors import ConfigError
from prefcore.groups import GroupConflictError
from prefcore.groups import UnknownAttributeError

COMMUNITY = {"a1": "A", "a2": "A", "a3": "A", "b1": "B", "b2": "B", "c1": "C"}
ITEMS = {
    "i1": ("brevity", {"a1": "f", "a2": "f", "a3": "f", "b1": "s", "b2": "s", "c1": "f"}),
    "i2": ("brevity", {"a1": "f", "a2": "f", "a3": "s", "b1": "s", "b2": "s"}),
    "i3": ("safety", {"a1": "f", "a2": "f", "a3": "f", "b1": "f", "b2": "f", "c1": "f"}),
    "i4": ("safety", {"a1": "s", "a2": "s", "a3": "s", "b1": "s", "b2": "f"}),
}


def records(*, groups: bool = True) -> list[PairwiseComparison]:
    out = []
    for item, (category, answers) in ITEMS.items():
        first, second = f"{item} long", f"{item} short"  # a pair's first side is the one that sorts first
        for annotator, answer in answers.items():
            chosen, rejected = (first, second) if answer == "f" else (second, first)
            out.append(
                PairwiseComparison(
                    f"prompt {item}",
                    chosen,
                    rejected,
                    annotator_id=annotator,
                    annotator_groups={"community": COMMUNITY[annotator]} if groups else {},
                    metadata={"item_id": item, "category": category},
                )
            )
    return out


def plain_nominal_alpha(units: list[list[str]]) -> float:
    """Krippendorff's nominal α from the coincidence counts, written independently of prefcore's."""
    units = [unit for unit in units if len(unit) >= 2]
    totals: Counter[str] = Counter(value for unit in units for value in unit)
    n = sum(totals.values())
    within = 0.0
    for unit in units:
        counts = Counter(unit)
        within += sum(counts[c] * counts[k] for c, k in itertools.permutations(counts, 2)) / (len(unit) - 1)
    between = sum(totals[c] * totals[k] for c, k in itertools.permutations(totals, 2))
    return 1.0 - (n - 1) * within / between


def plain_interval_alpha(units: list[list[float]]) -> float:
    units = [unit for unit in units if len(unit) >= 2]
    values = [value for unit in units for value in unit]
    n = len(values)
    observed = (
        sum(sum((a - b) ** 2 for a, b in itertools.permutations(unit, 2)) / (len(unit) - 1) for unit in units) / n
    )
    expected = sum((a - b) ** 2 for a, b in itertools.permutations(values, 2)) / (n * (n - 1))
    return 1.0 - observed / expected


def test_alpha_per_group_overall_and_between_groups() -> None:
    report = disagreement(records(), "community")
    groups = {row.group: row for row in report.groups}
    assert groups["A"].agreement.alpha == pytest.approx(0.65625)
    assert groups["B"].agreement.alpha == pytest.approx(8 / 15)
    assert (groups["A"].annotators, groups["A"].votes, groups["A"].items) == (3, 12, 4)
    by_hand = [[answer for answer in answers.values()] for _, answers in ITEMS.values()]
    assert report.overall.alpha == pytest.approx(plain_nominal_alpha(by_hand))
    assert report.overall.alpha == pytest.approx(0.26410, abs=1e-5)  # 1 − 21 · 8.2 / 234
    shares = [[1, 0, 1], [2 / 3, 0], [1, 1, 1], [0, 0.5]]
    assert report.between.alpha == pytest.approx(plain_interval_alpha(shares))


def test_a_group_with_too_few_annotators_is_reported_not_dropped() -> None:
    report = disagreement(records(), "community")
    c = next(row for row in report.groups if row.group == "C")
    assert c.votes == 2 and math.isnan(c.agreement.alpha)
    assert c.agreement.reason == "too few annotators (1; α needs 2+)"


def test_items_with_the_largest_gaps_and_the_categories_that_split_groups() -> None:
    report = disagreement(records(), "community")
    assert [(item.item, item.gap) for item in report.largest_gaps(3)] == [
        ("i1", 1.0),
        ("i2", pytest.approx(2 / 3)),
        ("i4", 0.5),
    ]
    i2 = next(item for item in report.items if item.item == "i2")
    assert i2.groups == {"A": (3, pytest.approx(2 / 3)), "B": (2, 0.0)}
    ranked = report.categories_by_gap()
    assert [(row.category, row.mean_gap) for row in ranked] == [
        ("brevity", pytest.approx(5 / 6)),
        ("safety", pytest.approx(0.25)),
    ]
    brevity, safety = sorted(report.categories, key=lambda row: row.category)
    # A in brevity: f f f | f f s → 1 − 5 · 2 / (2 · 5 · 1) = 0; A in safety agrees fully; B in brevity never varies.
    assert brevity.by_group["A"].alpha == pytest.approx(0.0)
    assert safety.by_group["A"].alpha == pytest.approx(1.0)
    assert brevity.by_group["B"].reason == "undefined: every answer was the same"
    assert safety.by_group["B"].alpha == pytest.approx(0.0)


def test_rankings_count_as_the_pairs_they_make() -> None:
    ranking = Ranking(
        "prompt i1",
        ("i1 long", "i1 short"),
        (2, 1),
        annotator_id="b3",
        annotator_groups={"community": "B"},
        metadata={"item_id": "i1", "category": "brevity"},
    )
    report = disagreement([*records(), ranking], "community")
    i1 = next(item for item in report.items if item.item == "i1")
    assert i1.groups["B"] == (3, 0.0)


def test_bad_input_is_named() -> None:
    with pytest.raises(UnknownAttributeError, match="Known attributes: 'community'"):
        disagreement(records(), "language")
    clash = PairwiseComparison("p", "x", "y", annotator_id="a1", annotator_groups={"community": "B"})
    with pytest.raises(GroupConflictError):
        disagreement([*records(), clash], "community")
    report = disagreement([*records(), PairwiseComparison("prompt i1", "i1 short", "i1 long")], "community")
    assert report.unattributed == 1
    stray = PairwiseComparison("prompt i1", "i1 long", "i1 short", annotator_id="d1", metadata={"item_id": "i1"})
    report = disagreement([*records(), stray], "community")
    assert report.ungrouped == ("d1",)
    i1 = next(item for item in report.items if item.item == "i1")
    assert i1.votes == 7 and sum(votes for votes, _ in i1.groups.values()) == 6  # counted overall, in no group


def test_the_command_writes_markdown_and_a_heat_map(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "answers.jsonl"
    write_jsonl(records(groups=False), data)
    people = tmp_path / "people.csv"
    people.write_text("annotator_id,community,language\n" + "".join(f"{a},{g},en\n" for a, g in COMMUNITY.items()))
    people.write_text(people.read_text() + "zoe,A,en\n")
    out = tmp_path / "report"
    command = ["disagreement", str(data), "--by", "community", "--participants", str(people), "--out", str(out)]
    assert main(command) == 0
    printed = capsys.readouterr().out
    assert "A: 3 annotators, α within 0.656" in printed
    assert "C: 1 annotators, α within n/a (too few annotators (1; α needs 2+))" in printed
    assert "gap 1.00 on item i1 (brevity)" in printed
    assert "categories by mean gap: brevity 0.83, safety 0.25" in printed
    assert "who gave no answer in the data: zoe" in printed
    markdown = (out / REPORT).read_text()
    assert "| i1 | brevity |" in markdown and f"]({HEAT_MAP})" in markdown
    assert "group 'C' has 1 annotator(s): too few for α (it needs 2)" in markdown
    assert (out / HEAT_MAP).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    numbers = json.loads((out / NUMBERS).read_text())
    assert numbers["groups"]["A"]["within"]["alpha"] == pytest.approx(0.65625)
    assert numbers["groups"]["C"]["within"] == {
        "alpha": None,
        "items": 0,
        "reason": "too few annotators (1; α needs 2+)",
    }
    assert numbers["categories"][0]["category"] == "brevity"

    assert main(["disagreement", str(data), "--participants", str(people), "--out", str(out)]) == 2
    assert "known attributes: community, language" in capsys.readouterr().err
    assert main(["disagreement", str(data), "--by", "region", "--participants", str(people)]) == 2
    assert "Known attributes: 'community', 'language'" in capsys.readouterr().err


def test_one_attribute_needs_no_by(tmp_path: Path) -> None:
    data = tmp_path / "answers.jsonl"
    write_jsonl(records(), data)
    assert main(["disagreement", str(data), "--out", str(tmp_path / "r")]) == 0
    write_jsonl(records(groups=False), data)
    with pytest.raises(ConfigError, match="known attributes: none"):
        disagreement_from_cli(build_parser().parse_args(["disagreement", str(data)]))
