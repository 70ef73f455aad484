"""``[online] sampler``: the run file reaches the cached sampler, ``auto`` picks it where it can, and it trains alike.

The reference for ``prefix_cache`` is ``generate`` (transformers' own sampling loop): with the
same seed, a GRPO run gives the same metrics and the same weights with either.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import GPT2Config
from transformers import GPT2LMHeadModel

from prefcore.config import build_config
from prefcore.config import parse_run_config
from prefcore.demo import task
from prefcore.demo.model import build_tiny_model
from prefcore.demo.tokenizer import build_tokenizer
from prefcore.engine.models import frozen_copy
from prefcore.engine.online_trainer import OnlineTrainer
from prefcore.engine.rollout import PrefixCacheBackend
from prefcore.engine.rollout import TransformersBackend
from prefcore.engine.rollout import make_backend
from prefcore.engine.rollout.prefix import supports_prefix_cache
from prefcore.errors import ConfigError
from prefcore.registry import Registry
from prefcore.rollout import Rollouts
from prefcore.settings import OnlineLoopConfig
from prefcore.settings import TrainConfig
from prefcore.validation import check_run_config

RECORDS = task.answer_records(("sum",))[:16]


def _run_file(**online: Any) -> dict[str, Any]:
    return {
        "run": {"name": "sampler", "heldout_fraction": 0.0},
        "model": {"demo": True},
        "feedback": {"method": "demo_rule", "kind": "answers", "categories": ["sum"]},
        "usage": {"method": "grpo"},
        "reward": [{"kind": "verifiable", "mode": "exact", "extract": "whole"}],
        "online": {"prompts_per_step": 2, "samples_per_prompt": 2, **online},
        "train": {"steps": 1},
    }


@pytest.mark.parametrize("sampler", ["auto", "generate", "prefix_cache"])
def test_the_option_round_trips_through_the_run_file(sampler: str) -> None:
    checked = check_run_config(parse_run_config(_run_file(sampler=sampler)))
    assert checked.sections["online"].sampler == sampler


def test_auto_is_the_default_and_other_names_are_refused() -> None:
    assert build_config(OnlineLoopConfig, {}, method="[online]").sampler == "auto"
    with pytest.raises(ConfigError, match="'sampler' must be one of 'auto', 'generate', 'prefix_cache'; got 'vllm'"):
        check_run_config(parse_run_config(_run_file(sampler="vllm")))


def test_auto_picks_the_cached_sampler_where_the_model_allows() -> None:
    demo = build_tiny_model(build_tokenizer(), seed=0)
    assert supports_prefix_cache(demo)
    assert isinstance(make_backend("auto", demo), PrefixCacheBackend)
    assert isinstance(make_backend("generate", demo), TransformersBackend)
    assert isinstance(make_backend("prefix_cache", demo), PrefixCacheBackend)
    # A model without a plain dynamic cache (sliding-window layers) gets generate.
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=32))
    gpt2.config.layer_types = ["sliding_attention"]
    gpt2.config.sliding_window = 4
    assert not supports_prefix_cache(gpt2)
    assert isinstance(make_backend("auto", gpt2), TransformersBackend)
    with pytest.raises(ValueError, match="plain dynamic key/value cache"):
        PrefixCacheBackend().sample(
            gpt2,
            [(1, 2)],
            samples_per_prompt=1,
            max_new_tokens=2,
            temperature=1.0,
            top_p=1.0,
            stop_ids=[0],
            pad_token_id=0,
            seed=0,
        )


def _exact(rollouts: Rollouts, metadata: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    answers = [metadata[group]["answer"] for group in rollouts.group_ids]
    exact = torch.tensor([float(text.strip() == answer) for text, answer in zip(rollouts.texts, answers, strict=True)])
    words = torch.tensor([float(len(text.split())) for text in rollouts.texts])
    return exact - 0.1 * words, {"exact": exact}


def _grpo_run(tmp_path: Path, sampler: str) -> tuple[OnlineTrainer, list[dict[str, float]]]:
    tokenizer = build_tokenizer()
    policy = build_tiny_model(tokenizer, seed=0)
    objective = Registry.from_environment(third_party=False).create("usage", "grpo", {"beta": 0.05})
    trainer = OnlineTrainer(
        policy,
        objective,
        [record.prompt for record in RECORDS],
        [record.metadata for record in RECORDS],
        TrainConfig(steps=3, lr=1e-2, seed=4, checkpoint_every=0, progress=False, kernel_backend="torch"),
        OnlineLoopConfig(prompts_per_step=4, samples_per_prompt=4, max_new_tokens=8, top_p=0.9, sampler=sampler),
        tokenizer=tokenizer,
        reward=_exact,
        run_dir=tmp_path / sampler,
        device=torch.device("cpu"),
        reference=frozen_copy(policy),
    )
    return trainer, [trainer.train_step() for _ in range(3)]


def test_grpo_trains_alike_with_either_sampler(tmp_path: Path) -> None:
    generated, want = _grpo_run(tmp_path, "generate")
    cached, got = _grpo_run(tmp_path, "prefix_cache")
    assert isinstance(generated.backend, TransformersBackend) and isinstance(cached.backend, PrefixCacheBackend)
    for ours, theirs in zip(got, want, strict=True):
        assert ours.keys() == theirs.keys()
        assert {k: v for k, v in ours.items() if not k.startswith("time/")} == {
            k: v for k, v in theirs.items() if not k.startswith("time/")
        }
    assert want[0]["reward/std"] > 0 and want[-1]["loss"] != 0  # the runs learnt from something
    for name, tensor in generated.policy.state_dict().items():
        assert torch.equal(cached.policy.state_dict()[name], tensor), name
