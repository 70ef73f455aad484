"""Crash safety: every output is written whole or not at all, with the user's umask, and a full
disk or a kill leaves the previous version intact and a resumable run folder.

Failures are simulated where they really happen: an ``OSError(ENOSPC)`` raised after part
of a file is written, a staging folder left as a killed ``save`` leaves it, and (in a
subprocess) a file-size limit that makes the kernel refuse writes past a few bytes.
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import save_file as real_save_file

from prefcore.atomic import atomic_directory
from prefcore.atomic import atomic_file
from prefcore.atomic import atomic_write_text
from prefcore.atomic import remove_directory
from prefcore.atomic import remove_stale_staging
from prefcore.data import write_jsonl
from prefcore.demo.model import build_tiny_model
from prefcore.demo.task import preference_pairs
from prefcore.demo.tokenizer import build_tokenizer
from prefcore.engine import checkpoint as checkpoint_module
from prefcore.engine.checkpoint import list_checkpoints
from prefcore.engine.checkpoint import load_checkpoint
from prefcore.engine.checkpoint import save_checkpoint
from prefcore.engine.loop import OptimiserLoop
from prefcore.engine.metrics_log import MetricsCSVWriter
from prefcore.engine.models import save_model
from prefcore.engine.trainer import TrainConfig
from prefcore.errors import PrefcoreError
from prefcore.errors import StorageError


def _disk_full(path: object = "") -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask() -> Iterator[None]:
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _hidden(folder: Path) -> list[str]:
    return sorted(entry.name for entry in folder.iterdir() if entry.name.startswith("."))


# ----------------------------------------------------------------------------------------------
# The helper
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_files_and_folders_follow_the_umask(tmp_path: Path, umask: None, mask: int) -> None:
    os.umask(mask)
    atomic_write_text(tmp_path / "config.json", "{}")
    with atomic_directory(tmp_path / "model") as staging:
        (staging / "weights.bin").write_bytes(b"w")
        (staging / "sub").mkdir()
    assert _mode(tmp_path / "config.json") == 0o666 & ~mask
    assert _mode(tmp_path / "model") == 0o777 & ~mask
    assert _mode(tmp_path / "model" / "weights.bin") == 0o666 & ~mask


def test_a_failed_write_keeps_the_previous_file_and_names_the_path(tmp_path: Path) -> None:
    target = tmp_path / "config.json"
    atomic_write_text(target, "previous")
    with pytest.raises(StorageError) as excinfo, atomic_file(target) as handle:
        handle.write("half of the new conte")
        raise _disk_full()
    error = excinfo.value
    assert isinstance(error, PrefcoreError) and isinstance(error, OSError)
    assert error.path == str(target) and error.errno == errno.ENOSPC
    assert str(target) in str(error) and "disk is full" in str(error)
    assert target.read_text() == "previous"
    assert os.listdir(tmp_path) == ["config.json"]


def test_a_failed_folder_write_keeps_the_previous_folder(tmp_path: Path) -> None:
    with atomic_directory(tmp_path / "model") as staging:
        (staging / "a.txt").write_text("old")
    with pytest.raises(StorageError, match="model"), atomic_directory(tmp_path / "model") as staging:
        (staging / "a.txt").write_text("new")
        raise _disk_full()
    assert (tmp_path / "model" / "a.txt").read_text() == "old"
    assert os.listdir(tmp_path) == ["model"]


def test_replacing_a_folder_never_leaves_the_name_empty(tmp_path: Path) -> None:
    """A kill between moving the old folder aside and renaming the new one: the old one comes back."""
    with atomic_directory(tmp_path / "model") as staging:
        (staging / "a.txt").write_text("old")
    (tmp_path / "model").rename(tmp_path / ".model.0123abcd.old")  # as the replace leaves it
    (tmp_path / ".model.89abcdef.tmp").mkdir()  # the new folder, never renamed into place
    remove_stale_staging(tmp_path)
    assert os.listdir(tmp_path) == ["model"]
    assert (tmp_path / "model" / "a.txt").read_text() == "old"


def test_removing_a_folder_is_never_half_done_under_its_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "step-000002"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"x")

    def killed(path: object, *args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("prefcore.atomic.shutil.rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        remove_directory(folder)
    assert not folder.exists()
    monkeypatch.undo()
    remove_stale_staging(tmp_path)  # a staging leftover, deleted, not restored
    assert os.listdir(tmp_path) == []


def test_metrics_and_reports_follow_the_umask(tmp_path: Path, umask: None) -> None:
    writer = MetricsCSVWriter(tmp_path / "metrics.csv")
    writer.write(1, {"loss": 1.0})
    writer.write(2, {"loss": 0.5, "lr": 0.1})  # a new column rewrites the file
    assert _mode(tmp_path / "metrics.csv") == 0o644


# ----------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------


def _trained_state(seed: int = 0) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    return model, optimizer


def _save(run_dir: Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer, **kwargs) -> Path:
    return save_checkpoint(
        run_dir, step, model=model, optimizer=optimizer, scheduler=None, trainer_state={"epoch": 0}, **kwargs
    )


def _fail_on(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``save_file`` writes half of ``name`` and then finds the disk full.

    It fails as safetensors does: not with an ``OSError`` but a ``SafetensorError`` whose
    message carries the errno (checked against the real library with a file-size limit).
    """

    def save_file(tensors, filename, metadata=None):
        if Path(filename).name != name:
            return real_save_file(tensors, filename, metadata=metadata)
        real_save_file(tensors, filename, metadata=metadata)
        data = Path(filename).read_bytes()
        Path(filename).write_bytes(data[: len(data) // 2])
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(checkpoint_module, "save_file", save_file)


def test_checkpoint_folders_follow_the_umask(tmp_path: Path, umask: None) -> None:
    model, optimizer = _trained_state()
    path = _save(tmp_path, 1, model, optimizer)
    assert _mode(tmp_path / "checkpoints") == 0o755
    assert _mode(path) == 0o755
    assert {_mode(file) for file in path.iterdir()} == {0o644}


def test_full_disk_names_the_checkpoint_and_keeps_the_previous_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, optimizer = _trained_state()
    previous = _save(tmp_path, 2, model, optimizer)
    saved_weights = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()

    _fail_on("optimizer.safetensors", monkeypatch)
    with pytest.raises(StorageError) as excinfo:
        _save(tmp_path, 4, model, optimizer)
    assert excinfo.value.path == str(tmp_path / "checkpoints" / "step-000004")
    assert "step-000004" in str(excinfo.value) and "No space left on device" in str(excinfo.value)
    assert list_checkpoints(tmp_path) == [previous]
    assert _hidden(tmp_path / "checkpoints") == []

    fresh, fresh_optimizer = _trained_state(seed=1)
    restored = load_checkpoint(previous, model=fresh, optimizer=fresh_optimizer, scheduler=None)
    assert restored.step == 2
    for name, tensor in fresh.state_dict().items():
        torch.testing.assert_close(tensor, saved_weights[name])


def test_full_disk_while_rewriting_the_same_step_keeps_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, optimizer = _trained_state()
    path = _save(tmp_path, 3, model, optimizer, keep_last=1)
    before = {file.name: file.read_bytes() for file in path.iterdir()}
    _fail_on("rng.safetensors", monkeypatch)
    with pytest.raises(StorageError):
        _save(tmp_path, 3, model, optimizer, keep_last=1)
    assert {file.name: file.read_bytes() for file in path.iterdir()} == before
    assert list_checkpoints(tmp_path) == [path]


def _loop(run_dir: Path) -> OptimiserLoop:
    torch.manual_seed(0)
    config = TrainConfig(steps=8, batch_size=2, lr=0.1, progress=False, checkpoint_every=2, keep_checkpoints=3)
    items = [SimpleNamespace(length=3 + index % 4) for index in range(8)]  # what batching reads of an item
    return OptimiserLoop(torch.nn.Linear(4, 3), items, config, run_dir=run_dir)


def test_resume_cleans_staging_folders_left_by_a_kill(tmp_path: Path) -> None:
    loop = _loop(tmp_path)
    for step in (2, 4):
        loop.step = step
        loop.next_micro_batch()
        loop.save()
    root = tmp_path / "checkpoints"
    # what killed saves leave: this version's staging name, and the mkdtemp name of earlier versions
    for stale in (root / ".step-000006.0a1b2c3d.tmp", root / ".step-000006.k2_x9qzp"):
        stale.mkdir()
        (stale / "model.safetensors").write_bytes(b"\x00" * 10)  # a torn file: loading it would fail

    resumed = _loop(tmp_path)
    assert resumed.resume()
    assert resumed.step == 4
    assert resumed.position == loop.position
    assert sorted(entry.name for entry in root.iterdir()) == ["step-000002", "step-000004"]


def test_a_save_after_a_kill_cleans_up_too(tmp_path: Path) -> None:
    loop = _loop(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / ".step-000002.0a1b2c3d.tmp").mkdir()
    loop.step = 4
    loop.save()
    assert [entry.name for entry in (tmp_path / "checkpoints").iterdir()] == ["step-000004"]


# ----------------------------------------------------------------------------------------------
# The final model and config.json
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    tokenizer = build_tokenizer()
    return build_tiny_model(tokenizer, seed=0), tokenizer


def test_final_model_is_written_atomically_with_the_umask(
    tmp_path: Path, tiny, umask: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import AutoModelForCausalLM

    model, tokenizer = tiny
    target = tmp_path / "run" / "model"
    save_model(model, tokenizer, target)
    assert _mode(target) == 0o755
    assert {_mode(file) for file in target.rglob("*") if file.is_file()} == {0o644}
    before = {file.name: file.read_bytes() for file in target.iterdir()}

    def full(*args: object, **kwargs: object) -> None:
        raise _disk_full()

    monkeypatch.setattr(type(tokenizer), "save_pretrained", full)
    with pytest.raises(StorageError, match="model"):
        save_model(model, tokenizer, target)
    assert {file.name: file.read_bytes() for file in target.iterdir()} == before
    assert os.listdir(target.parent) == ["model"], "no staging folder may remain"
    reloaded = AutoModelForCausalLM.from_pretrained(target, local_files_only=True)
    torch.testing.assert_close(reloaded.lm_head.weight, model.lm_head.weight)


_FSIZE_SCRIPT = """
import resource, signal, sys
from prefcore.config import parse_run_config
from prefcore.pipeline import run_pipeline

config = parse_run_config({
    "model": {"demo": True},
    "feedback": {"method": "preference_file", "path": sys.argv[1]},
    "usage": {"method": "dpo"},
    "evaluation": [{"method": "preference_accuracy"}],
    "train": {"steps": 1, "batch_size": 2, "progress": False},
})
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (64, resource.RLIM_INFINITY))
run_pipeline(config, out=sys.argv[2])
"""


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="file-size limits are POSIX")
def test_config_json_is_never_left_half_written(tmp_path: Path) -> None:
    """The kernel refuses to write past 64 bytes: config.json must be whole or absent, and the error named."""
    pairs = tmp_path / "pairs.jsonl"
    write_jsonl(preference_pairs(count=8, seed=0), pairs)
    run_dir = tmp_path / "run"
    script = tmp_path / "run_with_small_files.py"
    script.write_text(textwrap.dedent(_FSIZE_SCRIPT))
    environment = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run(
        [sys.executable, str(script), str(pairs), str(run_dir)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=environment,
        timeout=300,
    )
    assert result.returncode != 0
    assert "StorageError" in result.stderr, result.stderr[-2000:]
    assert str(run_dir / "config.json") in result.stderr
    assert not (run_dir / "config.json").exists()
    assert [entry for entry in os.listdir(run_dir) if entry.startswith(".")] == []


_CHECKPOINT_SCRIPT = """
import os, resource, signal, sys
import torch
from prefcore.engine.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from prefcore.errors import StorageError

run_dir = sys.argv[1]
model = torch.nn.Linear(64, 64)  # 16 kB of weights, 33 kB of optimiser state
optimizer = torch.optim.AdamW(model.parameters())
model(torch.randn(2, 64)).sum().backward()
optimizer.step()
save = dict(model=model, optimizer=optimizer, scheduler=None, trainer_state={})
save_checkpoint(run_dir, 1, **save)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (24_000, resource.RLIM_INFINITY))  # the optimiser file cannot fit
try:
    save_checkpoint(run_dir, 2, **save)
except StorageError as error:
    print("StorageError", error.path, error.errno)
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
print("listed", *[path.name for path in list_checkpoints(run_dir)])
print("entries", *sorted(os.listdir(os.path.join(run_dir, "checkpoints"))))
print("restored", load_checkpoint(list_checkpoints(run_dir)[-1], model=model, optimizer=optimizer, scheduler=None).step)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="file-size limits are POSIX")
def test_a_real_write_failure_in_safetensors_is_a_storage_error(tmp_path: Path) -> None:
    """The kernel refuses a write inside safetensors' save_file (Rust, no OSError): still a StorageError."""
    script = tmp_path / "checkpoint_with_small_files.py"
    script.write_text(textwrap.dedent(_CHECKPOINT_SCRIPT))
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "run")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    assert lines["StorageError"] == f"{tmp_path / 'run' / 'checkpoints' / 'step-000002'} {errno.EFBIG}"
    assert lines["listed"] == "step-000001"
    assert lines["entries"] == "step-000001"
    assert lines["restored"] == "1"


def test_every_file_of_a_run_follows_the_umask(tmp_path: Path, umask: None) -> None:
    """Model, report, metrics, plots, config and checkpoints: 0644 files and 0755 folders under umask 022."""
    from prefcore.config import parse_run_config
    from prefcore.pipeline import run_pipeline

    pairs = tmp_path / "pairs.jsonl"
    write_jsonl(preference_pairs(count=24, seed=0), pairs)
    config = parse_run_config(
        {
            "run": {"seed": 1, "heldout_fraction": 0.25, "eval_prompts": 2, "max_new_tokens": 4},
            "model": {"demo": True},
            "feedback": {"method": "preference_file", "path": str(pairs)},
            "usage": {"method": "dpo", "beta": 0.1},
            "evaluation": [{"method": "preference_accuracy"}],
            "train": {"steps": 2, "batch_size": 4, "lr": 1e-3, "progress": False, "checkpoint_every": 1},
        }
    )
    run_dir = run_pipeline(config, out=str(tmp_path / "run")).run_dir
    files = [path for path in run_dir.rglob("*") if path.is_file()]
    folders = [run_dir, *(path for path in run_dir.rglob("*") if path.is_dir())]
    assert {"model.safetensors", "report.md", "metrics.csv", "config.json", "state.json"} <= {f.name for f in files}
    assert any(folder.name.startswith("step-") for folder in folders)
    assert {str(path.relative_to(run_dir)): oct(_mode(path)) for path in files if _mode(path) != 0o644} == {}
    assert {str(path.relative_to(run_dir)): oct(_mode(path)) for path in folders if _mode(path) != 0o755} == {}
    assert not [path for path in run_dir.rglob(".*")], "no staging entry may remain"
