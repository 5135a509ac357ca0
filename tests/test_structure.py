"""The shape of the code that docs/architecture.md promises: no import circles, no
module over 700 lines, every thread named ``skyctl-<role>``, no reach into another
module's private names. Static checks of the source (ast), no import side effects."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "skyctl"
MAX_LINES = 700


def _modules() -> dict[str, Path]:
    """``skyctl.x.y`` → its file."""
    found: dict[str, Path] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The skyctl modules ``name`` imports, at the top or inside functions (a lazy import closes a circle too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                full = f"{target}.{alias.name}"
                if full in MODULES:
                    found.add(full)
                elif target in MODULES:
                    found.add(target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in MODULES)
    found.discard(name)
    return found


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                circles.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return circles


def test_no_module_imports_itself_through_others() -> None:
    graph = {name: _imports(name, path) for name, path in MODULES.items() if name != "skyctl"}
    graph = {name: {d for d in deps if d != "skyctl"} for name, deps in graph.items()}
    assert _circles(graph) == []


def test_the_remote_side_imports_nothing_of_the_client() -> None:
    for name, path in MODULES.items():
        if name.startswith("skyctl.remote"):
            outside = {d for d in _imports(name, path) if not d.startswith("skyctl.remote")}
            assert not outside, f"{name} imports {outside}: the bundle ships skyctl/remote/ only"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_is_over_700_lines(name: str) -> None:
    lines = len(MODULES[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{MODULES[name]}: {lines} lines; split it by job (docs/architecture.md)"


def _thread_name(call: ast.Call) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == "name"), None)


def test_every_thread_is_named_skyctl_role() -> None:
    unnamed = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called != "Thread":
                continue
            value = _thread_name(node)
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                text = value.value
            elif isinstance(value, ast.JoinedStr) and value.values and isinstance(value.values[0], ast.Constant):
                text = str(value.values[0].value)
            else:
                text = ""
            if not text.startswith("skyctl-"):
                unnamed.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert unnamed == [], "threads must be named skyctl-<role> (listed in docs/architecture.md)"


def test_no_module_reaches_into_another_modules_private_names() -> None:
    """``from .x import _name`` across modules: a private name is its module's business."""
    reach = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level:
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        reach.append(f"{name}: {node.module}.{alias.name}")
    assert reach == []


def test_a_ray_tasks_modules_are_built_in_import_order() -> None:
    """``raytask.MODULES`` is the order a Ray task builds its modules in: each may import only those before it."""
    from skyctl.remote import raytask

    for i, name in enumerate(raytask.MODULES):
        tree = ast.parse((Path(raytask.__file__).parent / f"{name}.py").read_text())
        siblings = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 1
                    and node.module is None for alias in node.names}
        siblings |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 1
                     and node.module}
        assert siblings <= set(raytask.MODULES[:i]), (name, siblings - set(raytask.MODULES[:i]))
