"""The options of the engine's run-file sections: ``[run]``, ``[warm_start]``, ``[model]``, ``[train]``,
``[reward_model]``, ``[self_play]``, ``[online]``, ``[loop]`` and ``[distributed]``.

They live apart from the stages that use them, in a module that imports no torch, so that
``prefcore info train`` and a dry run read and check them in a fraction of a second. Each
field carries its one-line doc (``option(..., doc=...)``), which ``prefcore info`` prints.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from prefcore.errors import ConfigError
from prefcore.methods import option

ENSEMBLE_COMBINES: tuple[str, ...] = ("mean", "min", "mean_minus_std")
"""How several preference models' scores combine (``prefcore.engine.reward_ensemble``)."""

DEFAULT_TRAIN_STEPS = 100
"""``[train] steps`` when the file sets neither steps nor epochs."""

REPORT_TO: tuple[str, ...] = ("csv", "tensorboard", "wandb")
"""Metric loggers ``[run] report_to`` may name (``prefcore.engine.lifecycle_loggers``); csv is always on."""

LOOP_KINDS: tuple[str, ...] = ("online_dpo", "best_of_n", "human_online_dpo")
"""``[loop] kind`` values (``prefcore.engine.online_loops``); "none" (the default) runs no loop."""

__all__ = [
    "DEFAULT_TRAIN_STEPS",
    "ENSEMBLE_COMBINES",
    "LOOP_KINDS",
    "REPORT_TO",
    "DistributedConfig",
    "LoopConfig",
    "ModelConfig",
    "OnlineLoopConfig",
    "RewardTrainConfig",
    "RunSettings",
    "SelfPlayConfig",
    "TrainConfig",
    "TrainLoopConfig",
    "WarmStartConfig",
]


def _installed(package: str) -> bool:
    """Whether ``package`` can be imported, found without importing it: the check stays fast and torch-free."""
    try:
        return importlib.util.find_spec(package) is not None
    except ValueError:  # in sys.modules without a spec (a stand-in module put there by a test)
        return sys.modules.get(package) is not None


@dataclass(frozen=True)
class RunSettings:
    """Options of the ``[run]`` section."""

    name: str = option("run", doc="a label for the report")
    out_dir: str = option("runs", doc="parent folder of run folders when --out is not given")
    seed: int = option(0, doc="seed of data splits, model initialisation and evaluation draws")
    reference: str = option("model", doc="'model' (frozen copy), 'precomputed' (cached sums) or 'none'")
    heldout_fraction: float = option(
        0.1, doc="share of feedback records held out for evaluation (whole prompts, one seeded split)"
    )
    heldout: str | list[str] | None = option(
        None, doc="held-out preference file(s) for evaluation instead of a split: all feedback trains"
    )
    eval_prompts: int = option(64, doc="held-out prompts evaluated per evaluation pass")
    max_new_tokens: int = option(24, doc="generation length at evaluation")
    temperature: float = option(0.7, doc="sampling temperature at evaluation (0 = greedy)")
    samples_per_prompt: int = option(1, doc="completions sampled per held-out prompt at evaluation")
    reward_labels: bool = option(
        False, doc="relabel the training pairs with the trained preference model (feedback → RM → usage)"
    )
    threads: int = option(0, doc="CPU threads for torch; 0 keeps torch's default (1 is fastest for tiny models)")
    ensemble: Literal["mean", "min", "mean_minus_std", "soup"] = option(
        "mean",
        doc="how several [[preference_model]] sections make one reward: their scores' mean, min or "
        "mean_minus_std, or 'soup' (their weights averaged, each section's weight its share)",
    )
    ensemble_penalty: float = option(0.0, doc="λ of ensemble = 'mean_minus_std' (score = mean − λ·std)")
    report_to: tuple[str, ...] = option(
        ("tensorboard",),
        doc="loggers besides metrics.csv (always written): 'tensorboard' (when installed), 'wandb'; [] = csv only",
    )

    def __post_init__(self) -> None:
        for name, low in (("eval_prompts", 1), ("max_new_tokens", 1), ("samples_per_prompt", 1), ("threads", 0)):
            if getattr(self, name) < low:
                raise ValueError(f"{name} must be >= {low}. Got {getattr(self, name)}.")
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy). Got {self.temperature}.")
        if self.reference not in ("model", "precomputed", "none"):
            raise ValueError(f"reference must be 'model', 'precomputed' or 'none'. Got {self.reference!r}.")
        if not 0 <= self.heldout_fraction < 1:
            raise ValueError(f"heldout_fraction must be in [0, 1). Got {self.heldout_fraction}.")
        for path in self.heldout_files:
            if not path.is_file():
                raise ValueError(f"heldout: no file {str(path)!r}; name an existing preference file.")
        if self.ensemble not in (*ENSEMBLE_COMBINES, "soup"):
            raise ValueError(f"ensemble must be one of {', '.join(ENSEMBLE_COMBINES)}, soup. Got {self.ensemble!r}.")
        if not self.ensemble_penalty >= 0:
            raise ValueError(f"ensemble_penalty must be >= 0. Got {self.ensemble_penalty}.")
        if self.ensemble_penalty and self.ensemble != "mean_minus_std":
            raise ValueError("ensemble_penalty applies only to ensemble = 'mean_minus_std'.")
        for logger_name in self.report_to:
            if logger_name not in REPORT_TO:
                raise ValueError(f"report_to: unknown logger {logger_name!r}; choose from {', '.join(REPORT_TO)}.")
        if "wandb" in self.report_to and not _installed("wandb"):
            raise ValueError("report_to names 'wandb', which needs the wandb package: pip install 'prefcore[wandb]'.")

    @property
    def heldout_files(self) -> list[Path]:
        """The held-out files named by ``heldout`` (none: the feedback is split)."""
        if self.heldout is None:
            return []
        return [Path(path) for path in ([self.heldout] if isinstance(self.heldout, str) else self.heldout)]


@dataclass(frozen=True)
class WarmStartConfig:
    """Options of the ``[warm_start]`` section: SFT before preference training."""

    steps: int = option(0, doc="SFT steps before preference training; 0 skips the warm start")
    data: str | None = option(
        None, doc="a file of demonstrations to warm-start on (default: the feedback's demonstrations or chosen)"
    )
    lr: float = option(1e-3, doc="SFT learning rate")
    batch_size: int = option(16, doc="SFT sequences per step")
    warmup_steps: int = option(0, doc="linear warm-up steps")

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch_size < 1 or self.warmup_steps < 0:
            raise ValueError(
                f"steps and warmup_steps must be >= 0 (steps = 0 skips the warm start) and batch_size >= 1. "
                f"Got steps = {self.steps}, warmup_steps = {self.warmup_steps}, batch_size = {self.batch_size}."
            )
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0. Got {self.lr}.")
        if self.data is not None:
            if not Path(self.data).is_file():
                raise ValueError(f"data: no file {self.data!r}; name an existing demonstrations file.")
            if self.steps == 0:
                raise ValueError("data names a demonstrations file but steps = 0; set steps to warm start on it.")


@dataclass(frozen=True)
class ModelConfig:
    """Options of the ``[model]`` section."""

    path: str | None = option(
        None, doc="local directory of a transformers causal LM and its tokenizer, or a local .gguf file"
    )
    demo: bool = option(False, doc="build the embedded tiny demo model instead of loading one")
    dtype: Literal["float32", "bfloat16", "float16"] = option("float32", doc="dtype of the loaded weights")
    device: str = option("auto", doc="'auto' (CUDA when available), 'cpu' or 'cuda[:N]'")
    chat_template: str | None = option(
        None, doc="chat template for conversational data: 'chatml', a Jinja file, or the template text"
    )
    lora_rank: int = option(0, doc="LoRA rank; 0 trains all weights")
    lora_alpha: float = option(16.0, doc="LoRA scaling numerator")
    lora_dropout: float = option(0.0, doc="LoRA dropout on adapter inputs")
    lora_targets: tuple[str, ...] = option(
        ("q_proj", "k_proj", "v_proj", "o_proj"), doc="module names LoRA adapts; may include 'lm_head'"
    )

    def __post_init__(self) -> None:
        if (self.path is None) == (not self.demo):
            raise ValueError('set exactly one of [model] path = "<local dir>" or demo = true.')
        if self.lora_rank < 0:
            raise ValueError(f"lora_rank must be >= 0. Got {self.lora_rank}.")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_dropout must be in [0, 1). Got {self.lora_dropout}.")


@dataclass(frozen=True)
class TrainLoopConfig:
    """The options every training stage shares: optimiser, schedule, lengths, seed, checkpoints, logging.

    ``[train]`` and ``[reward_model]`` both run ``prefcore.engine.loop.OptimiserLoop``; their common
    fields live here once, with the policy trainer's defaults, so that the two sections cannot drift
    apart in name, meaning or validation. A section overrides a default by declaring the field again.
    """

    steps: int = option(100, doc="optimiser steps")
    batch_size: int = option(8, doc="comparisons per micro-batch")
    grad_accum: int = option(1, doc="micro-batches per optimiser step")
    lr: float = option(5e-5, doc="peak learning rate of AdamW")
    weight_decay: float = option(0.0, doc="AdamW weight decay")
    warmup_steps: int = option(0, doc="linear warm-up steps")
    schedule: Literal["cosine", "linear", "constant"] = option("cosine", doc="learning-rate decay after warm-up")
    max_grad_norm: float = option(1.0, doc="gradient clipping norm; 0 disables clipping")
    max_length: int = option(512, doc="longest prompt + completion in tokens")
    truncation: Literal["truncate", "error"] = option("truncate", doc="what to do with over-long records")
    seed: int = option(0, doc="seed of data order, initialisation and dropout")
    checkpoint_every: int = option(0, doc="save a checkpoint every N steps and at the end; 0 = no checkpoint")
    keep_checkpoints: int = option(2, doc="how many checkpoints to keep; 0 keeps all")
    eval_every: int = option(0, doc="evaluate every N steps; 0 = only before and after training")
    log_every: int = option(1, doc="report metrics every N steps")

    def __post_init__(self) -> None:
        self._check_steps()
        for name in ("batch_size", "grad_accum", "max_length", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1. Got {getattr(self, name)}.", field=name)
        if not (self.lr > 0 and math.isfinite(self.lr)):  # also refuses NaN
            raise ConfigError(f"lr must be a finite number > 0. Got {self.lr}.", field="lr")
        for name in ("warmup_steps", "checkpoint_every", "eval_every", "max_grad_norm", "weight_decay"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0. Got {getattr(self, name)}.", field=name)
        if self.keep_checkpoints < 0:
            raise ConfigError(
                f"keep_checkpoints must be >= 0 (0 keeps all). Got {self.keep_checkpoints}.", field="keep_checkpoints"
            )

    def _check_steps(self) -> None:
        """A section whose length can come from elsewhere (``[train] epochs``) overrides this."""
        if self.steps < 1:
            raise ConfigError(f"steps must be >= 1. Got {self.steps}.", field="steps")


@dataclass(frozen=True)
class TrainConfig(TrainLoopConfig):
    """Options of the ``[train]`` section."""

    precision: Literal["fp32", "bf16", "bf16-params", "fp16", "auto"] = option(
        "fp32",
        doc="autocast dtype of the forward passes (fp32 master weights, fp32 loss and log-sum-exp): bf16 on GPU "
        "and on CPUs with native bf16; fp16 on GPU only; auto = bf16 where the device has native bf16, else fp32; "
        "bf16-params = forward and backward on bf16 copies of the weights, activations in bf16 too (FSDP2's "
        "param_dtype recipe), fp32 master weights, gradients and optimiser",
    )
    fused_lm_head: bool = option(True, doc="compute log-probs with the fused LM-head kernel")
    share_prompts: bool = option(
        False,
        doc="run each prompt once for the completions that share it (a pair's chosen and rejected), policy and "
        "reference: same losses up to float summation order; off with gradient checkpointing",
    )
    kernel_backend: Literal["auto", "triton", "torch"] = option("auto", doc="kernel path; auto = Triton on CUDA")
    loss_aware_head: bool = option(
        False,
        doc="a lone dpo, cdpo, ipo, hinge or simpo objective computes its loss and the LM head's gradients in one "
        "pass over the logits (no recompute in the backward): same losses up to float summation order",
    )
    progress: bool = option(True, doc="show each stage's progress bar (on a terminal) or ten log lines")
    steps: int | None = option(
        None,
        doc=f"optimiser steps ({DEFAULT_TRAIN_STEPS} when neither steps nor epochs is set); "
        "with epochs > 0, 0 or omitted lets the epochs decide, else the first limit reached ends training",
    )
    epochs: float = option(
        0.0, doc="passes over the training items (fractions allowed); 0 = steps decide (one step = grad_accum batches)"
    )
    gradient_checkpointing: bool = option(
        False, doc="recompute each layer's activations in the backward pass: less memory for one more forward pass"
    )
    max_prompt_length: int = option(
        0, doc="longest prompt in tokens, cut on prompt_truncation_side before max_length applies; 0 = no own limit"
    )
    prompt_truncation_side: Literal["left", "right"] = option(
        "left", doc="which end of an over-long prompt is dropped; 'left' keeps the text next to the completion"
    )
    completion_truncation_side: Literal["left", "right"] = option(
        "right", doc="which end of a completion is dropped when prompt + completion still exceed max_length"
    )
    shuffle: bool = option(
        True, doc="reshuffle the training items every epoch (seeded by seed); false keeps file order"
    )
    group_by_length: bool = option(
        True, doc="put items of similar length into the same micro-batch (less padding), within windows of 16 batches"
    )

    def __post_init__(self) -> None:
        if self.steps is None:  # frozen: the default depends on epochs, so it is filled in here
            object.__setattr__(self, "steps", 0 if self.epochs > 0 else DEFAULT_TRAIN_STEPS)
        super().__post_init__()
        if not (math.isfinite(self.epochs) and self.epochs >= 0):
            raise ConfigError(
                f"epochs must be a finite number >= 0 (0 = steps decide). Got {self.epochs}.", field="epochs"
            )
        if self.max_prompt_length < 0:
            raise ConfigError(
                f"max_prompt_length must be >= 0 (0 = only max_length). Got {self.max_prompt_length}.",
                field="max_prompt_length",
            )

    def _check_steps(self) -> None:
        if self.steps < 0 or (self.steps == 0 and self.epochs == 0):
            raise ConfigError(
                f"steps must be >= 1, or 0 with epochs > 0 (the epochs decide). Got steps = {self.steps}, "
                f"epochs = {self.epochs}.",
                field="steps",
            )


@dataclass(frozen=True)
class RewardTrainConfig(TrainLoopConfig):
    """Options of the preference-model training stage."""

    steps: int = option(200, doc="optimiser steps")
    batch_size: int = option(16, doc="items (pairs, lists, labelled completions) per micro-batch")
    lr: float = option(1e-4, doc="peak learning rate of AdamW")
    seed: int = option(0, doc="seed of the split, the data order and the heads' initialisation")
    eval_every: int = option(0, doc="measure held-out accuracy every N steps; 0 = only at the end")
    path: str | None = option(None, doc="local folder of the backbone (a causal LM or AutoModel, save_pretrained)")
    demo: bool = option(False, doc="start from the demo's tiny Llama instead of a local model")
    ties: Literal["skip", "keep"] = option("skip", doc="tie pairs: leave out, or keep (soft_bradley_terry: p = 0.5)")
    rank_gap_margin: bool = option(False, doc="pairs made from rankings carry the rank gap as their margin")
    heldout_fraction: float = option(0.1, doc="share of prompts held out to measure pairwise accuracy")
    eval_batch_size: int = option(32, doc="completions per scoring batch at evaluation")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.eval_batch_size < 1:
            raise ConfigError(f"eval_batch_size must be >= 1. Got {self.eval_batch_size}.", field="eval_batch_size")
        if not 0 <= self.heldout_fraction < 1:
            raise ConfigError(
                f"heldout_fraction must be in [0, 1). Got {self.heldout_fraction}.", field="heldout_fraction"
            )
        if self.path is not None and self.demo:
            raise ConfigError("set path or demo = true, not both.", field="path")


@dataclass(frozen=True)
class SelfPlayConfig:
    """Options of the ``[self_play]`` section."""

    rounds: int = option(0, doc="SPIN rounds; 0 trains once on the feedback records instead")
    prompts: int = option(512, doc="demonstrations per round whose prompts the policy answers")
    temperature: float = option(1.0, doc="sampling temperature of the policy's own answers")
    max_new_tokens: int = option(32, doc="length limit of the policy's own answers")

    def __post_init__(self) -> None:
        if self.rounds < 0 or self.prompts < 1:
            raise ValueError(f"rounds must be >= 0 and prompts >= 1. Got {self.rounds} and {self.prompts}.")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1. Got {self.max_new_tokens}.")
        if not 0 <= self.temperature < float("inf"):  # also refuses NaN
            raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy). Got {self.temperature}.")


@dataclass(frozen=True)
class OnlineLoopConfig:
    """Options of the ``[online]`` section: the rollout loop of an online objective (``data_formats = ("rollout",)``).

    One online step samples ``samples_per_prompt`` completions for each of ``prompts_per_step``
    training prompts, scores them with the run's ``[[reward]]``, estimates advantages, then makes
    ``update_epochs`` passes over the rollouts in shuffled minibatches, one optimiser step each.
    The optimiser, schedule, clipping, seed and checkpoint cadence are ``[train]``'s; ``[train]
    steps`` counts online steps unless ``steps`` is set here.
    """

    steps: int = option(0, doc="online steps (sample, score, update); 0 = [train] steps")
    prompts_per_step: int = option(8, doc="training prompts sampled per online step (seeded, resumable order)")
    samples_per_prompt: int = option(8, doc="completions per prompt (G): the group advantages are computed in")
    max_new_tokens: int = option(16, doc="length limit of a completion; one that reaches it is truncated")
    temperature: float = option(1.0, doc="sampling temperature (> 0); log-probs are taken at the same temperature")
    top_p: float = option(1.0, doc="nucleus sampling mass in (0, 1]; 1 samples from the whole distribution")
    update_epochs: int = option(1, doc="passes over each step's rollouts (several policy updates per batch)")
    minibatch_size: int = option(0, doc="completions per optimiser step; 0 = all of a step's rollouts at once")
    micro_batch_size: int = option(0, doc="completions per forward pass within a minibatch; 0 = the whole minibatch")
    dynamic_sampling: bool = option(
        False,
        doc="DAPO: drop prompts whose samples all got the same reward and sample more prompts until the step "
        "has prompts_per_step groups",
    )
    max_sampling_rounds: int = option(
        4,
        doc="with dynamic_sampling: extra sampling rounds per step at most; then the step trains on the groups "
        "kept (on the first round's, if none was)",
    )
    sampler: Literal["auto", "generate", "prefix_cache"] = option(
        "auto",
        doc="what samples the rollouts: generate = transformers' generate; prefix_cache = each prompt prefilled "
        "once for its group, a plain decode loop (the same tokens for a seed, faster); auto = prefix_cache where "
        "the model has a plain dynamic key/value cache, else generate",
    )

    def __post_init__(self) -> None:
        if self.dynamic_sampling and self.samples_per_prompt < 2:
            raise ConfigError(
                "dynamic_sampling keeps prompts whose samples got different rewards, so it needs "
                f"samples_per_prompt >= 2. Got {self.samples_per_prompt}.",
                field="dynamic_sampling",
            )
        for name, low in (
            ("steps", 0),
            ("prompts_per_step", 1),
            ("samples_per_prompt", 1),
            ("max_new_tokens", 1),
            ("update_epochs", 1),
            ("minibatch_size", 0),
            ("micro_batch_size", 0),
            ("max_sampling_rounds", 0),
        ):
            if getattr(self, name) < low:
                raise ConfigError(f"{name} must be >= {low}. Got {getattr(self, name)}.", field=name)
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ConfigError(
                f"temperature must be a finite number > 0 (log-probs are taken at it). Got {self.temperature}.",
                field="temperature",
            )
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1]. Got {self.top_p}.", field="top_p")

    @property
    def completions_per_step(self) -> int:
        """``S = prompts_per_step × samples_per_prompt``."""
        return self.prompts_per_step * self.samples_per_prompt

    def optimiser_steps_per_step(self) -> int:
        """Optimiser steps one online step makes: ``update_epochs × ceil(S / minibatch_size)``."""
        size = self.minibatch_size or self.completions_per_step
        return self.update_epochs * math.ceil(self.completions_per_step / size)


@dataclass(frozen=True)
class LoopConfig:
    """Options of the ``[loop]`` section: sample from the policy, rank by ``[[reward]]``, train offline objectives.

    ``kind = "online_dpo"``: every online step's samples become (best, worst) pairs per prompt for
    the pairwise ``[usage]`` objectives. ``kind = "best_of_n"``: ``iterations`` rounds of n samples
    per prompt, the kept ones fine-tuned on with ``sft`` (RAFT, ReST). Sampling (n =
    ``samples_per_prompt``, length, temperature, top_p) is ``[online]``'s; ``[train] steps`` counts
    online steps (online_dpo) or each iteration's SFT steps (best_of_n). ``kind =
    "human_online_dpo"``: people are the reward; each of ``iterations`` exports the samples as
    ``prefcore annotate`` items under ``exchange``, the run stops, and ``--resume`` trains on the
    voted answers (``prefcore.engine.human_loop``).
    """

    kind: Literal["none", "online_dpo", "best_of_n", "human_online_dpo"] = option(
        "none",
        doc="'online_dpo' (pairs from ranked samples), 'best_of_n' (keep the best, SFT, iterate) "
        "or 'human_online_dpo' (people rank the samples between runs)",
    )
    iterations: int = option(
        3, doc="best_of_n: rounds of sample → keep → fine-tune; human_online_dpo: export → answer → train rounds"
    )
    exchange: str = option(
        "",
        doc="human_online_dpo: folder of the exported items and the answers (relative: in the run folder); "
        "'' = <run folder>/exchange",
    )
    prompts: int = option(0, doc="best_of_n: training prompts sampled per iteration (seeded); 0 = all")
    keep: Literal["best", "threshold", "top_fraction"] = option(
        "best", doc="best_of_n: the best sample per prompt (RAFT), all with reward >= threshold, or the top fraction"
    )
    threshold: float = option(0.0, doc="best_of_n, keep = 'threshold': the lowest reward kept")
    top_fraction: float = option(0.25, doc="best_of_n, keep = 'top_fraction': share of an iteration's samples kept")

    def __post_init__(self) -> None:
        if self.kind not in ("none", *LOOP_KINDS):
            raise ConfigError(f"kind must be one of none, {', '.join(LOOP_KINDS)}. Got {self.kind!r}.", field="kind")
        if self.iterations < 1 or self.prompts < 0:
            raise ConfigError(
                f"iterations must be >= 1 and prompts >= 0 (0 = all). Got {self.iterations} and {self.prompts}.",
                field="iterations" if self.iterations < 1 else "prompts",
            )
        if self.keep not in ("best", "threshold", "top_fraction"):
            raise ConfigError(f"keep must be best, threshold or top_fraction. Got {self.keep!r}.", field="keep")
        if not math.isfinite(self.threshold):
            raise ConfigError(f"threshold must be a finite number. Got {self.threshold}.", field="threshold")
        if not 0 < self.top_fraction <= 1:
            raise ConfigError(f"top_fraction must be in (0, 1]. Got {self.top_fraction}.", field="top_fraction")


@dataclass(frozen=True)
class DistributedConfig:
    """Options of the ``[distributed]`` section: training on several processes under torchrun.

    Launch with ``torchrun --nproc_per_node N -m prefcore run FILE`` or ``prefcore run --nproc N FILE``.
    ``ddp`` keeps a replica of the model per process and averages gradients; ``fsdp`` (FSDP2)
    shards parameters, gradients and optimiser state over the processes. The global batch
    (``batch_size`` × ``grad_accum``) is split across the processes, so N processes train on
    what one process does. Outside torchrun the run stays a single process.
    """

    strategy: Literal["none", "ddp", "fsdp"] = option(
        "none", doc="'ddp' (a replica per process), 'fsdp' (FSDP2, sharded) or 'none' (one process)"
    )
    mixed_precision: Literal["no", "bf16"] = option(
        "no", doc="'bf16': compute in bfloat16, gradients reduced in float32; 'no' keeps float32"
    )
    cpu_offload: bool = option(False, doc="fsdp: keep the sharded parameters and optimiser state in CPU memory")
    timeout_s: float = option(
        1800.0, doc="seconds a collective waits for the other processes before the run fails (a dead rank)"
    )

    def __post_init__(self) -> None:
        if self.strategy not in ("none", "ddp", "fsdp"):
            raise ConfigError(f"strategy must be none, ddp or fsdp. Got {self.strategy!r}.", field="strategy")
        if self.mixed_precision not in ("no", "bf16"):
            raise ConfigError(
                f"mixed_precision must be 'no' or 'bf16'. Got {self.mixed_precision!r}.", field="mixed_precision"
            )
        if self.cpu_offload and self.strategy != "fsdp":
            raise ConfigError("cpu_offload needs strategy = 'fsdp' (DDP keeps whole replicas).", field="cpu_offload")
        if not (math.isfinite(self.timeout_s) and self.timeout_s > 0):
            raise ConfigError(f"timeout_s must be a finite number > 0. Got {self.timeout_s}.", field="timeout_s")
