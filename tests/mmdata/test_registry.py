from __future__ import annotations

import pkgutil

import builders
from mmdata.build.registry import discover, get

SHIPPED = {"aurora", "cambrian", "cc12m", "instructpix2pix", "video", "visual_cot", "vstar"}


def test_every_builder_module_registers_itself_and_helpers_are_not_builders() -> None:
    shipped = {n: b for n, b in discover().items() if b.records.__module__.startswith("builders.")}  # not tests'
    assert set(shipped) == SHIPPED
    modules = {m.name for m in pkgutil.iter_modules(builders.__path__) if not m.name.startswith("_")}
    # A builder's helper modules live in its subpackage (builders/video/), so discovery never sees them.
    assert modules == {b.records.__module__.removeprefix("builders.") for b in shipped.values()} == SHIPPED


def test_unknown_builder_names_the_available_ones() -> None:
    try:
        get("nope")
    except KeyError as e:
        assert "unknown builder 'nope'; available:" in e.args[0] and "cambrian" in e.args[0]
    else:
        raise AssertionError("expected KeyError")
