"""SFT: supervised fine-tuning, the negative log-likelihood of the preferred completions.

The maximum-likelihood baseline of every preference paper (e.g. Ouyang et al. 2022,
"Training language models to follow instructions with human feedback",
https://arxiv.org/abs/2203.02155, the SFT stage; TRL DPO ``loss_type="sft"``).

    loss = −Σ_{y ∈ B} Σ_t log π(y_t | x, y_<t) / Σ_{y ∈ B} |y|

B: the completions trained on: the chosen completion of each pair (pairwise data) or every
sequence (SFT data); |y|: number of completion tokens; π: the policy. The NLL is a token
average over the micro-batch, as in TRL. Computed by
``prefcore.kernels.preference_losses.nll_loss``.

With ``num_items`` each micro-batch's token average is weighted by its share of the
step's comparisons: exactly the step's token average when completions have equal
lengths, and close to it otherwise.
"""

from __future__ import annotations

import torch

from prefcore import hookimpl
from prefcore.batch import LogProbBatch
from prefcore.batch import LossOutput
from prefcore.kernels.preference_losses import nll_loss
from prefcore.methods import NoOptions
from prefcore.methods import UsageObjective
from prefcore.plugins.usage._common import item_weights
from prefcore.plugins.usage._common import reduce_losses


class SFT(UsageObjective):
    """SFT: negative log-likelihood of the chosen (pairwise) or of every (SFT data) completion."""

    name = "sft"
    config_cls = NoOptions
    data_formats = ("sft", "pairwise")
    needs_reference = False

    def loss(self, batch: LogProbBatch) -> LossOutput:
        if batch.chosen_index is not None and batch.rejected_index is not None:
            chosen_index, rejected_index = batch.chosen_index, batch.rejected_index
        else:
            chosen_index = rejected_index = torch.arange(batch.num_sequences, device=batch.mask.device)
        out = nll_loss(batch.policy_logps, batch.mask, chosen_index, rejected_index)
        loss = reduce_losses(out.losses, batch, item_weights(batch, out.losses.numel()))
        return LossOutput(loss, {"nll": out.loss.detach()})


@hookimpl
def prefcore_register_usage_objectives() -> list[type[UsageObjective]]:
    return [SFT]
