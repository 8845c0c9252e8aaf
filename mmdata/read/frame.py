"""Records as a pandas frame (`to_pandas()` of datasets, views and mixtures)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mmdata.core.schema import Record


def records_frame(records: Sequence[Record], limit: int | None = None, dataset: Any = None) -> Any:
    """One row per record: id, source, task, n_media, n_turns, human, gpt (first turns) and the raw record dict.

    `dataset`, when given, is a callable i -> dataset name, added as a `dataset` column (mixtures).
    """
    import pandas as pd

    n = len(records) if limit is None else min(limit, len(records))
    rows = []
    for i in range(n):
        r = records[i]
        row = {"id": r.id, "source": r.source, "task": r.task, "n_media": len(r.media),
               "n_targets": len(r.targets()), "n_turns": len(r.conversations),
               "human": r.first_text("human"), "gpt": r.first_text("gpt"), "record": r.to_dict()}
        if dataset is not None:
            row = {"dataset": dataset(i), **row}
        rows.append(row)
    columns = (["dataset"] if dataset is not None else []) + ["id", "source", "task", "n_media", "n_targets",
                                                              "n_turns", "human", "gpt", "record"]
    return pd.DataFrame(rows, columns=columns)
