"""Arrows point down (issue 20), read from the source's AST, so a lazy import inside a
function counts as much as one at the top of a file:

- ``albumforge`` (the contracts: rows, manifests, config sections, model resolution, records,
  the OUT hold) imports no other package of the project;
- ``director``, ``actors`` and ``catalog`` never import ``ray_jobs``; ``director`` and
  ``catalog`` never import ``actors`` (no torch, no Ray for the site, the loader or planning);
- no two modules import each other, directly or round a longer circle.

The one thing not counted is an ``if __name__ == "__main__":`` block: it runs only when its
file is the program (``python -m ray_jobs.generate``), never on import, so it can close no
circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ["actors", "albumforge", "catalog", "director", "ray_jobs"]
MAY_NOT = {  # package -> packages of the project it must never import
    "albumforge": {"actors", "catalog", "director", "ray_jobs"},
    "director": {"actors", "catalog", "ray_jobs"},
    "catalog": {"actors", "director", "ray_jobs"},
    "actors": {"catalog", "ray_jobs"},
}


def _module(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_main_guard(node: ast.AST) -> bool:
    return (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
            and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__"
            and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in node.test.comparators))


def _imports(tree: ast.AST, module: str, known: set[str]) -> dict[str, int]:
    """The project modules ``tree`` imports (anywhere but a __main__ block), with a line each."""
    found: dict[str, int] = {}
    skip = {id(n) for top in ast.walk(tree) if _is_main_guard(top) for n in ast.walk(top)}
    package = module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's own package
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], base]).strip(".")
            names = [base, *(f"{base}.{a.name}" for a in node.names)]
        for name in names:
            # the deepest project module the name is, or is inside
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.setdefault(name, node.lineno)
    return found


def _graph() -> dict[str, dict[str, int]]:
    paths = {_module(p): p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py") if "migrations" not in p.parts}
    known = set(paths)
    return {m: _imports(ast.parse(p.read_text(), str(p)), m, known) for m, p in paths.items()}


def test_every_arrow_points_down():
    wrong = [f"{m.replace('.', '/')}.py:{line} imports {target}"
             for m, targets in _graph().items() for target, line in targets.items()
             if target.split(".")[0] in MAY_NOT.get(m.split(".")[0], set())]
    assert not wrong, "imports that point up:\n" + "\n".join(sorted(wrong))


def test_no_import_circle():
    graph = {m: set(t) for m, t in _graph().items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan: each strongly connected set of more than one module is a circle
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                circles.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not circles, f"modules that import each other: {circles}"


def test_the_graph_sees_lazy_imports():
    """The check could fail: a lazy import inside a function is an edge, a __main__ block is not."""
    tree = ast.parse("def f():\n    from ray_jobs.cli import main\nif __name__ == '__main__':\n    import actors.music\n")
    assert _imports(tree, "catalog.x", {"ray_jobs.cli", "actors.music", "catalog.x"}) == {"ray_jobs.cli": 2}
