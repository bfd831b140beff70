"""The architecture, read from the source with `ast`: dependencies point one way,
digitflow <- model_store <- beam_jobs <- flows, and no package's modules import each other in a
circle. Every import counts, at any depth: inside functions and under TYPE_CHECKING too."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

LAYERS = ("digitflow", "model_store", "beam_jobs", "flows")  # each may import the ones before it
ROOT = Path(__file__).resolve().parents[1]


def modules(package: str) -> dict[str, Path]:
    """The package's modules by dotted name (a package's `__init__` under the package's name)."""
    return {
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): path
        for path in sorted((ROOT / package).rglob("*.py"))
    }


EVERY_MODULE = {name for package in LAYERS for name in modules(package)}


def imported(module: str, path: Path) -> set[str]:
    """What `module` imports; `from a import b` is module `a.b` if there is one, else `a`."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, or `level - 1` packages above it
                parent = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = ".".join(filter(None, (parent, base)))
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in EVERY_MODULE else base)
    return found


def test_imports_inside_functions_and_from_packages_are_seen():
    assert {"flows.retrain", "flows.schedule", "flows.options"} <= imported(
        "flows.cli", ROOT / "flows" / "cli.py"
    )  # flows.retrain only inside a command
    assert "digitflow.terminal" in imported("flows", ROOT / "flows" / "__init__.py")


@pytest.mark.parametrize("package", LAYERS)
def test_dependencies_point_one_way(package: str):
    allowed = LAYERS[: LAYERS.index(package) + 1]
    wrong = sorted(
        f"{module} imports {target}"
        for module, path in modules(package).items()
        for target in imported(module, path)
        if target.split(".")[0] in LAYERS and target.split(".")[0] not in allowed
    )
    assert not wrong, f"{package} may import only {', '.join(allowed)}:\n" + "\n".join(wrong)


@pytest.mark.parametrize("package", LAYERS)
def test_no_import_cycle_between_a_packages_modules(package: str):
    inside = modules(package)
    graph = {
        module: {target for target in imported(module, path) if target in inside} - {module}
        for module, path in inside.items()
    }
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as error:
        pytest.fail(f"import cycle in {package}: {' -> '.join(reversed(error.args[1]))}")
