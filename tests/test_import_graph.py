"""The import graph of petbind: no cycles, and every arrow points down a layer (issue 15).

Read from the source with ast. Every import of a petbind module counts - at
the top of a file, inside a function (the lazy imports of the CLI) or under
``if TYPE_CHECKING`` - because each is a dependency a reader has to follow.
The layers are docs/architecture.md's ("Layers and the import graph").
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import petbind

SRC = Path(petbind.__file__).resolve().parent

#: Cycles left on purpose (none: the report's build <-> preprocessing one is gone).
ALLOWED: list[set[str]] = []
#: No cycle may pass through any module of these (all of petbind).
GUARDED = ("petbind",)

#: The layers, lowest first: a module may import its own layer and the ones below,
#: never one above. Names are the top-level modules and packages of src/petbind
#: ("__init__" is petbind/__init__.py, which holds __version__).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("__init__", "errors", "units", "isotopes", "timing", "lazy", "gz", "figtext",
     "failures"),                                                  # 0 values and rules
    ("numerics", "tac", "image", "io"),                            # 1 maths, curves, files
    ("blood", "blood_tail", "models"),                             # 2 input functions, models
    ("simulate", "preprocess", "pvc", "parametric", "stats", "compute"),  # 3 engines
    ("study",),                                                    # 4 the study pipeline
    ("report",),                                                   # 5 reads a finished study
    ("commands", "cli", "__main__"),                               # 6 the command line
)
#: Upward arrows still in the code, as (importing module, imported top-level name), each
#: with the reason it is left; a fixed one must leave this list (the test says so).
KNOWN_UPWARD: set[tuple[str, str]] = set()


def _guarded(module: str) -> bool:
    return any(module == g or module.startswith(g + ".") for g in GUARDED)


def _unit(module: str) -> str:
    """The top-level module or package of ``module`` (``petbind.study.config`` -> ``study``)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def layer_of(layers: tuple[tuple[str, ...], ...]) -> dict[str, int]:
    """``{top-level name: layer index}`` of a layer table."""
    return {name: i for i, names in enumerate(layers) for name in names}


def upward(graph: dict[str, set[str]], layers: tuple[tuple[str, ...], ...]
           ) -> set[tuple[str, str]]:
    """Arrows to a higher layer: ``(importing module, imported top-level name)``."""
    level = layer_of(layers)
    return {(m, _unit(d)) for m, deps in graph.items() for d in deps
            if level[_unit(d)] > level[_unit(m)]}


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    """``module -> petbind modules it imports`` for every module under src/petbind."""
    modules = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        is_pkg = path.name == "__init__.py"
        package = name if is_pkg else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")
                    up = up[:len(up) - (node.level - 1)]
                    base = ".".join([*up, base] if base else up)
                # "from petbind.models import registry" imports the submodule
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                           for a in node.names]
            for t in targets:
                while t and t not in modules:
                    t = t.rpartition(".")[0]
                if t and t != name and t.startswith("petbind"):
                    graph[name].add(t)
    return graph


@functools.cache
def _graph() -> dict[str, set[str]]:
    """:func:`import_graph`, read once for the tests of this file (they do not change it)."""
    return import_graph()


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_graph_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [{"a", "b", "c"}]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_lazy_and_type_only_imports():
    graph = _graph()
    assert "petbind.models.registry" in graph["petbind.study.config"]  # function-local
    assert "petbind.simulate.records" in graph["petbind.simulate.writer"]  # TYPE_CHECKING


def test_no_import_cycle_anywhere():
    found = cycles(_graph())
    assert [c for c in found if c not in ALLOWED and any(map(_guarded, c))] == []


def _package_graph(graph: dict[str, set[str]], leave_out: set[tuple[str, str]] = frozenset()
                   ) -> dict[str, set[str]]:
    packages: dict[str, set[str]] = {}
    for mod, deps in graph.items():
        top = ".".join(mod.split(".")[:2])
        packages.setdefault(top, set()).update(
            d2 for d in deps if (mod, _unit(d)) not in leave_out
            for d2 in [".".join(d.split(".")[:2])] if d2 != top)
    return packages


def test_packages_have_no_import_cycle_and_numerics_sits_below_models_and_blood():
    # the models <-> blood.py cycle (review, problem 3) was a package-level one; the
    # stats <-> study one goes with the known upward arrow of stats/power.py
    graph = _graph()
    packages = _package_graph(graph, KNOWN_UPWARD)
    assert [c for c in cycles(packages) if any(map(_guarded, c))] == []
    below = packages["petbind.numerics"]
    assert "petbind.models" not in below and "petbind.blood" not in below
    assert "petbind.numerics" in packages["petbind.blood"]
    assert "petbind.models" not in packages["petbind.blood"]


def test_every_module_of_petbind_has_a_layer():
    level = layer_of(LAYERS)
    assert sum(map(len, LAYERS)) == len(level), "a name stands in two layers"
    missing = sorted({_unit(m) for m in _graph()} - set(level))
    assert missing == [], f"give these a layer in LAYERS (and docs/architecture.md): {missing}"


def test_every_import_points_to_the_same_or_a_lower_layer():
    found = upward(_graph(), LAYERS)
    assert sorted(found - KNOWN_UPWARD) == [], "imports of a higher layer (see LAYERS)"
    assert sorted(KNOWN_UPWARD - found) == [], "fixed: remove these from KNOWN_UPWARD"


def test_the_layer_check_finds_a_planted_upward_import():
    layers = (("a",), ("b",), ("c",))
    graph = {"petbind.a.x": {"petbind.b"}, "petbind.b": {"petbind.a.y", "petbind.c"},
             "petbind.a.y": set(), "petbind.c": {"petbind.c.z"}, "petbind.c.z": set()}
    assert upward(graph, layers) == {("petbind.a.x", "b"), ("petbind.b", "c")}
    assert upward({"petbind.c": {"petbind.a.x"}, "petbind.a.x": set()}, layers) == set()

