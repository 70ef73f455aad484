"""Sequence-level preference losses over per-token log-probs: the import path plugins use.

Each loss is a masked per-sequence sum (``sequence_logps``), a loss kernel over those sums, and a
broadcast backward. The code lives by shape:

- ``sequence_logps.py``: the masked sums and their backward, also public as ``sequence_logps``;
- ``pairwise_losses.py``: DPO, IPO, hinge, SimPO, ORPO and NLL, one table row and one per-pair
  term each (in torch for the reference, in Triton with its derivative for the kernel);
- ``unpaired_losses.py``: KTO, one labelled item per sequence;
- ``_sequence_loss.py``: what they share: ``PreferenceLossOutput``, the input checks and error
  messages, the autograd Function.

Every public function takes ``backend="auto"`` (CUDA → Triton, CPU → the ``*_ref`` reference),
``"triton"`` or ``"torch"``; the ``*_ref`` functions are plain torch and state each formula.
"""

from __future__ import annotations

from prefcore.kernels._sequence_loss import PreferenceLossOutput
from prefcore.kernels.pairwise_losses import dpo_loss
from prefcore.kernels.pairwise_losses import dpo_loss_ref
from prefcore.kernels.pairwise_losses import hinge_loss
from prefcore.kernels.pairwise_losses import hinge_loss_ref
from prefcore.kernels.pairwise_losses import ipo_loss
from prefcore.kernels.pairwise_losses import ipo_loss_ref
from prefcore.kernels.pairwise_losses import nll_loss
from prefcore.kernels.pairwise_losses import nll_loss_ref
from prefcore.kernels.pairwise_losses import orpo_loss
from prefcore.kernels.pairwise_losses import orpo_loss_ref
from prefcore.kernels.pairwise_losses import simpo_loss
from prefcore.kernels.pairwise_losses import simpo_loss_ref
from prefcore.kernels.sequence_logps import sequence_logps
from prefcore.kernels.sequence_logps import sequence_logps_ref
from prefcore.kernels.unpaired_losses import kto_loss
from prefcore.kernels.unpaired_losses import kto_loss_ref

__all__ = [
    "PreferenceLossOutput",
    "dpo_loss",
    "dpo_loss_ref",
    "hinge_loss",
    "hinge_loss_ref",
    "ipo_loss",
    "ipo_loss_ref",
    "kto_loss",
    "kto_loss_ref",
    "nll_loss",
    "nll_loss_ref",
    "orpo_loss",
    "orpo_loss_ref",
    "sequence_logps",
    "sequence_logps_ref",
    "simpo_loss",
    "simpo_loss_ref",
]
