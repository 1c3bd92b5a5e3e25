"""The house has one direction: imports point down the layers, never in a circle.

Read from the source with `ast` (nothing is imported): every `import` and `from ... import`
in src/wanlora, relative ones resolved, including imports inside functions and under
`if TYPE_CHECKING:` (a dependency of the design even when Python skips it at run time).
`from pkg import name` counts as importing `pkg.name` where that is a module. Importing
`a.b.c` also runs `a.b`'s `__init__`, so it counts as importing every package above the
target that is not already above the importer.

Checked: (a) no cycle in the module graph; (b) train and sampling, side by side, never
import each other; (c) a module imports only its own layer or lower ones (LAYERS, ground
up, as docs/architecture.md draws them); (d) no source file is over MAX_LINES lines.
Each failure lists every violation with the file and line that makes it.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "wanlora"
MAX_LINES = 400

# Ground up; a module may import its own layer and the layers below it.
LAYERS: list[set[str]] = [
    {"errors", "fsutil", "faults", "device_memory"},
    {"recipes"},
    {"outputs"},
    {"models"},
    {"lora"},
    {"dataset"},
    {"cache"},
    {"train", "sampling"},  # peers: neither imports the other (check b)
    {"run"},
    {"report", "captioning", "export", "tutorial", "doctor", "demo", "demo_i2v", "demo_ti2v", "project_init"},
    {"cli"},
]
PEERS_APART = ("train", "sampling")


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module (inside wanlora)
    file: Path
    line: int
    implied: bool = False  # a package above the named target (its __init__ runs too)

    def where(self) -> str:
        return f"{self.file.relative_to(SRC.parent)}:{self.line}"


def module_files() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its __init__.py)."""
    modules = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_package(name: str, modules: dict[str, Path]) -> bool:
    return modules[name].name == "__init__.py"


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _owning_module(dotted: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of `dotted` that is one of our modules (None: not ours)."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def imports_of(name: str, modules: dict[str, Path]) -> list[Import]:
    """Every import of our own modules that module `name` makes, with its line."""
    path = modules[name]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if _is_package(name, modules) else name.rpartition(".")[0]
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                if node.level > 1:
                    base_parts = base_parts[: -(node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.append((submodule if submodule in modules else base, node.lineno))
    result: dict[tuple[str, int], Import] = {}
    own_ancestors = set(_ancestors(name)) | {name}  # a package does not import itself
    for dotted, line in found:
        target = _owning_module(dotted, modules)
        if target is None or target == name:
            continue
        result[(target, line)] = Import(name, target, path, line)
        for above in _ancestors(target):
            if above not in own_ancestors and above in modules:
                result.setdefault((above, line), Import(name, above, path, line, implied=True))
    return list(result.values())


def import_graph() -> dict[str, list[Import]]:
    modules = module_files()
    return {name: imports_of(name, modules) for name in modules}


def named_imports() -> list[Import]:
    """The imports as written (without the packages they imply), for the layer checks."""
    return [i for imports in import_graph().values() for i in imports if not i.implied]


def room(module: str) -> str:
    """The top-level room of a module: wanlora.train.loop -> train."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer_of(module: str) -> int | None:
    for index, rooms in enumerate(LAYERS):
        if room(module) in rooms:
            return index
    return None


def find_cycles(graph: dict[str, list[Import]]) -> list[list[Import]]:
    """One cycle (as the imports that close it) per strongly connected group (Tarjan)."""
    edges = {name: sorted({i.target for i in imports}) for name, imports in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:  # iterative would be longer; the graph is ~100 nodes
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, []):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return [_cycle_in(group, graph) for group in groups]


def _cycle_in(group: list[str], graph: dict[str, list[Import]]) -> list[Import]:
    """A shortest path from the group's first module back to itself, inside the group."""
    members = set(group)
    start = group[0]
    came_by: dict[str, Import] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for imp in graph[node]:
                if imp.target not in members or imp.target in came_by:
                    continue
                came_by[imp.target] = imp
                if imp.target == start:
                    path = [imp]
                    while path[0].source != start:
                        path.insert(0, came_by[path[0].source])
                    return path
                following.append(imp.target)
        frontier = following
    raise AssertionError(f"no cycle found in the strongly connected group {group}")


def _describe(imp: Import) -> str:
    return f"{imp.source} imports {imp.target} ({imp.where()})"


def test_every_module_has_a_layer():
    unplaced = sorted({m for m in module_files() if m != PACKAGE and layer_of(m) is None})
    if unplaced:
        pytest.fail(
            "modules in no layer (add their room to LAYERS here and to docs/architecture.md): "
            + ", ".join(unplaced),
            pytrace=False,
        )


def test_the_architecture_page_names_every_room():
    page = (SRC.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    missing = [room for rooms in LAYERS for room in sorted(rooms) if f"`{room}`" not in page]
    assert not missing, f"docs/architecture.md's layer table lacks {missing}"


def test_no_import_cycle():
    cycles = find_cycles(import_graph())
    lines = [
        " -> ".join([c[0].source] + [i.target for i in c])
        + "\n      "
        + "\n      ".join(_describe(i) for i in c)
        for c in cycles
    ]  # one cycle per group of modules that reach each other; break it, then rerun
    if cycles:
        pytest.fail(f"{len(cycles)} import cycle(s):\n  " + "\n  ".join(lines), pytrace=False)


def test_train_and_sampling_do_not_import_each_other():
    a, b = PEERS_APART
    crossing = [i for i in named_imports() if {room(i.source), room(i.target)} == {a, b}]
    if crossing:
        pytest.fail(
            f"{a} and {b} sit side by side and must not import each other "
            f"({len(crossing)} import(s)):\n  " + "\n  ".join(_describe(i) for i in crossing),
            pytrace=False,
        )


def test_imports_point_down_the_layers():
    upward = []
    for imp in named_imports():
        source, target = layer_of(imp.source), layer_of(imp.target)
        if source is not None and target is not None and target > source:
            upward.append(
                f"{_describe(imp)}: layer {source} ({room(imp.source)}) "
                f"may not import layer {target} ({room(imp.target)})"
            )
    if upward:
        pytest.fail(
            f"{len(upward)} import(s) up the layers:\n  " + "\n  ".join(upward), pytrace=False
        )


def test_no_source_file_over_the_limit():
    long_files = []
    for path in module_files().values():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_LINES:
            long_files.append(f"{path.relative_to(SRC.parent)}: {lines} lines")
    if long_files:
        pytest.fail(
            f"{len(long_files)} file(s) over {MAX_LINES} lines (split them by job):\n  "
            + "\n  ".join(sorted(long_files)),
            pytrace=False,
        )


def test_the_graph_reader_sees_relative_local_and_submodule_imports():
    """The reader itself: a relative import, one inside a function, one of a submodule by
    `from pkg import module`, and the package above a target all appear as edges."""
    graph = import_graph()
    edges = {(i.source, i.target) for imports in graph.values() for i in imports}
    # relative, at the top of the file
    assert ("wanlora.dataset.sources", "wanlora.dataset.musubi_toml") in edges
    # three dots up, and the package __init__ above the target
    assert ("wanlora.dataset.lint.check", "wanlora.recipes") in edges
    # a submodule named in `from . import name` (cli/__init__ imports its command modules)
    assert ("wanlora.cli", "wanlora.cli.sample_cmds") in edges
    # inside a function (the CLI imports the report when the command runs)
    assert ("wanlora.cli.sample_cmds", "wanlora.report") in edges
    # implied: importing wanlora.train.timesteps runs wanlora/train/__init__.py too
    assert ("wanlora.report.figures", "wanlora.train") in edges
    # the test's own layers agree with the simplest case
    assert layer_of("wanlora.errors") == 0 and layer_of("wanlora.cli.app") == len(LAYERS) - 1


def test_cycle_finder_names_each_cycle_by_its_imports():
    def imp(source: str, target: str, line: int) -> Import:
        return Import(source, target, SRC / "x.py", line)

    graph = {
        "a": [imp("a", "b", 1)],
        "b": [imp("b", "c", 2), imp("b", "d", 3)],
        "c": [imp("c", "a", 4)],
        "d": [],
        "e": [imp("e", "f", 5)],
        "f": [imp("f", "e", 6)],
    }
    cycles = find_cycles(graph)
    assert [[(i.source, i.target, i.line) for i in c] for c in cycles] == [
        [("a", "b", 1), ("b", "c", 2), ("c", "a", 4)],
        [("e", "f", 5), ("f", "e", 6)],
    ]
    assert find_cycles({"a": [imp("a", "b", 1)], "b": []}) == []
