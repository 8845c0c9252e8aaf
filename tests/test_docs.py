"""The docs show what works: every `mmdata` / `mmtrain` command line in README.md, DATA.md and trainer/README.md names
a real command and flags (or recipe keys) it accepts, and every Python import and `mmdata.X` they show resolves."""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer

import mmdata
from mmdata.core.options import overview
from mmdata.mix.recipe import MixRecipe

ROOT = Path(__file__).resolve().parent.parent
DOCS = ["README.md", "DATA.md", "trainer/README.md", "ARCHITECTURE.md"]
PLUGIN_EXAMPLES = {"lines"}  # DATA.md's "Writing a builder" example, not a shipped builder
_FENCE = re.compile(r"^```[a-z]*\n(.*?)^```", re.S | re.M)
_INLINE = re.compile(r"`((?:mmdata|mmtrain) [^`]+)`")


def _blocks(text: str) -> list[str]:
    return [m.group(1) for m in _FENCE.finditer(text)]


def _command_lines(doc: str) -> list[tuple[str, str]]:
    """(doc, command line) for each `mmdata …` / `mmtrain …` line of a code block or inline code span."""
    text = (ROOT / doc).read_text()
    found = []
    for block in _blocks(text):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip().removeprefix("$ ")
            if re.match(r"(mmdata|mmtrain) ", line):
                found.append((doc, line))
            elif "-m trainer.cli " in line:  # under a launcher
                found.append((doc, "mmtrain " + line.split("-m trainer.cli ", 1)[1]))
    prose = _FENCE.sub("", text)
    found += [(doc, m.group(1)) for m in _INLINE.finditer(prose)]
    return found


CASES = [case for doc in DOCS for case in _command_lines(doc)]


def _words(line: str) -> list[str]:
    line = re.split(r"\s+#\s", line)[0]  # a trailing comment
    line = re.split(r"\s*(?:&&|\||;|>)\s*", line)[0]  # the first command of a pipeline
    try:
        return shlex.split(line)
    except ValueError:
        return line.split()


def _app(program: str) -> Any:
    if program == "mmdata":
        from mmdata.cli import app
    else:
        from trainer.cli import app
    return typer.main.get_command(app)  # type: ignore[return-value]


def _recipe_keys(program: str, command: str) -> set[str] | None:
    """The `--section.key` overrides a recipe command takes, or None for a command without recipe overrides."""
    if program == "mmdata" and command == "mix":
        return {k for k, _, _ in overview(MixRecipe)}
    if program == "mmtrain" and command in ("stage1", "stage2", "cache-features", "visualizer"):
        from trainer.recipe import TrainRecipe
        from trainer.visualizer.config import VisualizerRecipe

        return {k for k, _, _ in overview(VisualizerRecipe if command == "visualizer" else TrainRecipe)}
    return None


@pytest.mark.parametrize(("doc", "line"), CASES, ids=[f"{d}:{i}" for i, (d, _) in enumerate(CASES)])
def test_documented_command_lines_exist(doc: str, line: str) -> None:
    words = _words(line)
    program, args = words[0], words[1:]
    group = _app(program)
    if not args or args[0].startswith("-"):
        return  # `mmdata --help`, `mmtrain --version`
    name = args[0]
    if "<" in name or "…" in name or name.isupper():  # a placeholder (`mmdata build <name>`)
        return
    assert name in group.commands, f"{doc}: `{line}`: {program} has no command {name!r}"
    command, rest = group.commands[name], args[1:]
    if hasattr(command, "commands"):  # a group (`mmdata build <builder>`)
        if not rest or rest[0].startswith("-") or "<" in rest[0] or rest[0].isupper() or rest[0] in PLUGIN_EXAMPLES:
            return
        assert rest[0] in command.commands, f"{doc}: `{line}`: `{program} {name}` has no command {rest[0]!r}"
        command, rest = command.commands[rest[0]], rest[1:]
    accepted = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)} | {"--help"}
    keys = _recipe_keys(program, name)
    for word in rest:
        if not word.startswith("--") or word in ("--", "--…"):
            continue
        flag = word.split("=", 1)[0]
        if "<" in flag or "…" in flag or flag.isupper():
            continue
        key = flag[2:].replace("-", "_")
        if keys is not None and (key in keys or any(k.startswith(key + ".") or k == key for k in keys)):
            continue
        assert flag in accepted, f"{doc}: `{line}`: `{program} {name}` does not take {flag}"


_IMPORT = re.compile(r"^\s*(?:from\s+([\w.]+)\s+import\s+([\w, ()]+)|import\s+([\w.]+))", re.M)


def test_documented_python_imports_and_names_resolve() -> None:
    problems = []
    for doc in DOCS:
        text = (ROOT / doc).read_text()
        for block in _blocks(text):
            if not re.search(r"^\s*(import|from) \w", block, re.M):
                continue
            for m in _IMPORT.finditer(block):
                module = m.group(1) or m.group(3)
                if module.split(".")[0] not in ("mmdata", "trainer", "builders"):
                    continue
                try:
                    loaded = importlib.import_module(module)
                except ImportError as e:
                    problems.append(f"{doc}: import {module}: {e}")
                    continue
                for name in re.findall(r"\w+", m.group(2) or ""):
                    if name != "as" and not hasattr(loaded, name):
                        problems.append(f"{doc}: {module} has no {name}")
        for name in set(re.findall(r"\bmmdata\.([A-Za-z_]\w*)\(", text)):
            if not hasattr(mmdata, name):
                problems.append(f"{doc}: mmdata.{name}(…) is not in the public API")
    assert not problems, "\n".join(problems)


def test_the_checker_sees_a_wrong_flag() -> None:
    """The check above bites: a flag no command takes is reported."""
    with pytest.raises(AssertionError, match="does not take --no-such-flag"):
        test_documented_command_lines_exist("x", "mmdata build cambrian --no-such-flag 1")
    with pytest.raises(AssertionError, match="has no command 'nope'"):
        test_documented_command_lines_exist("x", "mmdata nope --out x")
