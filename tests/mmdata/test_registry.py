from __future__ import annotations

import pkgutil

import builders
from mmdata.registry import BUILDERS, discover, get


def test_every_builder_module_registers_itself() -> None:
    discover()
    modules = {m.name for m in pkgutil.iter_modules(builders.__path__) if not m.name.startswith("_")}
    registered_modules = {b.records.__module__.rsplit(".", 1)[-1] for b in BUILDERS.values()
                          if b.records.__module__.startswith("builders.")}
    helpers = {m for m in modules if m.startswith(tuple(f"{r}_" for r in registered_modules))}
    assert modules - helpers <= registered_modules, f"modules that register no builder: {modules - registered_modules}"


def test_unknown_builder_names_the_available_ones() -> None:
    try:
        get("nope")
    except KeyError as e:
        assert "unknown builder 'nope'; available:" in e.args[0] and "cambrian" in e.args[0]
    else:
        raise AssertionError("expected KeyError")
