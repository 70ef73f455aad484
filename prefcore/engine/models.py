"""Load the policy and its tokenizer: a local checkpoint, or the embedded demo model.

Models load only from a local directory the user names (``local_files_only``): a run
never downloads weights. LoRA is applied through PEFT when it is installed and asked for,
also when it targets the LM head (the fused log-prob path merges the adapter on the fly).
"""

from __future__ import annotations

import copy
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from typing import Literal

import torch

from prefcore.errors import ConfigError
from prefcore.methods import option

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class ModelConfig:
    """Options of the ``[model]`` section."""

    path: str | None = option(None, doc="local directory of a transformers causal LM and its tokenizer")
    demo: bool = option(False, doc="build the embedded tiny demo model instead of loading one")
    dtype: Literal["float32", "bfloat16", "float16"] = option("float32", doc="dtype of the loaded weights")
    device: str = option("auto", doc="'auto' (CUDA when available), 'cpu' or 'cuda[:N]'")
    lora_rank: int = option(0, doc="LoRA rank; 0 trains all weights")
    lora_alpha: float = option(16.0, doc="LoRA scaling numerator")
    lora_dropout: float = option(0.0, doc="LoRA dropout on adapter inputs")
    lora_targets: tuple[str, ...] = option(
        ("q_proj", "k_proj", "v_proj", "o_proj"), doc="module names LoRA adapts; may include 'lm_head'"
    )

    def __post_init__(self) -> None:
        if (self.path is None) == (not self.demo):
            raise ValueError('set exactly one of [model] path = "<local dir>" or demo = true.')
        if self.lora_rank < 0:
            raise ValueError(f"lora_rank must be >= 0. Got {self.lora_rank}.")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_tokenizer(config: ModelConfig) -> Any:
    if config.demo:
        from prefcore.demo.tokenizer import build_tokenizer

        return build_tokenizer()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(_local_dir(config.path), local_files_only=True)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token  # padding is masked out; any id works
    return tokenizer


def _local_dir(path: str | None) -> str:
    if path is None or not Path(path).is_dir():
        raise ConfigError(
            f"[model] path {path!r} is not a local directory. prefcore never downloads models: "
            "point it at a folder written by save_pretrained().",
            field="model.path",
        )
    return str(path)


def load_policy(config: ModelConfig, tokenizer: Any, *, seed: int = 0) -> torch.nn.Module:
    """The trainable policy on its device, with LoRA adapters when ``lora_rank`` > 0."""
    if config.demo:
        from prefcore.demo.model import build_tiny_model

        model = build_tiny_model(tokenizer, seed=seed)
    else:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(
            _local_dir(config.path), local_files_only=True, dtype=_DTYPES[config.dtype]
        )
    model.to(dtype=_DTYPES[config.dtype], device=resolve_device(config.device))
    if config.lora_rank > 0:
        model = apply_lora(model, config)
    return model


def load_pretrained(path: str | Path, device: torch.device) -> torch.nn.Module:
    """A causal LM saved by ``save_pretrained`` (e.g. a warm-start checkpoint)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True).to(device)


def apply_lora(model: torch.nn.Module, config: ModelConfig) -> torch.nn.Module:
    try:
        import peft
    except ImportError as exc:
        raise ConfigError("lora_rank > 0 needs the 'peft' package: pip install peft.", field="model.lora_rank") from exc
    lora = peft.LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.lora_targets),
        task_type="CAUSAL_LM",
    )
    return peft.get_peft_model(model, lora)


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A frozen deep copy in eval mode: the reference model."""
    reference = copy.deepcopy(model)
    reference.eval()
    for parameter in reference.parameters():
        parameter.requires_grad_(False)
    return reference


def save_model(policy: torch.nn.Module, tokenizer: Any, path: Path) -> None:
    """The final model in safetensors, written to a staging folder and renamed into place."""
    staging = path.with_name(path.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    # LoRA: save a merged copy so from_pretrained() loads it; the training policy keeps its adapters.
    model = copy.deepcopy(policy).merge_and_unload() if hasattr(policy, "merge_and_unload") else policy
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    shutil.rmtree(path, ignore_errors=True)
    staging.rename(path)
