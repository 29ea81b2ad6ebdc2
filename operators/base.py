"""What every operator shares: accounting and timing live here once, as in datatrove's base filter.

An operator is a callable over a `pyarrow.Table` batch. Annotators add columns; filters set
`drop_reason` on the rows they reject. Rows that are dropped stay in the batch (so nothing is lost);
`OperatorChain` splits them off after each step so later steps see only live rows.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc


@dataclass
class StageStats:
    """Documents, characters and tokens in and out of one step, drops by reason, and wall time.

    Readers also count the input's records that are no documents (`skipped`, by reason: a WARC's
    requests, revisits, non-HTML responses...) and the documents whose input id repeated an earlier one
    (`duplicate_ids`: given a generated id, the input's kept in metadata)."""

    docs_in: int = 0
    docs_out: int = 0
    chars_in: int = 0
    chars_out: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    dropped: Counter = field(default_factory=Counter)
    quarantined: int = 0
    seconds: float = 0.0
    skipped: Counter = field(default_factory=Counter)
    duplicate_ids: int = 0

    def merge(self, other: StageStats) -> StageStats:
        for name in ("docs_in", "docs_out", "chars_in", "chars_out", "tokens_in", "tokens_out",
                     "quarantined", "seconds", "duplicate_ids"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.dropped.update(other.dropped)
        self.skipped.update(other.skipped)
        return self

    def to_dict(self) -> dict:
        return {
            "docs_in": self.docs_in,
            "docs_out": self.docs_out,
            "chars_in": self.chars_in,
            "chars_out": self.chars_out,
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "dropped": dict(sorted(self.dropped.items())),
            "quarantined": self.quarantined,
            "seconds": round(self.seconds, 4),
            "skipped": dict(sorted(self.skipped.items())),
            "duplicate_ids": self.duplicate_ids,
        }

    @classmethod
    def from_dict(cls, data: dict) -> StageStats:
        values = {k: v for k, v in data.items() if k not in ("dropped", "skipped")}
        return cls(**values, dropped=Counter(data.get("dropped", {})), skipped=Counter(data.get("skipped", {})))

    def count_in(self, batch: pa.Table) -> None:
        self.docs_in += batch.num_rows
        self.chars_in += _total_chars(batch)
        self.tokens_in += _total_tokens(batch)

    def count_out(self, batch: pa.Table) -> None:
        """Count a step's output: live rows go out, rows with a drop_reason are counted by reason."""
        live, dropped = split_dropped(batch)
        self.docs_out += live.num_rows
        self.chars_out += _total_chars(live)
        self.tokens_out += _total_tokens(live)
        if dropped.num_rows:
            self.dropped.update(dropped.column("drop_reason").to_pylist())


def _total_chars(batch: pa.Table) -> int:
    if "text" not in batch.column_names or batch.num_rows == 0:
        return 0
    return int(pc.sum(pc.utf8_length(batch.column("text"))).as_py() or 0)


def _total_tokens(batch: pa.Table) -> int:
    if "n_tokens" not in batch.column_names or batch.num_rows == 0:
        return 0
    return int(pc.sum(batch.column("n_tokens")).as_py() or 0)


def split_dropped(batch: pa.Table) -> tuple[pa.Table, pa.Table]:
    """(live rows, dropped rows) of a batch, by whether `drop_reason` is set."""
    if "drop_reason" not in batch.column_names:
        return batch, batch.slice(0, 0)
    dropped = pc.is_valid(batch.column("drop_reason"))
    return batch.filter(pc.invert(dropped)), batch.filter(dropped)


def with_column(batch: pa.Table, name: str, values: pa.Array | pa.ChunkedArray) -> pa.Table:
    """The batch with column `name` set to `values`, replacing it if present."""
    if name in batch.column_names:
        return batch.set_column(batch.column_names.index(name), name, values)
    return batch.append_column(name, values)


class Operator:
    """A step over Arrow batches. Subclasses implement `process`; `__call__` does the accounting."""

    name: str = "operator"

    def __init__(self) -> None:
        self.stats = StageStats()

    def __call__(self, batch: pa.Table) -> pa.Table:
        start = time.perf_counter()
        self.stats.count_in(batch)
        out = self.process(batch)
        self.stats.count_out(out)
        self.stats.seconds += time.perf_counter() - start
        return out

    def process(self, batch: pa.Table) -> pa.Table:
        raise NotImplementedError


class Filter(Operator):
    """A step that rejects rows. Subclasses implement `drop_reasons(batch)`: one reason or None per row."""

    def process(self, batch: pa.Table) -> pa.Table:
        if batch.num_rows == 0:
            return with_column(batch, "drop_reason", pa.nulls(0, pa.string()))
        reasons = pa.array(self.drop_reasons(batch), type=pa.string())
        if "drop_reason" in batch.column_names:
            reasons = pc.coalesce(batch.column("drop_reason"), reasons)
        return with_column(batch, "drop_reason", reasons)

    def drop_reasons(self, batch: pa.Table) -> list[str | None] | pa.Array:
        raise NotImplementedError


class OperatorChain:
    """Operators applied in order; rows a step drops are split off before the next step sees the batch."""

    def __init__(self, operators: list[Operator]) -> None:
        self.operators = operators

    def __call__(self, batch: pa.Table) -> tuple[pa.Table, pa.Table]:
        """Return (kept rows, dropped rows with their drop_reason)."""
        dropped_parts = []
        for operator in self.operators:
            batch, dropped = split_dropped(operator(batch))
            if dropped.num_rows:
                dropped_parts.append(dropped)
        dropped = _concat(dropped_parts) if dropped_parts else batch.slice(0, 0)
        return batch, dropped

    def stats(self) -> dict[str, StageStats]:
        return {op.name: op.stats for op in self.operators}


def _concat(tables: list[pa.Table]) -> pa.Table:
    return pa.concat_tables(tables, promote_options="permissive")
