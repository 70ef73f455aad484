"""prefcore.lazy: a module stand-in that imports on first use, and the built-ins that rely on it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from prefcore.lazy import LazyModule
from prefcore.lazy import lazy_module


def _write_module(folder: Path, name: str, body: str, monkeypatch: pytest.MonkeyPatch) -> None:
    (folder / f"{name}.py").write_text(body, encoding="utf-8")
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, name, raising=False)


def test_imports_on_first_attribute_access(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_module(tmp_path, "lazy_target_a", "VALUE = 41\ndef add(x):\n    return x + 1\n", monkeypatch)
    stand_in = lazy_module("lazy_target_a")
    assert "lazy_target_a" not in sys.modules
    assert stand_in.__name__ == "lazy_target_a" and "lazy_target_a" in repr(stand_in)
    assert "lazy_target_a" not in sys.modules  # its own name and repr do not import it
    assert stand_in.add(stand_in.VALUE) == 42
    assert sys.modules["lazy_target_a"].VALUE == 41
    assert "add" in dir(stand_in)


def test_first_use_rebinds_the_name_in_the_module_that_made_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After the first use the plugin's global is the real module: no indirection per access."""
    _write_module(tmp_path, "lazy_target_d", "VALUE = 7\n", monkeypatch)
    _write_module(
        tmp_path,
        "lazy_user_d",
        "from prefcore.lazy import lazy_module\n"
        "target = lazy_module('lazy_target_d')\n"
        "alias = target\n"
        "def read():\n"
        "    return target.VALUE\n",
        monkeypatch,
    )
    import lazy_user_d

    stand_in = lazy_user_d.target
    assert isinstance(stand_in, LazyModule) and "lazy_target_d" not in sys.modules
    assert lazy_user_d.read() == 7
    real = sys.modules["lazy_target_d"]
    assert lazy_user_d.target is real and lazy_user_d.alias is real
    assert stand_in.VALUE == 7  # a reference kept elsewhere still works


def test_tools_probing_dunders_do_not_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_module(tmp_path, "lazy_target_b", "X = 1\n", monkeypatch)
    stand_in = lazy_module("lazy_target_b")
    assert not hasattr(stand_in, "__wrapped__")  # inspect.unwrap, doctest and pytest probe these
    assert "lazy_target_b" not in sys.modules


def test_reads_and_writes_go_to_the_real_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_module(tmp_path, "lazy_target_c", "def answer():\n    return 1\n", monkeypatch)
    stand_in = lazy_module("lazy_target_c")
    real = __import__("lazy_target_c")
    monkeypatch.setattr(real, "answer", lambda: 2)
    assert stand_in.answer() == 2  # a patch of the real module is seen through the stand-in
    stand_in.extra = "set through the stand-in"
    assert real.extra == "set through the stand-in"
    del stand_in.extra
    assert not hasattr(real, "extra")


def test_a_missing_module_fails_at_first_use() -> None:
    stand_in = lazy_module("prefcore_no_such_module_anywhere")
    with pytest.raises(ModuleNotFoundError, match="prefcore_no_such_module_anywhere"):
        _ = stand_in.anything


def test_every_builtin_lists_and_documents_without_torch(tmp_path: Path) -> None:
    """`prefcore list` and `prefcore info` of every built-in method load no torch, triton or transformers."""
    script = (
        "import sys\n"
        "from prefcore.api import get_registry\n"
        "from prefcore.config import field_docs\n"
        "infos = get_registry(third_party=False).methods()\n"
        "assert len(infos) > 40, infos\n"
        "for info in infos:\n"
        "    assert field_docs(info.cls.config_cls) is not None, info.name  # what `prefcore info` prints\n"
        "print(sorted(m for m in ('torch', 'triton', 'transformers') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
