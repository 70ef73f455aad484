"""Dynamic sampling, best-of-n, self-play and the human loop under torchrun: 2 ranks train what 1 process does.

As in ``test_online_distributed.py``, each rank samples its own prompts with its own seed, so the
draws are pinned for the comparison: every prompt is sampled alone, seeded by its token ids and
the step (online step, best-of-n iteration or self-play round), whichever rank or batch it falls
in. Everything the distributed path adds is then checked against one process:

- dynamic sampling (GRPO, batch-std advantages): the reward makes chosen prompts' groups constant,
  so step 1 drops one group of rank 0 and resamples one prompt, on rank 0 only; step 2 keeps only
  rank 0's groups in round 0 and needs two more rounds, one of them sampling on rank 0 only;
  step 3 keeps a single group, so rank 1 trains a stand-in with weight 0. The kept groups are
  rebalanced in one process's order; under DDP and FSDP2.
- best-of-n (``keep = "top_fraction"``, a ranking over every rank's samples), two iterations.
- self-play (SPIN), two rounds: each rank answers its slice, the pairs are gathered.
- the human loop: export (rank 0 writes the samples of both ranks), scripted answers, training on
  the voted pairs sharded across the ranks, a resume from the sharded checkpoint, the second
  iteration (the last one gathers FSDP2's weights back); the same steps in one process give the
  same weights.

One torchrun launch (2 processes, gloo, CPU) runs every case; this file is also the worker
(``python test_loops_distributed.py all OUT``).
"""

from __future__ import annotations

import io
import json
import sys
import tempfile
import zlib
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).parent))

from dist_launch import torchrun

from prefcore.demo import task
from prefcore.demo.model import build_tiny_model
from prefcore.demo.tokenizer import build_tokenizer
from prefcore.engine import self_play
from prefcore.engine.generation import generate_completions
from prefcore.engine.human_loop import HumanOnlineDPO
from prefcore.engine.models import frozen_copy
from prefcore.engine.online_loops import run_best_of_n
from prefcore.engine.online_trainer import OnlineTrainer
from prefcore.engine.ppo_trainer import PPOTrainer
from prefcore.engine.rollout import PrefixCacheBackend
from prefcore.engine.rollout import Sample
from prefcore.engine.self_play import run_self_play
from prefcore.engine.trainer import WeightedObjective
from prefcore.engine.value_model import build_value_model
from prefcore.registry import Registry
from prefcore.rollout import Rollouts
from prefcore.settings import LoopConfig
from prefcore.settings import OnlineLoopConfig
from prefcore.settings import SelfPlayConfig
from prefcore.settings import TrainConfig

GLOO = dist.is_available() and dist.is_gloo_available()
RECORDS = task.answer_records(("sum",))[:20]
REGISTRY = Registry.from_environment(third_party=False)
DYNAMIC_STEPS = 3
CONSTANT: dict[int, set[int]] = {
    # prompt order (seed 3, 20 prompts): 12 18 7 17 | 8 3 5 19, then 0 4 1 16 9 | 10 14 6 11, 2 15 13 | 8 12, ...
    0: {18},  # rank 0 drops one group; the one replacement prompt (0) falls to rank 0 alone
    1: {4, 10, 14, 6, 11, 2, 8},  # rank 1 keeps none in round 0; three rounds, 7 groups kept
    2: set(range(20)) - {7},  # one group kept in three rounds: rank 1 trains a stand-in
}
"""Per online step, the prompts whose completions all get reward 0 (dynamic sampling drops them)."""


class PromptSeeded:
    """Samples each prompt alone, seeded by its token ids and ``step()`` (see the module docstring)."""

    def __init__(self) -> None:
        self.inner = PrefixCacheBackend()
        self.step = lambda: 0

    def sample(self, model: Any, prompt_ids: Sequence[tuple[int, ...]], **options: Any) -> list[Sample]:
        step = self.step()
        samples: list[Sample] = []
        for prompt in prompt_ids:
            seed = (zlib.crc32(json.dumps(list(prompt)).encode()) + 7_919 * step) % (2**31 - 1)
            samples += self.inner.sample(model, [prompt], **{**options, "seed": seed})
        return samples


def _calls() -> Any:
    """A step counter that counts its own calls: one sampling pass per iteration on every rank."""
    count = [-1]

    def step() -> int:
        count[0] += 1
        return count[0]

    return step


def _reward(constant: Mapping[int, set[int]], step: Any) -> Any:
    """The exact answer less a little per character, and 0 for the prompts ``constant[step()]`` names."""

    def reward(rollouts: Rollouts, metadata: Sequence[Mapping[str, Any]]) -> tuple[torch.Tensor, dict[str, Any]]:
        answers = [metadata[group]["answer"] for group in rollouts.group_ids]
        exact = torch.tensor(
            [float(text.strip() == answer) for text, answer in zip(rollouts.texts, answers, strict=True)]
        )
        length = torch.tensor([float(len(text)) for text in rollouts.texts])
        flat = torch.tensor([metadata[group]["index"] in constant.get(step(), ()) for group in rollouts.group_ids])
        return torch.where(flat, torch.zeros_like(exact), exact - 0.01 * length), {"exact": exact}

    return reward


def _config(steps: int, **options: Any) -> TrainConfig:
    return TrainConfig(
        steps=steps,
        lr=1e-3,
        seed=3,
        schedule="constant",
        warmup_steps=0,
        keep_checkpoints=0,
        progress=False,
        kernel_backend="torch",
        **options,
    )


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.named_parameters()}


# -- the cases ------------------------------------------------------------------------------------
def dynamic(run_dir: Path, *, full_sequences: bool = False, method: str = "grpo") -> dict[str, Any]:
    """GRPO (or PPO, with its value model) with dynamic sampling, ``DYNAMIC_STEPS`` online steps of 8 prompts."""
    tokenizer = build_tokenizer()
    policy = build_tiny_model(tokenizer, seed=1)
    backend = PromptSeeded()
    log: list[dict[str, float]] = []
    options = {"beta": 0.04, "scale_rewards": "batch"} if method == "grpo" else {}
    objective = REGISTRY.create("usage", method, options)
    metadata = [{**record.metadata, "index": index} for index, record in enumerate(RECORDS)]
    trainer_class = PPOTrainer if method == "ppo" else OnlineTrainer
    critic: dict[str, Any] = {}
    if method == "ppo":
        critic["value_model"] = build_value_model(objective.config.critic, policy, heads=("reward",), seed=2)
    trainer = trainer_class(
        policy,
        objective,
        [record.prompt for record in RECORDS],
        metadata,
        _config(DYNAMIC_STEPS),
        OnlineLoopConfig(
            prompts_per_step=8,
            samples_per_prompt=4,
            max_new_tokens=6,
            update_epochs=2,
            minibatch_size=12,
            micro_batch_size=5,
            dynamic_sampling=True,
            max_sampling_rounds=2,
        ),
        tokenizer=tokenizer,
        reward=_reward(CONSTANT, lambda: trainer.online_step),
        run_dir=run_dir,
        device=torch.device("cpu"),
        reference=frozen_copy(policy),
        backend=backend,
        on_step=lambda step, metrics: log.append(dict(metrics)),
        **critic,
    )
    backend.step = lambda: trainer.online_step
    if full_sequences:  # what FSDP2's shards run (OnlineTrainer.share_prefix)
        trainer.share_prefix = False
    trainer.fit()
    return {"metrics": log, "weights": _weights(policy)}


def best_of_n(run_dir: Path) -> dict[str, Any]:
    """Two best-of-n iterations keeping the top 30 % of every rank's samples, 2 SFT steps each."""
    tokenizer = build_tokenizer()
    policy = build_tiny_model(tokenizer, seed=1)
    backend = PromptSeeded()
    backend.step = _calls()
    steps: list[tuple[int, dict[str, float]]] = []
    metadata = [{**record.metadata, "index": index} for index, record in enumerate(RECORDS)]
    history = run_best_of_n(
        policy,
        tokenizer,
        [record.prompt for record in RECORDS],
        metadata,
        [WeightedObjective(REGISTRY.create("usage", "sft", {}))],
        _config(2, batch_size=4, checkpoint_every=0),
        OnlineLoopConfig(samples_per_prompt=4, max_new_tokens=6),
        LoopConfig(kind="best_of_n", iterations=2, prompts=6, keep="top_fraction", top_fraction=0.3),
        reward=_reward({}, lambda: 0),
        run_dir=run_dir,
        device=torch.device("cpu"),
        reference=frozen_copy(policy),
        backend=backend,
        on_step=lambda step, metrics: steps.append((step, dict(metrics))),
    )
    return {"history": history, "steps": steps, "weights": _weights(policy)}


def _pinned_generation() -> Any:
    """``generate_completions`` one prompt at a time, seeded by the prompt and the round (its call count)."""
    calls = _calls()

    def generate(model: Any, tokenizer: Any, prompts: Sequence[Any], settings: Any, **options: Any) -> list[str]:
        round_index = calls()
        answers: list[str] = []
        for prompt in prompts:
            seed = (zlib.crc32(str(prompt).encode()) + 7_919 * round_index) % (2**31 - 1)
            answers += generate_completions(model, tokenizer, [prompt], replace(settings, seed=seed), **options)
        return answers

    return generate


def spin(run_dir: Path) -> dict[str, Any]:
    """Two SPIN rounds of 6 prompts, 2 DPO steps each."""
    tokenizer = build_tokenizer()
    policy = build_tiny_model(tokenizer, seed=1)
    steps: list[tuple[int, dict[str, float]]] = []
    original = self_play.generate_completions
    self_play.generate_completions = _pinned_generation()  # type: ignore[assignment]
    try:
        run_self_play(
            policy,
            tokenizer,
            [SimpleNamespace(prompt=d.prompt, completion=d.completion, provenance=None) for d in task.sft_examples(16)],
            [WeightedObjective(REGISTRY.create("usage", "dpo", {"beta": 0.1}))],
            _config(2, batch_size=4, checkpoint_every=0),
            SelfPlayConfig(rounds=2, prompts=6, max_new_tokens=6),
            run_dir=run_dir,
            device=torch.device("cpu"),
            on_step=lambda step, metrics: steps.append((step, dict(metrics))),
        )
    finally:
        self_play.generate_completions = original  # type: ignore[assignment]
    return {"steps": steps, "weights": _weights(policy)}


def _human_trainer(run_dir: Path, log: list[dict[str, float]]) -> HumanOnlineDPO:
    tokenizer = build_tokenizer()
    policy = build_tiny_model(tokenizer, seed=1)
    backend = PromptSeeded()
    trainer = HumanOnlineDPO(
        policy,
        [WeightedObjective(REGISTRY.create("usage", "dpo", {"beta": 0.1}))],
        [record.prompt for record in RECORDS],
        [record.metadata for record in RECORDS],
        _config(2),
        OnlineLoopConfig(
            prompts_per_step=4, samples_per_prompt=3, max_new_tokens=6, temperature=1.5, micro_batch_size=2
        ),
        tokenizer=tokenizer,
        reward=_reward({}, lambda: 0),
        run_dir=run_dir,
        device=torch.device("cpu"),
        reference=frozen_copy(policy),
        backend=backend,
        on_step=lambda step, metrics: log.append(dict(metrics)),
        exchange=run_dir / "exchange",
    )
    backend.step = lambda: trainer.online_step
    return trainer


def _annotate(items: Path) -> None:
    """One annotator who prefers the first shown completion of every pair (rank 0 writes)."""
    from prefcore.annotate import AnnotationLog
    from prefcore.annotate import SessionConfig
    from prefcore.annotate import Terminal
    from prefcore.annotate import read_items
    from prefcore.annotate import run_session

    if dist.is_initialized() and dist.get_rank() != 0:
        dist.barrier()
        return
    shown = read_items(items, min_completions=2)
    answers = [
        str(i + 1) for item in shown for i in range(len(item.completions)) for _ in range(i + 1, len(item.completions))
    ]
    config = SessionConfig(annotator="alice", modes=("pairwise",), shuffle=False)
    terminal = Terminal(io.StringIO("".join(answer + "\n" for answer in answers)), io.StringIO())
    with AnnotationLog(items.parent / "answers" / "alice.jsonl") as log:
        run_session(shown, log, config, terminal)
    if dist.is_initialized():
        dist.barrier()


def human(run_dir: Path) -> dict[str, Any]:
    """Export, answer, train + export, resume and wait, answer, train: each ``advance`` a fresh trainer."""
    log: list[dict[str, float]] = []
    statuses = [_human_trainer(run_dir, log).advance().status]
    exchange = run_dir / "exchange"
    _annotate(exchange / "iteration-1" / "items.jsonl")
    statuses.append(_human_trainer(run_dir, log).advance().status)
    statuses.append(_human_trainer(run_dir, log).advance().status)  # resumes the sharded checkpoint: waits
    _annotate(exchange / "iteration-2" / "items.jsonl")
    final = _human_trainer(run_dir, log)
    statuses.append(final.advance().status)
    items = [(exchange / f"iteration-{k}" / "items.jsonl").read_text() for k in (1, 2)]
    return {"statuses": statuses, "metrics": log, "items": items, "weights": _weights(final.policy)}


# -- the worker ---------------------------------------------------------------------------------
def worker(out: Path) -> int:
    from prefcore import distributed

    torch.set_num_threads(1)
    parallel = distributed.init("ddp", timeout_s=60.0)
    try:
        results: dict[str, Any] = {
            "ddp/dynamic": dynamic(out / "ddp-dynamic"),
            "ddp/ppo_dynamic": dynamic(out / "ddp-ppo-dynamic", method="ppo"),
            "ddp/best_of_n": best_of_n(out / "ddp-best-of-n"),
            "ddp/spin": spin(out / "ddp-spin"),
            "ddp/human": human(out / "ddp-human"),
        }
        distributed.init("fsdp", timeout_s=60.0)
        results["fsdp/dynamic"] = dynamic(out / "fsdp-dynamic")
        results["fsdp/human"] = human(out / "fsdp-human")
        torch.save(results, out / f"rank{parallel.rank}.pt")
        return 0
    finally:
        distributed.teardown()


# -- the tests ----------------------------------------------------------------------------------
pytestmark = pytest.mark.skipif(not GLOO, reason="torch.distributed with gloo is not available")


@pytest.fixture(scope="module")
def launched(tmp_path_factory: pytest.TempPathFactory) -> dict[int, dict[str, Any]]:
    out = tmp_path_factory.mktemp("loops-dist")
    # from the output folder: the repository root's kernels/ would shadow the package transformers imports
    result = torchrun(2, "all", str(out), cwd=out, timeout=300, script=Path(__file__).resolve())
    assert result.returncode == 0, result.stderr[-4000:]
    return {rank: torch.load(out / f"rank{rank}.pt", weights_only=False) for rank in (0, 1)}


@pytest.fixture(scope="module")
def single() -> dict[str, dict[str, Any]]:
    """Each case in this one process (FSDP2's on the full sequences, as its shards take them)."""
    folder = Path(tempfile.mkdtemp())
    runs = {
        "ddp/dynamic": dynamic(folder / "dynamic"),
        "ddp/ppo_dynamic": dynamic(folder / "ppo-dynamic", method="ppo"),
        "fsdp/dynamic": dynamic(folder / "dynamic-full", full_sequences=True),
        "ddp/best_of_n": best_of_n(folder / "best-of-n"),
        "ddp/spin": spin(folder / "spin"),
        "ddp/human": human(folder / "human"),
    }
    runs["fsdp/human"] = runs["ddp/human"]  # the loop's pairs train on full sequences either way
    return runs


def _same_weights(launched: dict[int, dict[str, Any]], want: dict[str, Any], key: str) -> None:
    for name, tensor in want["weights"].items():
        torch.testing.assert_close(launched[0][key]["weights"][name], tensor, rtol=0, atol=2e-4, msg=name)
        torch.testing.assert_close(launched[1][key]["weights"][name], launched[0][key]["weights"][name])
    start = build_tiny_model(build_tokenizer(), seed=1).state_dict()  # not vacuous: training moved the weights
    assert max(float((tensor - start[name]).abs().max()) for name, tensor in want["weights"].items()) > 1e-3


def _same_metrics(got: Mapping[str, float], want: Mapping[str, float], keys: Sequence[str]) -> None:
    for key in keys:
        if key in want:
            assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-6), key


DYNAMIC_COMPARED = (
    "loss",
    "reward/mean",
    "reward/std",
    "advantages/std",
    "kl/k1",
    "entropy",
    "completion_length",
    "zero_std_groups",
    "dynamic_sampling/rounds",
    "dynamic_sampling/sampled_prompts",
    "dynamic_sampling/dropped_groups",
    "dynamic_sampling/kept_groups",
    "dynamic_sampling/sampled_reward_mean",
)


def test_the_dynamic_sampling_scenario_is_the_one_described(single: dict[str, dict[str, Any]]) -> None:
    """Step by step (one process): rounds, prompts sampled and groups kept, as CONSTANT arranges them."""
    metrics = single["ddp/dynamic"]["metrics"]
    got = [
        (m["dynamic_sampling/rounds"], m["dynamic_sampling/sampled_prompts"], m["dynamic_sampling/kept_groups"])
        for m in metrics
    ]
    assert got == [(2, 9, 8), (3, 15, 7), (3, 22, 1)]


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_dynamic_sampling_on_two_ranks_equals_one_process(
    launched: dict[int, dict[str, Any]], single: dict[str, dict[str, Any]], strategy: str
) -> None:
    key = f"{strategy}/dynamic"
    got, want = launched[0][key]["metrics"], single[key]["metrics"]
    assert len(got) == len(want) == DYNAMIC_STEPS
    for ours, theirs in zip(got, want, strict=True):
        _same_metrics(ours, theirs, DYNAMIC_COMPARED)
    _same_weights(launched, single[key], key)


def test_ppo_with_dynamic_sampling_on_two_ranks_equals_one_process(
    launched: dict[int, dict[str, Any]], single: dict[str, dict[str, Any]]
) -> None:
    """PPO's whitening, GAE and value loss leave out the stand-in group of a rank that kept none (step 3)."""
    key = "ddp/ppo_dynamic"
    got, want = launched[0][key]["metrics"], single[key]["metrics"]
    assert len(got) == len(want) == DYNAMIC_STEPS
    assert [m["dynamic_sampling/kept_groups"] for m in want] == [8, 7, 1]
    for ours, theirs in zip(got, want, strict=True):
        _same_metrics(ours, theirs, (*DYNAMIC_COMPARED, "value/loss", "critic/returns_mean", "critic/old_value_mean"))
    _same_weights(launched, single[key], key)


def test_best_of_n_on_two_ranks_equals_one_process(
    launched: dict[int, dict[str, Any]], single: dict[str, dict[str, Any]]
) -> None:
    got, want = launched[0]["ddp/best_of_n"], single["ddp/best_of_n"]
    assert len(got["history"]) == len(want["history"]) == 3
    for ours, theirs in zip(got["history"], want["history"], strict=True):
        _same_metrics(ours, theirs, ("reward/mean", "reward/std", "kl/k1", "kept", "reward/kept_mean", "entropy"))
    assert [step for step, _ in got["steps"]] == [step for step, _ in want["steps"]] == [1, 2, 3, 4]
    for (_, ours), (_, theirs) in zip(got["steps"], want["steps"], strict=True):
        _same_metrics(ours, theirs, ("loss",))
    _same_weights(launched, want, "ddp/best_of_n")


def test_self_play_on_two_ranks_equals_one_process(
    launched: dict[int, dict[str, Any]], single: dict[str, dict[str, Any]]
) -> None:
    got, want = launched[0]["ddp/spin"], single["ddp/spin"]
    assert [step for step, _ in got["steps"]] == [step for step, _ in want["steps"]] == [1, 2, 3, 4]
    for (_, ours), (_, theirs) in zip(got["steps"], want["steps"], strict=True):
        _same_metrics(ours, theirs, ("loss", "rewards/margin", "rewards/accuracy"))
    _same_weights(launched, want, "ddp/spin")


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_the_human_loop_on_two_ranks_exports_resumes_and_trains_as_one_process(
    launched: dict[int, dict[str, Any]], single: dict[str, dict[str, Any]], strategy: str
) -> None:
    key = f"{strategy}/human"
    got, want = launched[0][key], single[key]
    assert got["statuses"] == want["statuses"] == ["exported", "trained", "waiting", "trained"]
    assert got["items"] == want["items"]  # rank 0 wrote both ranks' samples, in the prompts' order
    assert len(got["metrics"]) == len(want["metrics"]) == 2 and launched[1][key]["metrics"] == []
    for ours, theirs in zip(got["metrics"], want["metrics"], strict=True):
        assert ours["pairs"] == theirs["pairs"] > 1
        _same_metrics(ours, theirs, ("loss", "answers"))
    _same_weights(launched, want, key)


if __name__ == "__main__":
    sys.exit(worker(Path(sys.argv[2])))
