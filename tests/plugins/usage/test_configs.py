"""Config validation of the built-in objectives: bad values fail early, naming option, objective and value."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from prefcore.errors import ConfigError
from prefcore.registry import Registry

INVALID_OPTIONS: list[tuple[str, dict[str, Any], str]] = [
    ("dpo", {"beta": -1}, "beta must be > 0 for objective 'dpo'. Got -1.0."),
    ("dpo", {"beta": 0}, "beta must be > 0 for objective 'dpo'. Got 0.0."),
    ("cdpo", {"label_smoothing": 0.0}, "label_smoothing must be in (0.0, 0.5) for objective 'cdpo'. Got 0.0."),
    ("cdpo", {"label_smoothing": 0.5}, "label_smoothing must be in (0.0, 0.5) for objective 'cdpo'. Got 0.5."),
    ("ipo", {"beta": -0.1}, "beta must be > 0 for objective 'ipo'. Got -0.1."),
    ("hinge", {"beta": 0}, "beta must be > 0 for objective 'hinge'. Got 0.0."),
    ("simpo", {"beta": 0}, "beta must be > 0 for objective 'simpo'. Got 0.0."),
    ("simpo", {"gamma": float("nan")}, "must be a finite number"),
    ("simpo", {"label_smoothing": 0.7}, "label_smoothing must be in [0.0, 0.5) for objective 'simpo'. Got 0.7."),
    ("orpo", {"beta": -2}, "beta must be > 0 for objective 'orpo'. Got -2.0."),
    ("cpo", {"alpha": -1}, "alpha must be >= 0 for objective 'cpo'. Got -1.0."),
    ("cpo", {"label_smoothing": 0.5}, "label_smoothing must be in [0.0, 0.5) for objective 'cpo'. Got 0.5."),
    ("kto", {"desirable_weight": -1}, "desirable_weight must be >= 0 for objective 'kto'. Got -1.0."),
    ("kto", {"desirable_weight": 0, "undesirable_weight": 0}, "cannot both be 0 for objective 'kto'"),
    ("kto", {"beta": 0}, "beta must be > 0 for objective 'kto'. Got 0.0."),
    ("rrhf", {"length_penalty": -1}, "length_penalty must be >= 0 for objective 'rrhf'. Got -1.0."),
    ("rrhf", {"ranking_weight": 0, "sft_weight": 0}, "cannot both be 0 for objective 'rrhf'"),
    ("pro", {"sft_weight": -0.1}, "sft_weight must be >= 0 for objective 'pro'. Got -0.1."),
    ("plackett_luce_dpo", {"beta": 0}, "beta must be > 0 for objective 'plackett_luce_dpo'. Got 0.0."),
    ("unlikelihood", {"alpha": 0}, "alpha must be > 0 for objective 'unlikelihood'. Got 0.0."),
    ("rpo", {"alpha": -0.5}, "alpha must be >= 0 for objective 'rpo'. Got -0.5."),
    ("exo_pair", {"epsilon": 0.0}, "epsilon must be in (0.0, 0.5] for objective 'exo_pair'. Got 0.0."),
    ("nca_pair", {"beta": 0}, "beta must be > 0 for objective 'nca_pair'. Got 0.0."),
    ("odpo", {"alpha": -1}, "alpha must be >= 0 for objective 'odpo'. Got -1.0."),
    ("robust_dpo", {"flip_rate": 0.5}, "flip_rate must be in [0.0, 0.5) for objective 'robust_dpo'. Got 0.5."),
    ("bco_pair", {"beta": -3}, "beta must be > 0 for objective 'bco_pair'. Got -3.0."),
    ("sppo_hard", {"beta": 0}, "beta must be > 0 for objective 'sppo_hard'. Got 0.0."),
    ("aot", {"label_smoothing": -0.1}, "label_smoothing must be in [0.0, 0.5) for objective 'aot'. Got -0.1."),
    ("aot_pair", {"beta": 0}, "beta must be > 0 for objective 'aot_pair'. Got 0.0."),
    ("apo_zero", {"beta": 0}, "beta must be > 0 for objective 'apo_zero'. Got 0.0."),
    ("apo_down", {"beta": 0}, "beta must be > 0 for objective 'apo_down'. Got 0.0."),
    ("discopop", {"tau": 0}, "tau must be > 0 for objective 'discopop'. Got 0.0."),
    ("sigmoid_norm", {"beta": 0}, "beta must be > 0 for objective 'sigmoid_norm'. Got 0.0."),
    ("fdpo", {"divergence": "kl"}, "divergence must be one of reverse_kl, forward_kl, js_divergence, alpha_divergence"),
    ("fdpo", {"alpha": float("inf")}, "must be a finite number"),
    ("hindsight_sft", {"worse_template": "worse: {answer}"}, "worse_template must be a format string using {rejected}"),
    ("hindsight_sft", {"worse_template": "worse answer"}, "worse_template must contain {rejected}"),
    ("hindsight_sft", {"positive_condition": ""}, "positive_condition must be a non-empty string"),
    ("reward_conditioned_sft", {"levels": ["good"]}, "levels must be at least two distinct non-empty strings"),
    ("reward_conditioned_sft", {"levels": ["a", "a"]}, "levels must be at least two distinct non-empty strings"),
    ("reward_conditioned_sft", {"condition_template": "<good>"}, "condition_template must contain {level}"),
    ("reward_conditioned_sft", {"aspect": ""}, "aspect must be None or a non-empty name"),
    # online objectives (prefcore.online_objectives checks the options they share)
    ("grpo", {"kl_estimator": "k4"}, "kl_estimator must be one of k1, k2, k3, k3+ for objective 'grpo'"),
    ("grpo", {"kl_location": "advantage"}, "kl_location must be one of loss, reward, none"),
    ("grpo", {"aggregation": "mean"}, "aggregation must be one of token_mean, sequence_mean, dr_grpo, token_sum"),
    ("grpo", {"kl_target": 0.1}, "kl_target needs beta > 0"),
    ("grpo", {"dual_clip": 1.0}, "dual_clip must be > 1 for objective 'grpo'. Got 1.0."),
    ("grpo", {"epsilon": 1.0}, "epsilon must be in (0.0, 1.0) for objective 'grpo'. Got 1.0."),
    ("gspo", {"epsilon_high": 0}, "epsilon_high must be > 0 for objective 'gspo'. Got 0.0."),
    ("rloo", {"beta": -1}, "beta must be >= 0 for objective 'rloo'. Got -1.0."),
    ("reinforce_pp", {"log_ratio_clamp": 0}, "log_ratio_clamp must be > 0 for objective 'reinforce_pp'. Got 0.0."),
    ("reinforce", {"kl_horizon": 0}, "kl_horizon must be > 0 for objective 'reinforce'. Got 0.0."),
    ("remax", {"aggregation": "sum"}, "aggregation must be one of token_mean, sequence_mean, dr_grpo, token_sum"),
    ("ppo", {"critic": "elsewhere"}, "critic must be one of separate, reward_model, shared for objective 'ppo'"),
    ("safe_rlhf", {"lambda_update": "dual"}, "lambda_update must be one of log, projected for 'safe_rlhf'"),
]


@pytest.mark.parametrize(("name", "options", "message"), INVALID_OPTIONS)
def test_invalid_options_fail_with_the_value(
    usage_registry: Registry, name: str, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as excinfo:
        usage_registry.create("usage", name, options)
    assert excinfo.value.method == f"usage objective {name!r}"
    assert message in str(excinfo.value)


@pytest.mark.parametrize(("name", "options", "message"), INVALID_OPTIONS)
def test_config_classes_validate_on_their_own(
    usage_registry: Registry, name: str, options: dict[str, Any], message: str
) -> None:
    """Built directly (in Python, not from a run file) the config raises ValueError with the same message."""
    config_cls = usage_registry.get("usage", name).config_cls
    typed = {key: _as_config_type(value) for key, value in options.items()}
    with pytest.raises(ValueError) as excinfo:
        config_cls(**typed)
    assert message in str(excinfo.value)


def _as_config_type(value: Any) -> Any:
    """What ``build_config`` turns a run-file value into: lists to tuples, whole numbers to floats."""
    if isinstance(value, list):
        return tuple(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def test_every_objective_with_invalid_options_is_covered(usage_registry: Registry) -> None:
    with_options = {info.name for info in usage_registry.methods("usage") if dataclasses.fields(info.cls.config_cls)}
    assert with_options == {name for name, _, _ in INVALID_OPTIONS}


def test_every_option_is_documented(usage_registry: Registry) -> None:
    undocumented = [
        f"{info.name}.{field.name}"
        for info in usage_registry.methods("usage")
        for field in dataclasses.fields(info.cls.config_cls)
        if not field.metadata.get("doc")
    ]
    assert undocumented == []


def test_configs_are_frozen(usage_registry: Registry) -> None:
    for info in usage_registry.methods("usage"):
        params = getattr(info.cls.config_cls, "__dataclass_params__", None)
        assert params is not None and params.frozen, info.name
