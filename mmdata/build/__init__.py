"""The build layer: raw sources → a built dataset. Builders (ours in `builders/`, or a plugin's) import what they
need from here and from `mmdata.core`, nothing else:

- `Builder`, `Output`: what a builder is (`registry`), found through the `mmdata.builders` entry points;
- streamed JSON/JSONL inputs split into spans (`sources`: `plan`, `Span`, `iter_span`, `iter_batches`, ...);
- media under a media root, with its containment rules (`read_media`, `inside`, `resolve_case`);
- tar members read from their headers (`tar_spans`, `tar_members`: the project's one tar reader);
- `ray_address()`: the cluster a `--engine ray` build runs on, for a builder that starts distributed work itself.

`build` / `BuildSettings` (the driver) and `DatasetWriter` run builders or write records into a dataset.
"""

from mmdata.build.driver import BuildError, BuildSettings, DatasetWriter, build
from mmdata.build.executors.ray import ray_address
from mmdata.build.registry import Builder, Output
from mmdata.build.sources import Batch, Item, Span, iter_batches, iter_file, iter_span, loads_strict, plan
from mmdata.format.ustar import tar_members, tar_spans
from mmdata.storage.base import Storage
from mmdata.storage.files import temp_path
from mmdata.storage.mediafiles import inside, read_media, resolve_case

__all__ = ["Batch", "BuildError", "BuildSettings", "Builder", "DatasetWriter", "Item", "Output", "Span", "Storage",
           "build", "inside", "iter_batches", "iter_file", "iter_span", "loads_strict", "plan", "ray_address",
           "read_media", "resolve_case", "tar_members", "tar_spans", "temp_path"]
