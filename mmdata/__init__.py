"""mmdata: raw multimodal sources → one conversation format (`Record`) → lazily read datasets and mixtures."""

from mmdata.dataset import Dataset
from mmdata.dataset import open_dataset as open
from mmdata.schema import IMAGE, Media, Record, RecordError, Reject, Turn

__all__ = ["IMAGE", "Dataset", "Media", "Record", "RecordError", "Reject", "Turn", "open"]
__version__ = "0.1.0"
