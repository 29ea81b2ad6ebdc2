"""Parquet shards: zstd, bounded row groups, atomic (temp file then rename), resumable per unit.

A stage processes *units* (an input file, or an upstream shard). Unit `rank` writes
`<out>/<kind>/<stage>/part-<rank>-<n>.parquet` for kind in shards (kept), dropped and quarantine,
then a completion record `<out>/_progress/<stage>/<rank>.json`. A rerun skips units that have their
record and deletes the partial files of units that do not, so a killed run resumes without
duplicates.

Whether completed units may be kept at all is one policy for every stage (`keep_or_restart`): the stage's
fingerprint (its inputs with sizes and checksums, its config, the code version of its operators) is saved
beside its records; a rerun with another fingerprint stops with one line naming what differs, unless it
asks to restart, which clears the stage's records and outputs.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
from pathlib import Path
from typing import Any

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
        self._siblings: dict[str, ShardWriter] = {}

    def for_stage(self, stage: str) -> ShardWriter:
        """The same unit's writer for another stage, for a pass that runs several stages at once (flows.engine:
        a fused pass writes each stage's drops where that stage's are); closed with this one."""
        if stage == self.stage:
            return self
        if stage not in self._siblings:
            self._siblings[stage] = ShardWriter(self.out_dir, stage, self.rank,
                                                keep_dropped_text=self.keep_dropped_text,
                                                max_rows_per_file=self.max_rows_per_file,
                                                max_bytes_per_file=self.max_bytes_per_file)
        return self._siblings[stage]

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
        """Flush what is buffered; return the files this unit wrote, its other stages' too (relative to the run
        directory)."""
        for sibling in self._siblings.values():
            self.files.extend(sibling.close())
        self._siblings = {}
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


class RunMismatch(ValueError):
    """A rerun into a run directory whose stage was made from other inputs, config or code."""


def keep_or_restart(out_dir: str | Path, stage: str, parts: dict[str, Any], outputs: list[Path],
                    restart: bool = False) -> None:
    """Keep the stage's completed units if they were made with these `parts` (name -> JSON-able value:
    inputs, config, code...); otherwise refuse (RunMismatch naming what differs) or, with `restart`,
    remove its records and `outputs` and start it afresh."""
    out_dir = Path(out_dir)
    records = out_dir / "_progress" / stage
    check_fingerprint(records / "fingerprint.json", parts,
                      [records, *outputs, *(out_dir / kind / stage for kind in KINDS)], restart,
                      f"{out_dir}: stage '{stage}'", started=bool(completed_units(out_dir, stage)))


def check_fingerprint(marker: Path, parts: dict[str, Any], clear: list[Path], restart: bool, what: str,
                      started: bool = False) -> None:
    """The policy itself: `marker` holds the fingerprint the work under `clear` was made with. Equal: keep
    it. Different (or `started` work without one): RunMismatch, or with `restart` remove `clear`."""
    parts = json.loads(json.dumps(parts, sort_keys=True, default=str))
    if marker.exists():
        saved = json.loads(marker.read_text()).get("parts")
        if saved == parts:
            return
        if not restart:
            raise RunMismatch(f"{what} was made with {differences(saved or {}, parts)}; "
                              "rerun with --restart to redo it, or use a new --out")
    elif started and not restart:
        raise RunMismatch(f"{what} has completed work of unknown inputs and config; "
                          "rerun with --restart to redo it, or use a new --out")
    for path in clear:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    write_json_atomic({"parts": parts}, marker)


def differences(saved: dict[str, Any], parts: dict[str, Any]) -> str:
    """What differs between two fingerprints, in words: 'another config (filters.gopher_quality)'."""
    said = []
    for name in sorted(set(saved) | set(parts)):
        old, new = saved.get(name), parts.get(name)
        if old == new:
            continue
        where = ""
        if isinstance(old, dict) and isinstance(new, dict):
            where = ", ".join(_changed_keys(old, new)[:4])
        elif isinstance(old, list) and isinstance(new, list) and name == "inputs":
            gone = [_input_name(i) for i in old if i not in new]
            added = [_input_name(i) for i in new if i not in old]
            where = "; ".join(filter(None, (f"was {', '.join(gone[:3])}" if gone else "",
                                            f"now {', '.join(added[:3])}" if added else "")))
        article = "other" if name.endswith("s") else "another"  # other inputs, another config
        said.append(f"{article} {name}" + (f" ({where})" if where else ""))
    return " and ".join(said) or "another fingerprint"


def _changed_keys(old: dict, new: dict, prefix: str = "") -> list[str]:
    keys = []
    for key in sorted(set(old) | set(new)):
        keys.extend(_changed_paths(old.get(key), new.get(key), f"{prefix}{key}"))
    return keys


def _changed_paths(a: Any, b: Any, path: str) -> list[str]:
    """Dotted paths (with [i] for list items of equal-length lists) where a and b differ."""
    if a == b:
        return []
    if isinstance(a, dict) and isinstance(b, dict):
        return _changed_keys(a, b, f"{path}.")
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [p for i, (x, y) in enumerate(zip(a, b, strict=True)) for p in _changed_paths(x, y, f"{path}[{i}]")]
    return [path]


def _input_name(item: Any) -> str:
    path = item.get("path") if isinstance(item, dict) else item[0] if isinstance(item, list) else item
    return Path(str(path)).name


def code_version(*modules: str) -> str:
    """A digest of the source files of `modules` (dotted names): an edit to an operator changes it."""
    digest = hashlib.sha256()
    for name in sorted(set(modules)):
        spec = importlib.util.find_spec(name)
        digest.update(name.encode())
        if spec and spec.origin and os.path.exists(spec.origin):
            digest.update(Path(spec.origin).read_bytes())
    return digest.hexdigest()[:16]


def shard_digest(path: str | Path) -> list:
    """(name, size, checksum of its Parquet footer) of a shard we wrote: the footer holds every column
    chunk's offsets, sizes and statistics, so a rewritten shard changes it, and reading it is cheap."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as handle:
        handle.seek(max(0, size - 8))
        tail = handle.read(8)
        footer = int.from_bytes(tail[:4], "little") if len(tail) == 8 else 0
        handle.seek(max(0, size - 8 - footer))
        checksum = hashlib.sha256(handle.read()).hexdigest()[:16]
    return [path.name, size, checksum]
