"""Builders are plugins: the shipped ones and a package of one's own are found the same way, through the
`mmdata.builders` entry-point group, and a module on disk that is no builder's entry point is noticed."""

from __future__ import annotations

import json
import os
import pkgutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import builders
from mmdata.build.registry import BUILDERS, GROUP, Builder, _entry_points, discover, get

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = {"aurora", "cambrian", "cc12m", "instructpix2pix", "video", "visual_cot", "vstar"}


def test_every_builder_module_is_an_entry_point_and_helpers_are_not() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"][GROUP]
    assert set(declared) == SHIPPED
    assert declared == {name: f"builders.{name}:BUILDER" for name in SHIPPED}
    modules = {m.name for m in pkgutil.iter_modules(builders.__path__) if not m.name.startswith("_")}
    assert modules == SHIPPED  # a builder's helper modules live in its subpackage (builders/video/)
    found = discover()
    for name in SHIPPED:
        assert found[name].name == name and found[name].records.__module__.startswith(f"builders.{name}")


def test_get_loads_only_the_builder_asked_for() -> None:
    code = ("import sys; from mmdata.build.registry import get; get('cambrian'); "
            "print(sorted(m for m in sys.modules if m.startswith('builders.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert json.loads(out.stdout.replace("'", '"')) == ["builders._common", "builders.cambrian"]


def test_unknown_builder_names_the_available_ones() -> None:
    with pytest.raises(KeyError, match=r"unknown builder 'nope'; available: (\S+, )*aurora, cambrian, cc12m, "):
        get("nope")


def test_an_entry_point_that_is_not_a_builder_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    class FakeEntryPoint:
        value = "somewhere:THING"

        def load(self) -> object:
            return object()

    monkeypatch.setitem(_entry_points(), "broken", FakeEntryPoint())
    with pytest.raises(TypeError, match=r"entry point broken = 'somewhere:THING' \(group mmdata.builders\) must "
                                        r"name a Builder whose name is 'broken'"):
        get("broken")
    assert "broken" not in BUILDERS


PLUGIN = '''
from dataclasses import dataclass
from pathlib import Path

from mmdata.build import Builder
from mmdata.core.options import opt
from mmdata.core.schema import Record, Reject, Turn


@dataclass
class LinesOptions:
    input: Path = opt(help="A text file: one question<TAB>answer per line")


def units(options, shard_size, limit):
    return [str(options.input)]


def records(options, unit):
    for n, line in enumerate(Path(unit).read_text().splitlines(), 1):
        question, tab, answer = line.partition("\\t")
        if not tab:
            yield Reject(f"{unit}:{n}", "no tab")
            continue
        yield Record(f"q{n}", "lines", "text", [Turn("human", question), Turn("gpt", answer)])


BUILDER = Builder(name="lines", help="question<TAB>answer lines", options=LinesOptions, units=units, records=records)
'''


def test_a_package_of_ones_own_adds_a_builder_through_its_entry_point(tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "my_lines").mkdir(parents=True)
    (site / "my_lines" / "__init__.py").write_text(PLUGIN)
    info = site / "my_lines-1.0.dist-info"  # what pip writes for a package declaring the entry point
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-lines\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{GROUP}]\nlines = my_lines:BUILDER\n")
    (tmp_path / "qa.txt").write_text("what?\tthis\nno tab here\nwho?\tme\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    run = subprocess.run([sys.executable, "-m", "mmdata.cli", "build", "lines", "--input", str(tmp_path / "qa.txt"),
                          "--out", str(tmp_path / "out"), "--quiet"], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    assert "2 written, 1 rejected of 3 read" in run.stdout
    manifest = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert manifest["builder"] == "lines" and manifest["counts"] == {"read": 3, "written": 2, "rejected": 1}
    assert isinstance(get("cambrian"), Builder)  # this process never saw the plugin
    assert "lines" not in discover()
