"""mmdata: raw multimodal sources → one conversation format (`Record`) → lazily read datasets and mixtures."""

from pathlib import Path

from mmdata.build import DatasetWriter
from mmdata.dataset import Dataset
from mmdata.mixture import Mixture
from mmdata.schema import IMAGE, Media, Record, RecordError, Reject, Turn

__all__ = ["IMAGE", "Dataset", "DatasetWriter", "Media", "Mixture", "Record", "RecordError", "Reject", "Turn", "open"]
__version__ = "0.1.0"


def open(path: str | Path) -> Dataset | Mixture:
    """Open a built dataset or a mixture directory (either has `len`, `[i]`, `get(i)`, iteration, `to_pandas()`)."""
    root = Path(path)
    return Mixture(root) if Mixture.is_mixture(root) else Dataset(root)
