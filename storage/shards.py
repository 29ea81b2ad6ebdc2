"""Parquet shards: zstd, bounded row groups, atomic (temp file then rename), resumable per unit.

A stage processes *units* (an input file, or an upstream shard). Unit `rank` writes
`<out>/<kind>/<stage>/part-<rank>-<n>.parquet` for kind in shards (kept), dropped and quarantine,
then a completion record `<out>/_progress/<stage>/<rank>.json`. A rerun skips units that have their
record and deletes the partial files of units that do not, so a killed run resumes without
duplicates.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

KINDS = ("shards", "dropped", "quarantine")
MAX_ROWS_PER_FILE = 100_000
MAX_BYTES_PER_FILE = 256 * 2**20
ROW_GROUP_ROWS = 10_000


def write_table_atomic(table: pa.Table, path: Path, row_group_rows: int = ROW_GROUP_ROWS) -> None:
    """Write a Parquet file so readers see either nothing or the whole file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    pq.write_table(table, tmp, compression="zstd", row_group_size=row_group_rows)
    os.replace(tmp, path)


def write_json_atomic(data: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


class ShardWriter:
    """Buffers one unit's kept, dropped and quarantined rows and writes them as bounded shards."""

    def __init__(self, out_dir: str | Path, stage: str, rank: int, *, keep_dropped_text: bool = True,
                 max_rows_per_file: int = MAX_ROWS_PER_FILE, max_bytes_per_file: int = MAX_BYTES_PER_FILE):
        self.out_dir = Path(out_dir)
        self.stage = stage
        self.rank = rank
        self.keep_dropped_text = keep_dropped_text
        self.max_rows_per_file = max_rows_per_file
        self.max_bytes_per_file = max_bytes_per_file
        self._buffers: dict[str, list[pa.Table]] = {kind: [] for kind in KINDS}
        self._parts: dict[str, int] = dict.fromkeys(KINDS, 0)
        self.files: list[str] = []
        self.rows: dict[str, int] = dict.fromkeys(KINDS, 0)

    def write(self, kept: pa.Table | None = None, dropped: pa.Table | None = None,
              quarantine: pa.Table | None = None) -> None:
        if dropped is not None and not self.keep_dropped_text and "text" in dropped.column_names:
            dropped = dropped.drop_columns(["text"])
        for kind, table in zip(KINDS, (kept, dropped, quarantine), strict=True):
            if table is None or table.num_rows == 0:
                continue
            self._buffers[kind].append(table)
            self.rows[kind] += table.num_rows
            buffered = self._buffers[kind]
            if sum(t.num_rows for t in buffered) >= self.max_rows_per_file or \
                    sum(t.nbytes for t in buffered) >= self.max_bytes_per_file:
                self._flush(kind)

    def close(self) -> list[str]:
        """Flush what is buffered; return the files this unit wrote (relative to the run directory)."""
        for kind in KINDS:
            self._flush(kind)
        return self.files

    def _flush(self, kind: str) -> None:
        if not self._buffers[kind]:
            return
        table = pa.concat_tables(self._buffers[kind], promote_options="permissive")
        self._buffers[kind] = []
        path = shard_path(self.out_dir, kind, self.stage, self.rank, self._parts[kind])
        self._parts[kind] += 1
        write_table_atomic(table, path)
        self.files.append(str(path.relative_to(self.out_dir)))


def shard_path(out_dir: Path, kind: str, stage: str, rank: int, part: int) -> Path:
    return out_dir / kind / stage / f"part-{rank:05d}-{part:04d}.parquet"


def progress_path(out_dir: Path, stage: str, rank: int) -> Path:
    return out_dir / "_progress" / stage / f"{rank:05d}.json"


def completed_units(out_dir: str | Path, stage: str) -> dict[int, dict]:
    """Completion records of a stage's finished units, by rank."""
    folder = Path(out_dir) / "_progress" / stage
    if not folder.exists():
        return {}
    return {int(p.stem): json.loads(p.read_text()) for p in sorted(folder.glob("[0-9]*.json"))}


def mark_unit_done(out_dir: str | Path, stage: str, rank: int, record: dict) -> None:
    write_json_atomic(record, progress_path(Path(out_dir), stage, rank))


def discard_partial_unit(out_dir: str | Path, stage: str, rank: int) -> int:
    """Remove what an interrupted attempt at this unit left behind; return the number of files removed."""
    removed = 0
    for kind in KINDS:
        folder = Path(out_dir) / kind / stage
        for path in folder.glob(f"part-{rank:05d}-*.parquet"):
            path.unlink()
            removed += 1
        for path in folder.glob(f".tmp-*-part-{rank:05d}-*.parquet"):
            path.unlink()
            removed += 1
    return removed


def stage_files(out_dir: str | Path, kind: str, stage: str) -> list[Path]:
    return sorted((Path(out_dir) / kind / stage).glob("part-*.parquet"))
