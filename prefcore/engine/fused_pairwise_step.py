"""The loss-aware fused LM head in the offline trainer (``[train] loss_aware_head``).

For a step whose only objective is a row of the pairwise loss table (DPO, cDPO, IPO, hinge,
SimPO, with none of their per-pair extras such as soft labels or margins), the policy's loss
and the gradients of its LM head's inputs come from one pass over the logits
(``prefcore.kernels.fused_linear_pairwise``): the decoder runs to its last hidden states, and
the LM head's logits exist once per completion token instead of twice (forward, then the
backward's recompute). The loss, its reduction (``batch.weights``, the step's ``num_items``)
and the metrics are those the objective reports on the unfused path (``rewards/*``,
``logps/*``); ``tests/engine/test_fused_pairwise_step.py`` checks steps of both paths agree.

Under ``precision = "bf16-params"`` the kernel gets the LM head's fp32 parameter rather than its
bf16 copy: it casts the weight for its bf16 GEMMs itself and its fp32 accumulation buffer becomes
the parameter's gradient, so no bf16 weight gradient (2·V·H bytes) is made and cast back. Under
bf16 autocast the decoder's final norm returns fp32 hidden states, and the head runs in fp32 as
on the usual fused path.

Anything else (several objectives, other objectives, shared prompts, torchrun, heads that
post-process logits) returns None here and takes the usual path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING
from typing import Any

import torch

from prefcore.batch import LossOutput
from prefcore.engine.cpu_attention import cpu_training_attention
from prefcore.engine.logprobs import IGNORE_INDEX
from prefcore.engine.logprobs import _base_model
from prefcore.engine.logprobs import lm_head_weight_and_bias
from prefcore.engine.logprobs import supports_fused_head
from prefcore.kernels.fused_linear_pairwise import fused_linear_pairwise_loss
from prefcore.kernels.fused_linear_pairwise import plan_pair_chunks
from prefcore.kernels.sequence_logps import sequence_logps_ref
from prefcore.objectives import item_weights
from prefcore.objectives import logp_metrics
from prefcore.objectives import reward_metrics

if TYPE_CHECKING:
    from prefcore.engine.batching import SequenceBatch
    from prefcore.engine.pair_prefix import PromptPlan
    from prefcore.engine.trainer import Trainer

__all__ = ["loss_aware_output", "loss_aware_row"]

_PLUGINS = "prefcore.plugins.usage"


def _no_probabilities(objective: Any, batch: SequenceBatch) -> bool:
    return not objective.config.use_probabilities or batch.probabilities is None


# Built-in objective class -> (table row, its options from the config), or None when this batch
# needs the objective's own formula (soft labels, margins). Subclasses are not matched: they may
# change the loss.
_ROWS: dict[tuple[str, str], Callable[[Any, Any], tuple[str, dict[str, float]] | None]] = {
    (f"{_PLUGINS}.dpo", "DPO"): lambda o, b: ("dpo", {"beta": o.config.beta}),
    (f"{_PLUGINS}.cdpo", "CDPO"): lambda o, b: (
        ("dpo", {"beta": o.config.beta, "label_smoothing": o.config.label_smoothing})
        if _no_probabilities(o, b)
        else None
    ),
    (f"{_PLUGINS}.ipo", "IPO"): lambda o, b: ("ipo", {"beta": o.config.beta}) if _no_probabilities(o, b) else None,
    (f"{_PLUGINS}.hinge", "Hinge"): lambda o, b: (
        ("hinge", {"beta": o.config.beta}) if not o.config.use_margins or b.margins is None else None
    ),
    (f"{_PLUGINS}.simpo", "SimPO"): lambda o, b: (
        "simpo",
        {"beta": o.config.beta, "gamma": o.config.gamma, "label_smoothing": o.config.label_smoothing},
    ),
}


def loss_aware_row(objective: Any, batch: SequenceBatch) -> tuple[str, dict[str, float]] | None:
    """The table row and options that compute ``objective`` on ``batch``, or None if none does."""
    cls = type(objective)
    rule = _ROWS.get((cls.__module__, cls.__name__))
    return rule(objective, batch) if rule is not None else None


def _applies(trainer: Trainer, batch: SequenceBatch, plan: PromptPlan | None) -> tuple[str, dict[str, float]] | None:
    config = trainer.config
    if not getattr(config, "loss_aware_head", False) or not config.fused_lm_head or plan is not None:
        return None
    if len(trainer.objectives) != 1 or trainer.world_size != 1 or trainer.sharded is not None:
        return None
    if batch.chosen_index is None or batch.rejected_index is None or not supports_fused_head(trainer.model):
        return None
    return loss_aware_row(trainer.objectives[0].objective, batch)


def _precision(trainer: Trainer, model: Any) -> contextlib.AbstractContextManager:
    """The trainer's own precision context for ``model``: autocast, or bf16 weight copies (``bf16-params``)."""
    from prefcore.engine.trainer import _precision  # the trainer imports this module: import at call time

    return _precision(trainer.config, trainer.device, model)


def _master_head(model: Any, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """The LM head's fp32 weight and bias when the head computes in bf16/fp16 from them, else None.

    Under ``bf16-params`` the model runs on bf16 copies and the head's gradient would come back as
    a bf16 tensor and then be cast into the fp32 parameter. Given the fp32 parameter itself, the
    kernel casts it for its GEMMs and hands back its fp32 accumulation buffer as the parameter's
    gradient: no bf16 weight gradient and no cast of it. Only a plain, trained head (no LoRA: its
    effective weight is formed in the compute dtype as before; a frozen head keeps the cached cast).
    """
    head = _base_model(model).get_output_embeddings()
    if getattr(head, "base_layer", None) is not None:
        return None
    weight, bias = head.weight, head.bias
    if hidden.dtype not in (torch.bfloat16, torch.float16) or weight.dtype != torch.float32:
        return None
    if not weight.requires_grad or (bias is not None and bias.dtype != weight.dtype):
        return None
    return weight, bias


def loss_aware_output(
    trainer: Trainer, host_batch: SequenceBatch, batch: SequenceBatch, num_items: int, plan: PromptPlan | None
) -> LossOutput | None:
    """The single objective's ``LossOutput`` for ``batch`` through the loss-aware head, or None.

    ``host_batch`` is the same micro-batch on the host: the chunk plan is built from it, so the
    device is never read. The loss is Σ w·loss / ``num_items``, as ``reduce_losses``.
    """
    row = _applies(trainer, batch, plan)
    if row is None:
        return None
    loss, options = row
    model, sequences = trainer.policy, batch.sequences
    # The weights read inside the context (bf16 copies under ``bf16-params``) keep their graph after it.
    with _precision(trainer, model):
        decoder = _base_model(model).get_decoder()
        with cpu_training_attention(model):  # as completion_token_logps runs the decoder
            hidden = decoder(input_ids=sequences.input_ids, attention_mask=sequences.attention_mask).last_hidden_state
        weight, bias = lm_head_weight_and_bias(model)
    master = _master_head(model, hidden)  # outside the context: the real parameters are back in place
    if master is not None:
        weight, bias = master
    hidden = hidden[:, :-1]
    targets = sequences.input_ids[:, 1:].masked_fill(~sequences.completion_mask, IGNORE_INDEX)
    ref_sums = None
    if loss != "simpo":
        ref_sums = batch.ref_sequence_logps
        if ref_sums is None:
            with torch.no_grad(), _precision(trainer, getattr(trainer.reference_logps, "model", None)):
                ref_logps = trainer.reference_logps(batch)
            ref_sums = sequence_logps_ref(ref_logps.float(), sequences.completion_mask)[0]
    chunks = plan_pair_chunks(
        host_batch.sequences.completion_mask,
        host_batch.chosen_index,
        host_batch.rejected_index,
        vocab=weight.shape[0],
        dtype=hidden.dtype,
    )
    if master is None:
        weight = weight.to(hidden.dtype)
        bias = None if bias is None else bias.to(hidden.dtype)
    out = fused_linear_pairwise_loss(
        hidden,
        weight,
        targets,
        batch.chosen_index,
        batch.rejected_index,
        loss=loss,
        ref_sequence_logps=ref_sums,
        bias=bias,
        pair_weights=item_weights(batch, batch.chosen_index.numel()),
        normalizer=num_items,
        backend=trainer.config.kernel_backend,
        plan=chunks.to(hidden.device),
        **options,
    )
    metrics = {
        **reward_metrics(out.chosen_rewards, out.rejected_rewards),
        **logp_metrics(out.chosen_logps, out.rejected_logps),
    }
    return LossOutput(out.loss, metrics)
