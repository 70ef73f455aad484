"""The PPO trainer on the demo model: values line up with log-probs, the rollout phase's rewards and GAE,
the cost hook, critic warm-up, exact resume after a kill mid-update, and a reward that rises.

The references are written here from the formulas (per-token KL estimators, ``token_rewards`` by
hand, GAE through ``prefcore.critic`` checked on its own in ``tests/core/test_critic.py``).
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from typing import ClassVar

import pytest
import torch

from prefcore.batch import LossOutput
from prefcore.critic import generalized_advantage_estimation
from prefcore.critic import whiten
from prefcore.demo import task
from prefcore.demo.model import build_tiny_model
from prefcore.demo.tokenizer import build_tokenizer
from prefcore.engine.models import frozen_copy
from prefcore.engine.online_trainer import OnlineTrainer
from prefcore.engine.ppo_trainer import PPOTrainer
from prefcore.engine.reward_model import build_reward_model
from prefcore.engine.rollout import RolloutSettings
from prefcore.engine.rollout import completion_logps
from prefcore.engine.rollout import pad_rollouts
from prefcore.engine.rollout import sample_rollouts
from prefcore.engine.value_model import build_value_model
from prefcore.engine.value_model import policy_outputs
from prefcore.errors import ConfigError
from prefcore.plugins.usage.ppo import PPO
from prefcore.plugins.usage.ppo import PPOConfig
from prefcore.rollout import RolloutBatch
from prefcore.rollout import Rollouts
from prefcore.settings import OnlineLoopConfig
from prefcore.settings import TrainConfig

RECORDS = task.answer_records(("sum",))[:24]
MAX_NEW_TOKENS = 6


def short_reward(rollouts: Rollouts, metadata: Sequence[Mapping[str, Any]]) -> tuple[torch.Tensor, dict]:
    """1 − |y|/max_new_tokens, plus 0.5 when the answer word appears: easy for a tiny model to move."""
    answers = [metadata[group]["answer"] for group in rollouts.group_ids]
    short = torch.tensor([1 - len(ids) / MAX_NEW_TOKENS for ids in rollouts.completion_ids])
    hit = torch.tensor([float(answer in text.split()) for text, answer in zip(rollouts.texts, answers, strict=True)])
    return short + 0.5 * hit, {"short": short, "hit": hit, "harm": (1 - short) * 2}


def _trainer(
    run_dir: Path,
    *,
    critic: str = "separate",
    steps: int = 3,
    checkpoint_every: int = 0,
    reward: Any = short_reward,
    objective: Any = None,
    reference: Any = None,
    cost_names: Sequence[str] = (),
    lr: float = 1e-2,
    **online: Any,
) -> PPOTrainer:
    tokenizer = build_tokenizer()
    policy = build_tiny_model(tokenizer, seed=0)
    settings = {"prompts_per_step": 3, "samples_per_prompt": 4, "max_new_tokens": MAX_NEW_TOKENS, **online}
    objective = objective or PPO(PPOConfig(critic=critic))
    heads = ("reward", "cost") if cost_names else ("reward",)
    return PPOTrainer(
        policy,
        objective,
        [record.prompt for record in RECORDS],
        [record.metadata for record in RECORDS],
        TrainConfig(steps=steps, lr=lr, seed=3, checkpoint_every=checkpoint_every, progress=False),
        OnlineLoopConfig(**settings),
        tokenizer=tokenizer,
        reward=reward,
        run_dir=run_dir,
        device=torch.device("cpu"),
        reference=reference if reference is not None else frozen_copy(policy),
        value_model=build_value_model(critic, policy, heads=heads),
        cost_names=cost_names,
    )


def _weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in module.state_dict().items()}


def _tensors(policy: torch.nn.Module, tokenizer: Any, count: int = 3):
    settings = RolloutSettings(samples_per_prompt=2, max_new_tokens=MAX_NEW_TOKENS, seed=1)
    rollouts = sample_rollouts(policy, tokenizer, [record.prompt for record in RECORDS[:count]], settings, seed=5)
    return pad_rollouts(rollouts, tokenizer.pad_token_id)


# ----------------------------------------------------------------------------------------------
# The value model
# ----------------------------------------------------------------------------------------------


def test_values_are_read_where_the_policy_predicts_each_completion_token() -> None:
    """V_t comes from the hidden state at len(prompt) − 1 + t: the state before y_t, as log π(y_t)."""
    tokenizer = build_tokenizer()
    policy = build_tiny_model(tokenizer, seed=0)
    tensors = _tensors(policy, tokenizer)
    value_model = build_value_model("separate", policy)
    with torch.no_grad():
        values = value_model.completion_values(tensors)["reward"]
    for row in range(tensors.num_completions):
        prompt = int(tensors.sequences.attention_mask[row].sum()) - int(tensors.mask[row].sum())
        ids = tensors.sequences.input_ids[row : row + 1, : prompt + int(tensors.mask[row].sum())]
        with torch.no_grad():
            hidden = value_model.trunk(input_ids=ids).last_hidden_state[0]
            expected = value_model.head(hidden).squeeze(-1)
        for t in range(int(tensors.mask[row].sum())):
            assert float(values[row, t]) == pytest.approx(float(expected[prompt - 1 + t]), abs=1e-5)
        assert bool((values[row, int(tensors.mask[row].sum()) :] == 0).all())
    # a fresh head: N(0, 1/(H+1)), bias 0 (OpenRLHF)
    hidden_size = value_model.head.weight.shape[1]
    assert float(value_model.head.weight.detach().std()) == pytest.approx(1 / (hidden_size + 1), rel=0.3)
    assert float(value_model.head.bias.detach().abs().max()) == 0
    assert value_model.trunk is not policy.get_decoder()


def test_one_forward_gives_log_probs_entropy_and_shared_values() -> None:
    tokenizer = build_tokenizer()
    policy = build_tiny_model(tokenizer, seed=0)
    tensors = _tensors(policy, tokenizer)
    shared = build_value_model("shared", policy)
    assert [name for name, _ in shared.named_parameters()] == ["head.weight", "head.bias"]
    rows = [0, 2, 3]
    with torch.no_grad():
        outputs = policy_outputs(policy, tensors, rows, value_model=shared, entropy=True)
        plain = completion_logps(policy, tensors, rows)
        values = shared.completion_values(tensors, rows)["reward"]
        logits = policy(input_ids=tensors.sequences.input_ids[rows]).logits / tensors.temperature
    torch.testing.assert_close(outputs.logps, plain, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(outputs.values["reward"], values, atol=1e-5, rtol=1e-5)
    calls = []
    hook = policy.get_decoder().register_forward_hook(lambda *args: calls.append(1))
    try:
        with torch.no_grad():
            fused = policy_outputs(policy, tensors, rows, value_model=shared)  # the fused LM head, no entropy
    finally:
        hook.remove()
    assert len(calls) == 1 and fused.entropy is None  # one decoder forward for log-probs and values
    torch.testing.assert_close(fused.logps, plain, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fused.values["reward"], values, atol=1e-5, rtol=1e-5)
    for index, row in enumerate(rows):
        prompt = int(tensors.sequences.attention_mask[row].sum()) - int(tensors.mask[row].sum())
        for t in range(int(tensors.mask[row].sum())):
            probs = torch.softmax(logits[index, prompt - 1 + t].double(), -1)
            expected = -(probs * probs.log()).sum()
            assert float(outputs.entropy[index, t]) == pytest.approx(float(expected), abs=1e-4)


def test_the_reward_model_placement_starts_from_its_trunk_and_head() -> None:
    tokenizer = build_tokenizer()
    policy = build_tiny_model(tokenizer, seed=0)
    reward_model = build_reward_model(tokenizer, demo=True, seed=7)
    with torch.no_grad():
        reward_model.head.bias.fill_(0.3)
    value_model = build_value_model("reward_model", policy, heads=("reward", "cost"), reward_model=reward_model)
    tensors = _tensors(policy, tokenizer)
    with torch.no_grad():
        expected = reward_model.token_rewards(tensors.sequences)[..., 0]
        got = value_model(tensors.sequences.input_ids, tensors.sequences.attention_mask)
    torch.testing.assert_close(got[..., 0], expected)
    assert float(value_model.head.bias.detach()[1]) == 0  # "cost" is not a head of the reward model: a fresh one
    assert value_model.trunk is not reward_model.backbone  # a copy: scoring keeps its weights
    with pytest.raises(ConfigError, match="reward model"):
        build_value_model("reward_model", policy)


# ----------------------------------------------------------------------------------------------
# The rollout phase
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_token_rewards_carry_the_kl_penalty_and_gae_uses_the_old_values(estimator: str, tmp_path: Path) -> None:
    tokenizer = build_tokenizer()
    reference = frozen_copy(build_tiny_model(tokenizer, seed=1))  # another model: the KL is not 0
    objective = PPO(PPOConfig(beta=0.3, kl_estimator=estimator, gamma=0.9, lam=0.7))
    trainer = _trainer(tmp_path, objective=objective, reference=reference)
    scored = trainer.rollout_phase(trainer.sampler.draw(3))
    mask = scored.tensors.mask
    d = (scored.tensors.sampling_logps - scored.ref_logps) * mask
    kl = {"k1": d, "k2": d * d / 2, "k3": torch.exp(-d) - 1 + d}[estimator] * mask
    last = torch.zeros_like(kl)
    for row, length in enumerate(mask.sum(-1).tolist()):
        last[row, length - 1] = scored.rewards[row]
    expected = (-0.3 * kl + last) * mask
    torch.testing.assert_close(scored.extras["token_rewards/reward"], expected)
    old = scored.extras["old_values/reward"]
    with torch.no_grad():
        torch.testing.assert_close(old, trainer.value_model.rollout_values(scored.tensors)["reward"])
    advantages, returns = generalized_advantage_estimation(expected, old, mask, 0.9, 0.7)
    torch.testing.assert_close(scored.extras["returns/reward"], returns)
    torch.testing.assert_close(scored.advantages, whiten(advantages, mask))
    assert float(d.abs().sum()) > 0
    assert scored.metrics["kl/reward_penalty"] == pytest.approx(float((0.3 * kl).sum(-1).mean()), rel=1e-5)


class _SafeStandIn(PPO):
    """Records what the trainer hands to ``combine_advantages``; (A_R − 2·A_C)/3, as Safe-RLHF with λ = 2."""

    seen: ClassVar[dict[str, Any]] = {}

    def combine_advantages(self, advantages: Mapping[str, torch.Tensor], mask: torch.Tensor, *, costs: torch.Tensor):
        self.seen.update(advantages=dict(advantages), costs=costs)
        return (advantages["reward"] - 2 * advantages["cost"]) / 3


def test_costs_get_their_own_head_and_gae_and_combine_with_the_reward(tmp_path: Path) -> None:
    tokenizer = build_tokenizer()
    reference = frozen_copy(build_tiny_model(tokenizer, seed=1))
    objective = _SafeStandIn(PPOConfig(beta=0.2, whiten_advantages=False))
    trainer = _trainer(tmp_path, objective=objective, reference=reference, cost_names=("harm",))
    scored = trainer.rollout_phase(trainer.sampler.draw(3))
    mask = scored.tensors.mask
    costs = scored.components["harm"]
    torch.testing.assert_close(objective.seen["costs"], costs)
    kl = (scored.tensors.sampling_logps - scored.ref_logps) * mask
    last = torch.zeros_like(kl)
    for row, length in enumerate(mask.sum(-1).tolist()):
        last[row, length - 1] = costs[row]
    cost_rewards = (0.2 * kl + last) * mask  # +β·kl: the cost grows as the policy drifts
    torch.testing.assert_close(scored.extras["token_rewards/cost"], cost_rewards)
    cost_advantages, cost_returns = generalized_advantage_estimation(
        cost_rewards, scored.extras["old_values/cost"], mask, 1.0, 0.95
    )
    torch.testing.assert_close(scored.extras["returns/cost"], cost_returns)
    torch.testing.assert_close(objective.seen["advantages"]["cost"], cost_advantages)
    expected = (objective.seen["advantages"]["reward"] - 2 * cost_advantages) / 3
    torch.testing.assert_close(scored.advantages, expected * mask)
    metrics = trainer.update_phase(scored)
    assert {"value/loss", "value_cost/loss"} <= set(metrics)
    with pytest.raises(ConfigError, match="heads"):  # costs need a "cost" head
        PPOTrainer(
            trainer.policy,
            objective,
            [record.prompt for record in RECORDS],
            [record.metadata for record in RECORDS],
            TrainConfig(steps=1, progress=False),
            OnlineLoopConfig(),
            tokenizer=tokenizer,
            reward=short_reward,
            run_dir=tmp_path / "y",
            device=torch.device("cpu"),
            reference=reference,
            value_model=build_value_model("separate", trainer.policy),
            cost_names=("harm",),
        )


def test_the_plain_online_trainer_refuses_an_objective_with_a_critic(tmp_path: Path) -> None:
    tokenizer = build_tokenizer()
    policy = build_tiny_model(tokenizer, seed=0)
    with pytest.raises(ConfigError, match="PPO trainer"):
        OnlineTrainer(
            policy,
            PPO(),
            ["a"],
            [{}],
            TrainConfig(steps=1, progress=False),
            OnlineLoopConfig(),
            tokenizer=tokenizer,
            reward=short_reward,
            run_dir=tmp_path,
            device=torch.device("cpu"),
            reference=frozen_copy(policy),
        )


# ----------------------------------------------------------------------------------------------
# Updates, warm-up, resume, learning
# ----------------------------------------------------------------------------------------------


def test_a_step_updates_policy_and_critic_and_the_first_ratio_is_one(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path)
    policy, critic = _weights(trainer.policy), _weights(trainer.value_model)
    metrics = trainer.train_step()  # one minibatch: the ratio is measured before the only update
    assert metrics["clip_ratio/region_mean"] == 0
    assert metrics["value/clip_fraction"] == 0  # V = V_old on the first pass
    for key in ("value/loss", "value/explained_variance", "critic/returns_mean", "policy_loss", "kl/reward_penalty"):
        assert key in metrics, key
    assert any(not torch.equal(policy[name], value) for name, value in _weights(trainer.policy).items())
    assert any(not torch.equal(critic[name], value) for name, value in _weights(trainer.value_model).items())


def test_critic_warmup_trains_only_the_value_model(tmp_path: Path) -> None:
    objective = PPO(PPOConfig(critic_warmup=1))
    trainer = _trainer(tmp_path, objective=objective)
    policy, critic = _weights(trainer.policy), _weights(trainer.value_model)
    metrics = trainer.train_step()
    assert metrics["critic/warmup"] == 1 and "policy_loss" not in metrics and trainer.step == 0
    for name, value in _weights(trainer.policy).items():
        assert torch.equal(policy[name], value), name
    assert any(not torch.equal(critic[name], value) for name, value in _weights(trainer.value_model).items())
    assert trainer.train_step()["critic/warmup"] == 0 and trainer.step == 1


@pytest.mark.parametrize("critic", ["separate", "shared"])
def test_a_kill_mid_update_resumes_to_the_weights_of_an_uninterrupted_run(critic: str, tmp_path: Path) -> None:
    """Killed during step 3's updates: resumed from the step-2 checkpoint, policy and critic end equal."""
    options = {"steps": 3, "update_epochs": 2, "minibatch_size": 6, "critic": critic}
    objective = PPO(PPOConfig(critic=critic, kl_target=0.05))  # an adaptive β: its state must survive too
    straight = _trainer(tmp_path / "straight", objective=objective, **options)
    straight.fit()

    killed = _trainer(tmp_path / "killed", checkpoint_every=1, objective=PPO(objective.config), **options)
    real_loss = killed.objective.loss

    def dying_loss(batch: RolloutBatch) -> LossOutput:
        if killed.online_step == 2 and killed.step == 9:  # step 3's first update applied, the second not
            raise KeyboardInterrupt
        return real_loss(batch)

    killed.objective.loss = dying_loss
    with pytest.raises(KeyboardInterrupt):
        killed.fit()
    resumed = _trainer(tmp_path / "killed", checkpoint_every=1, objective=PPO(objective.config), **options)
    assert resumed.resume() and resumed.online_step == 2 and resumed.step == 8
    resumed.fit()
    for module in ("policy", "value_model"):
        expected = _weights(getattr(straight, module))
        for name, value in _weights(getattr(resumed, module)).items():
            torch.testing.assert_close(value, expected[name], rtol=0, atol=0, msg=f"{module}.{name}")
    assert resumed.objective.beta == straight.objective.beta != 0.05
    expected_state = straight.critic_optimizer.state_dict()["state"]
    for key, state in resumed.critic_optimizer.state_dict()["state"].items():
        torch.testing.assert_close(state["exp_avg"], expected_state[key]["exp_avg"], rtol=0, atol=0)


SIGKILL_SCRIPT = """
import os, signal, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_ppo_trainer import PPO, PPOConfig, _trainer
trainer = _trainer(Path({run_dir!r}), checkpoint_every=1, objective=PPO(PPOConfig(critic={critic!r})), **{options!r})
real_loss = trainer.objective.loss
def dying_loss(batch):
    if trainer.online_step == 2 and trainer.step == 9:  # step 3's first update applied, the second not
        os.kill(os.getpid(), signal.SIGKILL)
    return real_loss(batch)
trainer.objective.loss = dying_loss
trainer.fit()
"""


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_a_process_killed_with_sigkill_mid_update_resumes_exactly(tmp_path: Path) -> None:
    """A real ``kill -9`` of the training process during step 3's updates; the resumed run ends equal."""
    options = {"steps": 3, "update_epochs": 2, "minibatch_size": 6}
    straight = _trainer(tmp_path / "straight", **options)
    straight.fit()
    script = SIGKILL_SCRIPT.format(
        tests=str(Path(__file__).parent), run_dir=str(tmp_path / "killed"), critic="separate", options=options
    )
    process = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert process.returncode == -signal.SIGKILL, process.stderr[-2000:]
    resumed = _trainer(tmp_path / "killed", checkpoint_every=1, **options)
    assert resumed.resume() and resumed.online_step == 2
    resumed.fit()
    for module in ("policy", "value_model"):
        expected = _weights(getattr(straight, module))
        for name, value in _weights(getattr(resumed, module)).items():
            torch.testing.assert_close(value, expected[name], rtol=0, atol=0, msg=f"{module}.{name}")


def test_ppo_raises_the_reward(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, steps=8, update_epochs=2, minibatch_size=6, prompts_per_step=4)
    rewards = [trainer.train_step()["reward/mean"] for _ in range(8)]
    assert sum(rewards[-3:]) / 3 > sum(rewards[:3]) / 3 + 0.15, rewards
