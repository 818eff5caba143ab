"""Limits that keep the package one architecture (issue 16): no import cycle between the top-level
packages of src/dnninfer, the core never imports an area, area CLIs use the public CLI helpers,
and no bench.py grows past 250 lines. Each check is run on a planted violation first."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "dnninfer"
#: Shared core: below every area. An area may import these; they never import an area.
CORE = {"errors", "argtypes", "env", "cliutil", "graph", "zoo", "data", "cost", "runtime", "bench", "report"}
MAX_BENCH_LINES = 250


def _imports(path: Path, root: Path) -> list[tuple[str, int, list[str]]]:
    """(module, line, imported names) for every import in ``path``, lazy ones included."""
    own = path.relative_to(root.parent).with_suffix("").parts  # ("dnninfer", "area", "mod")
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [a.name for a in node.names]
            if node.level:  # relative: resolve against this module's package
                base = own[: len(own) - node.level] if path.name != "__init__.py" else own[: len(own) - node.level + 1]
                module = ".".join((*base, node.module) if node.module else base)
            else:
                module = node.module or ""
            out.append((module, node.lineno, names))
    return out


def _top(path: Path, root: Path) -> str:
    return path.relative_to(root).parts[0].removesuffix(".py")


def import_graph(root: Path = PACKAGE) -> tuple[nx.DiGraph, dict[tuple[str, str], list[str]]]:
    """Edges between top-level packages/modules of ``root`` (a package folder), with where each is."""
    graph, where = nx.DiGraph(), {}
    for path in sorted(root.rglob("*.py")):
        src = _top(path, root)
        if src == "__init__":
            continue
        graph.add_node(src)
        for module, line, _ in _imports(path, root):
            parts = module.split(".")
            if parts[0] != root.name or len(parts) < 2 or parts[1] == src:
                continue
            graph.add_edge(src, parts[1])
            where.setdefault((src, parts[1]), []).append(f"{path.relative_to(root)}:{line}")
    return graph, where


def cycles(graph: nx.DiGraph) -> list[set[str]]:
    return [c for c in nx.strongly_connected_components(graph) if len(c) > 1]


def upward(graph: nx.DiGraph, where: dict, core: set[str] = CORE) -> list[str]:
    return [f"{a} -> {b} ({where[(a, b)][0]})" for a, b in graph.edges if a in core and b not in core]


def private_cli_imports(root: Path = PACKAGE) -> list[str]:
    bad = []
    for path in sorted(root.rglob("*.py")):
        for module, line, names in _imports(path, root):
            private = [n for n in names if n.startswith("_")]
            if module == f"{root.name}.cli" and private:
                bad.append(f"{path.relative_to(root)}:{line} imports {', '.join(private)}")
    return bad


def long_benches(root: Path = PACKAGE, limit: int = MAX_BENCH_LINES) -> list[str]:
    return [f"{p.relative_to(root)}: {n} lines" for p in sorted(root.glob("*/bench.py"))
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > limit]


def _plant(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pkg"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_checks_catch_planted_violations(tmp_path):
    root = _plant(tmp_path, {
        "__init__.py": "", "graph/__init__.py": "", "area/__init__.py": "", "other/__init__.py": "",
        "graph/core.py": "def f():\n    from pkg.area import x\n",  # lazy upward import
        "area/mod.py": "from ..other import y\n",  # relative import, part of a cycle
        "other/mod.py": "import pkg.area.mod\nfrom pkg.cli import _emit\n",
        "area/bench.py": "x = 1\n" * (MAX_BENCH_LINES + 1),
    })
    graph, where = import_graph(root)
    assert cycles(graph) == [{"area", "other"}]
    assert upward(graph, where, core={"graph"}) == ["graph -> area (graph/core.py:2)"]
    assert private_cli_imports(root) == ["other/mod.py:2 imports _emit"]
    assert long_benches(root) == [f"area/bench.py: {MAX_BENCH_LINES + 1} lines"]


def test_no_cycle_between_top_level_packages():
    graph, where = import_graph()
    assert len(graph) > 15  # the walk found the package
    found = cycles(graph)
    detail = {tuple(sorted(c)): [f"{a}->{b}: {where[(a, b)][0]}" for a in c for b in c if (a, b) in where]
              for c in found}
    assert not found, f"import cycles between top-level packages: {detail}"


def test_core_never_imports_an_area():
    graph, where = import_graph()
    assert not upward(graph, where)


def test_area_clis_use_the_public_cli_helpers():
    assert not private_cli_imports()


def test_no_bench_module_over_the_limit():
    assert not long_benches()
