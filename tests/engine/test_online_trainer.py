"""The online loop on the demo model: metrics of a step, exact resume, a kill mid-rollout, the prompt order.

The objective and the reward here are small stand-ins written in the test (plain REINFORCE on
the batch's advantages, an exact-answer check), so the loop is tested on its own: sampling,
scoring, advantages, minibatch updates and the checkpoint round trip.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from prefcore.batch import LossOutput
from prefcore.demo import task
from prefcore.demo.model import build_tiny_model
from prefcore.demo.tokenizer import build_tokenizer
from prefcore.engine.checkpoint import list_checkpoints
from prefcore.engine.models import frozen_copy
from prefcore.engine.online_schedule import PromptSampler
from prefcore.engine.online_schedule import rollout_seed
from prefcore.engine.online_trainer import OnlineTrainer
from prefcore.online_objectives import KLPenalty
from prefcore.rollout import RolloutBatch
from prefcore.rollout import Rollouts
from prefcore.settings import OnlineLoopConfig
from prefcore.settings import TrainConfig


class Reinforce:
    """Stand-in online objective: −mean over the step's tokens of A_t · log π(y_t)."""

    name = "test_reinforce"

    def __init__(self, estimator: str = "group") -> None:
        self._estimator = estimator
        self.beta = 0.0
        self.kl_seen: list[float] = []

    def uses_reference(self) -> bool:
        return False

    def estimator(self) -> str:
        return self._estimator

    def estimator_options(self) -> dict[str, Any]:
        return {}

    def reward_kl(self) -> None:
        return None

    def loss_mask(self, batch: RolloutBatch) -> torch.Tensor:
        return batch.mask

    def loss(self, batch: RolloutBatch) -> LossOutput:
        mask = batch.mask.float()
        loss = -(batch.advantages * batch.policy_logps * mask).sum() / batch.step_tokens()
        ratio = ((batch.policy_logps - batch.sampling_logps).exp() * mask).sum() / mask.sum()
        return LossOutput(loss, {"ratio": ratio})

    def update_kl(self, kl: float, num_samples: int) -> float:
        self.kl_seen.append(kl)
        self.beta += 0.5  # a state that must survive a resume
        return self.beta

    def state_dict(self) -> dict[str, float]:
        return {"beta": self.beta}

    def load_state_dict(self, state: Mapping[str, float]) -> None:
        self.beta = float(state["beta"])


def exact_reward(rollouts: Rollouts, metadata: Sequence[Mapping[str, Any]]) -> tuple[torch.Tensor, dict]:
    """1 when the completion is the answer word, 0.2 when it contains it (a second component)."""
    answers = [metadata[group]["answer"] for group in rollouts.group_ids]
    pairs = list(zip(rollouts.texts, answers, strict=True))
    exact = torch.tensor([float(text.strip() == answer) for text, answer in pairs])
    contains = torch.tensor([float(answer in text.split()) for text, answer in pairs])
    return exact + 0.2 * contains, {"exact": exact, "contains": contains}


RECORDS = task.answer_records(("sum",))[:24]


def _trainer(run_dir: Path, *, steps: int = 4, checkpoint_every: int = 0, reward=exact_reward, **online: Any):
    tokenizer = build_tokenizer()
    policy = build_tiny_model(tokenizer, seed=0)
    settings = {"prompts_per_step": 3, "samples_per_prompt": 4, "max_new_tokens": 6, **online}
    config = TrainConfig(steps=steps, lr=1e-2, seed=3, checkpoint_every=checkpoint_every, progress=False)
    return OnlineTrainer(
        policy,
        Reinforce(),
        [record.prompt for record in RECORDS],
        [record.metadata for record in RECORDS],
        config,
        OnlineLoopConfig(**settings),
        tokenizer=tokenizer,
        reward=reward,
        run_dir=run_dir,
        device=torch.device("cpu"),
        reference=frozen_copy(policy),
    )


def _weights(trainer: OnlineTrainer) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in trainer.policy.state_dict().items()}


def test_a_step_logs_rewards_advantages_kl_entropy_length_and_updates(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, update_epochs=2, minibatch_size=6, micro_batch_size=4)
    before = _weights(trainer)
    metrics = trainer.train_step()
    for key in (
        "reward/mean",
        "reward/std",
        "reward/exact",
        "reward/contains",
        "advantages/mean",
        "advantages/std",
        "zero_std_groups",
        "kl/k1",
        "kl/k3",
        "entropy",
        "completion_length",
        "truncated_fraction",
        "loss",
        "grad_norm",
        "lr",
    ):
        assert key in metrics, key
    assert trainer.online_step == 1
    assert trainer.step == 4  # 2 epochs × 12 completions / minibatches of 6
    assert metrics["kl/k1"] == pytest.approx(0.0, abs=1e-4)  # the policy sampled is the reference
    assert 0 <= metrics["truncated_fraction"] <= 1 and 0 <= metrics["zero_std_groups"] <= 3
    assert any(not torch.equal(before[name], value) for name, value in _weights(trainer).items())


def test_first_update_ratio_is_one(tmp_path: Path) -> None:
    """The sampler's log-probs equal the training path's at unchanged weights: the first ratio is 1."""
    trainer = _trainer(tmp_path)
    metrics = trainer.train_step()  # one minibatch, one update: its ratio is measured before the step
    assert metrics["ratio"] == pytest.approx(1.0, abs=1e-4)


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path: Path) -> None:
    straight = _trainer(tmp_path / "straight", steps=4, update_epochs=2, minibatch_size=6)
    straight.fit()

    first = _trainer(tmp_path / "resumed", steps=4, checkpoint_every=2, update_epochs=2, minibatch_size=6)
    first.online_steps = 2  # the run is killed after its step-2 checkpoint
    first.fit()
    assert [path.name for path in list_checkpoints(tmp_path / "resumed")] == ["step-000002"]
    second = _trainer(tmp_path / "resumed", steps=4, checkpoint_every=2, update_epochs=2, minibatch_size=6)
    assert second.resume()
    assert (second.online_step, second.step, second.objective.beta) == (2, 8, 1.0)  # 2 × 2 epochs × 2 minibatches
    second.fit()
    for name, value in _weights(straight).items():
        torch.testing.assert_close(_weights(second)[name], value, rtol=0, atol=0, msg=name)
    assert second.objective.beta == straight.objective.beta


@pytest.mark.parametrize("phase", ["rollout", "update"])
def test_a_kill_mid_step_resumes_from_the_last_checkpoint(phase: str, tmp_path: Path) -> None:
    """A kill while step 3's rollouts are scored, or during its updates: the resumed run ends with the same weights."""
    straight = _trainer(tmp_path / "straight", steps=3, minibatch_size=6)
    straight.fit()

    calls = {"count": 0}

    def dying_reward(rollouts: Rollouts, metadata: Sequence[Mapping[str, Any]]) -> Any:
        calls["count"] += 1
        if calls["count"] == 3:  # step 3's rollouts are sampled; the process dies while scoring them
            raise KeyboardInterrupt
        return exact_reward(rollouts, metadata)

    killed = _trainer(
        tmp_path / "killed",
        steps=3,
        checkpoint_every=1,
        minibatch_size=6,
        reward=dying_reward if phase == "rollout" else exact_reward,
    )
    if phase == "update":
        real_loss = killed.objective.loss

        def dying_loss(batch: RolloutBatch) -> LossOutput:
            if killed.online_step == 2 and killed.step == 5:  # step 3's first update is applied, its second is not
                raise KeyboardInterrupt
            return real_loss(batch)

        killed.objective.loss = dying_loss
    with pytest.raises(KeyboardInterrupt):
        killed.fit()
    resumed = _trainer(tmp_path / "killed", steps=3, checkpoint_every=1, minibatch_size=6)
    assert resumed.resume() and resumed.online_step == 2
    resumed.fit()
    for name, value in _weights(straight).items():
        torch.testing.assert_close(_weights(resumed)[name], value, rtol=0, atol=0, msg=name)


def test_a_kl_penalty_in_the_reward_is_summed_into_it_when_the_estimator_takes_no_per_token_kl(
    tmp_path: Path,
) -> None:
    trainer = _trainer(tmp_path)
    with torch.no_grad():  # a reference that differs from the policy, so the KL is not 0
        for parameter in trainer.reference.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    plain = trainer.rollout_phase([0, 1, 2])
    trainer.objective.reward_kl = lambda: KLPenalty(beta=0.5, estimator="k1")
    penalised = trainer.rollout_phase([0, 1, 2])  # the same seed: the same rollouts
    tensors = penalised.tensors
    k1 = ((tensors.sampling_logps - penalised.ref_logps) * tensors.mask).sum(-1)
    assert penalised.rollouts.texts == plain.rollouts.texts
    torch.testing.assert_close(penalised.rewards, plain.rewards - 0.5 * k1)


def test_prompt_sampler_is_seeded_covers_each_epoch_and_resumes() -> None:
    sampler = PromptSampler(5, seed=1)
    first = sampler.draw(3) + sampler.draw(3)  # crosses into epoch 1
    assert sorted(first[:5]) == [0, 1, 2, 3, 4]
    state = sampler.state()
    rest = sampler.draw(4)
    again = PromptSampler(5, seed=1)
    again.load(state)
    assert again.draw(4) == rest
    assert PromptSampler(5, seed=1).draw(6) == first
    assert PromptSampler(5, seed=2).draw(5) != first[:5]


# -- dynamic sampling (DAPO) ---------------------------------------------------------------------

PROMPT_INDEX = {record.prompt: index for index, record in enumerate(RECORDS)}


def _flat_on_even_prompts(rollouts: Rollouts, metadata: Sequence[Mapping[str, Any]]) -> tuple[torch.Tensor, dict]:
    """Fixed rewards: every sample of an even-numbered prompt gets 1; an odd one's samples get 0, 1, 2, ..."""
    size = rollouts.samples_per_prompt
    values = [
        1.0 if PROMPT_INDEX[rollouts.prompt_of(row)] % 2 == 0 else float(row % size)
        for row in range(rollouts.num_completions)
    ]
    rewards = torch.tensor(values)
    return rewards, {"fixed": rewards}


def _expected_draws(count: int, per_step: int, rounds: int, keep: Any) -> tuple[list[int], list[int], int]:
    """What dynamic sampling should train on, replayed with a fresh sampler: (kept, sampled, rounds used)."""
    sampler = PromptSampler(count, seed=3)
    drawn = sampler.draw(per_step)
    kept: list[int] = []
    sampled: list[int] = []
    used = 0
    while True:
        sampled += drawn
        kept += [index for index in drawn if keep(index)]
        used += 1
        if len(kept) == per_step or used == rounds + 1:
            return kept, sampled, used
        drawn = sampler.draw(per_step - len(kept))


def test_dynamic_sampling_keeps_groups_whose_rewards_differ_and_refills_the_step(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, reward=_flat_on_even_prompts, dynamic_sampling=True, max_sampling_rounds=8)
    kept, sampled, rounds = _expected_draws(len(RECORDS), 3, 8, lambda index: index % 2 == 1)
    assert len(kept) == 3 and rounds > 1  # some even prompts were drawn, dropped and replaced
    scored = trainer.rollout_phase(trainer.sampler.draw(3))
    assert list(scored.rollouts.prompts) == [RECORDS[index].prompt for index in kept]
    assert scored.rollouts.group_ids == tuple(row // 4 for row in range(12))
    assert scored.rewards.tolist() == [0.0, 1.0, 2.0, 3.0] * 3
    assert scored.components["fixed"].tolist() == scored.rewards.tolist()
    assert scored.tensors.mask.shape[0] == 12 and scored.ref_logps is not None
    assert dict(scored.metrics) == {
        "dynamic_sampling/rounds": float(rounds),
        "dynamic_sampling/sampled_prompts": float(len(sampled)),
        "dynamic_sampling/dropped_groups": float(len(sampled) - 3),
        "dynamic_sampling/kept_groups": 3.0,
        "dynamic_sampling/sampled_reward_mean": pytest.approx(
            sum(1.0 if index % 2 == 0 else 1.5 for index in sampled) / len(sampled)
        ),
    }
    assert trainer.sampler.position == len(sampled)  # the extra prompts came from the seeded order


def test_dynamic_sampling_stops_after_its_rounds_and_trains_on_what_it_kept(tmp_path: Path) -> None:
    def flat(rollouts: Rollouts, metadata: Sequence[Mapping[str, Any]]) -> tuple[torch.Tensor, dict]:
        return torch.ones(rollouts.num_completions), {}

    trainer = _trainer(tmp_path, reward=flat, dynamic_sampling=True, max_sampling_rounds=2)
    indices = trainer.sampler.draw(3)
    scored = trainer.rollout_phase(indices)  # every group constant: 3 rounds, nothing kept
    assert scored.metrics["dynamic_sampling/rounds"] == 3.0
    assert scored.metrics["dynamic_sampling/sampled_prompts"] == 9.0
    assert scored.metrics["dynamic_sampling/kept_groups"] == 0.0
    assert list(scored.rollouts.prompts) == [RECORDS[index].prompt for index in indices]  # the first round's
    assert not scored.advantages.any()

    odd = _trainer(tmp_path / "odd", reward=_flat_on_even_prompts, dynamic_sampling=True, max_sampling_rounds=0)
    drawn = odd.sampler.draw(3)
    scored = odd.rollout_phase(drawn)  # no extra round: the odd prompts of the first draw only
    assert list(scored.rollouts.prompts) == [RECORDS[index].prompt for index in drawn if index % 2 == 1]


def test_an_online_run_with_dynamic_sampling_trains_only_on_groups_with_signal(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, steps=3, reward=_flat_on_even_prompts, dynamic_sampling=True)
    seen: list[Mapping[str, float]] = []
    trainer.on_step = lambda step, metrics: seen.append(dict(metrics))
    trainer.fit()
    assert len(seen) == 3
    for metrics in seen:
        assert metrics["zero_std_groups"] == 0 and metrics["dynamic_sampling/kept_groups"] == 3
        assert metrics["reward/mean"] == pytest.approx(1.5)  # only the odd prompts' 0, 1, 2, 3
    assert sum(metrics["dynamic_sampling/dropped_groups"] for metrics in seen) > 0


def test_dynamic_sampling_resumes_to_the_same_weights(tmp_path: Path) -> None:
    options = {"reward": _flat_on_even_prompts, "dynamic_sampling": True, "minibatch_size": 6}
    straight = _trainer(tmp_path / "straight", steps=4, **options)
    straight.fit()
    first = _trainer(tmp_path / "resumed", steps=4, checkpoint_every=2, **options)
    first.online_steps = 2
    first.fit()
    second = _trainer(tmp_path / "resumed", steps=4, checkpoint_every=2, **options)
    assert second.resume() and second.sampler.state() != PromptSampler(len(RECORDS), seed=3).state()
    second.fit()
    assert second.sampler.state() == straight.sampler.state()
    for name, value in _weights(straight).items():
        torch.testing.assert_close(_weights(second)[name], value, rtol=0, atol=0, msg=name)


def test_the_sampling_seed_of_a_round_is_a_function_of_seed_step_and_round() -> None:
    seeds = {rollout_seed(3, step, attempt) for step in range(4) for attempt in range(4)}
    assert len(seeds) == 16 and rollout_seed(3, 2) == rollout_seed(3, 2, 0)
