"""The house's rules, checked on every import of the project (module level, function-local and `TYPE_CHECKING` ones
alike: a circle only a function or the type checker follows is still two modules that cannot be understood apart):

- no import circles;
- mmdata's layers import one way: core ← storage ← format ← build | read ← mix ← quality ← report ← cli, where
  `build` and `read` never import each other, `core` imports nothing else of mmdata and nothing imports `cli` (which
  alone may use the public API, `mmdata` itself);
- the library never imports `trainer` or `builders`; its sample-data generators (`mmdata.testing`) neither;
- builders import only `mmdata.core` and `mmdata.build` (the builder API), and share helpers only through
  `builders._common`; the trainer imports only `mmdata` itself and `mmdata.core`;
- no module is named after a standard-library module.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("mmdata", "builders", "trainer")
# Bottom to top; a module may import its own layer and the layers below it. Layers in one tuple are siblings that
# never import each other.
LAYERS: list[tuple[str, ...]] = [("core",), ("storage",), ("format",), ("build", "read"), ("mix",), ("quality",),
                                 ("report",), ("cli",)]


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = _modules()


def _imports(module: str, path: Path) -> set[str]:
    """The project modules `module` imports anywhere in its file (the deepest module each import names)."""
    def owner(name: str) -> str | None:
        while name and name not in MODULES:
            name = name.rpartition(".")[0]
        return name or None

    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str | None] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {owner(a.name) for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
            found |= {owner(f"{base}.{a.name}") or owner(base) for a in node.names}
    return {m for m in found if m is not None and m != module}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "mmdata" or len(parts) < 2:
        return None
    return next((k for k, names in enumerate(LAYERS) if parts[1] in names), None)


def test_every_mmdata_subpackage_is_a_layer_or_known() -> None:
    subpackages = {name.split(".")[1] for name in MODULES if name.startswith("mmdata.") and "." in name}
    layered = {n for names in LAYERS for n in names}
    assert subpackages - layered == {"testing"}, "a new subpackage of mmdata must take its place in LAYERS"


def test_no_import_circles() -> None:
    done: set[str] = set()

    def visit(name: str, stack: list[str]) -> None:
        for dep in sorted(GRAPH[name]):
            # A package's __init__ re-exporting its own modules is not a circle with them.
            if dep in stack and not (dep.startswith(name + ".") or name.startswith(dep + ".")):
                raise AssertionError("import circle: " + " -> ".join([*stack[stack.index(dep):], dep]))
            if dep not in done and dep not in stack:
                visit(dep, [*stack, dep])
        done.add(name)

    for name in sorted(GRAPH):
        visit(name, [name])


def test_layers_import_one_way() -> None:
    wrong = []
    for name, deps in sorted(GRAPH.items()):
        mine = _layer(name)
        if mine is None:
            continue
        for dep in sorted(deps):
            theirs = _layer(dep)
            if dep.split(".")[0] in ("trainer", "builders"):
                wrong.append(f"{name} imports {dep}: the library never imports the trainer or the builders")
            elif (dep == "mmdata" and not name.startswith("mmdata.cli")) or dep.startswith("mmdata.testing"):
                wrong.append(f"{name} imports {dep}: layers import each other, not the public API or test worlds")
            elif theirs is not None and theirs > mine:
                wrong.append(f"{name} (layer {'|'.join(LAYERS[mine])}) imports {dep} (layer "
                             f"{'|'.join(LAYERS[theirs])}), above it")
            elif theirs == mine and dep.split(".")[1] != name.split(".")[1]:
                wrong.append(f"{name} imports {dep}: sibling layers never import each other")
    assert not wrong, "\n".join(wrong)


def test_core_imports_nothing_else_of_mmdata() -> None:
    wrong = [f"{name} imports {dep}" for name, deps in GRAPH.items() if name.startswith("mmdata.core")
             for dep in deps if dep.startswith("mmdata") and not dep.startswith("mmdata.core")]
    assert not wrong, "\n".join(wrong)


def test_nothing_imports_the_cli() -> None:
    wrong = [f"{name} imports {dep}" for name, deps in GRAPH.items() if not name.startswith("mmdata.cli")
             for dep in deps if dep.startswith("mmdata.cli")]
    assert not wrong, "\n".join(wrong)


def test_sample_data_generators_stand_alone() -> None:
    wrong = [f"{name} imports {dep}" for name, deps in GRAPH.items() if name.startswith("mmdata.testing")
             for dep in deps if not dep.startswith(("mmdata.testing", "mmdata.core"))]
    assert not wrong, "\n".join(wrong)


def test_builders_use_only_the_builder_api() -> None:
    wrong = []
    for name, deps in sorted(GRAPH.items()):
        if not name.startswith("builders"):
            continue
        own = ".".join(name.split(".")[:2])  # builders.video.frames may import builders.video.*
        for dep in sorted(deps):
            if dep.startswith("mmdata"):
                if not (dep.startswith("mmdata.core") or dep == "mmdata.build"):
                    wrong.append(f"{name} imports {dep}: a builder imports mmdata.core and mmdata.build only")
            elif dep.startswith("trainer"):
                wrong.append(f"{name} imports {dep}")
            elif dep != "builders._common" and not dep.startswith(own + ".") and dep != own:
                wrong.append(f"{name} imports {dep}: builders share helpers only through builders._common")
    assert not wrong, "\n".join(wrong)


def test_trainer_uses_the_public_api_only() -> None:
    wrong = [f"{name} imports {dep}" for name, deps in sorted(GRAPH.items()) if name.startswith("trainer")
             for dep in sorted(deps)
             if dep.startswith("builders") or (dep.startswith("mmdata.") and not dep.startswith("mmdata.core"))]
    assert not wrong, "trainer imports `mmdata` and `mmdata.core` only:\n" + "\n".join(wrong)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_is_named_after_the_standard_library(module: str) -> None:
    assert module.rpartition(".")[2] not in sys.stdlib_module_names


def test_the_checker_sees_local_and_type_checking_imports(tmp_path: Path) -> None:
    """The rules above bite only if function-local and TYPE_CHECKING imports are read: pin that they are."""
    f = tmp_path / "m.py"
    f.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from mmdata.cli import app\n"
                 "def f():\n    from mmdata.read.view import View\n    from . import names\n")
    MODULES["mmdata.format.m"] = f
    try:
        assert _imports("mmdata.format.m", f) == {"mmdata.cli", "mmdata.read.view", "mmdata.format.names"}
    finally:
        del MODULES["mmdata.format.m"]
