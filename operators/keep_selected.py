"""Keeps the documents a selection chose, with how many times it chose each (`repeats`); the others are
dropped with drop_reason `not_selected`. The selection (id, repeats) is computed once over the whole corpus
(scoring.selection) and read by every worker."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from operators.base import Filter, with_column

REASON = "not_selected"


class KeepSelected(Filter):
    name = "keep_selected"

    def __init__(self, selection: pa.Table, reason: str = REASON) -> None:
        super().__init__()
        self.ids = selection.column("id").combine_chunks()
        self.repeats = selection.column("repeats").combine_chunks().cast(pa.int32())
        self.reason = reason

    def process(self, batch: pa.Table) -> pa.Table:
        position = pc.index_in(batch.column("id"), value_set=self.ids)
        batch = with_column(batch, "repeats", pc.take(self.repeats, position))
        return super().process(batch)

    def drop_reasons(self, batch: pa.Table) -> pa.Array:
        chosen = pc.fill_null(pc.greater(batch.column("repeats"), 0), False)
        return pc.if_else(chosen, pa.scalar(None, pa.string()), pa.scalar(self.reason))
