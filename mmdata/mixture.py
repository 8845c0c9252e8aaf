"""Read a mixture written by `mmdata mix`: `Mixture(root)` serves records like a `Dataset` does.

A mixture is a view (`mmdata.view`): `mixture.json` + an index of (source, row); opening it reads the manifest,
memory-maps `index.npy` (12 bytes per sample) and opens each source (a dataset, or a dedup/decontamination view)
lazily. Reads are batched: a chunk of samples becomes one batched read per source, and records are decoded one at a
time as they are handed out, so no more of them are alive at once than a sequential scan keeps.
"""

from __future__ import annotations

from typing import Any

from mmdata.mix import MixtureManifest
from mmdata.storage import Location, Storage, open_storage
from mmdata.view import MIXTURE, View


class Mixture(View):
    manifest: MixtureManifest
    kind = "mixture"

    @staticmethod
    def is_mixture(root: Location, storage_options: dict[str, Any] | None = None) -> bool:
        return open_storage(root, storage_options).exists(MIXTURE)

    @staticmethod
    def load_manifest(root: Location | Storage) -> MixtureManifest:
        return MixtureManifest.load(root)

    def __repr__(self) -> str:
        return f"Mixture({str(self.root)!r}, name={self.manifest.name!r}, samples={len(self)}, sources={self.names})"
