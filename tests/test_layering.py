"""The package's layering, read from the source with `ast` (nothing is imported, so this runs in a second).

What counts as an import: every `import` / `from … import` statement of a module, at module level and inside
functions — a function-level import that closes a cycle still ties the two modules together, it only hides the
tie from the interpreter until the function runs. Statements under ``if TYPE_CHECKING:`` never run and are left
out (annotations may name a module above). A package's ``__init__`` is a module of its own; importing a
submodule is not counted as importing the packages around it (Python runs their ``__init__`` first, but an
``__init__`` that imports its own submodules would otherwise make every package a cycle).
"""

from __future__ import annotations

import ast
from collections import deque
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = "xmodel"


def module_files() -> dict[str, tuple[Path, bool]]:
    """Dotted module name → (file, is a package __init__)."""
    out = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST):
    """Every import statement of a module except those under `if TYPE_CHECKING:`."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _import_nodes(ast.Module(body=node.orelse, type_ignores=[]))
        else:
            yield from _import_nodes(node)


def imports_of(module: str, path: Path, is_package: bool, modules: dict) -> dict[str, int]:
    """Modules of the package that `module` imports → line of the first such import."""
    found: dict[str, int] = {}
    for node in _import_nodes(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)] + ([node.module] if node.module else [])
                base = ".".join(base)
            else:
                base = node.module or ""
            # `from pkg import name`: the submodule pkg.name when there is one, else pkg itself
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        for target in targets:
            while target and target not in modules:  # `import xmodel.data.mixture.x` → the deepest module
                target = target.rpartition(".")[0]
            if target and target != module:
                found.setdefault(target, node.lineno)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, dict[str, int]]:
    modules = module_files()
    return {name: imports_of(name, path, is_package, modules) for name, (path, is_package) in modules.items()}


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each as one cycle through them."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(_one_cycle(graph, set(component)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _one_cycle(graph: dict[str, dict[str, int]], component: set[str]) -> list[str]:
    """A shortest path a → … → a through a strongly connected component (breadth-first from its first module)."""
    start = min(component)
    parent: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        v = queue.popleft()
        for w in sorted(graph[v]):
            if w == start:
                path = [v]
                while parent[path[-1]] is not None:
                    path.append(parent[path[-1]])
                return path[::-1] + [start]
            if w in component and w not in parent:
                parent[w] = v
                queue.append(w)
    raise AssertionError(f"not a strongly connected component: {sorted(component)}")


def _describe(graph, cycle: list[str]) -> str:
    return " → ".join(f"{a} (line {graph[a][b]})" for a, b in zip(cycle, cycle[1:])) + f" → {cycle[-1]}"


def test_no_import_cycles(graph):
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(_describe(graph, c) for c in found)


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3, "d": 4}, "d": {}}
    assert cycles(graph) == [["a", "b", "c", "a"]]
    assert _describe(graph, ["a", "b", "c", "a"]) == "a (line 1) → b (line 2) → c (line 3) → a"


def test_library_code_never_imports_the_cli(graph):
    bad = [f"{m} imports {t} (line {line})" for m, targets in graph.items() if not m.startswith("xmodel.cli")
           for t, line in targets.items() if t == "xmodel.cli" or t.startswith("xmodel.cli.")]
    assert not bad, "library code must not import the CLI:\n" + "\n".join(bad)


# (importer prefix, imported prefix, why): pairs that must never meet.
FORBIDDEN = [
    ("xmodel.data", "xmodel.train", "data is below training"),
    ("xmodel.data", "xmodel.tune", "data is below the wind tunnel"),
    ("xmodel.data", "xmodel.eval", "data is below evaluation"),
    ("xmodel.data", "xmodel.inference", "data is below inference"),
    ("xmodel.data", "xmodel.tokenizer.train", "data uses tokenizer loading, never tokenizer training"),
    ("xmodel.data", "xmodel.tokenizer.stats", "data uses tokenizer loading, never tokenizer statistics"),
    ("xmodel.tokenizer.config", "xmodel.data", "tokenizer loading sits below data"),
    ("xmodel.tokenizer.special", "xmodel.data", "tokenizer loading sits below data"),
    ("xmodel.tokenizer.loading", "xmodel.data", "tokenizer loading sits below data"),
    ("xmodel.tune.data", "xmodel.train", "the wind tunnel's data comes from data, not from training"),
    ("xmodel.inference", "xmodel.eval", "inference is below evaluation"),
    ("xmodel.model", "xmodel.train", "the model is below training"),
    ("xmodel.model", "xmodel.export", "the model is below export (conversion lives in model.convert)"),
    ("xmodel.train", "xmodel.export", "training starts from model folders through model.convert, not export"),
    ("xmodel.train", "xmodel.eval", "training is below evaluation"),
    # inside data: ingest → plan → manifest → pipeline → prepare, and the readers never reach the pipeline
    ("xmodel.data.ingest", "xmodel.data.plan", "ingest is the lowest stage"),
    ("xmodel.data.plan", "xmodel.data.manifest", "the plan is handed to the manifest, not the other way"),
    ("xmodel.data.manifest", "xmodel.data.pipeline", "the manifest merges what the pipeline reports"),
    ("xmodel.data.manifest", "xmodel.data.prepare", "prepare runs the stages"),
    ("xmodel.data.pipeline", "xmodel.data.prepare", "prepare runs the stages"),
    ("xmodel.data.shards", "xmodel.data.pipeline", "reading shards needs no pipeline"),
    ("xmodel.data.mixture", "xmodel.data.pipeline", "sampling needs no pipeline"),
    ("xmodel.data.heldout", "xmodel.data.pipeline", "reading held-out data needs no pipeline"),
    ("xmodel.data.batches", "xmodel.data.pipeline", "the batch contract needs no pipeline"),
]


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def test_layers_are_kept(graph):
    bad = [f"{m} imports {t} (line {line}): {why}" for low, high, why in FORBIDDEN
           for m, targets in graph.items() if _under(m, low)
           for t, line in targets.items() if _under(t, high)]
    assert not bad, "\n".join(bad)


def test_the_graph_sees_relative_function_level_and_package_imports(graph):
    # from .manifest import … at module level; from .. import x and function-level imports in other modules
    assert "xmodel.data.manifest" in graph["xmodel.data.pipeline"]
    assert "xmodel.data.heldout" in graph["xmodel.tokenizer.train"]      # inside split_texts
    assert "xmodel.data.batches" in graph["xmodel.tune.data"]
    assert "xmodel.train.checkpoint" in graph["xmodel.tune.mixture"]      # `from ..train import checkpoint`
