"""The package's layers point down only, with no import cycles and no guard around our own imports.

Every import of a ``lola`` module is read from the source (module level and inside
functions alike) and checked against the layering of the README's architecture picture:

    lola.cli -> lola.demo -> lola.generation -> {lola.replay, lola.bench, lola.config_reference}
      -> {lola.client (and later: serve, evaluate, report)}
      -> lola.stream
      -> lola.export -> lola.kernels -> {lola.data, lola.paths, lola.comply} -> lola.errors

``lola.generation`` sits above replay and bench: it reads snapshots and publishes variants
through ``lola.client``, is judged by the replay's TF-IDF ridge, and adds ``lola bench
generate`` to the bench group.

A module may import its own area and any area of a lower layer, nothing else; nothing
imports ``lola.cli``.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

LAYERS: tuple[tuple[str, ...], ...] = (
    ("lola.cli",),
    ("lola.demo",),
    ("lola.generation",),
    ("lola.replay", "lola.bench", "lola.config_reference"),
    ("lola.serve",),  # embeds lola.client's EdgeAllocator
    ("lola.client", "lola.evaluate", "lola.report"),
    ("lola.stream",),
    ("lola.export",),
    ("lola.kernels",),
    ("lola.data", "lola.paths", "lola.comply"),
    ("lola.errors", "lola"),
)
RANK = {area: len(LAYERS) - i for i, areas in enumerate(LAYERS) for area in areas}


def area_of(module: str) -> str:
    """The longest layered name that is ``module`` or a package above it."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        name = ".".join(parts[:n])
        if name in RANK:
            return name
    raise AssertionError(f"{module} is in no layer; add its area to LAYERS")


def package_dirs() -> dict[str, Path]:
    """Import name -> folder, from pyproject's setuptools package-dir mapping."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return {name: ROOT / folder for name, folder in config["package-dir"].items()}


def modules() -> dict[str, Path]:
    """Every module of the installed package: import name -> source file."""
    dirs = package_dirs()
    out: dict[str, Path] = {}
    for package, folder in dirs.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            if any(str(path).startswith(str(other)) and other != folder and len(other.parts) > len(folder.parts)
                   for other in dirs.values()):
                continue  # a sub-folder mapped to its own package name
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([package, *parts])] = path
    return out


def imports_of(source: str, known: set[str]) -> list[tuple[str, int]]:
    """(imported lola module, line) for every import in ``source``, at any depth."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.split(".")[0] == "lola"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.split(".")[0] == "lola":
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                found.append((sub if sub in known else node.module, node.lineno))
    return found


def violations(graph: dict[str, list[tuple[str, int]]]) -> list[str]:
    bad = []
    for module, targets in graph.items():
        src = area_of(module)
        for target, line in targets:
            dst = area_of(target)
            if dst == "lola.cli" and src != "lola.cli":
                bad.append(f"{module}:{line} imports {target}: nothing imports lola.cli")
            elif dst != src and RANK[dst] >= RANK[src]:
                bad.append(f"{module}:{line} imports {target} ({dst} is not below {src})")
    return bad


def cycles(graph: dict[str, list[tuple[str, int]]]) -> list[list[str]]:
    """Import cycles between modules (a package's ``__init__`` importing its own modules is not one)."""
    edges = {m: {t for t, _ in ts if t != m and not m.startswith(t + ".")} for m, ts in graph.items()}
    found, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                found.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])
    return found


def guarded_imports(source: str) -> list[int]:
    """Lines of ``try: import lola...`` blocks that catch ImportError (a probe for our own code)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Try):
            continue
        handled = " ".join(ast.unparse(h.type) for h in node.handlers if h.type is not None)
        if "ImportError" not in handled and "ModuleNotFoundError" not in handled:
            continue
        for stmt in node.body:
            for inner in ast.walk(stmt):
                if isinstance(inner, (ast.Import, ast.ImportFrom)) and "lola" in ast.unparse(inner):
                    lines.append(inner.lineno)
    return lines


@pytest.fixture(scope="module")
def graph() -> dict[str, list[tuple[str, int]]]:
    mods = modules()
    return {m: imports_of(p.read_text(encoding="utf-8"), set(mods)) for m, p in mods.items()}


def test_every_module_is_in_a_layer(graph):
    assert len(graph) > 50
    for module in graph:
        area_of(module)


def test_layers_point_down_only(graph):
    assert violations(graph) == []


def test_no_import_cycles(graph):
    assert cycles(graph) == []


def test_no_import_of_our_own_code_is_guarded():
    found = {str(p.relative_to(ROOT)): lines for p in modules().values()
             if (lines := guarded_imports(p.read_text(encoding="utf-8")))}
    assert found == {}


def test_the_checks_catch_what_they_claim():
    """Each check flags a planted fault (so a passing run means something)."""
    graph = {
        "lola.kernels.core": [("lola.stream.worker", 3)],      # upward
        "lola.replay.run": [("lola.bench.cli", 5)],            # sideways, same layer
        "lola.demo.run": [("lola.cli", 7)],                    # the CLI
        "lola.stream.a": [("lola.stream.b", 1)], "lola.stream.b": [("lola.stream.a", 2)],  # a cycle
    }
    assert len(violations(graph)) == 3
    assert cycles(graph) == [["lola.stream.a", "lola.stream.b", "lola.stream.a"]]
    probe = "def f():\n    try:\n        from lola.stream import broker\n    except ImportError:\n        pass\n"
    assert guarded_imports(probe) == [3]
    assert imports_of("from lola import demo, __version__\n", {"lola.demo"}) == [("lola.demo", 1), ("lola", 1)]
