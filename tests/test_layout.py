"""The house's layout, read from the source (ast), without importing anything:

- no import circle of any kind among our modules (imports inside functions and `if TYPE_CHECKING:` ones count);
- `pipeline/` is the method and its data layer: it imports neither Ray nor the packages above it
  (actors, jobs) nor the fixtures and the toy world (names like 'tiny' come through the registry);
- `actors/` is who runs where: every module in it imports Ray (the per-video work is `pipeline/stages/`).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("pipeline", "actors", "jobs", "fixtures", "toyworld")

def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imported_names(name: str, path: Path) -> set[str]:
    """Every dotted name the module imports (absolute; `from a import b` gives a.b), at any depth."""
    names: set[str] = set()
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                names.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package[: len(package) - (child.level - 1)]
                    module = ".".join(base + ([child.module] if child.module else []))
                else:
                    module = child.module or ""
                names.add(module)
                names.update(f"{module}.{alias.name}" for alias in child.names)
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return names


IMPORTS = {name: _imported_names(name, path) for name, path in MODULES.items()}


def _ours(dotted: str) -> str | None:
    """The module of ours a dotted import name lands in (the longest known prefix), or None."""
    while dotted and dotted not in MODULES:
        dotted = dotted.rpartition(".")[0]
    return dotted or None


def _graph() -> dict[str, set[str]]:
    return {a: {m for n in names if (m := _ours(n)) and m != a} for a, names in IMPORTS.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return found


def _top(names: set[str]) -> set[str]:
    return {n.split(".")[0] for n in names}


def test_the_packages_are_found() -> None:
    assert {"pipeline.models.loading", "actors.runner", "jobs.cli", "fixtures.tiny", "toyworld.world"} <= set(MODULES)


def test_no_import_circle() -> None:
    graph = _graph()
    assert _cycles(graph) == [], {c[0]: {a: sorted(graph[a] & set(c)) for a in c} for c in _cycles(graph)}


def test_the_cycle_finder_finds_one() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_pipeline_imports_no_ray_and_nothing_above_or_beside_it() -> None:
    for name, names in IMPORTS.items():
        if name.split(".")[0] == "pipeline":
            bad = _top(names) & {"ray", "actors", "jobs", "fixtures", "toyworld"}
            assert not bad, f"{name} imports {sorted(bad)}"


def test_actors_is_only_ray() -> None:
    actors = [n for n in MODULES if n.split(".")[0] == "actors" and n != "actors"]
    assert len(actors) >= 6, actors
    for name in actors:
        assert "ray" in _top(IMPORTS[name]), f"{name} does not use Ray: its place is pipeline/ (e.g. pipeline/stages/)"


def test_verbs_import_no_test_fixtures() -> None:
    """What users run never imports the test fixtures: the tiny models and the real-size random ones
    come through the model registry's entry points (pipeline/models/registry.py)."""
    for name, names in IMPORTS.items():
        if name.split(".")[0] in ("jobs", "actors"):
            assert "fixtures" not in _top(names), f"{name} imports fixtures"
