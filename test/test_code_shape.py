"""The trainer's code stays in shape: small signatures, modules of a readable size, no import circles."""
from __future__ import annotations

import ast
from pathlib import Path

TRAINING = Path(__file__).resolve().parent.parent / "training"
PACKAGE = TRAINING.parent / "human_parsing_ros"
MAX_PARAMETERS = 8
MAX_LINES = 450


def _modules() -> list[Path]:
    return sorted(TRAINING.rglob("*.py"))


def _parameter_count(function: ast.FunctionDef | ast.AsyncFunctionDef, in_class: bool) -> int:
    args = function.args
    named = [*args.posonlyargs, *args.args, *args.kwonlyargs]
    if in_class and named and named[0].arg in ("self", "cls"):
        named = named[1:]
    return len(named) + (args.vararg is not None) + (args.kwarg is not None)


def _functions(tree: ast.AST):
    """(function, whether it is a method) for every function and method, nested ones included."""
    stack = [(tree, False)]
    while stack:
        node, in_class = stack.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield child, in_class
                stack.append((child, False))
            else:
                stack.append((child, isinstance(child, ast.ClassDef)))


def test_no_function_in_training_takes_more_than_eight_parameters():
    too_many = []
    for path in _modules():
        for function, in_class in _functions(ast.parse(path.read_text())):
            count = _parameter_count(function, in_class)
            if count > MAX_PARAMETERS:
                too_many.append(f"{path.relative_to(TRAINING.parent)}:{function.lineno} {function.name} ({count})")
    assert not too_many, too_many


def test_no_module_in_training_or_the_package_is_longer_than_450_lines():
    long = [f"{p.relative_to(TRAINING.parent)} ({n})" for p in [*_modules(), *sorted(PACKAGE.rglob("*.py"))]
            if (n := len(p.read_text().splitlines())) > MAX_LINES]
    assert not long, long


def _module_name(path: Path) -> str:
    parts = path.relative_to(TRAINING.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The training modules ``path`` imports at its top level (imports inside functions are lazy: no circle)."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:  # importing training.a.b runs training.a (its __init__) first
            parts = name.split(".")
            found |= {prefix for i in range(2, len(parts) + 1) if (prefix := ".".join(parts[:i])) in modules}
    return found


def test_no_import_circle_within_training():
    paths = {_module_name(p): p for p in _modules()}
    graph = {name: _imports(path, set(paths)) - {name} for name, path in paths.items()}
    state: dict[str, int] = {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        for child in sorted(graph[name]):
            if state.get(child) == 1:
                raise AssertionError("import circle: " + " -> ".join([*trail[trail.index(child):], child]))
            if child not in state:
                visit(child, [*trail, child])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
