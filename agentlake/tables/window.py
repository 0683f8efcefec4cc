"""The event ids a table holds in a day's dedup window, held as sorted 64-bit hashes.

A batch is checked against every id ``raw.events`` holds over the window (three arrival days at
the default): at a million events a day that is millions of ids. Held as strings they take most
of a GB and every membership test builds a hash set of them again; held as one sorted array of
their 64-bit hashes they take 8 bytes each, are read file batch by file batch, and a chunk's ids
are looked up by binary search.

A hash match only makes an id a candidate: two ids can share a hash (by chance, or made to by
someone choosing ids). Every answer that matters is exact: :meth:`IdWindow.holds` reads the
candidates' rows back from the table and keeps only the ids found there.

:class:`BatchIds` does the same for the ids a batch has kept so far, chunk by chunk: a chunk's ids
are looked up among their hashes, and only the kept rows of the hashes that match are compared by id.
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


class BatchIds:
    """The ids a batch has kept so far: their hashes sorted for lookup, their rows for exact answers."""

    def __init__(self) -> None:
        self._sorted = np.empty(0, dtype=np.uint64)
        self._rows: list[pl.DataFrame] = []

    def hashes(self, ids: pl.Series) -> np.ndarray:
        """The hashes of ``ids`` as :meth:`add` and :meth:`kept_like` take them."""
        return _hashes(ids)

    def add(self, rows: pl.DataFrame, hashes: np.ndarray) -> None:
        """Hold ``rows`` (kept; with an ``event_id`` column) whose ids have these hashes, in order."""
        if not rows.height:
            return
        self._rows.append(rows.with_columns(pl.Series("_idh", hashes, dtype=pl.UInt64)))
        new = np.sort(hashes)
        self._sorted = np.insert(self._sorted, np.searchsorted(self._sorted, new), new)

    def kept_like(self, hashes: np.ndarray) -> pl.DataFrame | None:
        """The rows held whose id has one of these hashes (a superset of those with one of their ids), or None."""
        if self._sorted.size == 0 or hashes.size == 0:
            return None
        at = np.minimum(np.searchsorted(self._sorted, hashes), self._sorted.size - 1)
        hit = np.unique(hashes[self._sorted[at] == hashes])
        if hit.size == 0:
            return None
        found = pl.concat(self._rows).filter(pl.col("_idh").is_in(pl.Series(hit, dtype=pl.UInt64)))
        return found.drop("_idh")
