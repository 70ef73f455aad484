"""The annotation tool: scripted sessions, resuming after interrupts and crashes, agreement statistics.

Sessions run in-process through ``Terminal`` on text streams, and as the real
``prefcore annotate`` command in a subprocess that is interrupted (SIGINT), killed (SIGKILL)
or has its input closed part-way, then started again.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import io
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import prefcore
from prefcore.annotate import AnnotationLog
from prefcore.annotate import SessionConfig
from prefcore.annotate import Terminal
from prefcore.annotate import agreement
from prefcore.annotate import cohen_kappa
from prefcore.annotate import display_order
from prefcore.annotate import fleiss_kappa
from prefcore.annotate import krippendorff_alpha
from prefcore.annotate import read_items
from prefcore.annotate import run_session
from prefcore.cli import main
from prefcore.data import BinaryLabel
from prefcore.data import Critique
from prefcore.data import PairwiseComparison
from prefcore.data import Ranking
from prefcore.data import Scores
from prefcore.data import load_preferences
from prefcore.errors import ConfigError
from prefcore.errors import DataError

WriteRows = Callable[[str, Sequence[Any]], Path]

ITEMS = [
    {"id": "colour", "prompt": "What colour is the sky?", "completions": ["blue", "green", "it depends"]},
    {"prompt": "2 + 2 = ?", "completions": ["4", "5"]},
]

ALL_MODES = ("tie", "ranking", "likert", "binary", "critique")

PAIRS = [{"id": f"q{i}", "prompt": f"question {i}", "completions": [f"good {i}", f"bad {i}"]} for i in range(4)]
"""Four items of two completions: one pairwise question each."""

# One answer per question of ITEMS in ALL_MODES, unshuffled (screen number = index + 1), with
# one invalid answer before each kind of question.
SCRIPT = [
    # item 'colour': pairs (0,1) (0,2) (1,2), ranking, Likert x3, binary x3, critique x3
    "x", "1", "t", "3",
    "1 1 2", "1 3=2",
    "9", "5", "1", "3",
    "maybe", "y", "n", "yes",
    "", "right", "wrong colour", "vague",
    # item '2 + 2': pair (0,1), ranking, Likert x2, binary x2, critique x2
    "1", "2 1", "4", "2", "y", "n", "correct", "off by one",
]  # fmt: skip


def session(items_path: Path, out: Path, answers: Sequence[str], **config: Any) -> tuple[Any, str]:
    """Run one in-process session on scripted answers; returns its summary and its screen output."""
    settings = {"annotator": "alice", "modes": ALL_MODES, "shuffle": False, **config}
    session_config = SessionConfig(**settings)
    items = read_items(items_path, min_completions=session_config.min_completions)
    screen = io.StringIO()
    terminal = Terminal(io.StringIO("".join(answer + "\n" for answer in answers)), screen)
    with AnnotationLog(out) as log:
        summary = run_session(items, log, session_config, terminal)
    return summary, screen.getvalue()


def question_keys(path: Path) -> list[tuple[str, str, str]]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [(row["annotator_id"], row["metadata"]["item_id"], row["metadata"]["question"]) for row in rows]


def test_a_full_session_records_every_mode(tmp_path: Path, write_rows: WriteRows) -> None:
    items = write_rows("items.jsonl", ITEMS)
    out = tmp_path / "out.jsonl"
    summary, screen = session(items, out, SCRIPT)
    assert (summary.answered, summary.remaining, summary.stopped) == (21, 0, "done")
    records, _ = load_preferences(out)
    assert Counter(record.format for record in records) == {
        "pairwise": 4,
        "ranking": 2,
        "scores": 5,
        "binary": 5,
        "critique": 5,
    }
    assert all(record.annotator_id == "alice" and record.source == "human" for record in records)
    first, tie, third = records[:3]
    assert isinstance(first, PairwiseComparison) and (first.chosen, first.rejected) == ("blue", "green")
    assert tie.tie and {tie.chosen, tie.rejected} == {"blue", "it depends"}
    assert (third.chosen, third.rejected) == ("it depends", "green")
    ranking = records[3]
    assert isinstance(ranking, Ranking) and ranking.ranks == (1, 2, 2)
    scores = [record for record in records if isinstance(record, Scores)]
    assert [(s.completions[0], s.scores[0]["overall"], s.scale) for s in scores[:3]] == [
        ("blue", 5.0, (1.0, 5.0)),
        ("green", 1.0, (1.0, 5.0)),
        ("it depends", 3.0, (1.0, 5.0)),
    ]
    labels = [(r.completion, r.label) for r in records if isinstance(r, BinaryLabel)]
    assert labels[:3] == [("blue", True), ("green", False), ("it depends", True)]
    critiques = [(r.completion, r.critique) for r in records if isinstance(r, Critique)]
    assert critiques[-2:] == [("4", "correct"), ("5", "off by one")]
    assert records[0].group_id == "colour" and records[-1].group_id == records[-1].metadata["item_id"]
    assert "All done: 21 answers" in screen


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ("x", "Invalid answer 'x': type 1 or 2, or t for a tie"),
        ("1 1 2", "Invalid answer '1 1 2': [1] appears twice"),
        ("9", "Invalid answer '9': type a whole number from 1 to 5"),
        ("maybe", "Invalid answer 'maybe': type y (acceptable) or n (not acceptable)"),
    ],
)
def test_invalid_keystrokes_re_prompt_with_a_clear_message(
    tmp_path: Path, write_rows: WriteRows, answer: str, message: str
) -> None:
    items = write_rows("items.jsonl", ITEMS)
    _, screen = session(items, tmp_path / "out.jsonl", SCRIPT)
    assert message in screen
    assert "Invalid answer '': a critique needs some text" in screen


def test_ranking_answers_must_list_every_completion_once(tmp_path: Path, write_rows: WriteRows) -> None:
    items = write_rows("items.jsonl", ITEMS[:1])
    out = tmp_path / "out.jsonl"
    summary, screen = session(items, out, ["1 2", "4 1 2", "1=2=3"], modes=("ranking",))
    assert "Invalid answer '1 2': [3] missing" in screen
    assert "Invalid answer '4 1 2': '4' is not a completion number" in screen
    assert summary.answered == 1
    [ranking] = load_preferences(out)[0]
    assert ranking.ranks == (1, 1, 1)


def _untimed(records: Sequence[Any]) -> list[Any]:
    """The records without their answer time, which two sessions cannot share to the second."""
    return [
        dataclasses.replace(record, metadata={k: v for k, v in record.metadata.items() if k != "annotated_at"})
        for record in records
    ]


def test_a_session_stopped_at_the_end_of_input_resumes_without_duplicates(
    tmp_path: Path, write_rows: WriteRows
) -> None:
    items = write_rows("items.jsonl", ITEMS)
    out = tmp_path / "out.jsonl"
    first, screen = session(items, out, SCRIPT[:9])  # 6 answers, then the input ends
    assert (first.answered, first.remaining, first.stopped) == (6, 15, "end of input")
    assert "Run the same command to resume" in screen
    second, _ = session(items, out, SCRIPT[9:])
    assert (second.answered, second.remaining, second.stopped) == (15, 0, "done")
    keys = question_keys(out)
    assert len(keys) == 21 and len(set(keys)) == 21
    reference = tmp_path / "reference.jsonl"
    session(items, reference, SCRIPT)
    assert _untimed(load_preferences(out)[0]) == _untimed(load_preferences(reference)[0])
    third, _ = session(items, out, [])
    assert (third.answered, third.remaining, third.stopped) == (0, 0, "done")


def test_quit_and_skip_commands(tmp_path: Path, write_rows: WriteRows) -> None:
    items = write_rows("items.jsonl", ITEMS)
    out = tmp_path / "out.jsonl"
    summary, _ = session(items, out, ["1", "s", "q"], modes=("pairwise",))
    assert (summary.answered, summary.remaining, summary.stopped) == (1, 3, "quit")
    summary, _ = session(items, out, ["s", "2"], modes=("pairwise",))
    assert (summary.answered, summary.remaining, summary.stopped) == (1, 2, "skipped")
    summary, _ = session(items, out, ["1", "2"], modes=("pairwise",))
    assert (summary.answered, summary.remaining, summary.stopped) == (2, 0, "done")
    keys = [key[1:] for key in question_keys(out)]
    assert keys == [
        ("colour", "pairwise:0-1"),
        (keys[1][0], "pairwise:0-1"),
        ("colour", "pairwise:0-2"),
        ("colour", "pairwise:1-2"),
    ]


def test_each_annotator_answers_every_question_once_in_a_shared_file(tmp_path: Path, write_rows: WriteRows) -> None:
    items = write_rows("items.jsonl", PAIRS)
    out = tmp_path / "out.jsonl"
    session(items, out, ["1"] * 4, modes=("pairwise",), annotator="alice")
    summary, _ = session(items, out, ["2"] * 4, modes=("pairwise",), annotator="bob")
    assert summary.answered == 4
    assert Counter(key[0] for key in question_keys(out)) == {"alice": 4, "bob": 4}


def test_a_line_cut_off_by_a_crash_is_dropped_and_asked_again(tmp_path: Path, write_rows: WriteRows) -> None:
    items = write_rows("items.jsonl", PAIRS)
    out = tmp_path / "out.jsonl"
    session(items, out, ["1", "2"], modes=("pairwise",))
    with out.open("a") as file:
        file.write('{"type": "pairwise", "prompt": "question 2')
    summary, screen = session(items, out, ["2", "1"], modes=("pairwise",))
    assert "Dropped an unfinished last line" in screen
    assert summary.answered == 2 and summary.remaining == 0
    assert [record.chosen for record in load_preferences(out)[0]] == ["good 0", "bad 1", "bad 2", "good 3"]


def test_the_display_order_is_shuffled_per_annotator_and_stable(tmp_path: Path, write_rows: WriteRows) -> None:
    rows = [{"id": str(i), "prompt": f"prompt {i}", "completions": ["a", "b", "c", "d"]} for i in range(6)]
    items = read_items(write_rows("items.jsonl", rows))

    def orders(annotator: str) -> list[list[int]]:
        return [display_order(item, SessionConfig(annotator=annotator)) for item in items]

    assert orders("alice") == orders("alice")
    assert orders("alice") != orders("bob")
    assert len({tuple(order) for order in orders("alice")}) > 1


def test_two_sessions_cannot_write_one_file_at_once(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    with AnnotationLog(out), pytest.raises(ConfigError) as excinfo, AnnotationLog(out):
        pass
    assert excinfo.value.field == "out"
    assert "another annotation session" in str(excinfo.value)


@pytest.mark.parametrize(
    ("row", "field", "says"),
    [
        ({"prompt": "p"}, "completions", "is missing"),
        ({"prompt": "p", "completions": ["a", "a"]}, "completions[1]", "repeats completion 0"),
        ({"prompt": "p", "completions": ["a"]}, "completions", "needs at least 2"),
        ({"prompt": "p", "completions": ["a", 3]}, "completions[1]", "non-empty string"),
        ({"prompt": "p", "completions": ["a", "b"], "ranks": [1, 1, 2]}, "ranks", "3 entries for 2 completions"),
        ({"prompt": "p", "completions": ["a", "b"], "scores": [9, 1], "scale": [1, 5]}, "scores[0].overall", "scale"),
    ],
)
def test_malformed_items_name_file_line_and_field(
    write_rows: WriteRows, row: dict[str, Any], field: str, says: str
) -> None:
    path = write_rows("items.jsonl", [ITEMS[1], row])
    with pytest.raises(DataError) as excinfo:
        read_items(path, min_completions=2, purpose="the pairwise mode")
    assert (excinfo.value.source, excinfo.value.line, excinfo.value.field) == (str(path), 2, field)
    assert says in str(excinfo.value)


def test_records_are_items_and_repeated_items_are_refused(write_rows: WriteRows) -> None:
    pair = {"prompt": "p", "chosen": "a", "rejected": "b"}
    [item] = read_items(write_rows("records.jsonl", [pair]))
    assert item.completions == ("a", "b")
    with pytest.raises(DataError) as excinfo:
        read_items(write_rows("twice.jsonl", [pair, {"prompt": "p", "completions": ["a", "b"]}]))
    assert excinfo.value.line == 2 and "repeats line 1" in str(excinfo.value)


# -- agreement statistics against published worked examples ------------------------------


def test_cohen_kappa_matches_the_textbook_example() -> None:
    # Wikipedia, "Cohen's kappa": 50 proposals, yes/yes 20, yes/no 5, no/yes 10, no/no 15 → κ = 0.4.
    first = ["yes"] * 25 + ["no"] * 25
    second = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohen_kappa(first, second) == pytest.approx(0.4)
    assert math.isnan(cohen_kappa(["a", "a"], ["a", "a"]))


def test_fleiss_kappa_matches_fleiss_worked_example() -> None:
    # Wikipedia, "Fleiss' kappa": 10 subjects, 14 raters, 5 categories → κ = 0.210.
    table = [
        [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
    ]  # fmt: skip
    units = [[category for category, count in enumerate(row) for _ in range(count)] for row in table]
    assert fleiss_kappa(units) == pytest.approx(0.210, abs=5e-4)


def test_krippendorff_alpha_matches_krippendorffs_reliability_data() -> None:
    # Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability": 4 observers, 12 units,
    # missing values; α = 0.743 (nominal) and 0.849 (interval).
    observers = [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
        [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
    ]
    units = [[row[unit] for row in observers if row[unit] is not None] for unit in range(12)]
    assert krippendorff_alpha(units, "nominal") == pytest.approx(0.743, abs=5e-4)
    assert krippendorff_alpha(units, "interval") == pytest.approx(0.849, abs=5e-4)


def test_agreement_over_two_annotators_files(tmp_path: Path, write_rows: WriteRows) -> None:
    items = write_rows("items.jsonl", ITEMS)
    alice, bob = tmp_path / "alice.jsonl", tmp_path / "bob.jsonl"
    # Pairs (0,1) (0,2) (1,2) of 'colour' and (0,1) of '2 + 2', then Likert scores of the 5 completions.
    session(items, alice, ["1", "1", "3", "5", "1", "3", "1", "5", "1"], modes=("pairwise", "likert"))
    session(items, bob, ["1", "3", "3", "4", "2", "3", "2", "5", "2"], modes=("pairwise", "likert"), annotator="bob")
    report = agreement([alice, bob])
    assert report.annotators == ("alice", "bob")
    pairwise = report.section("pairwise")
    assert pairwise.units == 4 and pairwise.percent == pytest.approx(0.5)
    # Sides in sorted order: alice says first, first, second, first; bob first, second, second, second.
    # Cohen: p_o = 0.5, p_e = 0.75·0.25 + 0.25·0.75 = 0.375 → 0.2. Fleiss: pooled shares 0.5/0.5 → P_e = 0.5 → 0.
    assert pairwise.cohen == {("alice", "bob"): (pytest.approx(0.2), 4)}
    assert pairwise.fleiss == pytest.approx(0.0)
    scores = [[5, 4], [1, 2], [3, 3], [5, 5], [1, 2]]
    likert = report.section("likert:overall")
    assert likert.units == 5 and likert.alpha == pytest.approx(krippendorff_alpha(scores, "interval"))


# -- the command line, in a subprocess -----------------------------------------------------

ROOT = Path(prefcore.__file__).resolve().parents[1]


def _default_sigint() -> None:
    """A shell's background job inherits SIGINT ignored, and Python would keep it so."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_annotate(items: Path, out: Path, annotator: str, *extra: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "prefcore.cli", "annotate", str(items), "--out", str(out)]
    return subprocess.Popen(
        [*command, "--annotator", annotator, "--no-shuffle", *extra],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        preexec_fn=_default_sigint,
    )


def wait_for_answers(path: Path, count: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") >= count:
            return
        time.sleep(0.02)
    raise AssertionError(f"{path} did not reach {count} answers in {timeout} s.")


def chosen_by_item(path: Path) -> dict[str, str]:
    return {record.metadata["item_id"]: record.chosen for record in load_preferences(path)[0]}


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill"])
def test_an_interrupted_command_resumes_without_losing_or_repeating_answers(
    tmp_path: Path, write_rows: WriteRows, stop: signal.Signals
) -> None:
    items = write_rows("items.jsonl", PAIRS)
    out = tmp_path / "out.jsonl"
    process = start_annotate(items, out, "alice")
    assert process.stdin is not None
    process.stdin.write("1\n1\n")
    process.stdin.flush()
    wait_for_answers(out, 2)
    process.send_signal(stop)
    stdout, _ = process.communicate(timeout=20)
    if stop == signal.SIGINT:
        assert process.returncode == 130
        assert "Stopped (interrupted): 2 answers saved" in stdout
    else:
        assert process.returncode == -signal.SIGKILL
    assert chosen_by_item(out) == {"q0": "good 0", "q1": "good 1"}

    resumed = start_annotate(items, out, "alice")
    stdout, stderr = resumed.communicate("2\n2\n", timeout=20)
    assert resumed.returncode == 0, stderr
    assert "2 questions to answer" in stdout and "All done: 2 answers" in stdout
    assert chosen_by_item(out) == {"q0": "good 0", "q1": "good 1", "q2": "bad 2", "q3": "bad 3"}
    keys = question_keys(out)
    assert len(keys) == len(set(keys)) == 4


def test_two_annotators_and_the_agreement_report_on_the_command_line(
    tmp_path: Path, write_rows: WriteRows, capsys: pytest.CaptureFixture[str]
) -> None:
    items = write_rows("items.jsonl", PAIRS)
    alice, bob = tmp_path / "alice.jsonl", tmp_path / "bob.jsonl"
    for annotator, out, answers in (("alice", alice, "1\n1\n2\n1\n"), ("bob", bob, "1\n1\n2\n2\n")):
        process = start_annotate(items, out, annotator, "--mode", "tie")
        _, stderr = process.communicate(answers, timeout=20)
        assert process.returncode == 0, stderr
    assert main(["annotate", "--agreement", str(alice), str(bob)]) == 0
    report = capsys.readouterr().out
    assert "2 annotators (alice, bob)" in report
    assert "pairwise: 4 units answered by 2+ annotators" in report
    assert "percent agreement   0.750" in report
    assert "Cohen's kappa" in report and "(alice vs bob, 4 shared units)" in report


def test_command_line_errors_are_one_line_with_status_2(
    write_rows: WriteRows, capsys: pytest.CaptureFixture[str]
) -> None:
    items = write_rows("items.jsonl", [{"prompt": "p", "completions": ["only one"]}])
    assert main(["annotate", str(items), "--annotator", "alice"]) == 2
    assert "needs --out" in capsys.readouterr().err
    assert main(["annotate", str(items), "--out", "o.jsonl", "--annotator", "a", "--mode", "pairs"]) == 2
    assert "unknown --mode 'pairs'" in capsys.readouterr().err
    assert main(["annotate", str(items), "--out", "o.jsonl", "--annotator", "a"]) == 2
    assert "line 1: field 'completions': has 1 completion(s)" in capsys.readouterr().err


def test_annotate_from_cli_parses_modes_and_scale(tmp_path: Path, write_rows: WriteRows) -> None:
    from prefcore.annotate import annotate_from_cli
    from prefcore.cli import build_parser

    items = write_rows("items.jsonl", ITEMS[1:])
    out = tmp_path / "out.jsonl"
    command = ["annotate", str(items), "--out", str(out), "--annotator", "a", "--no-shuffle"]
    options = ["--mode", "likert,binary", "--mode", "likert", "--scale", "0", "10", "--aspect", "accuracy"]
    args: argparse.Namespace = build_parser().parse_args([*command, *options])
    status = annotate_from_cli(args, stdin=io.StringIO("10\n0\ny\nn\n"), stdout=io.StringIO())
    assert status == 0
    records = load_preferences(out)[0]
    assert [record.format for record in records] == ["scores", "scores", "binary", "binary"]
    assert records[0].scores == ({"accuracy": 10.0},) and records[0].scale == (0.0, 10.0)


def test_ctrl_c_in_a_real_terminal(tmp_path: Path, write_rows: WriteRows) -> None:
    pexpect = importlib.import_module("pexpect")
    items = write_rows("items.jsonl", PAIRS)
    out = tmp_path / "out.jsonl"
    command = [*("-m", "prefcore.cli", "annotate", str(items), "--out", str(out)), "--annotator", "alice"]
    child = pexpect.spawn(
        sys.executable,
        [*command, "--no-shuffle"],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        encoding="utf-8",
        timeout=20,
        preexec_fn=_default_sigint,
    )
    child.expect_exact("Which is better, [1] or [2]? (1/2) > ")
    child.sendline("3")
    child.expect_exact("Invalid answer '3': type 1 or 2 (s skips this item, q quits).")
    child.sendline("2")
    child.expect_exact("question 1")
    child.expect_exact("(1/2) > ")
    child.sendintr()
    child.expect_exact("Stopped (interrupted): 1 answers saved")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 130
    assert chosen_by_item(out) == {"q0": "bad 0"}


# -- answers that are not what they seem -----------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param("²", id="superscript-two"),  # str.isdigit() is true, int() refuses it
        pytest.param("①", id="circled-one"),
        pytest.param("9" * 5000, id="5000-digits"),  # past int()'s 4300-digit limit
    ],
)
@pytest.mark.parametrize(
    ("mode", "first", "second"),
    [("pairwise", ["1"], ["2"]), ("ranking", ["1 2"], ["2 1"]), ("likert", ["3", "3"], ["4", "2"])],
)
def test_digit_lookalikes_are_asked_again_and_lose_no_answer(
    tmp_path: Path, write_rows: WriteRows, answer: str, mode: str, first: list[str], second: list[str]
) -> None:
    items = write_rows("items.jsonl", PAIRS[:1] + ITEMS[1:])
    out = tmp_path / "out.jsonl"
    summary, screen = session(items, out, [*first, answer, *second], modes=(mode,))
    assert (summary.answered, summary.stopped) == (len(first) + len(second), "done")
    assert f"Invalid answer {answer!r}" in screen
    assert len(load_preferences(out)[0]) == len(first) + len(second)


def bytes_session(items_path: Path, out: Path, data: bytes, **config: Any) -> tuple[Any, str]:
    """A session whose input is raw bytes read through a UTF-8 text stream, as a pipe or console gives them."""
    settings = {"annotator": "alice", "modes": ("pairwise",), "shuffle": False, **config}
    session_config = SessionConfig(**settings)
    items = read_items(items_path, min_completions=session_config.min_completions)
    screen = io.StringIO()
    terminal = Terminal(io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"), screen)
    with AnnotationLog(out) as log:
        summary = run_session(items, log, session_config, terminal)
    return summary, screen.getvalue()


def test_a_byte_that_is_not_utf8_is_asked_again_and_the_answers_after_it_are_kept(
    tmp_path: Path, write_rows: WriteRows
) -> None:
    items = write_rows("items.jsonl", PAIRS[:3])
    out = tmp_path / "out.jsonl"
    summary, screen = bytes_session(items, out, b"\xff\n1\n\xfe2\n2\n1\n")
    assert (summary.answered, summary.stopped) == (3, "done")
    assert screen.count("holds bytes that are not UTF-8 text; type it again") == 2
    assert chosen_by_item(out) == {"q0": "good 0", "q1": "bad 1", "q2": "good 2"}


def test_a_critique_with_bytes_that_are_not_utf8_is_asked_again(tmp_path: Path, write_rows: WriteRows) -> None:
    items = write_rows("items.jsonl", [{"id": "x", "prompt": "p", "completion": "c"}])
    out = tmp_path / "out.jsonl"
    summary, _ = bytes_session(
        items,
        out,
        b"too short \xff!\ntoo short \xe2\x80\x93 needs a reason\n",  # a Latin-1 byte, then UTF-8
        modes=("critique",),
    )
    assert summary.answered == 1
    [critique] = load_preferences(out)[0]
    assert critique.critique == "too short – needs a reason"


def test_the_command_keeps_going_after_bytes_that_are_not_utf8(tmp_path: Path, write_rows: WriteRows) -> None:
    items = write_rows("items.jsonl", PAIRS[:2])
    out = tmp_path / "out.jsonl"
    command = [sys.executable, "-m", "prefcore.cli", "annotate", str(items), "--out", str(out)]
    process = subprocess.run(
        [*command, "--annotator", "alice", "--no-shuffle"],
        input=b"\xff\n\xc2\xb2\n1\n2\n",
        capture_output=True,
        # A UTF-8 locale reads stdin strictly (the C locale would escape the byte on its own).
        env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONIOENCODING": "utf-8:strict"},
        timeout=60,
    )
    assert process.returncode == 0, process.stderr.decode()
    assert b"All done: 2 answers" in process.stdout
    assert chosen_by_item(out) == {"q0": "good 0", "q1": "bad 1"}


@pytest.mark.parametrize(
    ("line", "field", "words"),
    [
        pytest.param('{"prompt": "p", "completions": ["a", "b"], "prompt": "q"}', "prompt", "twice", id="repeated-key"),
        pytest.param(
            '{"prompt": "p", "completions": ["a", "b"], "x": ' + "[" * 3000 + "]" * 3000 + "}",
            "x[0][0][0][0][0]...",
            "levels deep",
            id="deep",
        ),
        pytest.param(
            '{"prompt": "p", "completions": ["a", "b"], "id": ' + "7" * 5000 + "}", "id", "5000 digits", id="huge-id"
        ),
        pytest.param('{"prompt": "p\\udc00", "completions": ["a", "b"]}', "prompt", "lone surrogate", id="surrogate"),
        pytest.param(
            '{"prompt": [{"role": "human", "content": "p"}], "completions": [[{"role": "assistant", "content": "a"}]]}',
            "prompt[0].role",
            "Did you mean 'user'?",
            id="sharegpt-role",
        ),
    ],
)
def test_hostile_item_files_name_line_and_field(write_rows: WriteRows, line: str, field: str, words: str) -> None:
    items = write_rows("items.jsonl", [PAIRS[0], line])
    with pytest.raises(DataError) as excinfo:
        read_items(items)
    assert (excinfo.value.line, excinfo.value.field) == (2, field)
    assert words in excinfo.value.reason
