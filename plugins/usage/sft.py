"""SFT: supervised fine-tuning, the negative log-likelihood of the preferred completions.

The maximum-likelihood baseline of every preference paper (e.g. Ouyang et al. 2022,
"Training language models to follow instructions with human feedback",
https://arxiv.org/abs/2203.02155, the SFT stage; TRL DPO ``loss_type="sft"``).

    loss = −Σ_{y ∈ B} Σ_t log π(y_t | x, y_<t) / Σ_{y ∈ B} |y|

B: the completions trained on: the chosen completion of each pair (pairwise data) or every
sequence (SFT data); |y|: number of completion tokens; π: the policy. Computed by
``prefcore.kernels.preference_losses.nll_loss``: a token average over the batch, as in TRL.
Under gradient accumulation B is the whole optimiser step: each micro-batch's summed NLL
is divided by the step's token count (``LogProbBatch.num_tokens``), so the micro-batches
add up to the step's token average exactly, whatever the completion lengths.
"""

from __future__ import annotations

from prefcore import hookimpl
from prefcore.batch import LogProbBatch
from prefcore.batch import LossOutput
from prefcore.lazy import lazy_module
from prefcore.methods import NoOptions
from prefcore.methods import UsageObjective
from prefcore.objectives import item_weights
from prefcore.objectives import nll_shares
from prefcore.objectives import reduce_losses

torch = lazy_module("torch")


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
        losses, nll = nll_shares(batch, chosen_index, rejected_index)
        loss = reduce_losses(losses, batch, item_weights(batch, losses.numel()))
        return LossOutput(loss, {"nll": nll})


@hookimpl
def prefcore_register_usage_objectives() -> list[type[UsageObjective]]:
    return [SFT]
