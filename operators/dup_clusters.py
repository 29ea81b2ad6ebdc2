"""What exact and MinHash dedup share: duplicate edges -> clusters -> `dup_cluster` marks, and their unit log.

A dedup finds *edges* (pairs of documents that are duplicates), joins them into clusters (connected
components) and keeps one document per cluster: the one with the smallest `id`, so the choice does not
depend on how the corpus was sharded or in which order shards finished. Every member of a cluster, the
kept one included, gets `dup_cluster` = the kept document's id; the others get a `drop_reason`.

The drivers' units run through a `TaskRunner`: `in_process` here, or the flow's Ray fan-out
(flows.engine.fan_out), passed in, since operators never import flows nor start Ray themselves.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from operators.base import Filter, OperatorChain, split_dropped, with_column
from storage.shards import (
    ShardWriter,
    check_fingerprint,
    code_version,
    shard_digest,
    write_json_atomic,
    write_table_atomic,
)

# One edge per duplicate pair found; the shard columns say which unit each end lives in.
EDGE_SCHEMA = pa.schema([("a", pa.string()), ("a_shard", pa.int32()), ("b", pa.string()), ("b_shard", pa.int32())])
CLUSTER_SCHEMA = pa.schema([("id", pa.string()), ("dup_cluster", pa.string())])

# Python's unicode whitespace (str.isspace, which is also `re`'s \s); none lies above U+3000. As an RE2 class,
# since Arrow's regexes (RE2) treat \s as ASCII only.
WHITESPACE = "".join(chr(c) for c in range(0x3001) if chr(c).isspace())
WHITESPACE_RUN = "[" + "".join(f"\\x{{{ord(c):x}}}" for c in WHITESPACE) + "]+"


def utf8_slices(texts: pa.Array | pa.ChunkedArray) -> Iterator[memoryview]:
    """Each string's UTF-8 bytes as a view into the Arrow buffer (null -> empty): hash without decoding."""
    array = pc.cast(texts, pa.large_string())
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    _, offsets_buffer, data = array.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=np.int64)[array.offset:array.offset + len(array) + 1]
    view = memoryview(data if data is not None else b"")
    return map(view.__getitem__, map(slice, offsets[:-1].tolist(), offsets[1:].tolist()))


def key_edges(keys: np.ndarray, ids: pa.Array | pa.ChunkedArray, shards: np.ndarray) -> pa.Table:
    """Documents that share a key (a row of `keys`, shape (n, k) uint64) are duplicates: one edge from the
    first document of each run of equal keys to each other one (k-1 edges per run of k, as datatrove writes)."""
    if len(keys) == 0:
        return EDGE_SCHEMA.empty_table()
    order = np.lexsort(keys.T[::-1])
    sorted_keys = keys[order]
    new_run = np.r_[True, np.any(sorted_keys[1:] != sorted_keys[:-1], axis=1)]
    run_start = np.maximum.accumulate(np.where(new_run, np.arange(len(order)), 0))
    member = ~new_run
    a, b = order[run_start[member]], order[member]
    return pa.table({"a": pc.take(ids, a), "a_shard": shards[a].astype(np.int32),
                     "b": pc.take(ids, b), "b_shard": shards[b].astype(np.int32)}, schema=EDGE_SCHEMA)


def live_documents(path: str | Path, columns: Sequence[str], marker: MarkDuplicates | None = None,
                   batch_rows: int = 8192) -> Iterator[pa.Table]:
    """The shard's rows without a drop_reason (nor one `marker` gives them), `columns` only, in bounded batches."""
    file = pq.ParquetFile(path)
    read = list(dict.fromkeys([*columns, "id", *(c for c in ("drop_reason", "dup_cluster")
                                                   if c in file.schema_arrow.names)]))
    for batch in file.iter_batches(batch_size=batch_rows, columns=read):
        table = pa.Table.from_batches([batch])
        live, _ = split_dropped(marker.process(table) if marker else table)
        yield live.select(list(columns))


def components(a: pa.Array | pa.ChunkedArray, b: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, pa.Array, np.ndarray]:
    """Connected components of the graph whose edges are (a[i], b[i]) over string ids.

    Returns (node ids, each node's representative = the smallest id in its component, and the node index of
    every edge end, all `a` ends then all `b` ends, so callers can carry per-node attributes along).
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    ends = pa.chunked_array([pc.cast(a, pa.string()), pc.cast(b, pa.string())]).combine_chunks()
    encoded = pc.dictionary_encode(ends)
    nodes = encoded.dictionary
    index = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    n_edges = len(a)
    src, dst = index[:n_edges], index[n_edges:]
    graph = coo_matrix((np.ones(n_edges, dtype=np.int8), (src, dst)), shape=(len(nodes), len(nodes)))
    _, label = connected_components(graph, directed=False)
    by_id = pc.sort_indices(nodes).to_numpy()
    _, first = np.unique(label[by_id], return_index=True)
    smallest = np.empty(label.max() + 1 if len(label) else 0, dtype=np.int64)
    smallest[label[by_id][first]] = by_id[first]
    representative = nodes.take(pa.array(smallest[label]))
    return nodes, representative, index


def cluster_edges(edges: pa.Table) -> pa.Table:
    """`edges` (a, b) -> one row per clustered document: id, dup_cluster (smallest id of its component)."""
    if edges.num_rows == 0:
        return CLUSTER_SCHEMA.empty_table()
    nodes, representative, _ = components(edges.column("a"), edges.column("b"))
    return pa.table({"id": nodes, "dup_cluster": representative}, schema=CLUSTER_SCHEMA)


def write_shard_clusters(edge_files: Sequence[str | Path], out_dir: Path, n_shards: int) -> dict[str, Any]:
    """Stage 3 of a distributed dedup: gather the EDGES (not the documents; there are far fewer: one per
    duplicate found, as datatrove's MinhashDedupCluster also gathers them in one process), cluster them, and
    write each shard's members to `out_dir/shard-RRRRR.parquet` (empty for shards without duplicates)."""
    tables = [pq.read_table(path) for path in edge_files]
    edges = pa.concat_tables(tables) if tables else EDGE_SCHEMA.empty_table()
    shard_of = np.zeros(0, dtype=np.int32)
    if edges.num_rows:
        nodes, representative, index = components(edges.column("a"), edges.column("b"))
        shard_of = np.empty(len(nodes), dtype=np.int32)
        shard_of[index[edges.num_rows:]] = edges.column("b_shard").to_numpy()
        shard_of[index[:edges.num_rows]] = edges.column("a_shard").to_numpy()
        members = pa.table({"id": nodes, "dup_cluster": representative}, schema=CLUSTER_SCHEMA)
    else:
        members = CLUSTER_SCHEMA.empty_table()
    order = np.argsort(shard_of, kind="stable")
    members = members.take(pa.array(order))
    shard_of = shard_of[order]
    bounds = np.searchsorted(shard_of, np.arange(n_shards + 1))
    for rank in range(n_shards):
        part = members.slice(bounds[rank], bounds[rank + 1] - bounds[rank])
        write_table_atomic(part, shard_cluster_path(out_dir, rank))
    dropped = members.num_rows - int(pc.count_distinct(members.column("dup_cluster")).as_py() or 0)
    return {"edges": edges.num_rows, "clustered_docs": members.num_rows, "duplicates": dropped}


def shard_cluster_path(folder: Path, rank: int) -> Path:
    return folder / f"shard-{rank:05d}.parquet"


class MarkDuplicates(Filter):
    """Applies a cluster table to a batch: sets `dup_cluster` on members and drops all but the representative.

    Only live rows are touched; a live row outside every cluster keeps the `dup_cluster` an earlier dedup gave
    it (exact dedup before MinHash). When MinHash then drops a document that exact dedup had kept, its exact
    copies still name it, and its own row names the survivor: follow `dup_cluster` to the end of the chain.
    """

    def __init__(self, clusters: pa.Table, reason: str, name: str | None = None):
        super().__init__()
        self.clusters = clusters.select(["id", "dup_cluster"])
        self.reason = reason
        self.name = name or reason

    @classmethod
    def from_file(cls, path: str | Path, reason: str, name: str | None = None) -> MarkDuplicates:
        return cls(pq.read_table(path), reason, name)

    def process(self, batch: pa.Table) -> pa.Table:
        found = pc.index_in(batch.column("id"), value_set=self.clusters.column("id"))
        cluster = self.clusters.column("dup_cluster").take(found)
        previous = batch.column("dup_cluster") if "dup_cluster" in batch.column_names else pa.nulls(batch.num_rows,
                                                                                                       pa.string())
        updated = pc.if_else(_live(batch), pc.coalesce(cluster, previous), previous)
        return super().process(with_column(batch, "dup_cluster", updated))

    def drop_reasons(self, batch: pa.Table) -> pa.Array:
        # A live row's dup_cluster is null or its own id unless this step put it in another one's cluster.
        duplicate = pc.fill_null(pc.and_(_live(batch), pc.not_equal(batch.column("dup_cluster"), batch.column("id"))),
                                 False)
        return pc.if_else(duplicate, pa.scalar(self.reason), pa.scalar(None, pa.string()))


def _live(batch: pa.Table) -> pa.Array:
    if "drop_reason" not in batch.column_names:
        return pa.array(np.ones(batch.num_rows, dtype=bool))
    return pc.is_null(batch.column("drop_reason"))


@dataclass
class DedupResult:
    """What a distributed dedup leaves: one cluster table per input shard (same order) and its counts."""

    cluster_files: list[str]
    reason: str
    name: str
    stats: dict[str, Any] = field(default_factory=dict)

    def marker(self, rank: int) -> MarkDuplicates:
        """The stage-4 operator for shard `rank`, for use inside a caller's own per-shard worker."""
        return MarkDuplicates.from_file(self.cluster_files[rank], self.reason, self.name)


TaskRunner = Callable[[Callable[..., Any], Sequence[tuple]], Iterator[tuple[int, Any]]]


def in_process(fn: Callable[..., Any], calls: Sequence[tuple]) -> Iterator[tuple[int, Any]]:
    """fn(*call) for every call, here and in order: (call index, result)."""
    for i, call in enumerate(calls):
        yield i, fn(*call)


def mark_shards(shard_paths: Sequence[str], results: DedupResult | Sequence[DedupResult], out_dir: str | Path,
                stage: str, tasks: TaskRunner = in_process) -> list[dict[str, dict]]:
    """Stage 4, one task per shard: applies its cluster tables (of each result, in order: exact before
    MinHash) and writes kept and dropped shards (`<out_dir>/shards/<stage>/...`, `<out_dir>/dropped/<stage>/...`).
    Returns each shard's operator stats by operator name."""
    results = [results] if isinstance(results, DedupResult) else list(results)
    calls = [(path, results, rank, str(out_dir), stage) for rank, path in enumerate(shard_paths)]
    done = dict(tasks(_mark_shard, calls))
    return [done[rank] for rank in range(len(calls))]


def _mark_shard(path: str, results: list[DedupResult], rank: int, out_dir: str, stage: str) -> dict[str, dict]:
    markers = OperatorChain([result.marker(rank) for result in results])
    writer = ShardWriter(out_dir, stage, rank)
    for batch in pq.ParquetFile(path).iter_batches(batch_size=65536):
        writer.write(*markers(pa.Table.from_batches([batch])))
    writer.close()
    return {name: stats.to_dict() for name, stats in markers.stats().items()}


class UnitLog:
    """Completion records of a dedup's units under `root/_done`, so a rerun on the same work dir skips them.

    The log keeps its work only for the same fingerprint (the engine's one resume policy,
    storage.shards.check_fingerprint): its input shards (size and footer checksum), parameters and the
    code of the dedup modules. Another one raises RunMismatch naming what differs, or with `restart`
    clears everything under `root`.
    """

    def __init__(self, root: Path, inputs: Sequence[str], parameters: dict, *, tasks: TaskRunner = in_process,
                 restart: bool = False, code: Sequence[str] = ()):
        self.folder = root / "_done"
        self.tasks = tasks
        parts = {"inputs": [shard_digest(path) for path in inputs], "parameters": parameters,
                 "code": code_version(__name__, *code)}
        check_fingerprint(self.folder / "inputs.json", parts, [root], restart, f"dedup work dir {root}",
                          started=self.folder.exists())

    def done(self, unit: str) -> dict | None:
        path = self.folder / f"{unit}.json"
        return json.loads(path.read_text()) if path.exists() else None

    def mark(self, unit: str, record: dict) -> None:
        write_json_atomic(record, self.folder / f"{unit}.json")

    def run(self, stage: str, fn: Callable[..., dict], calls: Sequence[tuple]) -> list[dict]:
        """Run the pending `calls` (unit i is f"{stage}-{i:05d}") as tasks; return every unit's record."""
        records = {i: self.done(f"{stage}-{i:05d}") for i in range(len(calls))}
        pending = [i for i, record in records.items() if record is None]
        for j, record in self.tasks(fn, [calls[i] for i in pending]):
            self.mark(f"{stage}-{pending[j]:05d}", record)
            records[pending[j]] = record
        return [records[i] for i in range(len(calls))]
