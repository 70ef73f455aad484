"""Stage 4, preference models: every ``[[preference_model]]`` section trains a reward network on the feedback.

One model trains in ``reward_model/`` and logs ``reward_model/<metric>``. Several sections
each train their own network (model k in ``reward_model/<k>-<method>/``, logging
``reward_model/<k>-<method>/<metric>``) and are combined into one reward by ``[run] ensemble``:

- ``mean``, ``min``, ``mean_minus_std``: their scores are combined (``RewardEnsemble``); model k
  trains with seed + k, so that the members disagree where the data is thin;
- ``soup``: their weights are interpolated, θ = Σ λ_k θ_k with λ_k the sections' ``weight``
  normalised to sum 1 (``rewarded_soup``); every member starts from the one initialisation of
  ``[reward_model] seed``, as a soup needs, and the soup is saved in ``reward_model/soup/model``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import replace
from typing import Any

from prefcore.api import SelectedMethod
from prefcore.engine.reward_ensemble import RewardEnsemble
from prefcore.engine.reward_ensemble import check_combinable
from prefcore.engine.reward_ensemble import save_soup
from prefcore.engine.reward_ensemble import soup_weights
from prefcore.engine.reward_trainer import train_preference_model
from prefcore.evaluation import Scorer
from prefcore.settings import RewardTrainConfig
from prefcore.stages.session import RunContext

__all__ = ["PreferenceModels", "train_preference_models"]

logger = logging.getLogger("prefcore.pipeline")


@dataclass(frozen=True)
class PreferenceModels:
    """The trained networks and the one scorer they make (a single model's, an ensemble's or a soup's)."""

    networks: list[Any]
    scorer: Scorer
    combined: str  # "single", or the [run] ensemble mode


def train_preference_models(
    run: RunContext,
    selected: Sequence[SelectedMethod],
    records: Sequence[Any],
    tokenizer: Any,
    reward_config: RewardTrainConfig,
    *,
    progress: bool,
) -> PreferenceModels:
    """Train every selected preference model on ``records`` and combine them; see the module docstring."""
    objectives = [entry.method for entry in selected]
    check_combinable(objectives)
    ensemble = run.settings.ensemble
    networks = []
    for index, objective in enumerate(objectives):
        tag = "" if len(objectives) == 1 else f"{index}-{objective.name}"
        stage = "preference model" + (f" {index + 1}/{len(objectives)} ({objective.name})" if tag else "")
        folder = run.run_dir / "reward_model" / tag if tag else run.run_dir / "reward_model"
        seed = reward_config.seed if ensemble == "soup" else reward_config.seed + index
        network = train_preference_model(
            records,
            objective,
            tokenizer,
            replace(reward_config, seed=seed),
            run_dir=folder,
            device=run.device,
            on_step=run.hooks.step_reporter("reward_model/" + (f"{tag}/" if tag else "")),
            resume=run.resume,
            progress=progress,
            stage=stage,
        )
        logger.info("%s: trained, saved in %s", stage, folder / "model")
        networks.append(network)
    if len(networks) == 1:
        return PreferenceModels(networks, networks[0].scorer(), "single")
    if ensemble == "soup":
        weights = soup_weights([entry.weight for entry in selected])
        folder = run.run_dir / "reward_model" / "soup" / "model"
        soup = save_soup(networks, weights, folder)  # under torchrun: rank 0's soup on every rank, rank 0 writes
        shares = ", ".join(
            f"{objective.name} {weight:.3g}" for objective, weight in zip(objectives, weights, strict=True)
        )
        logger.info("preference models souped (%s), saved in %s", shares, folder)
        return PreferenceModels(networks, soup.scorer(), ensemble)
    combined = RewardEnsemble(networks, combine=ensemble, penalty=run.settings.ensemble_penalty)
    return PreferenceModels(networks, combined.scorer(), ensemble)
