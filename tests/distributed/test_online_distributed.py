"""Online loops under torchrun: 2 ranks × 4 prompts per step train exactly what 1 process × 8 prompts does.

Why the rollouts can be compared. Each rank samples its own prompts with its own seed
(``rank_seed``): a distributed run is a different draw from one process, not the same one, so
as a reference it is useless unless the draws are pinned. Here they are pinned by
``PromptSeeded``: a real sampler (``PrefixCacheBackend`` on the policy) that samples each prompt
on its own, seeded by the prompt's token ids and the online step, whichever rank or batch the
prompt falls in. With identical rollouts, everything the distributed path adds is checked
against the single process: the prompt shards, the batch-wide advantage statistics summed across
ranks (GRPO with ``scale_rewards = "batch"``; REINFORCE++'s global whitening with the KL in the
reward), PPO's critic (a separate value model, or heads on the policy's trunk: gradients summed by
hand under DDP, sharded with the policy under FSDP2) and Safe-RLHF's Lagrange multiplier (λ moves on
every rank's costs, so it is the same on every rank and equals one process's), the global
minibatch order with the global token count (``token_mean``), the zero-weighted filler
micro-batches when the ranks' shares of a minibatch differ, the gathered
step metrics, the adaptive KL controller (it reads the gathered ``kl/k1``), the gradient
reduction of DDP and FSDP2, FSDP2's sharded reference (half its bytes per rank; the rollouts' reference
log-probs computed on the shards), and the sharded checkpoint that resumes to the same weights, under
torchrun and (FSDP2's) in the plain pytest process.

One torchrun launch (2 processes, gloo, CPU, about 40 s on 2 cores) runs every case, and then, out of the
process group, shares out the single-process references; this file is also the worker
(``python test_online_distributed.py JOB OUT``).
"""

from __future__ import annotations

import json
import sys
import tempfile
import zlib
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).parent))

from dist_launch import torchrun

from prefcore.demo import task
from prefcore.demo.model import build_tiny_model
from prefcore.demo.tokenizer import build_tokenizer
from prefcore.distributed.wrap import local_parameter_bytes
from prefcore.engine.models import frozen_copy
from prefcore.engine.online_loops import OnlineDPOTrainer
from prefcore.engine.online_trainer import OnlineTrainer
from prefcore.engine.ppo_trainer import PPOTrainer
from prefcore.engine.rollout import PrefixCacheBackend
from prefcore.engine.rollout import Sample
from prefcore.engine.trainer import WeightedObjective
from prefcore.engine.value_model import build_value_model
from prefcore.registry import Registry
from prefcore.rollout import Rollouts
from prefcore.settings import OnlineLoopConfig
from prefcore.settings import TrainConfig

GLOO = dist.is_available() and dist.is_gloo_available()
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    # batch-std scaling, KL in the loss against the reference, adaptive β (its state is checkpointed)
    "grpo": ("grpo", {"beta": 0.04, "scale_rewards": "batch", "kl_target": 0.05}),
    # the KL in a per-token reward, whitened over every token of the batch
    "reinforce_pp": ("reinforce_pp", {}),
    # a separate critic (its gradients summed by hand), whitened rewards and advantages
    "ppo": ("ppo", {"whiten_rewards": True}),
    # the value head on the policy's trunk: one forward through DDP (FSDP2: the heads a sharded root called
    # inside the policy's) serves both; a critic warm-up step, checkpointed before the policy's optimiser has stepped
    "ppo_shared": ("ppo", {"critic": "shared", "critic_warmup": 1}),
    # reward and cost heads on a separate critic; λ moves on the gathered costs (its window is checkpointed).
    # Advantages unwhitened (Safe-RLHF's default): whitened ones move ρ across the clip bounds within 6 updates
    # at lr 1e-2, where rounding-level differences then flip whole tokens' gradients
    "safe_rlhf": ("safe_rlhf", {"lambda_lr": 0.05}),
    # the [loop]: best-against-worst pairs of each rank's groups train DPO with the global pair count
    "online_dpo": ("dpo", {"beta": 0.1}),
}
STRATEGIES: dict[str, tuple[str, ...]] = {"reinforce_pp": ("ddp",)}
"""REINFORCE++ under DDP only: FSDP2's batch statistics are shown on GRPO and PPO (to keep the launch short)."""
CRITIC_CASES = [case for case, (method, _) in CASES.items() if method in ("ppo", "safe_rlhf")]
RUNS = [(case, strategy) for case in CASES for strategy in STRATEGIES.get(case, ("ddp", "fsdp"))]
STEPS = 2
RECORDS = task.answer_records(("sum",))[:20]


class PromptSeeded:
    """Samples each prompt alone, seeded by its token ids and the trainer's online step (see the module docstring)."""

    def __init__(self) -> None:
        self.inner = PrefixCacheBackend()
        self.trainer: OnlineTrainer | None = None

    def sample(self, model: Any, prompt_ids: Sequence[tuple[int, ...]], **options: Any) -> list[Sample]:
        step = self.trainer.online_step if self.trainer is not None else 0
        samples: list[Sample] = []
        for prompt in prompt_ids:
            seed = (zlib.crc32(json.dumps(list(prompt)).encode()) + 7_919 * step) % (2**31 - 1)
            samples += self.inner.sample(model, [prompt], **{**options, "seed": seed})
        return samples


def reward(rollouts: Rollouts, metadata: Sequence[Mapping[str, Any]]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The exact answer, less a little per word: rewards vary within and across groups."""
    answers = [metadata[group]["answer"] for group in rollouts.group_ids]
    exact = torch.tensor([float(text.strip() == answer) for text, answer in zip(rollouts.texts, answers, strict=True)])
    words = torch.tensor([float(len(text.split())) for text in rollouts.texts])
    return exact - 0.1 * words, {"exact": exact}


def costly_reward(
    rollouts: Rollouts, metadata: Sequence[Mapping[str, Any]]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Safe-RLHF's split: the exact answer is the reward, words beyond two the cost (``length``, not in the total)."""
    _, components = reward(rollouts, metadata)
    words = torch.tensor([float(len(text.split())) for text in rollouts.texts])
    return components["exact"], {**components, "length": words - 2.0}


def build(
    case: str, run_dir: Path, *, steps: int = STEPS, checkpoint_every: int = 0, full_sequences: bool = False
) -> OnlineTrainer:
    tokenizer = build_tokenizer()
    policy = build_tiny_model(tokenizer, seed=1)
    backend = PromptSeeded()
    log: list[dict[str, float]] = []
    method, options = CASES[case]
    objective = Registry.from_environment(third_party=False).create("usage", method, options)
    critic: dict[str, Any] = {}
    trainer_class: type[OnlineTrainer] = OnlineTrainer
    online = {"minibatch_size": 12, "micro_batch_size": 5}
    if method in ("ppo", "safe_rlhf"):
        trainer_class = PPOTrainer
        heads = ("reward", "cost") if method == "safe_rlhf" else ("reward",)
        critic["value_model"] = build_value_model(objective.config.critic, policy, heads=heads, seed=2)
        if method == "safe_rlhf":
            critic["cost_names"] = ("length",)
    if case == "online_dpo":  # one optimiser step per pass over a step's pairs, 3 pairs per forward
        trainer_class, objective, online = OnlineDPOTrainer, [WeightedObjective(objective)], {"micro_batch_size": 3}
    trainer = trainer_class(
        policy,
        objective,
        [record.prompt for record in RECORDS],
        [record.metadata for record in RECORDS],
        TrainConfig(
            steps=steps,
            lr=1e-2,
            seed=3,
            schedule="constant",
            warmup_steps=0,
            checkpoint_every=checkpoint_every,
            keep_checkpoints=0,
            progress=False,
            kernel_backend="torch",
        ),
        # 32 completions a step; minibatches of 12 split unevenly between the ranks, micro-batches of 5
        OnlineLoopConfig(prompts_per_step=8, samples_per_prompt=4, max_new_tokens=6, update_epochs=2, **online),
        tokenizer=tokenizer,
        reward=costly_reward if method == "safe_rlhf" else reward,
        run_dir=run_dir,
        device=torch.device("cpu"),
        reference=frozen_copy(policy),
        backend=backend,
        on_step=lambda step, metrics: log.append(dict(metrics)),
        **critic,
    )
    backend.trainer = trainer
    if full_sequences:  # what FSDP2's shards run (OnlineTrainer.share_prefix)
        trainer.share_prefix = False
    trainer.metrics_log = log  # type: ignore[attr-defined]
    return trainer


def outcome(trainer: OnlineTrainer) -> dict[str, Any]:
    return {
        "metrics": trainer.metrics_log,  # type: ignore[attr-defined]
        "weights": {
            **{name: value.detach().clone() for name, value in trainer.policy.named_parameters()},
            **{
                f"value.{name}": value.detach().clone()
                for name, value in getattr(trainer, "value_model", torch.nn.Module()).named_parameters()
            },
        },
        "objective": dict(trainer.objective.state_dict()) if hasattr(trainer.objective, "state_dict") else {},
        "online_step": trainer.online_step,
    }


def run(case: str, run_dir: Path, *, measure: bool = False, **options: Any) -> dict[str, Any]:
    """``outcome`` of a run; ``measure``: with the bytes of reference weights this rank held after the first step
    (its shards under FSDP2, and the plain model's, emptied once the shards ran), its full size, and whether the
    plain reference was whole again at the end (``gather_weights``)."""
    trainer = build(case, run_dir, **options)
    found: dict[str, Any] = {}
    if measure:
        reference = trainer.reference
        start = {name: tensor.detach().clone() for name, tensor in reference.state_dict().items()}
        found["reference_full_bytes"] = local_parameter_bytes(reference)
        step = trainer.train_step

        def measured_step() -> dict[str, float]:
            metrics = step()
            if "reference_bytes" not in found:
                local = getattr(trainer.reference_logps, "local_bytes", None)
                found["reference_bytes"] = local() if callable(local) else local_parameter_bytes(reference)
            return metrics

        trainer.train_step = measured_step  # type: ignore[method-assign]
    trainer.fit()
    if measure:
        after = trainer.reference.state_dict()
        found["reference_whole"] = all(torch.equal(after[name], tensor) for name, tensor in start.items())
    return {**outcome(trainer), **found}


# -- the worker ---------------------------------------------------------------------------------
def _sharded_advantages(rank: int, world: int) -> dict[str, float]:
    """Each batch-wide estimator on this rank's half inside ``sharded_batch``, against the whole batch here."""
    from prefcore import advantages

    generator = torch.Generator().manual_seed(0)
    rewards = torch.randn(16, generator=generator)
    group_ids = torch.arange(16) // 4
    mask = torch.rand(16, 7, generator=generator) > 0.3
    mask[:, 0] = True
    kl = torch.randn(16, 7, generator=generator) * 0.1
    half = slice(rank * 16 // world, (rank + 1) * 16 // world)
    cases = {
        "group_batch": (advantages.group_normalized, {"scale": "batch"}),
        "rloo_normalize": (advantages.leave_one_out, {"normalize": True}),
        "reinforce": (advantages.reinforce_baseline, {}),
        "reinforce_pp": (advantages.reinforce_pp, {"kl": kl, "kl_coef": 0.1}),
        "reinforce_pp_baseline": (advantages.reinforce_pp_baseline, {"center": True}),
    }
    errors: dict[str, float] = {}

    def total(values: torch.Tensor) -> torch.Tensor:
        summed = values.clone()
        dist.all_reduce(summed)
        return summed

    for name, (estimator, options) in cases.items():
        whole = estimator(rewards, group_ids, mask, **options).advantages[half]
        local_options = {key: value[half] if key == "kl" else value for key, value in options.items()}
        with advantages.sharded_batch(total):
            mine = estimator(rewards[half], group_ids[half], mask[half], **local_options).advantages
        alone = estimator(rewards[half], group_ids[half], mask[half], **local_options).advantages
        errors[name] = float((mine - whole).abs().max())
        errors[f"{name}/alone"] = float((alone - whole).abs().max())  # the statistics do matter
    return errors


def worker(job: str, out: Path) -> int:
    from prefcore import distributed
    from prefcore.engine import online_trainer

    torch.set_num_threads(1)
    parallel = distributed.init("ddp", timeout_s=60.0)
    try:
        results: dict[str, Any] = {"advantages": _sharded_advantages(parallel.rank, parallel.world_size)}
        for strategy in ("ddp", "fsdp"):
            distributed.init(strategy, timeout_s=60.0)
            # FSDP2's reference shards take the 16 rollouts of a rank in 4 calls (one process: all in one)
            online_trainer._REFERENCE_ROWS = 5 if strategy == "fsdp" else 64
            for case in [case for case, where in RUNS if where == strategy]:
                folder = out / f"{strategy}-{case}"
                results[f"{strategy}/{case}"] = run(case, folder, checkpoint_every=1, measure=True)
                # resume from the step-1 checkpoint (sharded) and redo step 2: the same weights
                for stale in sorted((folder / "checkpoints").glob("step-*"))[1:]:
                    if parallel.is_main:
                        import shutil

                        shutil.rmtree(stale)
                distributed.barrier()
                resumed = build(case, folder, checkpoint_every=0)
                assert resumed.resume(), "no checkpoint to resume from"
                results[f"{strategy}/{case}/resumed_from"] = resumed.online_step
                resumed.fit()
                results[f"{strategy}/{case}/resumed"] = outcome(resumed)
                if strategy == "fsdp" and case in CRITIC_CASES:  # the same checkpoint under DDP (FSDP2's maths)
                    distributed.init("ddp", timeout_s=60.0)
                    across = build(case, folder, checkpoint_every=0, full_sequences=True)
                    assert across.resume(), "no checkpoint to resume from"
                    across.fit()
                    results[f"{strategy}/{case}/resumed_under_ddp"] = outcome(across)
                    distributed.init("fsdp", timeout_s=60.0)
        online_trainer._REFERENCE_ROWS = 64
        rank, world = parallel.rank, parallel.world_size
        distributed.teardown()
        # the single-process references, shared out between the two processes already started (and cores)
        for index, (case, strategy) in enumerate(RUNS):
            if index % world == rank:
                results[f"single/{strategy}/{case}"] = run(
                    case, Path(tempfile.mkdtemp()), full_sequences=strategy == "fsdp"
                )
        torch.save(results, out / f"rank{rank}.pt")
        return 0
    finally:
        distributed.teardown()


# -- the tests ----------------------------------------------------------------------------------
pytestmark = pytest.mark.skipif(not GLOO, reason="torch.distributed with gloo is not available")


@pytest.fixture(scope="module")
def launch_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the launch writes: ``{strategy}-{case}/`` run folders (their step-1 checkpoints) and ``rank{r}.pt``."""
    return tmp_path_factory.mktemp("online-dist")


@pytest.fixture(scope="module")
def launched(launch_dir: Path) -> dict[int, dict[str, Any]]:
    out = launch_dir
    # from the output folder: the repository root's kernels/ would shadow the package transformers imports
    result = torchrun(2, "all", str(out), cwd=out, timeout=300, script=Path(__file__).resolve())
    assert result.returncode == 0, result.stderr[-4000:]
    return {rank: torch.load(out / f"rank{rank}.pt", weights_only=False) for rank in (0, 1)}


@pytest.fixture(scope="module")
def single(launched: dict[int, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each case in one process, 8 prompts a step (the workers run them after leaving the process group, each
    a share of the cases): log-probs on shared prompts (as DDP takes them) and on the full sequences (as
    FSDP2 takes them). The two agree to float rounding, which AdamW's normalised steps magnify to ~1e-3 at
    embedding rows with rounding-level gradients, so each strategy is compared with the same computation
    in one process."""
    return {
        f"{strategy}/{case}": next(
            result[f"single/{strategy}/{case}"] for result in launched.values() if f"single/{strategy}/{case}" in result
        )
        for case, strategy in RUNS
    }


def test_batch_statistics_are_summed_across_ranks(launched: dict[int, dict[str, Any]]) -> None:
    for rank in (0, 1):
        errors = launched[rank]["advantages"]
        for name in ("group_batch", "rloo_normalize", "reinforce", "reinforce_pp", "reinforce_pp_baseline"):
            assert errors[name] < 1e-5, (rank, name, errors)
            assert errors[f"{name}/alone"] > 1e-3, (rank, name, errors)  # half a batch alone would differ


COMPARED = (
    "loss",
    "reward/mean",
    "reward/std",
    "reward/exact",
    "advantages/std",
    "kl/k1",
    "entropy",
    "completion_length",
    "zero_std_groups",
    "truncated_fraction",
    "pairs",
    "tied_groups",
    "reward/chosen",
    "reward/rejected",
    # PPO's and Safe-RLHF's
    "policy_loss",
    "cost/mean",
    "cost/length",
    "cost/window_mean",
    "cost/over_bound_fraction",
    "lagrange/lambda",
)
CRITIC_COMPARED = (
    "critic/grad_norm",
    "critic/old_value_mean",
    "critic/returns_mean",
    "critic/cost_returns_mean",
    "value/loss",
    "value_cost/loss",
)
"""Read off the value model's outputs, whose weights agree to ~1e-5 after a step (AdamW's normalised steps
magnify rounding): compared to a relative 1e-4."""


def flat(state: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """An objective's state as one level of ``a/b`` keys of numbers (Safe-RLHF nests its multiplier's and keeps
    its cost window as a list: element ``i`` becomes ``key/i``), as ``pytest.approx`` compares them."""
    out: dict[str, Any] = {}
    for key, value in state.items():
        if isinstance(value, Mapping):
            out.update(flat(value, f"{prefix}{key}/"))
        elif isinstance(value, (list, tuple)):
            out.update(flat({str(index): item for index, item in enumerate(value)}, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = value
    return out


@pytest.mark.parametrize(("case", "strategy"), RUNS)
def test_two_ranks_equal_one_process(
    launched: dict[int, dict[str, Any]], single: dict[str, dict[str, Any]], strategy: str, case: str
) -> None:
    got, want = launched[0][f"{strategy}/{case}"], single[f"{strategy}/{case}"]
    assert len(got["metrics"]) == len(want["metrics"]) == STEPS
    for ours, theirs in zip(got["metrics"], want["metrics"], strict=True):
        for key in COMPARED:
            if key in theirs:
                assert ours[key] == pytest.approx(theirs[key], rel=1e-5, abs=1e-6), key
        for key in CRITIC_COMPARED:
            if key in theirs:
                assert ours[key] == pytest.approx(theirs[key], rel=1e-4, abs=1e-6), key
    assert flat(got["objective"]) == pytest.approx(flat(want["objective"]), rel=1e-5)
    assert launched[1][f"{strategy}/{case}"]["objective"] == got["objective"]  # β, λ: the same on every rank
    compared = [key for key in (*COMPARED, *CRITIC_COMPARED) if key in want["metrics"][-1]]
    if CASES[case][0] in ("ppo", "safe_rlhf"):
        assert {"policy_loss", "value/loss", "critic/returns_mean", "critic/grad_norm"} <= set(compared), compared
        assert any(name.startswith("value.") for name in want["weights"])  # the value model is compared too
    for name, tensor in want["weights"].items():
        torch.testing.assert_close(got["weights"][name], tensor, rtol=0, atol=2e-4, msg=name)
        torch.testing.assert_close(launched[1][f"{strategy}/{case}"]["weights"][name], got["weights"][name])
    # not vacuous: training moved the weights far beyond the tolerance
    start = build_tiny_model(build_tokenizer(), seed=1).state_dict()
    moved = [float((tensor - start[name]).abs().max()) for name, tensor in want["weights"].items() if name in start]
    assert max(moved) > 1e-2


@pytest.mark.parametrize(("case", "strategy"), RUNS)
def test_fsdp2_shards_the_reference(launched: dict[int, dict[str, Any]], strategy: str, case: str) -> None:
    """Under FSDP2 each rank holds half the reference's bytes once it has computed the rollouts' reference
    log-probs on its shards (the plain copy emptied), and the plain reference is whole again at the end;
    under DDP each holds a full copy. The losses and weights equal one process's (above)."""
    held = [launched[rank][f"{strategy}/{case}"]["reference_bytes"] for rank in (0, 1)]
    full = launched[0][f"{strategy}/{case}"]["reference_full_bytes"]
    if strategy == "fsdp":
        assert sum(held) == full and max(held) <= 0.51 * full, (held, full)
    else:
        assert held == [full, full]
    assert all(launched[rank][f"{strategy}/{case}"]["reference_whole"] for rank in (0, 1))


def test_sharded_reference_calls_line_up_with_the_busiest_rank(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under FSDP2 a rank with fewer rollout chunks than another adds filler calls on its shards (so their gathers
    line up) and drops their results. Here, in one process, a recording stand-in for the shards and a peer said to
    need 9 calls: this rank's 32 rollouts take 7 calls of 5 rows, then 2 fillers; the result is one process's."""
    from types import SimpleNamespace

    from prefcore.engine import online_trainer
    from prefcore.engine.rollout import pad_rollouts
    from prefcore.engine.rollout import rollout_logps

    trainer = build("grpo", tmp_path)
    rollouts, _, _ = trainer._sample_and_score(list(range(8)))
    tensors = pad_rollouts(rollouts, trainer.tokenizer.pad_token_id)
    calls: list[list[int]] = []

    class Shards:
        def run(self, fn: Any, tensors: Any, rows: list[int], *args: Any) -> torch.Tensor:
            calls.append(list(rows))
            return fn(trainer.reference, tensors, rows, *args)

    def peers(counts: list[Any], mine: int) -> None:
        counts[:] = [mine, 9]

    trainer.reference_logps = Shards()
    trainer.parallel = SimpleNamespace(world_size=2, rank=0)  # type: ignore[assignment]
    monkeypatch.setattr(online_trainer, "_REFERENCE_ROWS", 5)
    monkeypatch.setattr(online_trainer.dist, "all_gather_object", peers)
    got = trainer.reference_rollout_logps(tensors)
    assert calls == [list(range(start, min(start + 5, 32))) for start in range(0, 32, 5)] + [[0], [0]]
    want = rollout_logps(trainer.reference, tensors, fused=True, backend="torch", share_prefix=False)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("strategy", [strategy for case, strategy in RUNS if case == "safe_rlhf"])
def test_lambda_moves_on_every_ranks_costs(
    launched: dict[int, dict[str, Any]], single: dict[str, dict[str, Any]], strategy: str
) -> None:
    """Safe-RLHF's λ: its cost window holds the step's 32 costs of both ranks in one process's order, so λ is
    one process's on both ranks (and after resume); it moved, and would have differed on one rank's costs."""
    want = single[f"{strategy}/safe_rlhf"]["objective"]["lagrange"]
    for rank in (0, 1):
        for run in ("", "/resumed"):
            got = launched[rank][f"{strategy}/safe_rlhf{run}"]["objective"]["lagrange"]
            assert got["costs"] == want["costs"] and len(want["costs"]) == 2 * 32, (rank, run)
            assert got["lambda"] == pytest.approx(want["lambda"], rel=1e-12), (rank, run)
    assert abs(want["lambda"] - 1.0) > 1e-2  # λ_init = 1: it moved
    lambdas = [launched[0][f"{strategy}/safe_rlhf"]["metrics"][step]["lagrange/lambda"] for step in range(STEPS)]
    assert lambdas == pytest.approx([row["lagrange/lambda"] for row in single[f"{strategy}/safe_rlhf"]["metrics"]])
    # what rank 0 alone would have made of its own 16 costs a step
    from prefcore.lagrangian import LagrangeMultiplier

    alone = LagrangeMultiplier(0.0, init=1.0, lr=0.05)
    for step in range(STEPS):
        alone.update(want["costs"][32 * step : 32 * step + 16])
    assert abs(alone.value - want["lambda"]) > 1e-3


@pytest.mark.parametrize("case", CRITIC_CASES)
def test_an_fsdp2_checkpoint_of_both_models_resumes_under_ddp(launched: dict[int, dict[str, Any]], case: str) -> None:
    """The sharded checkpoint names the policy's and the value model's parameters as one process does, so FSDP2's
    resumes under DDP (here on FSDP2's full sequences) to the uninterrupted FSDP2 run, λ and β included."""
    straight, across = launched[0][f"fsdp/{case}"], launched[0][f"fsdp/{case}/resumed_under_ddp"]
    assert across["online_step"] == STEPS
    assert flat(across["objective"]) == pytest.approx(flat(straight["objective"]), rel=1e-6)
    for name, tensor in straight["weights"].items():
        torch.testing.assert_close(across["weights"][name], tensor, rtol=0, atol=2e-5, msg=name)


@pytest.mark.parametrize("case", ["grpo", "online_dpo", "ppo", "ppo_shared", "safe_rlhf"])
def test_an_fsdp2_checkpoint_resumes_in_one_plain_process(
    launched: dict[int, dict[str, Any]], launch_dir: Path, tmp_path: Path, case: str
) -> None:
    """The 2-rank FSDP2 run's step-1 checkpoint (sharded) resumes here, without torchrun or a process group: DCP
    reads both ranks' shards into the plain models (``model.*``; PPO's ``policy.*`` and ``value.*``), and step 2
    in one process (on FSDP2's full sequences) ends at the uninterrupted 2-rank run's weights, β and λ."""
    import shutil

    shutil.copytree(launch_dir / f"fsdp-{case}", tmp_path / "run")
    assert not dist.is_initialized()
    trainer = build(case, tmp_path / "run", full_sequences=True)
    assert trainer.sharded is None and trainer.resume() and trainer.online_step == 1
    trainer.fit()
    assert len(trainer.metrics_log) == 1  # type: ignore[attr-defined]  # continued at step 2 only
    straight, resumed = launched[0][f"fsdp/{case}"], outcome(trainer)
    assert resumed["online_step"] == STEPS
    assert resumed["metrics"][0]["loss"] == pytest.approx(straight["metrics"][1]["loss"], rel=1e-5, abs=1e-6)
    assert flat(resumed["objective"]) == pytest.approx(flat(straight["objective"]), rel=1e-6)
    assert resumed["weights"].keys() == straight["weights"].keys()
    for name, tensor in straight["weights"].items():
        torch.testing.assert_close(resumed["weights"][name], tensor, rtol=0, atol=2e-5, msg=name)


@pytest.mark.parametrize(("case", "strategy"), RUNS)
def test_a_sharded_checkpoint_resumes_to_the_same_weights(
    launched: dict[int, dict[str, Any]], strategy: str, case: str
) -> None:
    result = launched[0]
    assert result[f"{strategy}/{case}/resumed_from"] == 1
    straight, resumed = result[f"{strategy}/{case}"], result[f"{strategy}/{case}/resumed"]
    assert resumed["online_step"] == STEPS
    assert flat(resumed["objective"]) == pytest.approx(flat(straight["objective"]), rel=1e-6)
    for name, tensor in straight["weights"].items():
        torch.testing.assert_close(resumed["weights"][name], tensor, rtol=0, atol=1e-6, msg=name)


if __name__ == "__main__":
    sys.exit(worker(sys.argv[1], Path(sys.argv[2])))
