"""The author's surface: the objective bases of ``prefcore.objectives`` and what the parity kit does with them.

Throw-away objectives are defined here, as a third party would write them, and checked
with the kit; the built-ins are checked for imports of private names.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
import torch
import torch.nn.functional as F

from prefcore.batch import LogProbBatch
from prefcore.methods import option
from prefcore.objectives import PairwiseObjective
from prefcore.registry import Registry
from prefcore.rollout import ROLLOUT_FORMAT
from prefcore.testing import assert_fused_path_matches
from prefcore.testing import assert_pair_loss_matches
from prefcore.testing import check_objective
from prefcore.testing import make_random_batch


@dataclass(frozen=True)
class OffsetConfig:
    beta: float = option(0.1, doc="β")
    offset: float = option(0.5, doc="margin the implicit reward gap must clear")


class OffsetDPO(PairwiseObjective):
    """DPO with a fixed offset, written as a plugin author writes it: config and formula only."""

    name = "offset_dpo"
    config_cls = OffsetConfig

    def pair_loss(
        self, chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, batch: LogProbBatch
    ) -> torch.Tensor:
        return -F.logsigmoid(self.config.beta * (chosen_logratios - rejected_logratios) - self.config.offset)


def paper_offset_dpo(chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor) -> torch.Tensor:
    """Amini et al. 2024, Eq. 6 with a constant offset Δ = 0.5 and β = 0.1."""
    return torch.log1p(torch.exp(-(0.1 * (chosen_logratios - rejected_logratios) - 0.5)))


def test_a_pairwise_objective_is_its_formula_and_passes_the_kit() -> None:
    objective = OffsetDPO()
    check_objective(objective, pair_reference=paper_offset_dpo)
    output = objective.loss(make_random_batch("pairwise", with_weights=True))
    assert set(output.metrics) == {
        "rewards/chosen",
        "rewards/rejected",
        "rewards/margins",
        "rewards/accuracies",
        "logps/chosen",
        "logps/rejected",
    }
    assert objective.implicit_reward_beta() == 0.1


def test_the_pair_formula_check_catches_a_wrong_formula() -> None:
    def wrong(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
        return torch.log1p(torch.exp(-(0.1 * (chosen - rejected))))

    with pytest.raises(AssertionError, match=r"objective 'offset_dpo': pair_loss per-pair losses differ from wrong"):
        assert_pair_loss_matches(OffsetDPO(), wrong)


def test_the_fused_check_catches_a_kernel_path_that_differs_from_the_formula() -> None:
    class Drifting(OffsetDPO):
        def fused_pair_loss(self, batch: LogProbBatch) -> object:
            out = self.pair_losses(batch)
            return type(out)(out.losses * 1.01, out.chosen_rewards, out.rejected_rewards)

    with pytest.raises(AssertionError, match="the fused path's losses differ from the formula's"):
        assert_fused_path_matches(Drifting(), make_random_batch("pairwise"))


def test_a_batch_coupled_objective_refuses_weights_and_the_kit_skips_per_pair_checks() -> None:
    class Sorted(OffsetDPO):
        batch_coupled = True

        def pair_loss(
            self, chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, batch: LogProbBatch
        ) -> torch.Tensor:
            return super().pair_loss(torch.sort(chosen_logratios)[0], torch.sort(rejected_logratios)[0], batch)

    with pytest.raises(ValueError, match="couples the pairs of a batch"):
        Sorted().loss(make_random_batch("pairwise", with_weights=True))
    check_objective(Sorted())  # no accumulation or weights checks: they do not apply


def test_a_base_objective_without_beta_must_say_so_when_defined() -> None:
    @dataclass(frozen=True)
    class NoBeta:
        scale: float = option(1.0, doc="s")

    with pytest.raises(TypeError, match="needs a 'beta' field, or Scaled must override implicit_reward_beta"):

        class Scaled(PairwiseObjective):
            name = "scaled"
            config_cls = NoBeta

            def pair_loss(
                self, chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor, batch: LogProbBatch
            ) -> torch.Tensor:
                return -F.logsigmoid(chosen_logratios - rejected_logratios)


def test_every_objective_declares_its_beta(usage_registry: Registry) -> None:
    """The evaluator reads ``implicit_reward_beta()``: β where the config has one, else None."""
    for info in usage_registry.methods("usage"):
        if ROLLOUT_FORMAT in info.cls.data_formats:
            continue  # an online objective's beta weighs its KL penalty; it reports no implicit reward
        objective = info.cls()
        beta = getattr(objective.config, "beta", None)
        assert objective.implicit_reward_beta() == beta, info.name


def _private_imports(path: Path) -> list[str]:
    """``from prefcore... import _name`` and imports of ``_module``s of prefcore or of a plugin."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "prefcore":
            if any(part.startswith("_") for part in node.module.split(".")):
                found.append(f"from {node.module} import ...")
            found += [f"from {node.module} import {alias.name}" for alias in node.names if alias.name.startswith("_")]
        elif isinstance(node, ast.Import):
            found += [
                f"import {alias.name}"
                for alias in node.names
                if alias.name.split(".")[0] == "prefcore" and any(p.startswith("_") for p in alias.name.split("."))
            ]
    return found


def test_built_in_objectives_import_only_public_names(usage_modules: list[ModuleType]) -> None:
    """A third party can write every built-in: nothing under plugins/usage reaches a private name."""
    offences = {}
    for module in usage_modules:
        assert module.__file__ is not None
        found = _private_imports(Path(module.__file__))
        if found:
            offences[module.__name__] = found
    folder = Path(usage_modules[0].__file__ or "").parent
    assert sorted(path.name for path in folder.glob("_*.py")) == ["__init__.py"], "no private helper modules"
    assert offences == {}
