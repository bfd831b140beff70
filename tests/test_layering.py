"""The architecture, read from the source with `ast`: dependencies point one way,
digitflow <- model_store <- beam_jobs <- flows, and no package's modules import each other in a
circle. Every import counts, at any depth: inside functions and under TYPE_CHECKING too.

Bytes move through one I/O layer, `digitflow.locations`: no other module writes a file itself
(an `open` for writing, `os.open` with write flags, `write_bytes` / `write_text`, `os.replace` /
`os.rename`, `NamedTemporaryFile(delete=False)`) or imports an object store's client, except the
few writers in ALLOWED_WRITERS, each with its reason. Libraries that write through their own API
(Keras' `save`, numpy's `savez`, Pillow, Beam's sinks and file systems, Prefect) are theirs."""

from __future__ import annotations

import ast
import graphlib
import re
from collections.abc import Iterator
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


IO_LAYER = "digitflow.locations"
CLOUD_CLIENTS = ("boto3", "botocore", "google.cloud", "google.api_core", "google.auth")
# (module, function) -> why it writes its files itself.
ALLOWED_WRITERS = {
    ("digitflow.scans", "write_scans"): "`digitflow data scans`: sample scans and their "
    "labels.csv, new files in a folder no one reads while they are written",
    ("model_store.spans.review", "_write"): "`digitflow review`: each file created exclusively "
    "(`xb`), so it never replaces one; nothing for a temporary file to protect",
}
_MODE = re.compile(r"[rwxabt+]+")
_WRITE_FLAGS = {"O_WRONLY", "O_RDWR", "O_CREAT", "O_APPEND", "O_TRUNC"}


def in_functions(tree: ast.AST) -> Iterator[tuple[str, ast.AST]]:
    """Every node of `tree` with the name of the function it is in (`<module>` outside any)."""
    stack: list[tuple[str, ast.AST]] = [("<module>", tree)]
    while stack:
        function, node = stack.pop()
        yield function, node
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            function = node.name
        stack.extend((function, child) for child in ast.iter_child_nodes(node))


def own_io(node: ast.AST) -> str | None:
    """What `node` does that only the I/O layer may, or None."""
    if isinstance(node, ast.Import | ast.ImportFrom):
        base = node.module if isinstance(node, ast.ImportFrom) else None
        names = [".".join(filter(None, (base, alias.name))) for alias in node.names]
        bad = [n for n in names if n in ("os.replace", "os.rename") or n.startswith(CLOUD_CLIENTS)]
        return f"imports {', '.join(bad)}" if bad else None
    if not isinstance(node, ast.Call):
        return None
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    owner = getattr(func.value, "id", "") if isinstance(func, ast.Attribute) else ""
    if name in ("write_bytes", "write_text"):
        return f".{name}()"
    if owner == "os" and name in ("replace", "rename"):
        return f"os.{name}()"
    if owner == "os" and name == "open":
        flags = {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)} & _WRITE_FLAGS
        return f"os.open() with {', '.join(sorted(flags))}" if flags else None
    if name == "open" and (mode := _write_mode(node)):
        return f"open() with mode {mode!r}"
    delete = [kw.value for kw in node.keywords if kw.arg == "delete"]
    if name == "NamedTemporaryFile" and any(getattr(v, "value", True) is False for v in delete):
        return "NamedTemporaryFile(delete=False)"
    return None


def _write_mode(call: ast.Call) -> str:
    """The mode of an `open(path, mode)` or `path.open(mode)` that writes, else ''. Writing to
    os.devnull is no file's bytes."""
    builtin = isinstance(call.func, ast.Name)
    if builtin and call.args and ast.unparse(call.args[0]) == "os.devnull":
        return ""
    given = call.args[1:2] if builtin else call.args[:1]
    given = [*given, *(kw.value for kw in call.keywords if kw.arg == "mode")]
    modes = [n.value for n in given if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    return next((m for m in modes if _MODE.fullmatch(m) and set(m) & set("wax+")), "")


def io_outside_the_layer(package: str) -> dict[tuple[str, str], list[str]]:
    """(module, function) -> what it does of the I/O layer's job, for every module of
    `package` outside the layer."""
    found: dict[tuple[str, str], list[str]] = {}
    for module, path in modules(package).items():
        if module == IO_LAYER or module.startswith(f"{IO_LAYER}."):
            continue
        nodes = in_functions(ast.parse(path.read_text(), str(path)))
        for function, node in sorted(nodes, key=lambda found: getattr(found[1], "lineno", 0)):
            if what := own_io(node):
                found.setdefault((module, function), []).append(f"line {node.lineno}: {what}")
    return found


def test_every_kind_of_own_io_is_seen():
    source = """
import boto3
from google.cloud import storage
from os import replace
def writes(path, tmp):
    open(path, "w"); open(path, mode="ab"); path.open("xb"); path.open("r+b")
    os.open(path, os.O_WRONLY | os.O_CREAT); path.write_bytes(b""); path.write_text("")
    os.replace(tmp, path); os.rename(tmp, path)
    tempfile.NamedTemporaryFile(dir=path, delete=False)
def reads(path, zipped):
    open(path); open(path, "rb"); path.open(); os.open(path, os.O_RDONLY)
    open(os.devnull, "w"); zipped.open("data/mnist.npz"); "text".replace("t", "x")
    tempfile.NamedTemporaryFile()
"""
    seen = [(function, what) for function, node in in_functions(ast.parse(source))
            if (what := own_io(node))]  # fmt: skip
    assert [function for function, _ in seen].count("reads") == 0
    assert len(seen) == 3 + 10, seen


@pytest.mark.parametrize("package", LAYERS)
def test_only_the_io_layer_writes_files_and_talks_to_object_stores(package: str):
    found = io_outside_the_layer(package)
    wrong = [f"{module}.{function}: {line}" for (module, function), lines in found.items()
             if (module, function) not in ALLOWED_WRITERS for line in lines]  # fmt: skip
    assert not wrong, f"{package}: write through {IO_LAYER}:\n" + "\n".join(wrong)


def test_every_allowed_writer_still_writes_itself():
    found = {writer for package in LAYERS for writer in io_outside_the_layer(package)}
    assert set(ALLOWED_WRITERS) <= found, "stale ALLOWED_WRITERS entries: remove them"
