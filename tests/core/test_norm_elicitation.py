"""Norm elicitation: scripted sessions over two rounds and two groups, the records, the report, bad input.

Sessions run through ``prefcore annotate RULES --mode norm`` in-process on text streams, as
the annotation tool's own tests do; the report's numbers are checked against means
computed by hand from the scripted answers.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import pytest

from prefcore.annotate import annotate_from_cli
from prefcore.cli import build_parser
from prefcore.cli import main
from prefcore.data import BinaryLabel
from prefcore.data import Critique
from prefcore.data import Scores
from prefcore.data import load_preferences
from prefcore.elicitation import RoundOrderError
from prefcore.elicitation import elicit_from_cli
from prefcore.elicitation import norm_report
from prefcore.elicitation import read_rules
from prefcore.errors import ConfigError
from prefcore.errors import DataError
from prefcore.groups import GroupConflictError
from prefcore.groups import UnknownAttributeError

ROUND_1 = """
round = 1

[[rule]]
id = "brief"
text = "Replies are at most three sentences."
examples = [
  { prompt = "Explain tides.", reply = "The moon pulls the sea.", verdict = "follows the rule" },
]

[[rule]]
id = "cite"
text = "Replies name their sources."
"""

ROUND_2 = """
round = 2
revises = { brief = "Replies are at most three sentences." }

[[rule]]
id = "brief"
text = "Replies are short unless the user asks for detail."

[[rule]]
id = "cite"
text = "Replies name their sources."
"""

PEOPLE = {"alice": "rural", "bob": "rural", "carol": "urban", "dan": "urban"}

# per participant, per round: (agreement, objection, edit) for brief, then for cite
ANSWERS = {
    1: {
        "alice": [(5, "", ""), (4, "", "")],
        "bob": [(4, "", ""), (4, "", "")],
        "carol": [
            (1, "Detail matters when we ask about farming law.", "Replies are short unless detail is asked for."),
            (4, "", ""),
        ],
        "dan": [(2, "", "Replies are short by default."), (5, "", "")],
    },
    2: {
        "alice": [(4, "", ""), (4, "", "")],
        "bob": [(4, "Too vague.", ""), (3, "", "")],
        "carol": [(4, "", ""), (4, "", "")],
        "dan": [(5, "", ""), (5, "", "")],
    },
}


def _script(rows: list[tuple[int, str, str]]) -> str:
    return "".join(f"{score}\n{objection}\n{edit}\n" for score, objection, edit in rows)


def _annotate(rules: Path, out: Path, annotator: str, answers: str, *extra: str) -> tuple[int, str]:
    command = ["annotate", str(rules), "--mode", "norm", "--out", str(out), "--annotator", annotator, *extra]
    args: argparse.Namespace = build_parser().parse_args(command)
    stdout = io.StringIO()
    code = annotate_from_cli(args, stdin=io.StringIO(answers), stdout=stdout)
    return code, stdout.getvalue()


def _report(paths: list[Path], *extra: str) -> str:
    args = build_parser().parse_args(["elicit", "report", *map(str, paths), *extra])
    stdout = io.StringIO()
    assert elicit_from_cli(args, stdout=stdout) == 0
    return stdout.getvalue()


@pytest.fixture
def study(tmp_path: Path) -> tuple[Path, Path, list[Path]]:
    """Four participants in two communities answer round 1, then the revised round 2, into one file each."""
    first, second = tmp_path / "round1.toml", tmp_path / "round2.toml"
    first.write_text(ROUND_1, encoding="utf-8")
    second.write_text(ROUND_2, encoding="utf-8")
    outs = []
    for person, community in PEOPLE.items():
        out = tmp_path / "ann" / f"{person}.jsonl"
        for rules, number in ((first, 1), (second, 2)):
            code, shown = _annotate(
                rules, out, person, _script(ANSWERS[number][person]), "--group", f"community={community}"
            )
            assert code == 0 and "All done: 4 answers" in shown
        outs.append(out)
    return first, second, outs


def test_rules_file_is_read_with_examples_and_revisions(study: tuple[Path, Path, list[Path]]) -> None:
    first, second, _ = study
    rules = read_rules(first)
    assert rules.round == 1 and [rule.id for rule in rules.rules] == ["brief", "cite"]
    assert rules.rules[0].examples[0].verdict == "follows the rule" and rules.rules[1].examples == ()
    revised = read_rules(second)
    assert revised.round == 2 and revised.rules[0].previous == "Replies are at most three sentences."
    assert revised.rules[1].previous is None


def test_answers_are_ordinary_records_with_groups_rule_and_round(study: tuple[Path, Path, list[Path]]) -> None:
    _, _, outs = study
    carol = load_preferences(outs[2])[0]  # the ordinary reader
    assert [type(record) for record in carol] == [Scores, Critique] + [Scores, BinaryLabel] * 3
    assert all(record.annotator_id == "carol" for record in carol)
    assert all(record.annotator_groups == {"community": "urban"} for record in carol)
    assert [(r.metadata["rule_id"], r.metadata["round"]) for r in carol[::2]] == [
        ("brief", 1),
        ("cite", 1),
        ("brief", 2),
        ("cite", 2),
    ]
    score = carol[0]
    assert score.scores == ({"agreement": 1.0},) and score.scale == (1.0, 5.0)
    assert score.completions == ("Replies are at most three sentences.",)
    objection = carol[1]
    assert objection.critique == "Detail matters when we ask about farming law."
    assert objection.revision == "Replies are short unless detail is asked for."
    assert objection.metadata["has_objection"] is True
    no_objection = carol[3]
    assert no_objection.aspect == "objection" and no_objection.label is False
    assert carol[4].completions == ("Replies are short unless the user asks for detail.",)
    dan_edit = load_preferences(outs[3])[0][1]  # an edit without an objection
    assert dan_edit.metadata["has_objection"] is False and dan_edit.revision == "Replies are short by default."


def test_report_agreement_by_group_and_change_between_rounds(study: tuple[Path, Path, list[Path]]) -> None:
    _, _, outs = study
    records = [record for out in outs for record in load_preferences(out)[0]]
    report = norm_report(records, "community")
    brief1, brief2 = report.rounds[("brief", 1)], report.rounds[("brief", 2)]
    # by hand: rural (5, 4), urban (1, 2) in round 1; rural (4, 4), urban (4, 5) in round 2
    assert brief1.groups["rural"].mean == pytest.approx(4.5) and brief1.groups["urban"].mean == pytest.approx(1.5)
    assert brief1.groups["(all)"].mean == pytest.approx(3.0) and brief1.groups["(all)"].n == 4
    assert brief1.groups["rural"].agreeing == 1.0 and brief1.groups["urban"].agreeing == 0.0
    assert brief1.gap == pytest.approx(3.0)
    assert brief2.groups["urban"].mean == pytest.approx(4.5) and brief2.gap == pytest.approx(0.5)
    cite2 = report.rounds[("cite", 2)]  # rural (4, 3) = 3.5, urban (4, 5) = 4.5
    assert cite2.gap == pytest.approx(1.0)
    # latest rounds: cite (gap 1.0) above brief (gap 0.5)
    assert [entry.rule_id for entry in report.most_disputed()] == ["cite", "brief"]
    [brief_change, cite_change] = report.changes
    assert brief_change.text_before != brief_change.text_after
    assert brief_change.means["rural"] == pytest.approx((4.5, 4.0))
    assert brief_change.means["urban"] == pytest.approx((1.5, 4.5))
    assert cite_change.means["rural"] == pytest.approx((4.0, 3.5))
    assert [(c.annotator, c.objection, c.edit) for c in brief1.comments] == [
        ("carol", "Detail matters when we ask about farming law.", "Replies are short unless detail is asked for."),
        ("dan", None, "Replies are short by default."),
    ]

    markdown = _report(outs, "--by", "community")
    assert "| rural | 2 | 4.50 | 100% |" in markdown and "| urban | 2 | 1.50 | 0% |" in markdown
    assert "Gap between groups (highest mean minus lowest): 3.00." in markdown
    assert "| `cite` | 2 | 1.00 | urban (4.50) | rural (3.50) |" in markdown
    assert "| urban | 1.50 | 4.50 | +3.00 |" in markdown and "| rural | 4.50 | 4.00 | -0.50 |" in markdown
    assert "carol (urban) objects: Detail matters when we ask about farming law." in markdown
    assert "bob (rural) objects: Too vague." in markdown
    assert "dan (urban) proposes: Replies are short by default." in markdown


def test_resume_after_interruptions_asks_nothing_twice(tmp_path: Path) -> None:
    rules = tmp_path / "round1.toml"
    rules.write_text(ROUND_1, encoding="utf-8")
    out = tmp_path / "alice.jsonl"
    # agreement on brief, then the input ends half-way through the comment (objection typed, no edit)
    code, shown = _annotate(rules, out, "alice", "5\nsome objection\n")
    assert code == 0 and "1 answers saved" in shown and "3 left" in shown
    # resumed: brief's agreement is not asked again, its comment is; then quit at cite's agreement
    code, shown = _annotate(rules, out, "alice", "\n\nq\n")
    assert "Round 1: 3 questions" in shown
    assert shown.count("Agreement with this rule") == 1 and "id cite" in shown
    assert shown.index("Objections") < shown.index("Agreement with this rule")
    code, shown = _annotate(rules, out, "alice", "3\n\nRules name sources.\n")
    assert "Round 1: 2 questions" in shown and "id brief" not in shown and "All done: 2 answers" in shown
    records = load_preferences(out)[0]
    keys = [(r.metadata["rule_id"], r.metadata["question"]) for r in records]
    assert keys == [("brief", "agreement"), ("brief", "comment"), ("cite", "agreement"), ("cite", "comment")]
    assert records[3].revision == "Rules name sources." and records[1].label is False
    code, shown = _annotate(rules, out, "alice", "")
    assert "Round 1: 0 questions" in shown and "All done: 0 answers" in shown


def test_invalid_agreement_is_asked_again(tmp_path: Path) -> None:
    rules = tmp_path / "round1.toml"
    rules.write_text(ROUND_1, encoding="utf-8")
    out = tmp_path / "alice.jsonl"
    code, shown = _annotate(rules, out, "alice", "9\nagree\n2\n\n\n", "--scale", "1", "7")
    assert code == 0
    assert "type a whole number from 1 to 7" in shown
    [score, _] = load_preferences(out)[0]
    assert score.scores == ({"agreement": 2.0},) and score.scale == (1.0, 7.0)


def test_round_going_backwards_is_a_named_error(study: tuple[Path, Path, list[Path]]) -> None:
    first, _, outs = study
    with pytest.raises(RoundOrderError) as excinfo:
        _annotate(first, outs[0], "alice", "", "--group", "community=rural")
    assert (excinfo.value.round, excinfo.value.latest, excinfo.value.annotator) == (1, 2, "alice")


def test_a_resumed_norm_session_must_keep_its_group(study: tuple[Path, Path, list[Path]]) -> None:
    _, second, outs = study
    with pytest.raises(GroupConflictError):
        _annotate(second, outs[0], "alice", "", "--group", "community=urban")


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("round = 1\n[[rule]]\nid = 'a'\ntext = \n", None),  # not TOML
        ("round = 1\n[[rule]]\nid = 'a'\n", "rule[0].text"),
        ("round = 1\n[[rule]]\nid = 'a'\ntext = '  '\n", "rule[0].text"),
        ("round = 0\n[[rule]]\nid = 'a'\ntext = 't'\n", "round"),
        ("[[rule]]\nid = 'a'\ntext = 't'\n", "round"),
        ("round = 1\n", "rule"),
        ("round = 1\n[[rule]]\nid = 'a'\ntext = 't'\ntexts = 'x'\n", "rule[0]"),
        ("round = 1\n[[rule]]\nid = 'a'\ntext = 't'\n[[rule]]\nid = 'a'\ntext = 'u'\n", "rule[1].id"),
        ("round = 1\n[[rule]]\nid = 'a'\ntext = 't'\nexamples = [{prompt = 'p'}]\n", "rule[0].examples[0].reply"),
        ("round = 2\nrevises = {b = 'old'}\n[[rule]]\nid = 'a'\ntext = 't'\n", "revises"),
    ],
)
def test_malformed_rules_files_name_the_file_and_key(tmp_path: Path, text: str, field: str | None) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError) as excinfo:
        read_rules(path)
    assert excinfo.value.source == str(path) and excinfo.value.field == field


def test_unknown_attribute_and_mixed_modes_are_named_errors(study: tuple[Path, Path, list[Path]]) -> None:
    first, _, outs = study
    with pytest.raises(UnknownAttributeError) as excinfo:
        _report(outs, "--by", "language")
    assert excinfo.value.known == ("community",)
    with pytest.raises(ConfigError, match="combines with no other mode"):
        _annotate(first, outs[0].with_name("x.jsonl"), "alice", "", "--mode", "likert")


def test_report_without_by_and_with_a_participants_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules = tmp_path / "round1.toml"
    rules.write_text(ROUND_1, encoding="utf-8")
    outs = []
    for person in PEOPLE:  # no --group: the table supplies the communities
        out = tmp_path / f"{person}.jsonl"
        assert _annotate(rules, out, person, _script(ANSWERS[1][person]))[0] == 0
        outs.append(out)
    together = _report(outs)
    assert "| (all) | 4 | 3.00 | 50% |" in together  # brief, round 1: (5 + 4 + 1 + 2) / 4; 5 and 4 above 3
    table = tmp_path / "people.csv"
    table.write_text("annotator_id,community\n" + "".join(f"{p},{c}\n" for p, c in PEOPLE.items()), encoding="utf-8")
    markdown_path = tmp_path / "report" / "norms.md"
    argv = ["elicit", "report", *map(str, outs), "--by", "community", "--participants", str(table)]
    assert main([*argv, "--out", str(markdown_path)]) == 0
    markdown = markdown_path.read_text(encoding="utf-8")
    assert (
        "| rural | 2 | 4.50 | 100% |" in markdown and "| `brief` | 1 | 3.00 | rural (4.50) | urban (1.50) |" in markdown
    )
    assert main([*argv[:-4], "--by", "language"]) == 2
    assert "UnknownAttributeError" in capsys.readouterr().err


def test_a_revised_rule_is_shown_beside_the_participants_earlier_answer(tmp_path: Path) -> None:
    first, second = tmp_path / "round1.toml", tmp_path / "round2.toml"
    first.write_text(ROUND_1, encoding="utf-8")
    second.write_text(ROUND_2.replace('revises = { brief = "Replies are at most three sentences." }', ""), "utf-8")
    out = tmp_path / "carol.jsonl"
    _annotate(first, out, "carol", _script(ANSWERS[1]["carol"]))
    code, shown = _annotate(second, out, "carol", "q\n")
    assert code == 0 and "Revises:" not in shown
    assert "In round 1 it read: Replies are at most three sentences.\nYour agreement in round 1: 1." in shown
    with_revises = tmp_path / "round2b.toml"
    with_revises.write_text(ROUND_2, encoding="utf-8")
    _, shown = _annotate(with_revises, out, "carol", "4\n\n\n")
    assert "Revises: Replies are at most three sentences.\nYour agreement in round 1: 1." in shown
    assert "In round 1 it read" not in shown
    assert "Unchanged since round 1.\nYour agreement in round 1: 4." in shown


class _InterruptAfter(io.StringIO):
    """Answers, then Ctrl-C at the next question."""

    def readline(self, size: int | None = -1) -> str:  # type: ignore[override]
        line = super().readline()
        if line == "":
            raise KeyboardInterrupt
        return line


def test_ctrl_c_keeps_every_answer_given_and_the_rerun_asks_only_the_rest(tmp_path: Path) -> None:
    rules = tmp_path / "round1.toml"
    rules.write_text(ROUND_1, encoding="utf-8")
    out = tmp_path / "dan.jsonl"
    args = build_parser().parse_args(
        [
            "annotate",
            str(rules),
            "--mode",
            "norm",
            "--out",
            str(out),
            "--annotator",
            "dan",
            "--group",
            "community=urban",
        ]
    )
    stdout = io.StringIO()
    assert annotate_from_cli(args, stdin=_InterruptAfter("2\n\nshort by default\n5\n"), stdout=stdout) == 130
    assert "Stopped (interrupted): 3 answers saved" in stdout.getvalue()
    code, shown = _annotate(rules, out, "dan", "\n\n", "--group", "community=urban")
    assert code == 0 and "Round 1: 1 questions" in shown and "Agreement with this rule" not in shown
    records = load_preferences(out)[0]
    assert [(r.metadata["rule_id"], r.metadata["question"]) for r in records] == [
        ("brief", "agreement"),
        ("brief", "comment"),
        ("cite", "agreement"),
        ("cite", "comment"),
    ]
    assert records[2].scores == ({"agreement": 5.0},)


def test_participants_without_a_group_are_counted_apart_and_left_out_of_the_gap(
    study: tuple[Path, Path, list[Path]],
) -> None:
    first, _, outs = study
    erin = outs[0].with_name("erin.jsonl")
    _annotate(first, erin, "erin", "5\n\n\n")  # no --group; agrees fully with brief
    report = norm_report([r for out in [*outs, erin] for r in load_preferences(out)[0]], "community")
    brief1 = report.rounds[("brief", 1)]
    assert list(brief1.groups) == ["(all)", "rural", "urban", "(no group)"]
    assert brief1.groups["(no group)"].n == 1 and brief1.groups["(all)"].mean == pytest.approx(17 / 5)
    assert brief1.gap == pytest.approx(3.0)
