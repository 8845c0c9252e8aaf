"""mmdata: raw multimodal sources → one conversation format (`Record`) → lazily read datasets and mixtures."""

from mmdata.build import DatasetWriter
from mmdata.dataset import Dataset
from mmdata.dataset import open_dataset as open
from mmdata.schema import IMAGE, Media, Record, RecordError, Reject, Turn

__all__ = ["IMAGE", "Dataset", "DatasetWriter", "Media", "Record", "RecordError", "Reject", "Turn", "open"]
__version__ = "0.1.0"
