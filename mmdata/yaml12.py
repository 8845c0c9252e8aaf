"""YAML as people write numbers: `1e-5` and `1e-300` are floats (YAML 1.1, PyYAML's default, reads them as strings
unless written `1.0e-5`). Everything else is `yaml.safe_load`."""

from __future__ import annotations

import re
from typing import Any

import yaml


class _Loader(yaml.SafeLoader):
    pass


# Appended after the YAML 1.1 float pattern: only forms it misses (no dot, or a dot and an unsigned exponent).
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def safe_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: safe
