"""The package's layout (DESIGN.md section 2): layers import only the layers below them, no
module imports itself back through others, and no module is long without saying why."""

from __future__ import annotations

import ast
from pathlib import Path

LIB = Path(__file__).resolve().parents[1] / "lib"
PACKAGE = LIB / "visprune"

#: The layers, bottom first; a module may import its own layer and the ones before it.
LAYERS = (
    ("base", ("visprune", "visprune._validation", "visprune._paths")),
    ("instrument", ("visprune.instrument", "visprune.pruning")),
    ("metrics", ("visprune.metrics",)),
    ("datasets", ("visprune.datasets",)),
    ("toyworld", ("visprune.toyworld",)),
    ("toymodel", ("visprune.toymodel",)),
    ("engine", ("visprune.engine", "visprune.__main__")),
    ("book", ("visprune.book",)),
)
MAX_LINES = 400


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(LIB).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _layer(module: str) -> int:
    best, found = -1, None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            exact = prefix in ("visprune", "visprune.__main__")
            if (module == prefix) if exact else (module == prefix or module.startswith(prefix + ".")):
                if len(prefix) > best:
                    best, found = len(prefix), index
    assert found is not None, f"{module}: not in any layer of tests/test_layout.py; add it to LAYERS"
    return found


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The visprune modules ``path`` imports anywhere (function-level imports included)."""
    me = _module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    return _imports_in(path.read_text(), me, package, modules)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports_in(source: str, me: str, package: str, modules: dict[str, Path]) -> set[str]:
    found = set()
    tree = ast.parse(source)
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and _is_type_checking(block.test)
                   for stmt in block.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in typing_only:  # ``if TYPE_CHECKING:`` imports never run
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        found.update(n for n in names if n.startswith("visprune") and n != me)
    return found


def test_every_layer_imports_only_itself_and_the_layers_below():
    modules = _modules()
    wrong = []
    for name, path in modules.items():
        for target in _imports(path, modules):
            if _layer(target) > _layer(name):
                wrong.append(f"{name} ({LAYERS[_layer(name)][0]}) imports {target} ({LAYERS[_layer(target)][0]})")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle():
    modules = _modules()
    graph = {name: {t for t in _imports(path, modules) if t in modules} for name, path in modules.items()}
    # a package's __init__ importing its own submodules (re-exports) is not a cycle through them
    for name in graph:
        graph[name] = {t for t in graph[name] if not (modules[name].name == "__init__.py" and t.startswith(name + "."))}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_long_modules_say_why():
    """A module over 400 lines states the reason in its docstring (a line starting 'Length:')."""
    long = []
    for name, path in _modules().items():
        text = path.read_text()
        n_lines = text.count("\n")
        doc = ast.get_docstring(ast.parse(text)) or ""
        if n_lines > MAX_LINES and not any(line.startswith("Length:") for line in doc.splitlines()):
            long.append(f"{name}: {n_lines} lines")
    assert not long, "\n".join(long)


def test_the_checker_sees_function_level_and_upward_imports():
    """The checker itself, on a made-up instrument module that imports the engine inside a function."""
    modules = _modules()
    source = ("import torch\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from visprune.book import plots\n"
              "\ndef f():\n    from visprune.engine import config\n    from visprune import pruning\n")
    found = _imports_in(source, "visprune.instrument.probe", "visprune.instrument", modules)
    assert found == {"visprune.engine.config", "visprune.pruning"}
    assert _layer("visprune.engine.config") > _layer("visprune.instrument.probe")
    assert _layer("visprune.pruning.scope") == _layer("visprune.instrument")
