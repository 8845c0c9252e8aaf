"""mmdata: raw multimodal sources → one conversation format (`Record`) → lazily read datasets and mixtures."""

from pathlib import Path

from mmdata.build import DatasetWriter
from mmdata.dataset import Dataset
from mmdata.mixture import Mixture
from mmdata.schema import IMAGE, Media, Record, RecordError, Reject, Turn
from mmdata.view import View, open_any

__all__ = ["IMAGE", "Dataset", "DatasetWriter", "Media", "Mixture", "Record", "RecordError", "Reject", "Turn", "View",
           "open"]
__version__ = "0.1.0"


def open(path: str | Path) -> Dataset | View:
    """Open a built dataset, a view or a mixture (each has `len`, `[i]`, `get(i)`, iteration, `to_pandas()`)."""
    return open_any(path)
