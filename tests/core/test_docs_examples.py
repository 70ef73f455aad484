"""docs/writing-a-plugin.md cannot drift: its code is the example plugin's, and every method in it runs.

Every python and toml block of the page is captioned ``File `<path>`:`` and must equal that
file of ``examples/prefcore-example-plugin/`` byte for byte; every module of the example
package must be on the page. The page's blocks are then installed as a throw-away plugin
distribution (entry points as the page's ``pyproject.toml`` declares them) in a fresh
registry, and each method is created by name and run on a tiny input of its kind.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from prefcore.data import PairwiseComparison
from prefcore.demo.model import build_tiny_model
from prefcore.demo.tokenizer import build_tokenizer
from prefcore.evaluation import EvaluationContext
from prefcore.evaluation import GenerationSettings
from prefcore.methods import KINDS
from prefcore.preference import RewardBatch
from prefcore.registry import Registry
from prefcore.registry import get_plugin_manager
from prefcore.rollout import ROLLOUT_FORMAT
from prefcore.testing import check_objective
from prefcore.testing import check_online_objective
from prefcore.testing import make_random_rollout_batch

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "writing-a-plugin.md"
EXAMPLE = ROOT / "examples" / "prefcore-example-plugin"
DISTRIBUTION = "docs-example-plugin"

MakeDistribution = Callable[..., Path]  # the fixture of tests/core/conftest.py

FENCE = re.compile(r"^```(?P<lang>[\w-]*)\n(?P<code>.*?)^```$", re.M | re.S)
CAPTION = re.compile(r"File `(?P<path>[^`]+)`:\n\n$")


def page_files() -> dict[str, tuple[str, str]]:
    """Path → (language, code) of every captioned block of the page; an uncaptioned python or toml block fails."""
    text = PAGE.read_text()
    files: dict[str, tuple[str, str]] = {}
    for block in FENCE.finditer(text):
        caption = CAPTION.search(text, 0, block.start())
        if caption is None or caption.end() != block.start():
            assert block["lang"] not in ("python", "toml"), f"an uncaptioned {block['lang']} block:\n{block['code']}"
            continue
        files[caption["path"]] = (block["lang"], block["code"])
    return files


def test_every_block_is_a_file_of_the_example_plugin_verbatim() -> None:
    files = page_files()
    assert files, "the page shows no file"
    for path, (_, code) in files.items():
        assert (EXAMPLE / path).is_file(), f"the page shows {path}, which the example plugin does not have"
        assert code == (EXAMPLE / path).read_text(), f"the page's {path} differs from the example plugin's"
    modules = {str(path.relative_to(EXAMPLE)) for path in (EXAMPLE / "src").rglob("*.py")}
    assert modules <= set(files), f"modules of the example plugin missing from the page: {sorted(modules - set(files))}"


def test_one_name_per_method_entry_point_module_and_name() -> None:
    entry_points = _entry_points()
    for entry_point, target in entry_points.items():
        assert target == f"prefcore_example_plugin.{entry_point}", "entry point and module must share the name"
        code = page_files()[f"src/prefcore_example_plugin/{entry_point}.py"][1]
        assert f'name = "{entry_point}"' in code, f"{entry_point}.py must register the method {entry_point!r}"


def test_the_examples_import_only_public_names() -> None:
    for path, (language, code) in page_files().items():
        if language != "python" or not path.startswith("src/"):
            continue
        for node in ast.walk(ast.parse(code)):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("prefcore"):
                private = [part for part in node.module.split(".") if part.startswith("_")]
                private += [alias.name for alias in node.names if alias.name.startswith("_")]
                assert not private, f"{path} imports a private name from {node.module}: {private}"


def _entry_points() -> dict[str, str]:
    pyproject = tomllib.loads(page_files()["pyproject.toml"][1])
    return pyproject["project"]["entry-points"]["prefcore"]


@pytest.fixture
def registry(make_distribution: MakeDistribution) -> Registry:
    """The page's modules installed as a plugin distribution, in a fresh registry with the built-ins."""
    files = page_files()
    entry_points = _entry_points()
    modules = {name: files[f"src/prefcore_example_plugin/{name}.py"][1] for name in entry_points}
    make_distribution(DISTRIBUTION, "0.1.0", {name: name for name in entry_points}, modules)
    registry = Registry(get_plugin_manager(third_party=True, disabled=()))
    assert not registry.errors, registry.errors
    return registry


def _page_methods(registry: Registry) -> dict[str, str]:
    """Kind → name of each method the page's plugin registered; the online objective is kind ``online``."""
    found = [info for info in registry.methods() if info.provenance.distribution == DISTRIBUTION]
    methods: dict[str, str] = {}
    for info in found:
        online = info.kind == "usage" and ROLLOUT_FORMAT in registry.create("usage", info.name).data_formats
        methods["online" if online else info.kind] = info.name
    return methods


def test_the_page_shows_one_method_of_each_kind(registry: Registry) -> None:
    assert sorted(_page_methods(registry)) == sorted((*KINDS, "online"))


def test_feedback_source_yields_records_and_judges(registry: Registry) -> None:
    source = registry.create("feedback", _page_methods(registry)["feedback"])
    records = list(source.records())
    assert records and all(isinstance(record, PairwiseComparison) for record in records)
    judge = source.judge()
    for record in records:
        if not record.tie:
            assert judge(record.prompt, record.chosen, record.rejected) > 0.5
            assert judge(record.prompt, record.rejected, record.chosen) < 0.5


def test_preference_model_loss_trains_the_rewards(registry: Registry) -> None:
    model = registry.create("preference_model", _page_methods(registry)["preference_model"])
    rewards = torch.tensor([[0.0], [0.5], [2.0], [0.0]], requires_grad=True)
    batch = RewardBatch(rewards, chosen_index=torch.tensor([0, 2]), rejected_index=torch.tensor([1, 3]))
    output = model.loss(batch)
    assert output.loss.ndim == 0 and torch.isfinite(output.loss)
    output.loss.backward()
    assert rewards.grad[0, 0] < 0 < rewards.grad[1, 0], "the misordered pair pulls its rewards apart"
    assert float(output.metrics["rewards/accuracy"]) == 0.5


def test_usage_objective_passes_the_parity_kit(registry: Registry) -> None:
    objective = registry.create("usage", _page_methods(registry)["usage"])
    check_objective(objective)


def test_online_objective_passes_the_online_kit(registry: Registry) -> None:
    objective = registry.create("usage", _page_methods(registry)["online"])
    check_online_objective(objective, make_random_rollout_batch(seed=1))


def test_evaluator_runs_on_the_demo_model(registry: Registry) -> None:
    evaluator = registry.create("evaluation", _page_methods(registry)["evaluation"])
    tokenizer = build_tokenizer()
    policy = build_tiny_model(tokenizer, seed=1)
    reference = build_tiny_model(tokenizer, seed=2)
    context = EvaluationContext(
        policy=policy,
        tokenizer=tokenizer,
        reference=reference,
        prompts=["good or bad?", "say something"],
        generation=GenerationSettings(max_new_tokens=3, seed=0),
    )
    result = evaluator.evaluate(context)
    assert result.metrics and all(isinstance(value, float) for value in result.metrics.values())
