"""The package's import graph, read from the source (ast): no circle between modules, and the layers import one way.

Every import counts, also those inside functions (a deferred import is still a dependency; it only hides a circle
until the function runs). Importing ``a.b.c`` also runs the package ``a.b``'s ``__init__``; those implied edges are
left out, so that a package re-exporting its modules is no circle.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import pytest

PACKAGE = "monai_contrastive"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE_DIR = os.path.join(ROOT, PACKAGE)

# (importer prefix, imported prefix): imports that must not exist
FORBIDDEN = [
    (f"{PACKAGE}.data", f"{PACKAGE}.handlers"),
    (f"{PACKAGE}.data", f"{PACKAGE}.transforms"),
    (f"{PACKAGE}.losses", f"{PACKAGE}.engines"),
    (f"{PACKAGE}.io", f"{PACKAGE}."),  # the one home of file writing needs nothing of the package
]


def _modules() -> dict[str, str]:
    """Dotted module name -> file, for every module of the package (``pkg.__init__`` named ``pkg``)."""
    out = {}
    for root, dirs, files in os.walk(PACKAGE_DIR):
        dirs[:] = [d for d in dirs if not d.startswith((".", "_")) and d != "__pycache__"]
        for f in files:
            if not f.endswith(".py"):
                continue
            rel = os.path.relpath(os.path.join(root, f), ROOT)[: -len(".py")].split(os.sep)
            if rel[-1] == "__init__":
                rel = rel[:-1]
            out[".".join(rel)] = os.path.join(root, f)
    return out


def _resolve(name: str, modules: dict[str, str]) -> str | None:
    """The package module ``name`` refers to (``pkg.mod.func`` -> ``pkg.mod``), None outside the package."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (anywhere in its body)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        is_package = path.endswith("__init__.py")
        with open(path) as fh:
            tree = ast.parse(fh.read(), filename=path)
        targets: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = module.split(".") if is_package else module.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    prefix = ".".join(base + ([node.module] if node.module else []))
                else:
                    prefix = node.module or ""
                # ``from pkg import sub`` imports the module ``pkg.sub`` when there is one
                names = [f"{prefix}.{a.name}" for a in node.names]
            else:
                continue
            for name in names:
                if name == PACKAGE or name.startswith(PACKAGE + "."):
                    target = _resolve(name, modules)
                    if target and target != module:
                        targets.add(target)
        graph[module] = targets
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle through each strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
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
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return components


def _is_ancestor_package(a: str, b: str) -> bool:
    return b.startswith(a + ".")


def test_the_graph_is_read():
    graph = import_graph()
    # a few edges known to exist, so that a parser that finds nothing fails here
    assert f"{PACKAGE}.io" in graph[f"{PACKAGE}.handlers.checkpoint"]
    assert f"{PACKAGE}.data.formats" in graph[f"{PACKAGE}.transforms.array"]
    assert f"{PACKAGE}.bundles" in graph[f"{PACKAGE}.cli"]


def test_no_import_circle():
    graph = import_graph()
    # a package's __init__ re-exporting its own modules, and those modules importing each other through it, is
    # the package's business; a circle between different packages or top-level modules is not
    reduced = {
        a: {b for b in targets if not (_is_ancestor_package(a, b) or _is_ancestor_package(b, a))}
        for a, targets in graph.items()
    }
    assert _cycles(reduced) == []


@pytest.mark.parametrize("importer,imported", FORBIDDEN)
def test_layers_import_one_way(importer, imported):
    graph = import_graph()
    bad = sorted(
        f"{a} -> {b}"
        for a, targets in graph.items()
        if a == importer or a.startswith(importer + ".")
        for b in targets
        if b.startswith(imported) or b == imported.rstrip(".")
    )
    assert bad == []


def test_cycle_finder_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_data_does_not_import_the_demo_generators_or_handlers():
    """``import monai_contrastive.data`` leaves the generators (and what only they need) to their first use."""
    code = (
        "import sys, monai_contrastive.data as d\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('monai_contrastive.') and "
        "(m.startswith('monai_contrastive.data.synthetic') or m.split('.')[1] in ('handlers', 'transforms', "
        "'engines', 'networks', 'losses')))\n"
        "print(loaded)\n"
        "from monai_contrastive.data import generate_ct_demo\n"
        "print(generate_ct_demo.__module__)\n"
    )
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, check=True)
    assert out.stdout.splitlines() == ["[]", f"{PACKAGE}.data.synthetic_ct"]
