"""Stored readings → the engine's columnar `ingest(channels, ts_ms, value, quality)`.

The engine wants cumulative counter channels as dense arrays; a reading carries a dict of
quantities. The rows become columns once (`accounting.ingest.reading_columns`, shared with
the plant watch) and a table maps the layout's (meter slot, value name) to the engine's
channel index, so the rest is numpy. A value is passed with quality 0 (usable) only when its
own quality is good: a `stale` or `comm_error` value must not move a counter.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from accounting.engine.engine import Engine
from accounting.ingest.reading_columns import ColumnLayout, ReadingColumns
from accounting.store.base import StoredReading


class EngineFeed:
    """Feeds one site's engine; `feed` returns how many channel values went in."""

    def __init__(self, engine: Engine, layout: ColumnLayout | None = None) -> None:
        self.engine = engine
        self.layout = layout or ColumnLayout.of(engine.topology)
        self._table_for = self.layout
        self._table = self._index_table(self.layout)

    def _index_table(self, layout: ColumnLayout) -> np.ndarray:
        """int64 (meters + 1, names): the engine's channel index of each (slot, name), -1 for none;
        the last row stands for a meter the layout does not know (slot -1)."""
        table = np.full((len(layout.meters) + 1, len(layout.names)), -1, np.int64)
        name_k = {name: k for k, name in enumerate(layout.names)}
        for index, (meter, channel) in enumerate(self.engine.channel_keys):
            j, k = layout.slot.get(meter), name_k.get(channel)
            if j is not None and k is not None:
                table[j, k] = index
        return table

    def feed(self, rows: Sequence[StoredReading]) -> int:
        return self.feed_columns(self.layout.columns(list(rows)))

    def feed_columns(self, cols: ReadingColumns) -> int:
        if not len(cols):
            return 0
        if cols.layout is not self._table_for:
            self._table_for, self._table = cols.layout, self._index_table(cols.layout)
        index = self._table[cols.meter]  # (n, names); slot -1 takes the last row
        take = (index >= 0) & ~np.isnan(cols.values)
        n = int(take.sum())
        if n:  # row-major: the rows' order (the engine keeps the first of equal readings)
            per_row = take.sum(axis=1)
            bad = ~cols.good.repeat(per_row) if cols.value_good is None else ~cols.value_good[take]
            self.engine.ingest(index[take], cols.ts.repeat(per_row), cols.values[take], bad.astype(np.int8))
        return n
