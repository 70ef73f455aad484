"""The engine options that users of TRL and OpenRLHF expect, on the demo's tiny model.

``[train] epochs``, ``gradient_checkpointing``, ``max_prompt_length`` with declared
truncation sides, the data order (``shuffle``, ``group_by_length``), ``[run] report_to``
with the wandb logger (a stand-in ``wandb`` module: the package is no dependency and the
tests never reach a network), and the PEFT adapter a LoRA run saves. Every default must
keep today's behaviour, which the tests check against the former code written out here.
"""

from __future__ import annotations

import importlib.machinery
import random
import sys
import types
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from prefcore.config import build_config
from prefcore.data import BinaryLabel
from prefcore.demo.model import build_tiny_model
from prefcore.demo.task import preference_pairs
from prefcore.demo.tokenizer import build_tokenizer
from prefcore.engine.batching import build_items
from prefcore.engine.batching import collate
from prefcore.engine.batching import micro_batches
from prefcore.engine.lifecycle_loggers import WandbLogger
from prefcore.engine.lifecycle_loggers import WandbUnavailableError
from prefcore.engine.lifecycle_loggers import run_loggers
from prefcore.engine.logprobs import completion_token_logps
from prefcore.engine.loop import epoch_steps
from prefcore.engine.models import ADAPTER_FOLDER
from prefcore.engine.models import apply_lora
from prefcore.engine.models import enable_gradient_checkpointing
from prefcore.engine.models import save_model
from prefcore.engine.sequences import tokenize_sequence
from prefcore.engine.trainer import Trainer
from prefcore.engine.trainer import WeightedObjective
from prefcore.engine.trainer import with_epoch_limit
from prefcore.errors import ConfigError
from prefcore.errors import DataError
from prefcore.registry import Registry
from prefcore.settings import DEFAULT_TRAIN_STEPS
from prefcore.settings import ModelConfig
from prefcore.settings import RunSettings
from prefcore.settings import TrainConfig

REGISTRY = Registry.from_environment(third_party=False)
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return build_tokenizer()


@pytest.fixture(scope="module")
def pair_items(tokenizer: Any) -> list[Any]:
    return build_items(preference_pairs(count=30, seed=4), "pairwise", tokenizer, max_length=64)


def _sft_trainer(tokenizer: Any, items: list[Any], config: TrainConfig, run_dir: Path, seed: int = 0) -> Trainer:
    return Trainer(
        build_tiny_model(tokenizer, seed=seed),
        [WeightedObjective(REGISTRY.create("usage", "sft", {}))],
        items,
        config,
        pad_token_id=tokenizer.pad_token_id,
        run_dir=run_dir,
        device=CPU,
    )


# -- [train] epochs -----------------------------------------------------------------------------


def test_steps_default_and_epochs_decide_when_steps_is_omitted() -> None:
    assert TrainConfig().steps == DEFAULT_TRAIN_STEPS == 100  # today's default
    assert TrainConfig(epochs=2).steps == 0  # omitted: the epochs decide
    assert TrainConfig(steps=0, epochs=2).steps == 0
    assert TrainConfig(steps=5, epochs=2).steps == 5  # both: the first limit reached
    built = build_config(TrainConfig, {"epochs": 1.5}, method="[train]")
    assert (built.steps, built.epochs) == (0, 1.5)
    for options, field in (
        ({"steps": 0}, "steps"),
        ({"steps": -1, "epochs": 1}, "steps"),
        ({"epochs": -1}, "epochs"),
        ({"max_prompt_length": -3}, "max_prompt_length"),
    ):
        with pytest.raises(ConfigError) as excinfo:
            build_config(TrainConfig, options, method="[train]")
        assert field in str(excinfo.value)


@pytest.mark.parametrize(
    ("epochs", "items", "batch_size", "grad_accum", "steps"),
    [
        (1, 30, 4, 1, 8),  # 8 micro-batches, the last of 2 items
        (2, 30, 4, 1, 16),
        (1, 30, 4, 3, 3),  # 8 batches in steps of 3: the third step runs into the next epoch
        (0.5, 30, 4, 1, 4),
        (0.3, 100, 10, 1, 3),  # 0.3 * 10 is 3.0000000000000004 in floats: still 3 steps
        (0.01, 30, 4, 1, 1),  # never fewer than one step
    ],
)
def test_epoch_steps(epochs: float, items: int, batch_size: int, grad_accum: int, steps: int) -> None:
    assert epoch_steps(epochs, items, batch_size, grad_accum) == steps


def test_epoch_limit_resolves_steps_for_the_scheduler_and_the_loop() -> None:
    assert with_epoch_limit(TrainConfig(steps=7), 30) == TrainConfig(steps=7)  # no epochs: unchanged
    assert with_epoch_limit(TrainConfig(epochs=2, batch_size=4), 30).steps == 16
    assert with_epoch_limit(TrainConfig(steps=5, epochs=2, batch_size=4), 30).steps == 5
    assert with_epoch_limit(TrainConfig(steps=50, epochs=2, batch_size=4), 30).steps == 16
    resolved = with_epoch_limit(TrainConfig(epochs=2, batch_size=4), 30)
    assert with_epoch_limit(resolved, 30) == resolved  # idempotent


def test_epochs_visit_every_item_once_per_epoch(tokenizer: Any, pair_items: list[Any], tmp_path: Path) -> None:
    config = TrainConfig(epochs=2, batch_size=4, lr=1e-3, progress=False, schedule="linear")
    trainer = _sft_trainer(tokenizer, pair_items, config, tmp_path)
    assert trainer.config.steps == 16
    seen: list[int] = []
    original = trainer.next_micro_batch

    def recording() -> list[int]:
        indices = original()
        seen.extend(indices)
        return indices

    trainer.next_micro_batch = recording  # type: ignore[method-assign]
    trainer.fit()
    assert trainer.step == 16
    count = len(pair_items)
    assert sorted(seen[:count]) == sorted(seen[count:]) == list(range(count))
    assert trainer.scheduler.get_last_lr()[0] == 0.0  # the linear schedule ends at the epochs' last step


# -- [train] gradient_checkpointing ------------------------------------------------------------


def _loss_and_grads(model: torch.nn.Module, batch: Any, fused: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.train()
    model.zero_grad(set_to_none=True)
    logps = completion_token_logps(model, batch.sequences, fused=fused, backend="torch")
    weights = torch.linspace(0.5, 1.5, logps.shape[0])[:, None]  # not only .sum(): rows weigh differently
    loss = -(logps * weights).sum() / batch.sequences.completion_mask.sum()
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), grads


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "logits"])
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(
    tokenizer: Any, pair_items: list[Any], fused: bool, lora: bool
) -> None:
    batch = collate(pair_items[:6], tokenizer.pad_token_id)

    def model() -> torch.nn.Module:
        net = build_tiny_model(tokenizer, seed=3)
        if lora:
            config = ModelConfig(demo=True, lora_rank=4, lora_targets=("q_proj", "v_proj", "lm_head"))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)  # PEFT draws the A matrices from the global generator
                net = apply_lora(net, config)
        return net

    plain_loss, plain_grads = _loss_and_grads(model(), batch, fused)
    checkpointed = model()
    enable_gradient_checkpointing(checkpointed)
    # Checkpointing runs each decoder layer's forward again in the backward pass. Module hooks do
    # not fire in the recompute, so the count comes from the MLP's forward itself.
    calls: list[int] = []
    layers = checkpointed.get_decoder().layers if not lora else checkpointed.get_base_model().get_decoder().layers
    mlp = layers[0].mlp
    forward = mlp.forward
    mlp.forward = lambda *args, **kwargs: calls.append(1) or forward(*args, **kwargs)
    loss, grads = _loss_and_grads(checkpointed, batch, fused)
    assert len(calls) == 2, "the first layer ran once: checkpointing is off"
    torch.testing.assert_close(loss, plain_loss)
    assert grads.keys() == plain_grads.keys() and grads
    for name, grad in grads.items():
        torch.testing.assert_close(grad, plain_grads[name], rtol=1e-5, atol=1e-7, msg=name)


def test_trainer_turns_gradient_checkpointing_on(tokenizer: Any, pair_items: list[Any], tmp_path: Path) -> None:
    steps = {}
    for flag in (False, True):
        config = TrainConfig(steps=2, batch_size=4, lr=1e-3, progress=False, gradient_checkpointing=flag)
        trainer = _sft_trainer(tokenizer, pair_items, config, tmp_path / str(flag))
        assert trainer.policy.model.gradient_checkpointing is flag
        steps[flag] = [trainer.train_step()["loss"] for _ in range(2)]
    assert steps[True] == pytest.approx(steps[False], rel=1e-5)


# -- [train] max_prompt_length and truncation sides --------------------------------------------


def _former_truncation(prompt: list[int], completion: list[int], max_length: int) -> tuple[list[int], list[int]]:
    """What ``tokenize_sequence`` did before the sides were declared (the default must equal it)."""
    overflow = len(prompt) + len(completion) - max_length
    if overflow > 0:
        keep = max(1, len(prompt) - overflow)
        prompt = prompt[len(prompt) - keep :]
        completion = completion[: max_length - len(prompt)]
    return prompt, completion


PROMPT = "the cat sat on the mat and the dog sat on the log"
COMPLETION = "the cat and the dog sat"


def _ids(tokenizer: Any) -> tuple[list[int], list[int]]:
    whole = tokenize_sequence(tokenizer, PROMPT, COMPLETION, max_length=512)
    return list(whole.prompt_ids), list(whole.completion_ids)


@pytest.mark.parametrize("max_length", [512, 20, 12, 9, 3])
def test_default_truncation_is_unchanged(tokenizer: Any, max_length: int) -> None:
    prompt, completion = _ids(tokenizer)
    cut = tokenize_sequence(tokenizer, PROMPT, COMPLETION, max_length=max_length)
    assert (list(cut.prompt_ids), list(cut.completion_ids)) == _former_truncation(prompt, completion, max_length)


def test_max_prompt_length_cuts_the_declared_side(tokenizer: Any) -> None:
    prompt, completion = _ids(tokenizer)
    assert len(prompt) > 6
    left = tokenize_sequence(tokenizer, PROMPT, COMPLETION, max_length=512, max_prompt_length=6)
    assert list(left.prompt_ids) == prompt[-6:] and list(left.completion_ids) == completion
    right = tokenize_sequence(
        tokenizer, PROMPT, COMPLETION, max_length=512, max_prompt_length=6, prompt_truncation_side="right"
    )
    assert list(right.prompt_ids) == prompt[:6]
    # A prompt within its limit is left alone; max_length still applies after it.
    both = tokenize_sequence(tokenizer, PROMPT, COMPLETION, max_length=8, max_prompt_length=6)
    assert list(both.prompt_ids) == prompt[-1:] and list(both.completion_ids) == completion[:7]
    with pytest.raises(DataError, match="max_prompt_length=6"):
        tokenize_sequence(tokenizer, PROMPT, COMPLETION, max_length=512, max_prompt_length=6, truncation="error")


def test_completion_truncation_side(tokenizer: Any) -> None:
    prompt, completion = _ids(tokenizer)
    max_length = 1 + len(completion) - 2  # one prompt token stays, two completion tokens go
    right = tokenize_sequence(tokenizer, PROMPT, COMPLETION, max_length=max_length)
    left = tokenize_sequence(tokenizer, PROMPT, COMPLETION, max_length=max_length, completion_truncation_side="left")
    assert list(right.completion_ids) == completion[:-2]
    assert list(left.completion_ids) == completion[2:]  # keeps the end, EOS included
    assert left.prompt_ids == right.prompt_ids == (prompt[-1],)


def test_build_items_passes_the_limits_on(tokenizer: Any) -> None:
    pairs = preference_pairs(count=4, seed=2)
    items = build_items(pairs, "pairwise", tokenizer, max_length=64, max_prompt_length=3)
    assert all(len(sequence.prompt_ids) <= 3 for item in items for sequence in item.sequences)
    default = build_items(pairs, "pairwise", tokenizer, max_length=64)
    assert any(len(sequence.prompt_ids) > 3 for item in default for sequence in item.sequences)


# -- data order: shuffle and group_by_length ---------------------------------------------------


def _former_micro_batches(items: list[Any], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    order = list(range(len(items)))
    random.Random(seed * 100_003 + epoch).shuffle(order)
    window = batch_size * 16
    order = [
        index
        for start in range(0, len(order), window)
        for index in sorted(order[start : start + window], key=lambda i: items[i].length)
    ]
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    random.Random(seed * 7_919 + epoch).shuffle(batches)
    return batches


def test_default_order_is_unchanged(pair_items: list[Any]) -> None:
    for epoch in range(3):
        assert micro_batches(pair_items, 4, seed=5, epoch=epoch) == _former_micro_batches(pair_items, 4, 5, epoch)


def test_no_shuffle_keeps_file_order(pair_items: list[Any]) -> None:
    plain = micro_batches(pair_items, 4, seed=5, epoch=1, shuffle=False, group_by_length=False)
    assert [index for batch in plain for index in batch] == list(range(len(pair_items)))
    assert plain == micro_batches(pair_items, 4, seed=9, epoch=3, shuffle=False, group_by_length=False)
    grouped = micro_batches(pair_items, 4, seed=5, epoch=1, shuffle=False)
    lengths = [pair_items[index].length for batch in grouped for index in batch]
    assert lengths == sorted(lengths)  # 30 items fit in one window of 16 batches


def test_shuffle_without_grouping_mixes_lengths(pair_items: list[Any]) -> None:
    batches = micro_batches(pair_items, 4, seed=5, epoch=0, group_by_length=False)
    flat = [index for batch in batches for index in batch]
    assert sorted(flat) == list(range(len(pair_items))) and flat != list(range(len(pair_items)))
    lengths = [pair_items[index].length for index in flat]
    assert lengths != sorted(lengths)


@pytest.mark.parametrize(("shuffle", "group_by_length"), [(False, False), (True, False), (False, True)])
def test_resume_continues_every_data_order(
    tokenizer: Any, pair_items: list[Any], tmp_path: Path, shuffle: bool, group_by_length: bool
) -> None:
    config = TrainConfig(
        steps=6, batch_size=4, lr=1e-3, progress=False, shuffle=shuffle, group_by_length=group_by_length, epochs=0
    )
    straight = _sft_trainer(tokenizer, pair_items, config, tmp_path / "straight")
    straight_losses = [straight.train_step()["loss"] for _ in range(6)]

    first = _sft_trainer(tokenizer, pair_items, replace(config, checkpoint_every=3), tmp_path / "resumed")
    losses = [first.train_step()["loss"] for _ in range(3)]
    first.save()
    second = _sft_trainer(tokenizer, pair_items, replace(config, checkpoint_every=3), tmp_path / "resumed", seed=9)
    assert second.resume() and second.step == 3
    losses += [second.train_step()["loss"] for _ in range(3)]
    assert losses == pytest.approx(straight_losses, rel=1e-6)


# -- [run] report_to and the wandb logger ------------------------------------------------------


class _FakeRun:
    def __init__(self, **init: Any) -> None:
        self.init = init
        self.defined: list[tuple[str, str | None]] = []
        self.logged: list[dict[str, float]] = []
        self.finished = 0

    def define_metric(self, name: str, step_metric: str | None = None) -> None:
        self.defined.append((name, step_metric))

    def log(self, values: dict[str, float]) -> None:
        self.logged.append(values)

    def finish(self) -> None:
        self.finished += 1


@pytest.fixture
def fake_wandb(monkeypatch: pytest.MonkeyPatch) -> list[_FakeRun]:
    """A stand-in ``wandb`` module in ``sys.modules``; returns the runs it started."""
    runs: list[_FakeRun] = []
    module = types.ModuleType("wandb")
    module.__spec__ = importlib.machinery.ModuleSpec("wandb", None)

    def init(**kwargs: Any) -> _FakeRun:
        runs.append(_FakeRun(**kwargs))
        return runs[-1]

    module.init = init  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "wandb", module)
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    return runs


def test_wandb_logger_logs_groups_on_their_own_step_axes(fake_wandb: list[_FakeRun], tmp_path: Path) -> None:
    logger = WandbLogger(tmp_path, name="demo", config={"train": {"steps": 2}})
    assert not fake_wandb, "no wandb run before the first metric"
    logger.prefcore_evaluation_end(run_dir=tmp_path, step=0, metrics={"accuracy": 0.5})
    logger.prefcore_train_step_end(run_dir=tmp_path, step=1, metrics={"loss": 0.7, "warm_start/nll": 2})
    (run,) = fake_wandb
    assert run.init["project"] == "prefcore" and run.init["name"] == "demo" and run.init["dir"] == str(tmp_path)
    assert run.init["resume"] == "allow" and run.init["config"] == {"train": {"steps": 2}}
    assert ("train/*", "train/step") in run.defined and ("eval/*", "eval/step") in run.defined
    assert run.logged == [
        {"eval/accuracy": 0.5, "eval/step": 0},
        {"train/loss": 0.7, "train/warm_start/nll": 2.0, "train/step": 1},
    ]
    logger.prefcore_run_end(run_dir=tmp_path)
    logger.close()
    assert run.finished == 1

    # A resumed run continues the same wandb run; WANDB_PROJECT is wandb's own setting.
    again = WandbLogger(tmp_path)
    again.prefcore_train_step_end(run_dir=tmp_path, step=2, metrics={"loss": 0.6})
    assert fake_wandb[1].init["id"] == run.init["id"] == (tmp_path / "wandb_run_id").read_text()


def test_wandb_project_from_the_environment(
    fake_wandb: list[_FakeRun], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_PROJECT", "mine")
    WandbLogger(tmp_path).prefcore_train_step_end(run_dir=tmp_path, step=1, metrics={"loss": 1.0})
    assert fake_wandb[0].init["project"] == "mine"


def test_report_to_chooses_the_loggers(fake_wandb: list[_FakeRun], tmp_path: Path) -> None:
    assert RunSettings().report_to == ("tensorboard",)  # today's loggers: csv, and TensorBoard when installed
    assert [kind for kind, _ in run_loggers(tmp_path)] == ["csv_metrics", "tensorboard"]
    assert [kind for kind, _ in run_loggers(tmp_path, ())] == ["csv_metrics"]
    kinds = [kind for kind, _ in run_loggers(tmp_path, ("csv", "wandb"), name="x")]
    assert kinds == ["csv_metrics", "wandb"]
    assert build_config(RunSettings, {"report_to": ["wandb", "tensorboard"]}, method="[run]").report_to == (
        "wandb",
        "tensorboard",
    )
    with pytest.raises(ConfigError, match="unknown logger 'mlflow'"):
        build_config(RunSettings, {"report_to": ["mlflow"]}, method="[run]")


def test_wandb_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    with pytest.raises(WandbUnavailableError, match=r"prefcore\[wandb\]"):
        WandbLogger(tmp_path)
    with pytest.raises(ConfigError, match=r"pip install 'prefcore\[wandb\]'"):
        build_config(RunSettings, {"report_to": ["wandb"]}, method="[run]")


# -- LoRA adapters in PEFT's format ------------------------------------------------------------


def test_lora_run_saves_an_adapter_that_peft_loads(tokenizer: Any, pair_items: list[Any], tmp_path: Path) -> None:
    peft = pytest.importorskip("peft")  # a dev dependency; the run itself asks for prefcore[lora]
    from transformers import AutoModelForCausalLM

    config = ModelConfig(demo=True, lora_rank=4, lora_targets=("q_proj", "v_proj", "lm_head"))
    policy = apply_lora(build_tiny_model(tokenizer, seed=2), config)
    with torch.no_grad():  # B starts at zero: move every adapter so that it changes the logits
        for name, parameter in policy.named_parameters():
            if "lora_" in name:
                parameter.add_(0.05 * torch.randn_like(parameter))
    save_model(policy, tokenizer, tmp_path / "model")
    adapter = tmp_path / "model" / ADAPTER_FOLDER
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()

    batch = collate(pair_items[:4], tokenizer.pad_token_id).sequences
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "model", local_files_only=True).eval()
    restored = peft.PeftModel.from_pretrained(build_tiny_model(tokenizer, seed=2), adapter).eval()
    with torch.no_grad():
        expected = merged(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        logits = restored(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        base = build_tiny_model(tokenizer, seed=2)(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(base.logits, expected, atol=1e-3), "the adapter must matter for this check"


def test_full_weight_run_saves_no_adapter(tokenizer: Any, tmp_path: Path) -> None:
    save_model(build_tiny_model(tokenizer, seed=2), tokenizer, tmp_path / "model")
    assert (tmp_path / "model" / "model.safetensors").is_file()
    assert not (tmp_path / "model" / ADAPTER_FOLDER).exists()


def test_unpaired_items_keep_their_labels(tokenizer: Any) -> None:
    # build_items' new keywords leave every other path alone: labels, mismatched partners.
    labels = [BinaryLabel("the cat", "sat on the mat", True), BinaryLabel("the dog", "sat on the log", False)]
    items = build_items(labels, "unpaired", tokenizer, max_length=64, mismatched=True, max_prompt_length=2)
    assert [item.label for item in items] == [True, False]
    assert all(item.mismatched is not None and len(item.mismatched.prompt_ids) <= 2 for item in items)
