"""Several reward models as one: ensembles against over-optimisation, and weight-space interpolation.

A policy optimised against one reward model finds the places where that model is wrong.
Members trained from different seeds or data subsets are wrong in different places, so a
conservative combination of their scores is harder to exploit:

- ``mean``: the average member score;
- ``min``: the worst member score (worst-case optimisation, Coste et al. 2023, "Reward Model
  Ensembles Help Mitigate Overoptimization", https://arxiv.org/abs/2310.02743);
- ``mean_minus_std``: mean − λ·std over members, std the population standard deviation
  (uncertainty-weighted optimisation, Coste et al. 2023; Eisenstein et al. 2023, "Helping or
  Herding? Reward Model Ensembles Mitigate but do not Eliminate Reward Hacking",
  https://arxiv.org/abs/2312.09244).

``rewarded_soup`` instead averages the *weights* of models fine-tuned from one
initialisation (Ramé et al. 2023, "Rewarded soups", https://arxiv.org/abs/2306.04488):
θ = Σ_i λ_i θ_i with λ_i ≥ 0, Σ λ_i = 1; one network, one forward pass.

From a run file, several ``[[preference_model]]`` sections are combined by ``[run] ensemble``:
``mean``, ``min`` or ``mean_minus_std`` (with ``ensemble_penalty`` = λ) score as a
``RewardEnsemble``; ``soup`` interpolates their weights, each section's ``weight`` its share
(``soup_weights``). ``check_soup`` is the run-file check of a soup's members.

Under torchrun the members train distributed one after another and come out with their full
weights gathered on every rank; ``save_soup`` averages them there, gives every rank rank 0's soup
and lets rank 0 alone write it.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any
from typing import Literal

import torch

from prefcore.distributed.process_group import barrier
from prefcore.distributed.process_group import current
from prefcore.distributed.process_group import is_main
from prefcore.distributed.wrap import broadcast_weights
from prefcore.engine.reward_model import RewardModel
from prefcore.engine.reward_model import RewardNetwork
from prefcore.engine.reward_trainer import RewardTrainConfig
from prefcore.engine.reward_trainer import train_preference_model
from prefcore.errors import ConfigError
from prefcore.evaluation import Scorer
from prefcore.methods import PreferenceModel
from prefcore.settings import ENSEMBLE_COMBINES

Combine = Literal["mean", "min", "mean_minus_std"]
COMBINES = ENSEMBLE_COMBINES

__all__ = [
    "COMBINES",
    "RewardEnsemble",
    "bootstrap_sample",
    "check_combinable",
    "check_soup",
    "combine_scores",
    "rewarded_soup",
    "save_soup",
    "soup_weights",
    "train_reward_ensemble",
]


def combine_scores(scores: torch.Tensor, combine: str, penalty: float = 0.0) -> torch.Tensor:
    """Combine member scores ``[M, ...]`` over the first dimension: mean, min or mean − λ·std."""
    if combine == "mean":
        return scores.mean(0)
    if combine == "min":
        return scores.min(0).values
    if combine == "mean_minus_std":
        return scores.mean(0) - penalty * scores.std(0, correction=0)
    raise ConfigError(f"combine must be one of {', '.join(COMBINES)}, got {combine!r}.", field="combine")


def check_combinable(objectives: Sequence[PreferenceModel]) -> None:
    """Preference models that are to score as one ensemble must share their heads; checked before training."""
    heads = {(objective.num_heads(), tuple(objective.aspects or ())) for objective in objectives}
    if len(heads) > 1:
        names = ", ".join(f"{objective.name} ({objective.num_heads()} heads)" for objective in objectives)
        raise ConfigError(
            f"the [[preference_model]] sections score as one ensemble, so they must share their heads; got {names}. "
            "Keep models with the same aspects, or run them separately.",
            field="preference_model",
        )


def check_soup(objectives: Sequence[PreferenceModel]) -> None:
    """Preference models that are to be souped (``[run] ensemble = "soup"``); checked before training.

    A soup needs at least two members, each a network with heads (an implicit reward is a
    policy, not a reward model), and members that differ: they train on the same feedback
    from one initialisation, so two identical sections would train the same network twice.
    """
    if len(objectives) < 2:
        raise ConfigError(
            '[run] ensemble = "soup" interpolates the weights of several preference models, but the run file '
            f"has {len(objectives)} [[preference_model]] section(s): add more, or drop ensemble.",
            field="run.ensemble",
        )
    implicit = [objective.name for objective in objectives if objective.implicit_reward_beta() is not None]
    if implicit:
        raise ConfigError(
            f'[run] ensemble = "soup" averages reward-model weights, but {", ".join(implicit)} is a policy\'s '
            'implicit reward, not a reward model: leave it out of the soup or use ensemble = "mean".',
            field="run.ensemble",
        )
    seen: dict[tuple[str, str], int] = {}
    for index, objective in enumerate(objectives):
        key = (objective.name, repr(objective.config))
        if key in seen:
            raise ConfigError(
                f'[run] ensemble = "soup": [[preference_model]] #{index + 1} repeats #{seen[key] + 1} '
                f"({objective.name} with the same options). Soup members train on the same feedback from one "
                "initialisation, so they must differ in method or options.",
                field="preference_model",
            )
        seen[key] = index


def soup_weights(weights: Sequence[float]) -> list[float]:
    """The ``weight`` of each ``[[preference_model]]`` section as a soup share λ_i (normalised to sum 1)."""
    total = float(sum(weights))
    if not (math.isfinite(total) and total > 0 and all(weight >= 0 for weight in weights)):
        raise ConfigError(f"soup weights must be >= 0 with a positive sum; got {list(weights)}.", field="weight")
    return [float(weight) / total for weight in weights]


class RewardEnsemble:
    """Members scored on the same completions and combined; the interface of a single reward network.

    Arguments:
        models: the members (``RewardModel`` or ``ImplicitRewardModel``), all with the same heads.
        combine: ``mean``, ``min`` or ``mean_minus_std``.
        penalty: λ of ``mean_minus_std`` (>= 0); must stay 0 for the other combinations.
    """

    def __init__(self, models: Sequence[RewardNetwork], combine: Combine = "mean", penalty: float = 0.0) -> None:
        models = list(models)
        if not models:
            raise ConfigError("a reward ensemble needs at least one model.", field="models")
        if combine not in COMBINES:
            raise ConfigError(f"combine must be one of {', '.join(COMBINES)}, got {combine!r}.", field="combine")
        if not (isinstance(penalty, (int, float)) and math.isfinite(penalty) and penalty >= 0):
            raise ConfigError(f"penalty must be a finite number >= 0, got {penalty!r}.", field="penalty")
        if penalty and combine != "mean_minus_std":
            raise ConfigError(f"penalty applies only to combine='mean_minus_std', not {combine!r}.", field="penalty")
        if combine == "mean_minus_std" and len(models) < 2:
            raise ConfigError("combine='mean_minus_std' needs at least two models to measure disagreement.")
        aspects = {tuple(model.aspects) for model in models}
        if len(aspects) != 1:
            raise ConfigError(f"ensemble members must share their heads; got {sorted(aspects)}.", field="models")
        self.models = models
        self.combine = combine
        self.penalty = float(penalty)
        self.aspects: tuple[str, ...] = aspects.pop()

    @property
    def num_heads(self) -> int:
        return len(self.aspects)

    def member_scores(
        self, prompts: Sequence[Any], completions: Sequence[Any], *, batch_size: int = 32
    ) -> torch.Tensor:
        """``[M, N, A]`` every member's rewards."""
        return torch.stack([model.score(prompts, completions, batch_size=batch_size) for model in self.models])

    def score(self, prompts: Sequence[Any], completions: Sequence[Any], *, batch_size: int = 32) -> torch.Tensor:
        """``[N, A]`` member rewards combined head by head."""
        return combine_scores(
            self.member_scores(prompts, completions, batch_size=batch_size), self.combine, self.penalty
        )

    def scorer(self, aspect_weights: Mapping[str, float] | Sequence[float] | None = None) -> Scorer:
        """A ``Scorer``: each member's own scorer (weighted heads, or step aggregate), then combined.

        Members are combined after their heads are weighted, so ``min`` is the worst member's
        overall score rather than a mix of different members' heads.
        """
        scorers = [model.scorer(aspect_weights) for model in self.models]

        def score(prompts: Sequence[Any], completions: Sequence[str]) -> list[float]:
            members = torch.tensor([list(member(prompts, completions)) for member in scorers], dtype=torch.float32)
            return combine_scores(members, self.combine, self.penalty).tolist()

        return score


def bootstrap_sample(records: Sequence[Any], seed: int) -> list[Any]:
    """As many records as given, drawn with replacement (each member sees a different resample)."""
    rng = random.Random(seed)
    return [records[rng.randrange(len(records))] for _ in range(len(records))]


def train_reward_ensemble(
    records: Sequence[Any],
    objective: PreferenceModel,
    tokenizer: Any,
    config: RewardTrainConfig,
    *,
    members: int,
    run_dir: str | Path,
    device: torch.device | str = "cpu",
    bootstrap: bool = False,
    combine: Combine = "mean",
    penalty: float = 0.0,
    on_step: Callable[[int, int, Mapping[str, float]], None] | None = None,
    resume: bool = False,
) -> RewardEnsemble:
    """Train ``members`` reward models that differ in seed (initialisation, data order), optionally in data.

    Member k uses seed ``config.seed + k`` and the folder ``run_dir/member-k``; with
    ``bootstrap`` it trains on a bootstrap resample of ``records`` (Coste et al. 2023 found
    different seeds alone already give useful diversity). ``on_step(member, step, metrics)``
    reports each member's progress.
    """
    if members < 1:
        raise ConfigError(f"members must be >= 1, got {members}.", field="members")
    records = list(records)
    models: list[RewardNetwork] = []
    for member in range(members):
        member_config = replace(config, seed=config.seed + member)
        member_records = bootstrap_sample(records, member_config.seed) if bootstrap else records
        report = None
        if on_step is not None:

            def report(step: int, metrics: Mapping[str, float], member: int = member) -> None:
                on_step(member, step, metrics)

        models.append(
            train_preference_model(
                member_records,
                objective,
                tokenizer,
                member_config,
                run_dir=Path(run_dir) / f"member-{member}",
                device=device,
                on_step=report,
                resume=resume,
            )
        )
    return RewardEnsemble(models, combine=combine, penalty=penalty)


def rewarded_soup(models: Sequence[RewardModel], weights: Sequence[float]) -> RewardModel:
    """One ``RewardModel`` whose parameters are Σ_i λ_i θ_i (Ramé et al. 2023).

    The models must share architecture and heads and should be fine-tuned from one
    initialisation, where linear interpolation stays in a low-loss region. Weights are
    non-negative and sum to 1. Non-float buffers (e.g. position ids) must agree and are copied.
    """
    models = list(models)
    weights = [float(weight) for weight in weights]
    if not models:
        raise ConfigError("rewarded_soup needs at least one model.", field="models")
    if len(weights) != len(models):
        raise ConfigError(f"rewarded_soup got {len(weights)} weights for {len(models)} models.", field="weights")
    if not all(isinstance(model, RewardModel) for model in models):
        raise ConfigError("rewarded_soup interpolates RewardModel weights; every model must be a RewardModel.")
    if any(not math.isfinite(weight) or weight < 0 for weight in weights) or abs(sum(weights) - 1.0) > 1e-6:
        raise ConfigError(f"rewarded_soup weights must be >= 0 and sum to 1; got {weights}.", field="weights")
    first = models[0]
    states = [model.state_dict() for model in models]
    for index, (model, state) in enumerate(zip(models, states, strict=True)):
        if model.aspects != first.aspects:
            raise ConfigError(f"model {index} has heads {list(model.aspects)}, model 0 {list(first.aspects)}.")
        if state.keys() != states[0].keys() or any(state[k].shape != states[0][k].shape for k in state):
            raise ConfigError(f"model {index} has a different architecture from model 0; souping needs one shape.")
    soup = copy.deepcopy(first)
    mixed: dict[str, torch.Tensor] = {}
    for name, reference in states[0].items():
        if reference.is_floating_point():
            total = torch.zeros_like(reference, dtype=torch.float32)
            for weight, state in zip(weights, states, strict=True):
                total = total + weight * state[name].float()
            mixed[name] = total.to(reference.dtype)
        else:
            if any(not torch.equal(state[name], reference) for state in states):
                raise ConfigError(f"buffer {name!r} differs between models; they do not share one architecture.")
            mixed[name] = reference.clone()
    soup.load_state_dict(mixed)
    return soup


def save_soup(models: Sequence[RewardModel], weights: Sequence[float], folder: str | Path) -> RewardModel:
    """``rewarded_soup(models, weights)`` saved in ``folder``; under torchrun (collective) every rank holds
    rank 0's soup and rank 0 alone writes it.

    Every rank holds the members' full weights (distributed training gathers them back), so each rank
    averages them itself; the broadcast then makes the soups identical whatever each rank summed.
    """
    soup = rewarded_soup(models, weights)
    if current() is not None:
        broadcast_weights(soup)
    if is_main():
        soup.save(folder)
    barrier()
    return soup
