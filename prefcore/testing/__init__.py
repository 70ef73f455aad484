"""Checks that plugin authors run in their own tests: random batches, the objective parity kit, precision.

A usage objective is a function of a ``LogProbBatch``, so everything that can go wrong
with it can be tested on random tensors, without a model:

- ``prefcore.testing.batches``: ``make_random_batch(data_format, ...)`` builds a valid random
  batch of any format; ``split_batch`` cuts it into micro-batches as gradient accumulation does;
- ``prefcore.testing.parity``: the checks (``assert_matches_reference``,
  ``assert_pair_loss_matches`` for a ``PairwiseObjective``'s formula,
  ``assert_fused_path_matches``, gradcheck, low precision, accumulation, padding, weights)
  and ``check_objective``, which runs every one that applies;
- ``prefcore.testing.online``: the same checks for an online objective on a ``RolloutBatch``
  (``make_random_rollout_batch``, ``split_rollout_batch``, ``check_online_objective``);
- ``prefcore.testing.precision``: ``assert_lowprec_close`` for kernel tests;
- ``prefcore.testing.plugins``: ``registry_of(modules)``, a registry of exactly the plugin
  modules under test;
- ``prefcore.testing.host_reads``: ``HostReadGuard``, which counts a step's host reads of tensors
  by caller and fails on any that is not allowed (a step should read the device once).

Everything is importable from ``prefcore.testing`` itself.
"""

from __future__ import annotations

from prefcore.testing.batches import batch_to
from prefcore.testing.batches import make_random_batch
from prefcore.testing.batches import make_random_rollout_batch
from prefcore.testing.batches import num_comparisons
from prefcore.testing.batches import rollout_batch_to
from prefcore.testing.batches import split_batch
from prefcore.testing.batches import split_rollout_batch
from prefcore.testing.host_reads import HostReadGuard
from prefcore.testing.online import assert_online_accumulation_invariant
from prefcore.testing.online import assert_online_gradcheck
from prefcore.testing.online import assert_online_padding_invariant
from prefcore.testing.online import check_online_objective
from prefcore.testing.parity import PairReferenceFn
from prefcore.testing.parity import ReferenceFn
from prefcore.testing.parity import assert_accumulation_invariant
from prefcore.testing.parity import assert_fused_path_matches
from prefcore.testing.parity import assert_gradcheck
from prefcore.testing.parity import assert_low_precision_close
from prefcore.testing.parity import assert_matches_reference
from prefcore.testing.parity import assert_padding_invariant
from prefcore.testing.parity import assert_pair_loss_matches
from prefcore.testing.parity import assert_valid_output
from prefcore.testing.parity import assert_weights_respected
from prefcore.testing.parity import check_objective
from prefcore.testing.parity import objective_label
from prefcore.testing.plugins import plugin_modules
from prefcore.testing.plugins import registry_of
from prefcore.testing.precision import assert_lowprec_close

__all__ = [
    "HostReadGuard",
    "PairReferenceFn",
    "ReferenceFn",
    "assert_accumulation_invariant",
    "assert_fused_path_matches",
    "assert_gradcheck",
    "assert_low_precision_close",
    "assert_lowprec_close",
    "assert_matches_reference",
    "assert_online_accumulation_invariant",
    "assert_online_gradcheck",
    "assert_online_padding_invariant",
    "assert_padding_invariant",
    "assert_pair_loss_matches",
    "assert_valid_output",
    "assert_weights_respected",
    "batch_to",
    "check_objective",
    "check_online_objective",
    "make_random_batch",
    "make_random_rollout_batch",
    "num_comparisons",
    "objective_label",
    "plugin_modules",
    "registry_of",
    "rollout_batch_to",
    "split_batch",
    "split_rollout_batch",
]
