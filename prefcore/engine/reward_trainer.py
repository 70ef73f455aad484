"""Train a reward network with a preference-model objective: records → items → ``RewardBatch`` → steps.

The stage the pipeline runs between feedback and usage. Records become ``RewardItem``s,
one per unit of the loss: a pair (with its tie flag, margin, soft label, aspect and the
binary labels of its completions), a ranked list, a labelled completion, or a completion
whose reasoning steps carry labels. Items are tokenised by the engine's own functions
(``build_items``, ``tokenize_sequence``), batched by ``micro_batches``, run through the
reward network, and handed to the objective as a ``RewardBatch``.

Which items an objective gets follows its ``data_formats``: ``pairwise``, ``listwise``,
``unpaired`` or ``stepwise``, the first one listed. An objective that lists both
``pairwise`` and ``unpaired`` (``safety_binary``) trains on both at once: binary labels of
the completions of a pair travel with the pair, and labelled completions that belong to no
pair are items of their own.

Optional attributes of an objective, read when present: ``aspects`` (head names; each
pair's ``aspect`` picks its head), ``scoring_rule()`` (how the trained model scores, a
``ScoringRule``), ``implicit_reward`` (True: the network is a policy's implicit reward,
``ImplicitRewardModel``, with β from ``config.beta``).

One optimiser step is ``grad_accum`` micro-batches; ``RewardBatch.num_items`` counts the
units of the whole step (pairs, lists, labelled completions, labelled steps), so summed
micro-batch gradients equal the gradient of the step mean. Checkpoints go through
``prefcore.engine.checkpoint`` and resume exactly.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import replace
from pathlib import Path
from typing import Any
from typing import Literal

import torch

from prefcore.data import BinaryLabel
from prefcore.data import FeedbackRecord
from prefcore.data import to_pairs
from prefcore.data.records import Text
from prefcore.data.records import error_at
from prefcore.engine.batching import build_items
from prefcore.engine.loop import OptimiserLoop
from prefcore.engine.loop import StepCallback
from prefcore.engine.loop import check_loss
from prefcore.engine.progress import StageProgress
from prefcore.engine.reward_model import METADATA_FILE
from prefcore.engine.reward_model import ImplicitRewardModel
from prefcore.engine.reward_model import RewardNetwork
from prefcore.engine.reward_model import RewardOutput
from prefcore.engine.reward_model import build_reward_model
from prefcore.engine.reward_model import load_reward_network
from prefcore.engine.reward_model import step_end_positions
from prefcore.engine.sequences import PaddedSequences
from prefcore.engine.sequences import TokenizedSequence
from prefcore.engine.sequences import Truncation
from prefcore.engine.sequences import completion_text
from prefcore.engine.sequences import pad_sequences
from prefcore.engine.sequences import tokenize_sequence
from prefcore.errors import ConfigError
from prefcore.errors import DataError
from prefcore.methods import PreferenceModel
from prefcore.preference import RewardBatch
from prefcore.settings import RewardTrainConfig

REWARD_DATA_FORMATS: tuple[str, ...] = ("pairwise", "listwise", "unpaired", "stepwise")


# ----------------------------------------------------------------------------------------------
# Records → items
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RewardItem:
    """One unit of a preference-model loss and the feedback attached to it.

    ``labels`` holds a binary verdict (or None) per sequence; ``step_ends`` are indices into
    the completion's tokens of the tokens that end each labelled step (``step_labels``).
    """

    sequences: tuple[TokenizedSequence, ...]
    data_format: str
    tie: bool = False
    margin: float | None = None
    probability: float | None = None
    aspect: str | None = None
    labels: tuple[bool | None, ...] | None = None
    ranks: tuple[float, ...] | None = None
    step_ends: tuple[int, ...] = ()
    step_labels: tuple[bool, ...] = ()

    @property
    def length(self) -> int:
        return max(sequence.length for sequence in self.sequences)

    @property
    def count(self) -> int:
        """Units this item adds to the loss's denominator: its labelled steps, or 1."""
        return len(self.step_ends) if self.data_format == "stepwise" else 1


def _flatten(records: Iterable[Any]) -> list[Any]:
    flat: list[Any] = []
    for record in records:
        flat += list(record.items) if isinstance(record, FeedbackRecord) else [record]
    return flat


def _stepwise_item(label: Any, tokenizer: Any, *, max_length: int, truncation: Truncation, prefix: str) -> RewardItem:
    """A completion with labelled steps: each span of a ``BinaryLabel`` is one step.

    A step's label is read at the token holding its span's last character. A record
    without spans is one step, the whole completion, labelled at its EOS token (outcome
    supervision). Steps cut off by ``max_length`` are left out.
    """
    if not isinstance(label, BinaryLabel):
        raise error_at(
            label,
            f"a process reward model trains on completions with labelled steps (BinaryLabel with spans); "
            f"got a {type(label).__name__}.",
        )
    sequence = tokenize_sequence(
        tokenizer, label.prompt, label.completion, max_length=max_length, prefix=prefix, truncation=truncation
    )
    if not label.spans:
        return RewardItem(
            (sequence,), "stepwise", step_ends=(len(sequence.completion_ids) - 1,), step_labels=(label.label,)
        )
    spans = sorted(label.spans, key=lambda span: span.start)
    try:
        positions = step_end_positions(
            tokenizer,
            completion_text(label.completion),
            [(span.start, span.end) for span in spans],
            sequence.completion_ids,
        )
    except DataError as error:
        raise error_at(label, error.reason, field="spans") from None
    kept = [(position, span.label) for position, span in zip(positions, spans, strict=True) if position is not None]
    ends = [position for position, _ in kept]
    if len(set(ends)) != len(ends):
        raise error_at(label, "two steps end in the same token; steps must end on token boundaries.", field="spans")
    if not kept:
        raise error_at(label, f"no step ends within max_length={max_length} tokens.", field="spans")
    return RewardItem((sequence,), "stepwise", step_ends=tuple(ends), step_labels=tuple(value for _, value in kept))


def _label_lookup(labels: Sequence[BinaryLabel]) -> dict[tuple[Text, Text], bool]:
    lookup: dict[tuple[Text, Text], bool] = {}
    for label in labels:
        key = (label.prompt, label.completion)
        if lookup.setdefault(key, label.label) != label.label:
            raise error_at(label, "labels this completion both desirable and undesirable.", field="label")
    return lookup


def build_reward_items(
    records: Sequence[Any],
    objective: PreferenceModel,
    tokenizer: Any,
    *,
    max_length: int,
    truncation: Truncation = "truncate",
    ties: Literal["skip", "keep"] = "skip",
    rank_gap_margin: bool = False,
    prefix: str = "",
) -> list[RewardItem]:
    """The items ``objective`` trains on (see the module docstring for how formats are chosen)."""
    formats = tuple(objective.data_formats)
    unknown = [name for name in formats if name not in REWARD_DATA_FORMATS]
    if not formats or unknown:
        raise ConfigError(
            f"preference model {objective.name!r} declares data formats {list(formats)}; "
            f"the reward trainer builds {', '.join(REWARD_DATA_FORMATS)}.",
            method=objective.name,
        )
    common: dict[str, Any] = {"max_length": max_length, "truncation": truncation, "prefix": prefix}
    primary = formats[0]
    if primary == "stepwise":
        return [_stepwise_item(label, tokenizer, **common) for label in _flatten(records)]
    if primary == "listwise":
        return [
            RewardItem(item.sequences, "listwise", ranks=item.ranks)
            for item in build_items(records, "listwise", tokenizer, **common)
        ]
    if primary == "unpaired":
        return [
            RewardItem(item.sequences, "unpaired", labels=(item.label,))
            for item in build_items(records, "unpaired", tokenizer, **common)
        ]
    with_labels = "unpaired" in formats
    flat = _flatten(records)
    binary = [record for record in flat if isinstance(record, BinaryLabel)] if with_labels else []
    others = [record for record in flat if not isinstance(record, BinaryLabel)] if with_labels else flat
    pairs = to_pairs(others, ties="tie" if ties == "keep" else "skip", rank_gap_margin=rank_gap_margin)
    # build_items leaves tie pairs out; a tie enters it as a plain pair with probability 0.5
    # (its preference target), and its tie flag is kept beside it. One item per pair, in order.
    plain = [replace(pair, tie=False, probability=0.5) if pair.tie else pair for pair in pairs]
    tokenised = build_items(plain, "pairwise", tokenizer, **common)
    lookup = _label_lookup(binary)
    items = [
        RewardItem(
            item.sequences,
            "pairwise",
            tie=pair.tie,
            margin=item.margin,
            probability=item.probability,
            aspect=pair.aspect,
            labels=(lookup.get((pair.prompt, pair.chosen)), lookup.get((pair.prompt, pair.rejected)))
            if with_labels
            else None,
        )
        for pair, item in zip(pairs, tokenised, strict=True)
    ]
    # Labelled completions that belong to no pair are items of their own, each once.
    seen = {(pair.prompt, completion) for pair in pairs for completion in (pair.chosen, pair.rejected)}
    lone = []
    for label in binary:
        if (label.prompt, label.completion) not in seen:
            seen.add((label.prompt, label.completion))
            lone.append(label)
    items += [
        RewardItem(item.sequences, "unpaired", labels=(item.label,))
        for item in build_items(lone, "unpaired", tokenizer, **common)
    ]
    return items


# ----------------------------------------------------------------------------------------------
# Items → micro-batch
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RewardFeedback:
    """A micro-batch: padded sequences and every ``RewardBatch`` field except the rewards."""

    sequences: PaddedSequences
    chosen_index: torch.Tensor | None = None
    rejected_index: torch.Tensor | None = None
    ties: torch.Tensor | None = None
    margins: torch.Tensor | None = None
    probabilities: torch.Tensor | None = None
    aspect_index: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    label_mask: torch.Tensor | None = None
    list_index: torch.Tensor | None = None
    list_ranks: torch.Tensor | None = None
    step_mask: torch.Tensor | None = None
    step_labels: torch.Tensor | None = None
    num_items: int = 0

    def to(self, device: torch.device | str) -> RewardFeedback:
        moved = {
            name: value.to(device) if isinstance(value, torch.Tensor) else value
            for name, value in self.__dict__.items()
            if name != "sequences"
        }
        return RewardFeedback(sequences=self.sequences.to(device), **moved)

    def reward_batch(self, output: RewardOutput, num_items: int | None = None) -> RewardBatch:
        """The objective's input: the network's rewards and this feedback (``num_items`` of the whole step)."""
        step_rewards = None
        if self.step_mask is not None:
            if output.token_rewards is None:
                raise ConfigError("stepwise feedback needs per-token rewards; this reward network gives none.")
            step_rewards = output.token_rewards[..., 0]
        fields = {name: value for name, value in self.__dict__.items() if name not in ("sequences", "num_items")}
        return RewardBatch(
            rewards=output.rewards,
            step_rewards=step_rewards,
            num_items=self.num_items if num_items is None else num_items,
            **fields,
        )


def _optional(values: list[float | None], default: float) -> torch.Tensor | None:
    if all(value is None for value in values):
        return None
    return torch.tensor([default if value is None else value for value in values], dtype=torch.float32)


def _aspect_indices(items: Sequence[RewardItem], aspects: Sequence[str]) -> torch.Tensor:
    indices = []
    for item in items:
        if item.aspect not in aspects:
            found = "no aspect" if item.aspect is None else f"aspect {item.aspect!r}"
            raise DataError(
                f"a pair has {found}, but the reward heads are {list(aspects)}; give every pair the 'aspect' of a head."
            )
        indices.append(list(aspects).index(item.aspect))
    return torch.tensor(indices, dtype=torch.long)


def collate_rewards(
    items: Sequence[RewardItem], pad_token_id: int, *, aspects: Sequence[str] | None = None
) -> RewardFeedback:
    """Flatten items (of any mix of formats) into one padded batch with the comparison structure.

    ``aspects`` names the heads; when given, every pair's ``aspect`` becomes its ``aspect_index``.
    """
    sequences = [sequence for item in items for sequence in item.sequences]
    offsets = []
    offset = 0
    for item in items:
        offsets.append(offset)
        offset += len(item.sequences)
    fields: dict[str, Any] = {}
    pairs = [(item, start) for item, start in zip(items, offsets, strict=True) if item.data_format == "pairwise"]
    if pairs:
        fields["chosen_index"] = torch.tensor([start for _, start in pairs], dtype=torch.long)
        fields["rejected_index"] = torch.tensor([start + 1 for _, start in pairs], dtype=torch.long)
        if any(item.tie for item, _ in pairs):
            fields["ties"] = torch.tensor([item.tie for item, _ in pairs])
        fields["margins"] = _optional([item.margin for item, _ in pairs], 0.0)
        fields["probabilities"] = _optional([item.probability for item, _ in pairs], 1.0)
        if aspects is not None:
            fields["aspect_index"] = _aspect_indices([item for item, _ in pairs], aspects)
    if any(item.labels is not None for item in items):
        labels = [False] * len(sequences)
        label_mask = [False] * len(sequences)
        for item, start in zip(items, offsets, strict=True):
            for position, label in enumerate(item.labels or ()):
                if label is not None:
                    labels[start + position] = label
                    label_mask[start + position] = True
        fields["labels"] = torch.tensor(labels)
        fields["label_mask"] = torch.tensor(label_mask)
    lists = [(item, start) for item, start in zip(items, offsets, strict=True) if item.data_format == "listwise"]
    if lists:
        width = max(len(item.sequences) for item, _ in lists)
        list_index = torch.full((len(lists), width), -1, dtype=torch.long)
        list_ranks = torch.full((len(lists), width), float("inf"))
        for row, (item, start) in enumerate(lists):
            ranks = item.ranks or ()
            order = sorted(range(len(item.sequences)), key=lambda k: ranks[k])  # best first
            list_index[row, : len(order)] = torch.tensor([start + k for k in order])
            list_ranks[row, : len(order)] = torch.tensor([ranks[k] for k in order])
        fields["list_index"] = list_index
        fields["list_ranks"] = list_ranks
    padded = pad_sequences(sequences, pad_token_id)
    if any(item.data_format == "stepwise" for item in items):
        step_mask = torch.zeros(padded.input_ids.shape, dtype=torch.bool)
        step_labels = torch.zeros(padded.input_ids.shape, dtype=torch.float32)
        for item, start in zip(items, offsets, strict=True):
            prompt_length = len(item.sequences[0].prompt_ids)
            for end, label in zip(item.step_ends, item.step_labels, strict=True):
                step_mask[start, prompt_length + end] = True
                step_labels[start, prompt_length + end] = float(label)
        fields["step_mask"] = step_mask
        fields["step_labels"] = step_labels
    return RewardFeedback(sequences=padded, num_items=sum(item.count for item in items), **fields)


# ----------------------------------------------------------------------------------------------
# Held-out split and evaluation
# ----------------------------------------------------------------------------------------------


def split_records(records: Sequence[Any], fraction: float, seed: int) -> tuple[list[Any], list[Any]]:
    """Training and held-out records; records that share a group (``group_id``, else the prompt) stay together.

    Holding out whole prompts measures whether the reward carries over to prompts it never saw.
    """
    keys: dict[Any, list[int]] = {}
    for index, record in enumerate(records):
        key = getattr(record, "group_id", None) or ("prompt", getattr(record, "prompt", index))
        keys.setdefault(key, []).append(index)
    groups = list(keys.values())
    random.Random(seed).shuffle(groups)
    target = round(len(records) * fraction)
    heldout: set[int] = set()
    for group in groups:
        if len(heldout) >= target:
            break
        heldout.update(group)
    train = [record for index, record in enumerate(records) if index not in heldout]
    return train, [record for index, record in enumerate(records) if index in heldout]


def evaluate_reward_model(model: Any, pairs: Sequence[Any], *, batch_size: int = 32) -> dict[str, float]:
    """Pairwise accuracy and margin of a reward network (or ensemble) on held-out feedback.

    ``pairs`` may be any records; they are turned into pairs (ties left out). A pair whose
    ``aspect`` names one of the model's heads is judged on that head; other pairs on the
    model's scorer (its weighted heads, or its step aggregate for a process reward model).

    Returns:
        ``accuracy`` (share of pairs with r(chosen) > r(rejected)), ``margin`` (mean
        r(chosen) − r(rejected)), ``chosen`` and ``rejected`` (mean rewards) and ``pairs``.
    """
    compared = to_pairs(pairs, ties="skip")
    if not compared:
        raise ValueError("evaluate_reward_model got no pairs to compare (ties are left out).")
    prompts = [pair.prompt for pair in compared] * 2
    completions = [pair.chosen for pair in compared] + [pair.rejected for pair in compared]
    combined = torch.tensor(model.scorer()(prompts, completions), dtype=torch.float32)
    aspects = tuple(getattr(model, "aspects", ()))
    if len(aspects) > 1 and any(pair.aspect in aspects for pair in compared):
        heads = model.score(prompts, completions, batch_size=batch_size)
        for row, pair in enumerate(compared):
            if pair.aspect in aspects:
                column = aspects.index(pair.aspect)
                combined[row] = heads[row, column]
                combined[row + len(compared)] = heads[row + len(compared), column]
    chosen, rejected = combined[: len(compared)], combined[len(compared) :]
    return {
        "accuracy": float((chosen > rejected).float().mean()),
        "margin": float((chosen - rejected).mean()),
        "chosen": float(chosen.mean()),
        "rejected": float(rejected.mean()),
        "pairs": float(len(compared)),
    }


# ----------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------


class RewardTrainer(OptimiserLoop):
    """Runs optimiser steps of a preference-model objective on a reward network."""

    def __init__(
        self,
        model: RewardNetwork,
        objective: PreferenceModel,
        items: Sequence[RewardItem],
        config: RewardTrainConfig,
        *,
        pad_token_id: int,
        run_dir: str | Path,
        device: torch.device | str = "cpu",
        evaluate: Callable[[], Mapping[str, float]] | None = None,
        on_step: StepCallback | None = None,
        on_checkpoint: Callable[[int, Path], None] | None = None,
        progress: bool = False,
        stage: str = "preference model",
    ) -> None:
        if not items:
            raise ConfigError("there is no training data: the feedback produced no item for this preference model.")
        if model.num_heads != objective.num_heads():
            raise ConfigError(
                f"preference model {objective.name!r} trains {objective.num_heads()} heads; "
                f"the reward network has {model.num_heads}.",
                method=objective.name,
            )
        aspects = getattr(objective, "aspects", None)
        self.aspects = tuple(aspects) if aspects is not None else None
        if self.aspects is not None:
            _aspect_indices([item for item in items if item.data_format == "pairwise"], self.aspects)
        super().__init__(
            model, items, config, run_dir=Path(run_dir), on_checkpoint=on_checkpoint, what="the reward network"
        )
        self.objective = objective
        self.pad_token_id = pad_token_id
        self.device = torch.device(device)
        self.evaluate = evaluate
        self.on_step = on_step
        self.progress = progress
        self.stage = stage

    def train_step(self) -> dict[str, float]:
        """One optimiser step over ``grad_accum`` micro-batches; returns the step's metrics."""
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        micro = [self.next_micro_batch() for _ in range(self.config.grad_accum)]
        num_items = sum(self.items[index].count for indices in micro for index in indices)
        totals: dict[str, float] = {}
        for indices in micro:
            feedback = collate_rewards(
                [self.items[index] for index in indices], self.pad_token_id, aspects=self.aspects
            )
            feedback = feedback.to(self.device)
            output = self.objective.loss(feedback.reward_batch(self.model(feedback.sequences), num_items))
            check_loss(output.loss, self.step + 1, self.objective, inputs="the batch's rewards")
            output.loss.backward()
            share = feedback.num_items / max(num_items, 1)
            for key, value in output.metrics.items():
                totals[key] = totals.get(key, 0.0) + share * float(value)
            totals["loss"] = totals.get("loss", 0.0) + float(output.loss.detach())
        self.apply_update(totals)
        return totals

    def fit(self) -> dict[str, float]:
        """Train until ``config.steps``; held-out metrics (``eval/...``) join the step's metrics when measured."""
        metrics: dict[str, float] = {}
        started = time.perf_counter()
        with StageProgress(self.stage, self.config.steps, enabled=self.progress, initial=self.step) as bar:
            while self.step < self.config.steps:
                metrics = self.train_step()
                metrics["elapsed_s"] = round(time.perf_counter() - started, 3)
                last = self.step == self.config.steps
                due = last or (self.config.eval_every and self.step % self.config.eval_every == 0)
                if due and self.evaluate is not None:
                    metrics.update({f"eval/{key}": float(value) for key, value in self.evaluate().items()})
                if self.on_step is not None and (self.step % self.config.log_every == 0 or last):
                    self.on_step(self.step, metrics)
                bar.update(self.step, metrics)
                if self.config.checkpoint_every and self.step % self.config.checkpoint_every == 0:
                    self.save()
        return metrics


# ----------------------------------------------------------------------------------------------
# The stage
# ----------------------------------------------------------------------------------------------


def build_network(objective: PreferenceModel, tokenizer: Any, config: RewardTrainConfig) -> RewardNetwork:
    """The fresh network an objective trains: heads on a backbone, or a policy's implicit reward."""
    if not (config.path or config.demo):
        raise ConfigError(
            "the preference model needs a starting network: set path = '<local dir>' or demo = true.", field="path"
        )
    if getattr(objective, "implicit_reward", False):
        from prefcore.engine.models import frozen_copy

        if config.demo:
            from prefcore.demo.model import build_tiny_model

            policy = build_tiny_model(tokenizer, seed=config.seed)
        else:
            from prefcore.engine.models import load_pretrained

            policy = load_pretrained(str(config.path), torch.device("cpu"))
        beta = objective.config.beta
        return ImplicitRewardModel(policy, frozen_copy(policy), tokenizer, beta, max_length=config.max_length)
    model = build_reward_model(
        tokenizer,
        path=config.path,
        demo=config.demo,
        num_heads=objective.num_heads(),
        aspects=getattr(objective, "aspects", None),
        seed=config.seed,
        max_length=config.max_length,
    )
    scoring_rule = getattr(objective, "scoring_rule", None)
    if callable(scoring_rule):
        rule = scoring_rule()
        model.check_scoring(rule)
        model.scoring = rule
    return model


def train_preference_model(
    records: Sequence[Any],
    objective: PreferenceModel,
    tokenizer: Any,
    config: RewardTrainConfig,
    *,
    run_dir: str | Path,
    device: torch.device | str = "cpu",
    on_step: StepCallback | None = None,
    on_checkpoint: Callable[[int, Path], None] | None = None,
    model: RewardNetwork | None = None,
    resume: bool = False,
    progress: bool = False,
    stage: str = "preference model",
) -> RewardNetwork:
    """Train a reward network on feedback records with ``objective``; the pipeline's preference-model stage.

    Arguments:
        records: feedback records (any format the objective's data formats can be built from).
        objective: a configured ``PreferenceModel``.
        tokenizer: the tokenizer of the backbone (and of the policy that will use the reward).
        config: the stage's options.
        run_dir: this stage's folder: ``checkpoints/`` and the final ``model/`` go inside.
        device: where to train.
        on_step: ``on_step(step, metrics)`` every ``log_every`` steps; held-out metrics as ``eval/...``.
        on_checkpoint: ``on_checkpoint(step, path)`` after each checkpoint.
        model: start from this network instead of building one from ``config``.
        resume: continue from the newest checkpoint; a finished stage (``model/`` written) is loaded, not retrained.
        progress: show the stage's progress (a bar on a terminal, else log lines) named ``stage``.
    Returns:
        the trained network (also saved in ``run_dir/model``).
    """
    run_dir = Path(run_dir)
    final = run_dir / "model"
    if resume and (final / METADATA_FILE).is_file():
        return load_reward_network(final, device=device, tokenizer=tokenizer)
    train, heldout = split_records(list(records), config.heldout_fraction, config.seed)
    network = model if model is not None else build_network(objective, tokenizer, config)
    network.to(device)
    items = build_reward_items(
        train,
        objective,
        tokenizer,
        max_length=config.max_length,
        truncation=config.truncation,
        ties=config.ties,
        rank_gap_margin=config.rank_gap_margin,
    )
    heldout_pairs = to_pairs(heldout, ties="skip") if heldout else []

    def evaluate() -> dict[str, float]:
        return evaluate_reward_model(network, heldout_pairs, batch_size=config.eval_batch_size)

    trainer = RewardTrainer(
        network,
        objective,
        items,
        config,
        pad_token_id=tokenizer.pad_token_id,
        run_dir=run_dir,
        device=device,
        evaluate=evaluate if heldout_pairs else None,
        on_step=on_step,
        on_checkpoint=on_checkpoint,
        progress=progress,
        stage=stage,
    )
    if resume:
        trainer.resume()
    trainer.fit()
    trainer.save_final()
    network.save(final)
    return network
