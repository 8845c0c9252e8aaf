"""mmdata: raw multimodal sources → one conversation format (`Record`) → lazily read datasets, views and mixtures.

This module is the public Python API; `mmdata.core` (errors, the `Record` schema, typed options) is the public
foundation every layer builds on. The layers themselves (`storage`, `format`, `build`, `read`, `mix`, `quality`,
`report`, `cli`) are the implementation: ARCHITECTURE.md says which owns what.
"""

from pathlib import Path
from typing import Any

from mmdata.build.driver import DatasetWriter
from mmdata.core.errors import DamagedData, DatasetChanged, InputError, NotFound, StorageError, UserError
from mmdata.core.schema import IMAGE, Media, Record, RecordError, Reject, Turn
from mmdata.read.dataset import Dataset, MediaUnreachable, ShardBytes
from mmdata.read.loader import MixtureLoader, RecordDataset, RecordList, RecordSource, collate_list
from mmdata.read.records import Records, Selection
from mmdata.read.view import Mixture, View, open_any
from mmdata.storage.location import is_url

__all__ = ["IMAGE", "DamagedData", "Dataset", "DatasetChanged", "DatasetWriter", "InputError", "Media",
           "MediaUnreachable", "Mixture", "MixtureLoader", "NotFound", "Record", "RecordDataset", "RecordError",
           "RecordList", "RecordSource", "Records", "Reject", "Selection", "ShardBytes", "StorageError", "Turn",
           "UserError", "View", "collate_list", "is_url", "open"]
__version__ = "0.1.0"


def open(path: str | Path, *, storage_options: dict[str, Any] | None = None,
         cache_dir: str | Path | None = None) -> Dataset | View:
    """Open a built dataset, a view or a mixture: a directory or a URL such as `s3://bucket/prefix`. Each has one
    shape (`Records`): `len`, `[i]`, slices and lists of positions (a lazy `Selection`), `get(i)`, `get_many`,
    iteration, `image(i or record, j)`, `media_bytes(i or record, j)`, `to_pandas()`. `storage_options`
    (credentials, `endpoint_url`; default: the AWS environment and config) stay in memory; `cache_dir` keeps blocks
    read from a URL on local disk."""
    return open_any(path, storage_options=storage_options, cache_dir=cache_dir)
