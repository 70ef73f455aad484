"""Human-in-the-loop online DPO: export items, stop, train on scripted annotators' votes, resume exactly."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from prefcore.annotate import AnnotationLog
from prefcore.annotate import SessionConfig
from prefcore.annotate import Terminal
from prefcore.annotate import read_items
from prefcore.annotate import run_session
from prefcore.demo import task
from prefcore.demo.model import build_tiny_model
from prefcore.demo.tokenizer import build_tokenizer
from prefcore.engine.batching import TrainingItem
from prefcore.engine.human_loop import HumanOnlineDPO
from prefcore.engine.models import frozen_copy
from prefcore.engine.trainer import WeightedObjective
from prefcore.registry import Registry
from prefcore.rollout import Rollouts
from prefcore.settings import OnlineLoopConfig
from prefcore.settings import TrainConfig


def _no_reward(rollouts: Rollouts, metadata: Any) -> Any:
    raise AssertionError("the human loop never calls the reward")


class _Recording(HumanOnlineDPO):
    """Keeps every update's items, to compare with the answered pairs."""

    updates: list[list[TrainingItem]]

    def update(self, items: Any) -> dict[str, float]:
        self.updates.append(list(items))
        return super().update(items)


def _trainer(run_dir: Path) -> _Recording:
    tokenizer = build_tokenizer()
    policy = build_tiny_model(tokenizer, seed=0)
    dpo = Registry.from_environment().create("usage", "dpo", {"beta": 0.1})
    prompts = list(task.heldout_prompts())[:12]
    trainer = _Recording(
        policy,
        [WeightedObjective(dpo)],
        prompts,
        [{} for _ in prompts],
        TrainConfig(steps=2, lr=1e-2, seed=3, progress=False),
        OnlineLoopConfig(prompts_per_step=3, samples_per_prompt=3, max_new_tokens=6, temperature=1.5),
        tokenizer=tokenizer,
        reward=_no_reward,
        run_dir=run_dir,
        device=torch.device("cpu"),
        reference=frozen_copy(policy),
        exchange=run_dir / "exchange",
    )
    trainer.updates = []
    return trainer


def _first_shown(items: Path) -> list[str]:
    """The answers that choose the lower-numbered completion of every pair (screen numbers are 1-based)."""
    answers = []
    for item in read_items(items, min_completions=2):
        count = len(item.completions)
        answers += [str(i + 1) for i in range(count) for _ in range(i + 1, count)]
    return answers


def _annotate(items: Path, annotator: str, answers: list[str]) -> None:
    config = SessionConfig(annotator=annotator, modes=("pairwise",), shuffle=False)
    terminal = Terminal(io.StringIO("".join(answer + "\n" for answer in answers)), io.StringIO())
    with AnnotationLog(items.parent / "answers" / f"{annotator}.jsonl") as log:
        run_session(read_items(items, min_completions=2), log, config, terminal)


def _weights(trainer: HumanOnlineDPO) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in trainer.policy.state_dict().items()}


def _expected(folder: Path) -> list[tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """alice picks the first shown completion everywhere, bob the second on the first question only.

    So each item's pairs (i, j), i < j, train as i over j, except the very first pair, which ties.
    """
    saved = json.loads((folder / "tokens.json").read_text())["items"]
    pairs = []
    for number, row in enumerate(saved):
        count = len(row["completion_ids"])
        for i in range(count):
            for j in range(i + 1, count):
                if number == 0 and (i, j) == (0, 1):
                    continue
                pairs.append(
                    (tuple(row["prompt_ids"]), tuple(row["completion_ids"][i]), tuple(row["completion_ids"][j]))
                )
    return pairs


def _trained(items: list[TrainingItem]) -> list[tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    return [
        (item.sequences[0].prompt_ids, item.sequences[0].completion_ids, item.sequences[1].completion_ids)
        for item in items
    ]


def test_two_iterations_export_wait_train_on_votes_and_resume_to_the_same_weights(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    first = _trainer(run_dir).advance()
    assert first.status == "exported" and first.iteration == 1
    folder = run_dir / "exchange" / "iteration-1"
    assert f"prefcore annotate {folder / 'items.jsonl'}" in first.message and "--resume" in first.message
    items = read_items(folder / "items.jsonl", min_completions=2)
    tokens = json.loads((folder / "tokens.json").read_text())
    assert [item.id for item in items] == [row["id"] for row in tokens["items"]] and items
    tokenizer = build_tokenizer()
    for item, row in zip(items, tokens["items"], strict=True):  # the items are the sampled tokens, decoded
        assert len(set(item.completions)) == len(item.completions) == len(row["completion_ids"]) >= 2
        decoded = [tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in row["completion_ids"]]
        assert [text.strip() for text in item.completions] == decoded

    waiting = _trainer(run_dir)  # a resume without answers: nothing sampled, nothing trained
    assert waiting.advance().status == "waiting" and waiting.updates == [] and waiting.online_step == 0
    assert json.loads((folder / "tokens.json").read_text()) == tokens

    _annotate(folder / "items.jsonl", "alice", _first_shown(folder / "items.jsonl"))
    _annotate(folder / "items.jsonl", "bob", ["2", *_first_shown(folder / "items.jsonl")[1:]])
    straight = _trainer(run_dir)
    step = straight.advance()
    assert step.status == "trained" and step.iteration == 1 and step.metrics["tied_pairs"] == 1
    assert step.metrics["annotators"] == 2 and "loss" in step.metrics
    assert len(straight.updates) == 1 and _trained(straight.updates[0]) == _expected(folder)
    after_one = tmp_path / "after-one"
    shutil.copytree(run_dir, after_one)
    again = _trainer(run_dir)
    assert again.advance().status == "waiting" and again.updates == []  # iteration 2 is exported, unanswered
    assert (run_dir / "exchange" / "iteration-2" / "items.jsonl").is_file()

    for root in (run_dir, after_one):
        second = root / "exchange" / "iteration-2" / "items.jsonl"
        if root == after_one:  # the copy's iteration 2 is the same export: answer it the same way
            assert second.read_text() == (run_dir / "exchange" / "iteration-2" / "items.jsonl").read_text()
        _annotate(second, "alice", _first_shown(second))
    final = _trainer(run_dir)
    assert final.advance().status == "trained" and final.online_step == 2
    resumed = _trainer(after_one)
    assert resumed.advance().status == "trained"
    for name, value in _weights(final).items():
        torch.testing.assert_close(value, _weights(resumed)[name], rtol=0, atol=0)
    assert any(
        not torch.equal(value, _weights(_trainer(tmp_path / "fresh"))[name]) for name, value in _weights(final).items()
    )
    assert _trainer(run_dir).advance().status == "done"


def test_an_answer_to_an_item_that_was_not_exported_is_refused(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    _trainer(run_dir).advance()
    answers = run_dir / "exchange" / "iteration-1" / "answers"
    answers.mkdir(parents=True)
    row = {"prompt": "p", "chosen": "a", "rejected": "b", "annotator_id": "x", "metadata": {"item_id": "other"}}
    (answers / "x.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(Exception, match="did not export"):
        _trainer(run_dir).advance()
