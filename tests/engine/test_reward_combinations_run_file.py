"""Ensembles, rewarded soups and multi-aspect models from run files, end to end on the demo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from prefcore.config import parse_run_config
from prefcore.demo.task import preference_pairs
from prefcore.engine.reward_model import RewardModel
from prefcore.errors import ConfigError
from prefcore.pipeline import run_pipeline
from prefcore.validation import check_run_config


def _config(preference_model: list[dict], **run: object) -> dict:
    return {
        "run": {"seed": 0, "eval_prompts": 2, "max_new_tokens": 4, **run},
        "model": {"demo": True},
        "feedback": {"method": "demo_rule", "count": 32},
        "preference_model": preference_model,
        "reward_model": {"steps": 2, "batch_size": 8, "heldout_fraction": 0.0},
        "usage": {"method": "dpo", "beta": 0.3},
        "evaluation": [{"method": "reward_score"}],
        "train": {"steps": 1, "batch_size": 8, "progress": False},
    }


def test_a_soup_of_two_sections_is_their_weights_interpolated(tmp_path: Path) -> None:
    members = [{"method": "bradley_terry", "weight": 3}, {"method": "margin_bradley_terry", "weight": 1}]
    result = run_pipeline(parse_run_config(_config(members, ensemble="soup")), out=str(tmp_path / "run"))
    folder = result.run_dir / "reward_model"
    first = RewardModel.load(folder / "0-bradley_terry" / "model")
    second = RewardModel.load(folder / "1-margin_bradley_terry" / "model")
    soup = RewardModel.load(folder / "soup" / "model")
    first_state, second_state = first.state_dict(), second.state_dict()
    for name, tensor in soup.state_dict().items():
        if tensor.is_floating_point():
            torch.testing.assert_close(tensor, 0.75 * first_state[name] + 0.25 * second_state[name])
    # One initialisation for every member (the [reward_model] seed), so the soup stays meaningful.
    assert not torch.equal(first.head.weight, second.head.weight)  # they trained differently ...
    assert "reward_score/policy_score" in result.metrics  # ... and the soup scored the evaluation


def test_mean_minus_std_of_several_sections_scores_the_evaluation(tmp_path: Path) -> None:
    members = [{"method": "bradley_terry"}, {"method": "bradley_terry", "center_rewards_coefficient": 0.01}]
    config = _config(members, ensemble="mean_minus_std", ensemble_penalty=1.0, reward_labels=True)
    result = run_pipeline(parse_run_config(config), out=str(tmp_path / "run"))
    assert (result.run_dir / "reward_model" / "1-bradley_terry" / "model").is_dir()
    assert "reward_score/policy_score" in result.metrics


def test_a_multi_aspect_model_with_aspect_weights_from_a_run_file(tmp_path: Path) -> None:
    pairs = preference_pairs(count=48, seed=2)
    rows = [
        {
            "prompt": p.prompt,
            "chosen": p.chosen,
            "rejected": p.rejected,
            "aspect": ("helpfulness", "harmlessness")[i % 2],
        }
        for i, p in enumerate(pairs)
    ]
    path = tmp_path / "aspects.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    config = _config(
        [
            {
                "method": "multi_aspect",
                "aspects": ["helpfulness", "harmlessness"],
                "aspect_weights": {"helpfulness": 0.7, "harmlessness": 0.3},
            }
        ],
        reward_labels=True,
    )
    config["feedback"] = {"method": "preference_file", "path": str(path)}
    config["run"]["heldout_fraction"] = 0.25
    result = run_pipeline(parse_run_config(config), out=str(tmp_path / "run"))
    model = RewardModel.load(result.run_dir / "reward_model" / "model")
    assert model.aspects == ("helpfulness", "harmlessness")
    assert model.scoring.aspect_weights == pytest.approx((0.7, 0.3))
    assert "reward_score/policy_score" in result.metrics


@pytest.mark.parametrize(
    ("members", "run", "message"),
    [
        ([{"method": "bradley_terry"}], {"ensemble": "soup"}, "has 1 \\[\\[preference_model\\]\\] section"),
        (
            [{"method": "bradley_terry"}, {"method": "implicit_dpo"}],
            {"ensemble": "soup"},
            "implicit_dpo is a policy's implicit reward",
        ),
        ([{"method": "bradley_terry"}, {"method": "bradley_terry"}], {"ensemble": "soup"}, "#2 repeats #1"),
        ([{"method": "bradley_terry", "weight": 2}, {"method": "margin_bradley_terry"}], {}, "share of a soup"),
        ([{"method": "bradley_terry"}, {"method": "margin_bradley_terry"}], {"ensemble_penalty": 1.0}, "penalty"),
    ],
)
def test_combinations_that_cannot_work_are_refused_by_the_dry_run(
    members: list[dict], run: dict, message: str, tmp_path: Path
) -> None:
    config = parse_run_config(_config(members, **run))
    with pytest.raises(ConfigError, match=message):
        check_run_config(config)
    with pytest.raises(ConfigError, match=message):
        run_pipeline(config, out=str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()
