"""No import circles between the project's modules: module-level imports, `if TYPE_CHECKING:` ones included (a
circle only the type checker follows is still two modules that cannot be understood apart)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("mmdata", "builders", "trainer")


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    def owner(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    found: set[str | None] = set()
    body = ast.parse(path.read_text()).body
    nodes = body + [n for node in body if isinstance(node, ast.If) for n in node.body]
    for node in nodes:  # module level only: imports inside functions are lazy
        if isinstance(node, ast.Import):
            found |= {owner(a.name) for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found |= {owner(f"{node.module}.{a.name}") or owner(node.module) for a in node.names}
    return {m for m in found if m is not None}


def test_no_import_circles() -> None:
    modules = _modules()
    graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
    done: set[str] = set()

    def visit(name: str, stack: list[str]) -> None:
        for dep in sorted(graph[name]):
            assert dep not in stack, "import circle: " + " -> ".join([*stack[stack.index(dep):], dep])
            if dep not in done:
                visit(dep, [*stack, dep])
        done.add(name)

    for name in sorted(graph):
        visit(name, [name])
