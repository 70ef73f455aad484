"""``prefcore generate``: read the model, the prompts and the run file; write one JSON line per prompt.

The run file (``--config``; for a run folder, by default its own) may hold, besides anything
else (a full run file works; other sections are not read here):

    [generate]      n, max_new_tokens, temperature, top_p, seed, fallback (GenerateSettings)
    [[reward]]      what ranks candidates (prefcore.rewards); path = "trained" is the run
                    folder's reward_model/model
    [[check]]       candidate checks with min / max (prefcore.inference.checks)
    [robustness]    RA-LLM: copies, drop_rate, threshold, max_new_tokens, seed (present = on)

``--set section.key=value`` overrides any of them, ``--n`` sets ``generate.n`` and ``--robust``
turns the robustness check on with its defaults. MODEL is a ``save_pretrained`` folder, or a
run folder (its ``model/``). The prompts file is JSONL (a string, or an object with
``prompt``, a string or a list of {role, content} messages, and optionally ``answer`` or
``metadata.answer``) or plain text, one prompt a line.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any
from typing import TextIO

from prefcore.atomic import atomic_write_text
from prefcore.console import write_line
from prefcore.errors import ConfigError
from prefcore.evaluation import Scorer
from prefcore.inference.checks import CHECK_SECTION
from prefcore.inference.checks import build_checks
from prefcore.inference.generator import AlignedGenerator
from prefcore.inference.generator import GenerateSettings
from prefcore.inference.generator import summarize
from prefcore.inference.robustness import RobustnessConfig
from prefcore.rewards import SECTION as REWARD_SECTION
from prefcore.rewards import TRAINED
from prefcore.rewards import build_reward
from prefcore.rewards import plan_rewards

__all__ = ["build_generator", "generate_from_cli", "model_folder", "read_prompts"]


def model_folder(path: str | Path) -> Path:
    """A ``save_pretrained`` folder: ``path`` itself, or the ``model/`` of a run folder."""
    path = Path(path)
    if (path / "model" / "config.json").is_file():  # first: a run folder's own config.json is its run file
        return path / "model"
    if (path / "config.json").is_file():
        return path
    raise ConfigError(
        f"{path} is neither a model folder (no config.json) nor a run folder with model/; point MODEL at a folder "
        "written by save_pretrained() or at a prefcore run folder. Nothing is downloaded.",
        field="model",
    )


def _chat(turns: list[Any], where: str) -> tuple[Any, ...]:
    from prefcore.data import Message

    try:
        return tuple(Message(turn["role"], turn["content"]) for turn in turns)
    except (TypeError, KeyError, ValueError) as exc:
        raise ConfigError(f"{where}: a chat prompt is a list of {{role, content}} messages ({exc}).") from exc


def read_prompts(path: str | Path) -> tuple[list[Any], list[Any] | None]:
    """``(prompts, answers)`` from a JSONL or text file; answers is None when no row has one."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"prompts file {str(path)!r} cannot be read: {exc.strerror or exc}.") from exc
    prompts: list[Any] = []
    answers: list[Any] = []
    jsonl = path.suffix in (".jsonl", ".json")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if not jsonl:
            prompts.append(line.strip())
            answers.append(None)
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path} line {number}: not valid JSON ({exc.msg}).") from exc
        if isinstance(row, Mapping):
            prompt = row.get("prompt")
            answer = row.get("answer", (row.get("metadata") or {}).get("answer"))
        else:
            prompt, answer = row, None
        if isinstance(prompt, list):
            prompt = _chat(prompt, f"{path} line {number}")
        elif not isinstance(prompt, str) or not prompt.strip():
            raise ConfigError(
                f"{path} line {number}: a row is a prompt string, or an object whose 'prompt' is a string or a list "
                "of {role, content} messages."
            )
        prompts.append(prompt)
        answers.append(answer)
    if not prompts:
        raise ConfigError(f"prompts file {path} holds no prompt.")
    return prompts, (answers if any(answer is not None for answer in answers) else None)


def _section(cls: type, data: Mapping[str, Any], name: str, where: str) -> Any:
    table = data.get(name, {})
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}[{name}] must be a table.", field=name)
    accepted = [item.name for item in fields(cls)]
    unknown = sorted(set(table) - set(accepted))
    if unknown:
        raise ConfigError(
            f"{where}[{name}] has no option {unknown[0]!r}. Accepted: {', '.join(accepted)}.",
            field=f"{name}.{unknown[0]}",
        )
    try:
        return cls(**table)
    except TypeError as exc:
        raise ConfigError(f"{where}[{name}]: {exc}.", field=name) from exc


def build_generator(
    model: Any,
    tokenizer: Any,
    data: Mapping[str, Any],
    *,
    where: str = "",
    device: str = "cpu",
    trained_scorer: Scorer | None = None,
) -> AlignedGenerator:
    """An ``AlignedGenerator`` from run-file data (``[generate]``, ``[[reward]]``, ``[[check]]``, ``[robustness]``).

    ``trained_scorer`` stands for ``path = "trained"`` (a run folder's saved reward model).
    """
    settings = _section(GenerateSettings, data, "generate", where)
    robustness = _section(RobustnessConfig, data, "robustness", where) if "robustness" in data else None
    entries = data.get(REWARD_SECTION)
    reward = None
    if entries:
        plan = plan_rewards(entries, has_trained_model=trained_scorer is not None, where=where)
        reward = build_reward(plan, trained_scorer=trained_scorer, device=device)
    checks = build_checks(data.get(CHECK_SECTION), where=where, device=device)
    return AlignedGenerator(model, tokenizer, reward=reward, checks=checks, settings=settings, robustness=robustness)


def _run_folder_data(path: Path) -> tuple[dict[str, Any], str]:
    """A run folder's own run file (its [[reward]] ranks candidates), or nothing."""
    from prefcore.config import load_run_dir_config

    if (path / "model" / "config.json").is_file() and (
        (path / "config.json").is_file() or (path / "config.toml").is_file()
    ):
        config = load_run_dir_config(path)
        return config.to_dict(), f"{config.source}: "
    return {}, ""


def _trained_scorer(path: Path, data: Mapping[str, Any]) -> Scorer | None:
    """The run folder's saved reward model, when a [[reward]] names path = "trained"."""
    entries = data.get(REWARD_SECTION) or []
    wanted = any(isinstance(entry, Mapping) and entry.get("path") == TRAINED for entry in entries)
    folder = path / "reward_model" / "model"
    if not (wanted and folder.is_dir()):
        return None
    from prefcore.engine.reward_model import load_reward_network

    return load_reward_network(folder).scorer()


def generate_from_cli(args: argparse.Namespace, stdout: TextIO | None = None) -> int:
    """``prefcore generate MODEL``: answers written to ``--out``, a summary with the best-of-n KL on ``stdout``."""
    out = stdout or sys.stdout
    from prefcore.config import apply_overrides
    from prefcore.config import read_run_file

    if args.config:
        data: dict[str, Any] = read_run_file(args.config)
        where = f"{args.config}: "
    else:
        data, where = _run_folder_data(Path(args.model))
    overrides = list(args.overrides)
    if args.n is not None:
        overrides.append(f"generate.n={args.n}")
    data = apply_overrides(data, overrides)
    if args.robust:
        data.setdefault("robustness", {})
    prompts, answers = read_prompts(args.prompts)
    from prefcore.engine.models import load_causal_lm
    from prefcore.engine.reward_model.storage import load_tokenizer

    folder = model_folder(args.model)
    model, tokenizer = load_causal_lm(folder), load_tokenizer(folder)
    trained = _trained_scorer(Path(args.model), data)
    generator = build_generator(model, tokenizer, data, where=where, trained_scorer=trained)
    decisions = generator.generate(prompts, answers)
    atomic_write_text(Path(args.out), "".join(json.dumps(d.to_dict()) + "\n" for d in decisions))
    summary = summarize(decisions)
    n = generator.settings.n
    write_line(out, f"{len(decisions)} prompts, best of {n}: answers in {args.out}")
    write_line(
        out,
        f"  refused {summary['refusal_rate']:.1%} (all candidates failed {summary['all_failed_rate']:.1%}, "
        f"robustness check {summary['robustness_refusal_rate']:.1%})",
    )
    write_line(
        out, f"  reward: chosen {summary['chosen_reward']:.4g}, mean candidate {summary['candidate_reward']:.4g}"
    )
    write_line(
        out,
        f"  KL(best-of-{n} || base): estimate {summary['kl_estimate']:.4g} (Beirami et al. 2024 from the best "
        f"candidate's log-prob), bound log n - (n-1)/n = {summary['kl_bound']:.4g}",
    )
    return 0
