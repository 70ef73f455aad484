"""One rank of the distributed tests, launched by torchrun: ``dist_worker.py JOB OUT [CASE]``.

Jobs:
- ``all``: the registry check with one rank's plugins differing (rank 1 disables ``grpo``
  through ``PREFCORE_DISABLE_PLUGINS``), then every case of ``dist_cases`` under DDP and
  under FSDP2 (``FSDP_CASES`` under FSDP2 only), and DPO in bf16 under each (one launch, to pay
  the start-up once); every rank saves its results in OUT.
- ``kill CASE``: FSDP2 training with a checkpoint every step; rank 1 dies before step 3 (the
  test resumes it in its own plain process).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).parent))

import dist_cases  # noqa: E402

from prefcore import distributed  # noqa: E402
from prefcore.distributed.fingerprint import check_same_registry  # noqa: E402
from prefcore.registry import Registry  # noqa: E402

TIMEOUT_S = 30.0
KILL_BEFORE_STEP = 3


def fingerprint_check(rank: int) -> str:
    """The error this rank's check raised ("" if none); rank 1 loads one plugin fewer."""
    if rank == 1:
        os.environ["PREFCORE_DISABLE_PLUGINS"] = "grpo"
    try:
        check_same_registry(Registry.from_environment(third_party=False))
    except Exception as exc:  # the message is what the test checks
        return f"{type(exc).__name__}: {exc}"
    finally:
        os.environ.pop("PREFCORE_DISABLE_PLUGINS", None)
    return ""


def main() -> int:
    job, out = sys.argv[1], Path(sys.argv[2])
    parallel = distributed.init("fsdp", timeout_s=TIMEOUT_S)
    try:
        if job == "all":
            results: dict = {"fingerprint": fingerprint_check(parallel.rank)}
            for strategy in ("ddp", "fsdp"):
                distributed.init(strategy, timeout_s=TIMEOUT_S)  # same group, another strategy
                for name in dist_cases.CASES + (dist_cases.FSDP_CASES if strategy == "fsdp" else ()):
                    results[f"{strategy}/{name}"] = dist_cases.run_case(name, out / f"{strategy}-{name}")
                # bf16 compute (FSDP2's MixedPrecisionPolicy, DDP's autocast), float32 master weights
                distributed.init(strategy, mixed_precision="bf16", timeout_s=TIMEOUT_S)
                results[f"{strategy}-bf16/dpo"] = dist_cases.run_case("dpo", out / f"{strategy}-bf16-dpo")
            results["world_size"] = parallel.world_size
            torch.save(results, out / f"rank{parallel.rank}.pt")
            return 0
        name = sys.argv[3]
        trainer, model = dist_cases.build_case(name, out / "run", checkpoint_every=1, keep_checkpoints=0)
        if job == "kill":
            step = trainer.train_step

            def dying_step() -> dict:
                if parallel.rank == 1 and trainer.step == KILL_BEFORE_STEP - 1:
                    os._exit(17)  # no goodbye: the other ranks find out in their next collective
                return step()

            trainer.train_step = dying_step
        trainer.fit()
        if parallel.is_main:
            torch.save({"weights": dist_cases.weights(model), "losses": trainer.metrics_log}, out / f"{job}.pt")
        return 0
    finally:
        distributed.teardown()


if __name__ == "__main__":
    sys.exit(main())
