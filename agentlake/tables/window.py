"""The event ids a table holds in a day's dedup window, held as sorted 64-bit hashes.

A batch is checked against every id ``raw.events`` holds over the window (three arrival days at
the default): at a million events a day that is millions of ids. Held as strings they take most
of a GB and every membership test builds a hash set of them again; held as one sorted array of
their 64-bit hashes they take 8 bytes each, are read file batch by file batch, and a chunk's ids
are looked up by binary search.

A hash match only makes an id a candidate: two ids can share a hash (by chance, or made to by
someone choosing ids). Every answer that matters is exact: :meth:`IdWindow.holds` reads the
candidates' rows back from the table and keeps only the ids found there.
"""

from __future__ import annotations

import numpy as np
import polars as pl
from pyiceberg.expressions import And, BooleanExpression
from pyiceberg.table import Table

from agentlake.tables.files import one_of

_SEED = 0x5EED_1D5


def _hashes(ids: pl.Series) -> np.ndarray:
    return ids.cast(pl.String).hash(seed=_SEED).to_numpy()


class IdWindow:
    """The ids one snapshot of a table holds under a row filter (the dedup window of a day)."""

    def __init__(self, table: Table | None = None, row_filter: BooleanExpression | None = None) -> None:
        self._table = table
        self._filter = row_filter
        self._sorted = np.empty(0, dtype=np.uint64)
        snapshot = table.current_snapshot() if table is not None else None
        if table is None or row_filter is None or snapshot is None:
            return
        scan = table.scan(row_filter=row_filter, selected_fields=("event_id",))
        parts = [_hashes(pl.Series(batch.column(0))) for batch in scan.to_arrow_batch_reader() if batch.num_rows]
        if parts:
            self._sorted = np.unique(np.concatenate(parts))

    def __len__(self) -> int:
        """Distinct hashes held (at most the number of distinct ids)."""
        return int(self._sorted.size)

    def maybe(self, ids: pl.Series) -> pl.Series:
        """For each id, whether the window may hold it: never false for an id it holds."""
        if self._sorted.size == 0 or ids.len() == 0:
            return pl.Series("maybe", np.zeros(ids.len(), dtype=bool))
        wanted = _hashes(ids)
        at = np.minimum(np.searchsorted(self._sorted, wanted), self._sorted.size - 1)
        return pl.Series("maybe", self._sorted[at] == wanted)

    def holds(self, ids: pl.Series) -> pl.Series:
        """Those of ``ids`` the window holds, exactly: the candidates read back from the table."""
        candidates = ids.filter(self.maybe(ids)).cast(pl.String).unique()
        if candidates.len() == 0 or self._table is None or self._filter is None:
            return pl.Series("event_id", [], dtype=pl.String)
        found = self._table.scan(row_filter=And(self._filter, one_of("event_id", candidates.to_list())),
                                 selected_fields=("event_id",)).to_arrow()
        return pl.Series("event_id", found.column("event_id").combine_chunks()).cast(pl.String).unique()
