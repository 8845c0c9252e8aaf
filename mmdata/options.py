"""Builder options are config dataclasses (see `mmdata.config`); `opt` gives a field its `--help` text and flag."""

from mmdata.config import opt

__all__ = ["opt"]
