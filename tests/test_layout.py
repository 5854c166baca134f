"""The package layout (docs/layout.md): imports only go down the layers, nothing imports
in a circle, and only ``s3edit.job`` opens a job's files."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "s3edit"

# Lowest first. A module may import its own package, the packages of its own layer
# (without a circle) and any layer below.
LAYERS = (
    ("errors", "paths", "console", "__init__"),
    ("job",),
    ("face", "video", "metrics"),
    ("model", "weights"),
    ("s3", "train", "portraits"),
    ("pipeline",),
    ("cli", "__main__"),
)
LAYER_OF = {name: depth for depth, names in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """The s3edit modules a file imports (function-level imports included)."""
    name = module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1] + [node.module or ""]).strip(".") \
                if node.level else (node.module or "")
            if base.startswith("s3edit"):
                found.add(base)
                for alias in node.names:  # `from s3edit.model import ddim` imports a module
                    candidate = f"{base}.{alias.name}"
                    if (PACKAGE.parent / (candidate.replace(".", "/") + ".py")).exists():
                        found.add(candidate)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("s3edit")}
    return found - {name}


def top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py")}


def test_every_package_has_a_layer(graph):
    assert {top(m) for m in graph} <= set(LAYER_OF)


def test_imports_only_go_down_the_layers(graph):
    upward = [f"{m} -> {i}" for m, targets in graph.items() for i in targets
              if LAYER_OF[top(i)] > LAYER_OF[top(m)]]
    assert not upward, "imports that go up a layer:\n" + "\n".join(sorted(upward))


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in list(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_circles(graph):
    modules = {m: {i for i in targets if i in graph} for m, targets in graph.items()}
    # a package's __init__ importing its own submodules is not a circle of the layout
    for m in modules:
        modules[m] = {i for i in modules[m] if not (m.count(".") == 1 and i.startswith(m + "."))}
    assert not _cycles(modules), _cycles(modules)
    packages: dict[str, set[str]] = {}
    for m, targets in graph.items():
        packages.setdefault(top(m), set()).update(top(i) for i in targets if top(i) != top(m))
    assert not _cycles(packages), _cycles(packages)


def test_model_is_the_network_and_the_sampler_only(graph):
    model = {m for m in graph if top(m) == "model"}
    assert not {i for m in model for i in graph[m] if top(i) in ("weights", "train", "pipeline", "s3")}
    names = {p.stem for p in (PACKAGE / "model").glob("*.py")}
    assert not names & {"registry", "download", "importer", "weightset", "train", "data"}


JOB_FILE_NAMES = re.compile(r"track\.safetensors|semantics|xT\.|edit\.json|change\.|detections|"
                            r"landmarks\.partial|manifest\.json|crops/|preview\.png")
JOB_PATHS = {"track_path", "crop_path", "crops_dir"}  # job files reached by path


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def test_only_the_job_module_reads_or_writes_a_jobs_files():
    """Job files are named and reached in s3edit/job.py alone: no other module spells a
    job file's name in code or reaches the track or the crops by path."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "job.py":
            continue
        tree = ast.parse(path.read_text())
        docs = _docstrings(tree)
        for node in ast.walk(tree):
            where = f"{path.relative_to(PACKAGE.parent)}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Attribute) and node.attr in JOB_PATHS:
                offenders.append(f"{where}: .{node.attr}")
            elif (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs
                  and JOB_FILE_NAMES.search(node.value) and "." in node.value and " " not in node.value):
                offenders.append(f"{where}: {node.value!r}")
    assert not offenders, "\n".join(offenders)
