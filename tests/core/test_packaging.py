"""Install names: plugins/ and kernels/ install under prefcore, never as generic top-level modules."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _package_folders() -> set[str]:
    """Every folder with an __init__.py, named as it installs (plugins/ → prefcore.plugins)."""
    mapping = PYPROJECT["tool"]["setuptools"]["package-dir"]
    names = set()
    for package, folder in mapping.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder)
            names.add(".".join([package, *relative.parts]))
    return names


def test_every_package_folder_is_listed() -> None:
    assert set(PYPROJECT["tool"]["setuptools"]["packages"]) == _package_folders()


def test_every_builtin_plugin_module_has_an_entry_point() -> None:
    entry_points = PYPROJECT["project"]["entry-points"]["prefcore"]
    modules = {
        f"prefcore.plugins.{path.parent.name}.{path.stem}"
        for path in (ROOT / "plugins").glob("*/*.py")
        if not path.stem.startswith("_")
    }
    assert set(entry_points.values()) == modules
    assert all(name == target.rsplit(".", 1)[1] for name, target in entry_points.items())


def test_wheel_has_no_generic_top_level_modules(tmp_path: Path) -> None:
    source = tmp_path / "source"  # a copy, so the build leaves no files in the tree
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", "build", "*.egg-info", "runs", "__pycache__"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(source),
        ],
        check=True,
        cwd=tmp_path,
    )
    [wheel] = tmp_path.glob("prefcore-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names}
    assert top_level == {"prefcore", f"prefcore-{PYPROJECT['project']['version']}.dist-info"}
    assert "prefcore/kernels/fused_linear_logprobs.py" in names
    assert "prefcore/plugins/usage/dpo.py" in names
