"""Iterative online DPO with people as the reward: export rollouts for ``prefcore annotate``, stop, resume.

The HITL view of online preference learning: between iterations, people rank the policy's own
samples. Iteration k (1-based) samples G completions of ``prompts_per_step`` prompts from the
policy after k − 1 iterations, exactly as online DPO does (``OnlineDPOTrainer``: seeded prompt
order, rollout seed a function of ``(seed, k − 1)``), and writes, under the exchange folder,

    iteration-k/items.jsonl     {"id", "prompt", "completions"} rows for ``prefcore annotate``
    iteration-k/tokens.json     the sampled token ids of every exported completion

Each item holds a prompt's *distinct* completions (annotate refuses repeats); a prompt with fewer
than two is not exported. Then the run stops. Annotators answer with
``prefcore annotate ITEMS --out iteration-k/answers/NAME.jsonl --annotator NAME``. On the next
advance the pairwise answers of every file in ``answers/`` are read: per item and pair of
completions, one vote per answer for its chosen side; the majority side is the pair's order,
and a pair with equal votes (tie answers count for neither side) is dropped and counted. The
pairs, as the sampled token ids, train the pairwise objectives for ``update_epochs`` optimiser
steps (``OnlineDPOTrainer.update``), a checkpoint is written and iteration k + 1 is exported.
Nothing is ever sampled twice: an exported iteration is read back from disk, and the prompt
sampler's draw is redone from the checkpointed sampler state and checked against the export.
From a run file, ``[loop] kind = "human_online_dpo"`` makes each ``prefcore run`` one ``advance``
(``prefcore.stages.loops.train_with_people``).

Under torchrun the exchange folder is rank 0's: each rank samples its contiguous slice of the
iteration's prompts (its own seed), rank 0 gathers the samples in rank order (the prompts' order)
and writes the items; rank 0 alone reads the export and the answers and broadcasts what it
found (or its error) to every rank, which then trains its contiguous slice of the voted pairs
with the global pair and token counts (``OnlineDPOTrainer.update``), as one process trains them all.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch.distributed as dist

from prefcore.data.readers import load_preferences
from prefcore.data.records import PairwiseComparison
from prefcore.data.records import text_to_json
from prefcore.distributed.process_group import barrier
from prefcore.distributed.process_group import is_main
from prefcore.distributed.sampler import shard_indices
from prefcore.engine.batching import TrainingItem
from prefcore.engine.online_loops import OnlineDPOTrainer
from prefcore.engine.online_schedule import select_groups
from prefcore.engine.sequences import TokenizedSequence
from prefcore.errors import DataError
from prefcore.rollout import Rollouts

__all__ = ["HumanAnswers", "HumanOnlineDPO", "HumanStep", "read_answers"]

logger = logging.getLogger("prefcore.human_loop")


@dataclass(frozen=True)
class HumanAnswers:
    """Voted pairs of one iteration: ``(item id, chosen index, rejected index)``, and what was dropped."""

    pairs: tuple[tuple[str, int, int], ...]
    tied_pairs: int
    answers: int
    annotators: tuple[str, ...]


@dataclass(frozen=True)
class HumanStep:
    """What one ``advance`` did: ``"trained"`` (then exported), ``"exported"``, ``"waiting"`` or ``"done"``."""

    status: str
    iteration: int
    metrics: Mapping[str, float]
    message: str


def _key(text: Any) -> str:
    return json.dumps(text_to_json(text) if not isinstance(text, (str, list)) else text, sort_keys=True)


def read_answers(folder: Path, items: Sequence[Mapping[str, Any]]) -> HumanAnswers:
    """The majority order of every answered pair in ``folder/*.jsonl`` (module docstring); ties dropped.

    An answer that names an item or a completion the iteration did not export is a ``DataError``.
    """
    index = {row["id"]: {_key(text): position for position, text in enumerate(row["completions"])} for row in items}
    votes: dict[tuple[str, int, int], int] = {}
    seen: set[tuple[str, int, int]] = set()
    count = 0
    annotators: set[str] = set()
    for path in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
        records, _ = load_preferences(path)
        for record in records:
            if not isinstance(record, PairwiseComparison):
                continue  # other modes answer other questions
            item = str(record.metadata.get("item_id", ""))
            if item not in index:
                raise DataError(f"answers item {item!r}, which this iteration did not export.", source=str(path))
            positions = index[item]
            chosen, rejected = positions.get(_key(record.chosen)), positions.get(_key(record.rejected))
            if chosen is None or rejected is None or chosen == rejected:
                raise DataError(f"answers item {item!r} with completions it does not hold.", source=str(path))
            low, high = min(chosen, rejected), max(chosen, rejected)
            seen.add((item, low, high))
            count += 1
            annotators.add(str(record.annotator_id))
            if not record.tie:
                votes[(item, low, high)] = votes.get((item, low, high), 0) + (1 if chosen == low else -1)
    order = {row["id"]: number for number, row in enumerate(items)}
    pairs: list[tuple[str, int, int]] = []
    tied = 0
    for item, low, high in sorted(seen, key=lambda key: (order[key[0]], key[1], key[2])):
        balance = votes.get((item, low, high), 0)
        if balance == 0:
            tied += 1
        else:
            pairs.append((item, low, high) if balance > 0 else (item, high, low))
    return HumanAnswers(tuple(pairs), tied, count, tuple(sorted(annotators)))


class HumanOnlineDPO(OnlineDPOTrainer):
    """Online DPO whose pairs come from people between iterations (module docstring).

    Takes ``OnlineDPOTrainer``'s arguments (``reward`` is unused: pass any) and ``exchange``, the
    folder of exported items and answers. ``[train] steps`` (or ``[online] steps``) counts
    iterations. Every ``advance`` resumes from the newest checkpoint, so each call may be a new
    process on a new day.
    """

    def __init__(self, *args: Any, exchange: Path, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.exchange = Path(exchange)

    def iteration_dir(self, iteration: int) -> Path:
        return self.exchange / f"iteration-{iteration}"

    def instructions(self, iteration: int) -> str:
        folder = self.iteration_dir(iteration)
        return (
            f"iteration {iteration}: annotate {folder / 'items.jsonl'} with\n"
            f"  prefcore annotate {folder / 'items.jsonl'} --out {folder / 'answers' / 'NAME.jsonl'} --annotator NAME\n"
            f"then continue with: prefcore run --resume {self.run_dir}"
        )

    def export(self, iteration: int) -> dict[str, float]:
        """Sample iteration ``iteration``'s completions and write its items (the sampler's place is kept)."""
        state = self.sampler.state()
        indices = self.sampler.draw(self.online.prompts_per_step)
        self.sampler.load(state)  # training redraws the same prompts from the checkpointed state
        self.gather_weights()  # FSDP2: the sampler needs the full weights in the plain model
        rollouts = self._sample([self.prompts[index] for index in self.local_prompts(indices)], self.settings)
        if self.parallel is not None:  # every rank's samples, in rank order: the prompts' order
            gathered: list[Any] = [None] * self.world_size
            dist.all_gather_object(gathered, rollouts)
            rollouts = select_groups([(part, range(len(part.prompts))) for part in gathered])
        rows, tokens = _items(rollouts, iteration)
        if is_main():
            folder = self.iteration_dir(iteration)
            folder.mkdir(parents=True, exist_ok=True)
            _write_atomic(folder / "tokens.json", json.dumps({"indices": indices, "items": tokens}))
            _write_atomic(
                folder / "items.jsonl", "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
            )  # written last: its presence marks a complete export
        barrier()
        return {"exported_items": float(len(rows)), "single_completion_prompts": float(len(indices) - len(rows))}

    def train_iteration(
        self, iteration: int, answers: HumanAnswers, saved: Mapping[str, Any] | None = None
    ) -> dict[str, float]:
        """One iteration's update on the voted pairs; the prompt draw is redone and checked against the export.

        ``saved``: the export's ``tokens.json`` (read here when not given).
        """
        if saved is None:
            saved = json.loads((self.iteration_dir(iteration) / "tokens.json").read_text())
        indices = self.sampler.draw(self.online.prompts_per_step)
        if indices != saved["indices"]:
            raise DataError(
                "the exported prompts differ from the run's prompt order (another run's exchange folder?).",
                source=str(self.iteration_dir(iteration)),
            )
        sequences = {row["id"]: row for row in saved["items"]}
        items = [
            TrainingItem(
                (_sequence(sequences[item], chosen), _sequence(sequences[item], rejected)),
                "pairwise",
            )
            for item, chosen, rejected in answers.pairs
        ]
        everyone = items
        if self.parallel is not None:  # this rank's slice of the pairs; the counts are global
            items = shard_indices(everyone, self.rank, self.world_size)  # type: ignore[arg-type]
        metrics: dict[str, float] = {
            "pairs": float(len(everyone)),
            "tied_pairs": float(answers.tied_pairs),
            "answers": float(answers.answers),
            "annotators": float(len(answers.annotators)),
        }
        for _ in range(self.online.update_epochs if everyone else 0):
            update = self.update(items) if self.parallel is None else self.update(items, everyone[:1])
            for key, value in update.items():
                metrics[key] = metrics.get(key, 0.0) + value / self.online.update_epochs
        self.online_step += 1
        self.save()
        self.gather_weights()  # FSDP2: evaluation, the next export and the final model read the plain model
        return metrics

    def advance(self) -> HumanStep:
        """Resume, then train on the current iteration's answers and export the next, or say what is awaited."""
        self.resume()
        iteration = self.online_step + 1
        if iteration > self.online_steps:
            return HumanStep("done", self.online_step, {}, f"all {self.online_steps} iterations are trained.")
        status, answers, saved = self._read_exchange(iteration)
        if status == "export":
            metrics = self.export(iteration)
            return HumanStep("exported", iteration, metrics, self.instructions(iteration))
        if status == "waiting":
            return HumanStep("waiting", iteration, {}, "no answers yet; " + self.instructions(iteration))
        metrics = self.train_iteration(iteration, answers, saved)
        if self.on_step is not None and is_main():
            self.on_step(self.online_step, metrics)
        if self.online_step >= self.online_steps:
            return HumanStep("trained", iteration, metrics, f"all {self.online_steps} iterations are trained.")
        metrics.update(self.export(iteration + 1))
        return HumanStep("trained", iteration, metrics, self.instructions(iteration + 1))

    def _read_exchange(self, iteration: int) -> tuple[str, HumanAnswers | None, Any]:
        """``("export" | "waiting" | "train", answers, tokens.json)`` of iteration ``iteration``, read by rank 0
        and broadcast (its error is raised on every rank)."""
        if self.parallel is None:
            return _read_iteration(self.iteration_dir(iteration))
        box: list[Any] = [None]
        failure: Exception | None = None
        if is_main():
            try:
                box[0] = ("ok", _read_iteration(self.iteration_dir(iteration)))
            except Exception as exc:  # any failure: the other ranks must not wait for what never comes
                failure, box[0] = exc, ("error", f"{type(exc).__name__}: {exc}")
        dist.broadcast_object_list(box, src=0)
        if failure is not None:
            raise failure
        outcome, value = box[0]
        if outcome == "error":
            raise DataError(f"rank 0 could not read the exchange folder: {value}", source=str(self.exchange))
        return value


def _read_iteration(folder: Path) -> tuple[str, HumanAnswers | None, Any]:
    """What the exchange folder holds for one iteration (see ``HumanOnlineDPO._read_exchange``)."""
    if not (folder / "items.jsonl").is_file():
        return "export", None, None
    items = [json.loads(line) for line in (folder / "items.jsonl").read_text().splitlines() if line.strip()]
    answers = read_answers(folder / "answers", items)
    if not answers.answers:
        return "waiting", answers, None
    return "train", answers, json.loads((folder / "tokens.json").read_text())


def _items(rollouts: Rollouts, iteration: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Annotate rows of each prompt's distinct completions, and their token ids (prompts with < 2 are left out)."""
    rows: list[dict[str, Any]] = []
    tokens: list[dict[str, Any]] = []
    group = rollouts.samples_per_prompt
    for number, prompt in enumerate(rollouts.prompts):
        first: dict[str, int] = {}
        for row in range(number * group, (number + 1) * group):
            first.setdefault(rollouts.texts[row], row)
        if len(first) < 2:
            continue
        prompt_json = text_to_json(prompt) if not isinstance(prompt, str) else prompt
        completions = [text if isinstance(prompt, str) else [{"role": "assistant", "content": text}] for text in first]
        item = f"iteration-{iteration}-prompt-{number}"
        rows.append({"id": item, "prompt": prompt_json, "completions": completions})
        tokens.append(
            {
                "id": item,
                "prompt_ids": list(rollouts.prompt_ids[number * group]),
                "completion_ids": [list(rollouts.completion_ids[row]) for row in first.values()],
            }
        )
    return rows, tokens


def _sequence(saved: Mapping[str, Any], position: int) -> TokenizedSequence:
    return TokenizedSequence(tuple(saved["prompt_ids"]), tuple(saved["completion_ids"][position]))


def _write_atomic(path: Path, text: str) -> None:
    staging = path.with_suffix(path.suffix + ".tmp")
    staging.write_text(text, encoding="utf-8")
    staging.replace(path)
