"""Where a policy can come from: a save_pretrained folder, a GGUF file, and `prefcore import-model`."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from prefcore.cli import main
from prefcore.demo.model import build_tiny_model
from prefcore.demo.tokenizer import build_tokenizer
from prefcore.engine.models import ModelConfig
from prefcore.engine.models import load_causal_lm
from prefcore.engine.models import load_tokenizer
from prefcore.engine.models import save_model
from prefcore.engine.models import usable_max_length
from prefcore.errors import ConfigError


def test_import_model_copies_a_folder_to_a_loadable_folder(tmp_path, capsys):
    tokenizer = build_tokenizer()
    model = build_tiny_model(tokenizer, seed=3)
    save_model(model, tokenizer, tmp_path / "source")
    assert main(["import-model", str(tmp_path / "source"), str(tmp_path / "copy")]) == 0
    copied = load_causal_lm(tmp_path / "copy")
    for name, value in load_file(str(tmp_path / "source" / "model.safetensors")).items():
        torch.testing.assert_close(copied.state_dict()[name], value, rtol=0, atol=0)
    assert "copy" in capsys.readouterr().out


def test_a_path_that_is_neither_folder_nor_gguf_is_named(tmp_path):
    not_a_model = tmp_path / "weights.bin"
    not_a_model.write_bytes(b"\0")
    with pytest.raises(ConfigError, match=r"neither a local directory nor a \.gguf file"):
        load_tokenizer(ModelConfig(path=str(not_a_model)))
    assert main(["import-model", str(not_a_model), str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()


def test_max_length_is_capped_by_the_models_positions():
    model = build_tiny_model(build_tokenizer())  # 64 positions
    assert usable_max_length(512, model) == 64
    assert usable_max_length(32, model) == 32


def test_records_past_the_models_positions_are_refused_with_truncation_error(tmp_path):
    """truncation = "error" must refuse a record longer than the model can read, whatever max_length says."""
    from prefcore.config import parse_run_config
    from prefcore.errors import DataError
    from prefcore.pipeline import run_pipeline

    data = tmp_path / "pairs.jsonl"
    long_reply = " ".join(["blue"] * 80)  # 80 words: past the demo model's 64 positions
    row = {"prompt": "what colour is the sky ?", "chosen": "sure , blue", "rejected": long_reply}
    data.write_text((json.dumps(row) + "\n") * 4, encoding="utf-8")
    config = parse_run_config(
        {
            "model": {"demo": True},
            "feedback": {"method": "preference_file", "path": str(data)},
            "usage": {"method": "dpo"},
            "train": {"steps": 1, "max_length": 512, "truncation": "error", "checkpoint_every": 0},
            "run": {"heldout_fraction": 0.0},
        }
    )
    with pytest.raises(DataError, match="max_length=64"):
        run_pipeline(config, out=str(tmp_path / "run"))
