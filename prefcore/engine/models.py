"""Load the policy and its tokenizer: a local checkpoint, a local GGUF file, or the embedded demo model.

Models load only from a local directory or GGUF file the user names (``local_files_only``):
a run never downloads weights. A GGUF file (llama.cpp's format, e.g. a quantised instruct
model) is read through transformers and its ``gguf`` package (``pip install prefcore[gguf]``)
and its dequantised weights are moved into a plain model, so the trained result saves
with ``save_pretrained`` like any other. LoRA is applied through PEFT when it is installed and asked for,
also when it targets the LM head (the fused log-prob path merges the adapter on the fly).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from prefcore.atomic import atomic_directory
from prefcore.engine.chat import resolve_chat_template
from prefcore.errors import ConfigError
from prefcore.settings import ModelConfig

__all__ = [
    "ADAPTER_FOLDER",
    "ModelConfig",
    "apply_lora",
    "enable_gradient_checkpointing",
    "frozen_copy",
    "import_model",
    "load_causal_lm",
    "load_policy",
    "load_pretrained",
    "load_tokenizer",
    "max_positions",
    "resolve_device",
    "save_model",
    "usable_max_length",
]

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_tokenizer(config: ModelConfig) -> Any:
    if config.demo:
        from prefcore.demo.tokenizer import build_tokenizer

        tokenizer = build_tokenizer()
    else:
        from transformers import AutoTokenizer

        folder, gguf_file = _local_source(config.path)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file, local_files_only=True)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token  # padding is masked out; any id works
    if config.chat_template is not None:
        tokenizer.chat_template = resolve_chat_template(config.chat_template, tokenizer)
    return tokenizer


def _local_source(path: str | None) -> tuple[str, str | None]:
    """``(folder, gguf_file)`` for ``from_pretrained``: a save_pretrained folder, or a GGUF file's folder and name."""
    if path is not None and Path(path).is_file() and Path(path).suffix == ".gguf":
        return str(Path(path).parent), Path(path).name
    if path is None or not Path(path).is_dir():
        raise ConfigError(
            f"[model] path {path!r} is neither a local directory nor a .gguf file. prefcore never downloads "
            "models: point it at a folder written by save_pretrained() or at a GGUF file.",
            field="model.path",
        )
    return str(path), None


def load_causal_lm(path: str | Path, *, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """A causal LM from a local folder or GGUF file; GGUF weights are dequantised into a plain model.

    transformers marks a GGUF-loaded model as quantised and refuses to save it; training
    needs full-precision weights anyway, so they are copied into a model built from the
    same config without the quantisation settings.
    """
    from transformers import AutoModelForCausalLM

    folder, gguf_file = _local_source(str(path))
    if gguf_file is None:
        return AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=dtype)
    try:
        import gguf  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            f"[model] path {path} is a GGUF file, which needs the 'gguf' package: pip install 'prefcore[gguf]'.",
            field="model.path",
        ) from exc
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, local_files_only=True, dtype=dtype)
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    # Every weight is overwritten below, so the random initialisation (seconds for 135M parameters)
    # is skipped; ``no_init_weights`` also skips the tying in ``init_weights``, so tie here.
    from transformers.initialization import no_init_weights

    with no_init_weights():
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.tie_weights()
    model.load_state_dict(loaded.state_dict())
    model.generation_config = copy.deepcopy(loaded.generation_config)
    return model


def max_positions(model: torch.nn.Module) -> int | None:
    """The longest sequence the model's position embeddings cover, if its config says."""
    config = getattr(model, "config", None)
    value = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    return int(value) if value else None


def usable_max_length(max_length: int, model: torch.nn.Module) -> int:
    """``[train] max_length`` capped by the model: longer sequences would index past its positions."""
    limit = max_positions(model)
    return max_length if limit is None else min(max_length, limit)


def load_policy(config: ModelConfig, tokenizer: Any, *, seed: int = 0) -> torch.nn.Module:
    """The trainable policy on its device, with LoRA adapters when ``lora_rank`` > 0."""
    if config.demo:
        from prefcore.demo.model import build_tiny_model

        model = build_tiny_model(tokenizer, seed=seed)
    else:
        model = load_causal_lm(config.path, dtype=_DTYPES[config.dtype])
    model.to(dtype=_DTYPES[config.dtype], device=resolve_device(config.device))
    if config.lora_rank > 0:
        model = apply_lora(model, config)
    return model


def load_pretrained(path: str | Path, device: torch.device) -> torch.nn.Module:
    """A causal LM saved by ``save_pretrained`` (e.g. a warm-start checkpoint) or a GGUF file, on ``device``."""
    return load_causal_lm(path).to(device)


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


def enable_gradient_checkpointing(model: torch.nn.Module) -> None:
    """Recompute each decoder layer's activations in the backward pass (``[train] gradient_checkpointing``).

    Non-reentrant checkpointing (``use_reentrant=False``) needs no input that requires grad, so
    it works with frozen embeddings under LoRA and with the fused path, which runs the decoder
    without the LM head. It takes effect in train mode only: the frozen reference and
    evaluation run as before.
    """
    kwargs = {"use_reentrant": False}
    if not getattr(model, "supports_gradient_checkpointing", False):  # PEFT forwards attributes to the wrapped model
        raise ConfigError(
            f"[train] gradient_checkpointing = true, but {type(model).__name__} does not support gradient "
            "checkpointing; turn the option off for this model.",
            field="train.gradient_checkpointing",
        )
    if callable(getattr(model, "activation_checkpointing_enable", None)):  # transformers >= 5.2x's name
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A frozen deep copy in eval mode: the reference model."""
    reference = copy.deepcopy(model)
    reference.eval()
    for parameter in reference.parameters():
        parameter.requires_grad_(False)
    return reference


ADAPTER_FOLDER = "adapter"
"""Subfolder of a saved model that holds a LoRA run's adapter in PEFT's format."""


def save_model(policy: torch.nn.Module, tokenizer: Any, path: Path) -> None:
    """The final model in safetensors, written whole or not at all (``prefcore.atomic.atomic_directory``).

    A LoRA policy is saved twice: merged into the weights, so ``from_pretrained(path)`` loads it
    like any model, and as the adapter alone in ``path/adapter`` (``adapter_config.json`` and
    ``adapter_model.safetensors``), which ``peft.PeftModel.from_pretrained(base, path / "adapter")``
    puts back on the base model: megabytes instead of a full copy, and the form vLLM and TRL load.
    """
    is_peft = hasattr(policy, "merge_and_unload")
    # LoRA: save a merged copy so from_pretrained() loads it; the training policy keeps its adapters.
    model = copy.deepcopy(policy).merge_and_unload() if is_peft else policy
    with atomic_directory(path) as staging:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        if is_peft:
            policy.save_pretrained(Path(staging) / ADAPTER_FOLDER, safe_serialization=True)


def import_model(source: str | Path, out: str | Path) -> Path:
    """A local checkpoint (folder or GGUF file) copied to ``out`` as a plain ``save_pretrained`` folder.

    Loading a GGUF file dequantises every tensor (seconds); importing once makes later runs
    load a safetensors folder instead.
    """
    out = Path(out)
    config = ModelConfig(path=str(source))
    save_model(load_causal_lm(str(source)), load_tokenizer(config), out)
    return out
