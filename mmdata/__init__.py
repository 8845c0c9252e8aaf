"""mmdata: raw multimodal sources → one conversation format (`Record`) → lazily read datasets and mixtures."""

from pathlib import Path
from typing import Any

from mmdata.build import DatasetWriter
from mmdata.dataset import Dataset
from mmdata.mixture import Mixture
from mmdata.schema import IMAGE, Media, Record, RecordError, Reject, Turn
from mmdata.view import View, open_any

__all__ = ["IMAGE", "Dataset", "DatasetWriter", "Media", "Mixture", "Record", "RecordError", "Reject", "Turn", "View",
           "open"]
__version__ = "0.1.0"


def open(path: str | Path, *, storage_options: dict[str, Any] | None = None,
         cache_dir: str | Path | None = None) -> Dataset | View:
    """Open a built dataset, a view or a mixture (each has `len`, `[i]`, `get(i)`, iteration, `to_pandas()`): a
    directory or a URL such as `s3://bucket/prefix`. `storage_options` (credentials, `endpoint_url`; default: the
    AWS environment and config) stay in memory; `cache_dir` keeps blocks read from a URL on local disk."""
    return open_any(path, storage_options=storage_options, cache_dir=cache_dir)
