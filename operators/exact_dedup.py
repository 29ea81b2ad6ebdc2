"""Exact dedup: documents whose text is equal after normalisation keep one copy (the smallest id).

Normalisation: Unicode NFKC (full-width letters, ligatures and non-breaking spaces fold to their plain forms),
lowercase, every run of Unicode whitespace to one space, trimmed. So a copy that differs only in case, layout
or compatibility characters is still a copy; any other change (punctuation, a word) makes it a new text,
which MinHash near-dedup then judges. The key is the 128-bit xxh3 of the normalised UTF-8 text (a chance
collision needs ~10^19 documents).

`ExactDedup` dedups within one batch. `exact_dedup` dedups a whole sharded corpus on Ray: stage 1 hashes
each shard into hash-partitioned files, stage 2 finds equal hashes per partition, stage 3 clusters them
(dup_clusters.write_shard_clusters) and stage 4 (dup_clusters.mark_shards, or `DedupResult.marker` in a
caller's worker) marks each shard.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash

from operators.base import Operator, split_dropped
from operators.dup_clusters import (
    WHITESPACE,
    WHITESPACE_RUN,
    DedupResult,
    MarkDuplicates,
    TaskRunner,
    UnitLog,
    cluster_edges,
    in_process,
    key_edges,
    live_documents,
    shard_cluster_path,
    utf8_slices,
    write_shard_clusters,
)
from storage.shards import write_table_atomic

REASON = "exact_duplicate"
HASH_SCHEMA = pa.schema([("h0", pa.uint64()), ("h1", pa.uint64()), ("id", pa.string()), ("shard", pa.int32())])


def normalize_text(texts: pa.Array | pa.ChunkedArray) -> pa.Array:
    """NFKC, lowercase, whitespace runs collapsed to one space, trimmed (vectorised in Arrow)."""
    texts = pc.fill_null(pc.cast(texts, pa.large_string()), "")
    texts = pc.utf8_lower(pc.utf8_normalize(texts, form="NFKC"))
    return pc.utf8_trim(pc.replace_substring_regex(texts, WHITESPACE_RUN, " "), WHITESPACE)


def text_hashes(texts: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """(n, 2) uint64: the 128-bit xxh3 of each normalised text."""
    digests = b"".join(map(xxhash.xxh3_128_digest, utf8_slices(normalize_text(texts))))
    return np.frombuffer(digests, dtype=np.uint64).reshape(-1, 2)


class ExactDedup(Operator):
    """Within one batch: live documents with equal normalised text keep the smallest id."""

    name = "exact_dedup"

    def process(self, batch: pa.Table) -> pa.Table:
        live, _ = split_dropped(batch)
        edges = key_edges(text_hashes(live.column("text")), live.column("id"), np.zeros(live.num_rows, np.int32))
        return MarkDuplicates(cluster_edges(edges), REASON, self.name).process(batch)


def exact_dedup(shard_paths: Sequence[str | Path], work_dir: str | Path, partitions: int = 16, *,
                tasks: TaskRunner = in_process, restart: bool = False) -> DedupResult:
    """Exact dedup of every live document of `shard_paths`, its units run by `tasks` (here, or the flow's Ray
    fan-out); resumable in `work_dir` (UnitLog: another fingerprint is refused unless `restart`).

    Memory per stage-2 task is about a 1/`partitions` share of the corpus' (hash, id) rows. Returns the
    per-shard cluster tables; apply them with `dup_clusters.mark_shards` or `DedupResult.marker(rank)`.
    """
    shard_paths = [str(path) for path in shard_paths]
    root = Path(work_dir) / "exact"
    log = UnitLog(root, shard_paths, {"partitions": partitions}, tasks=tasks, restart=restart, code=[__name__])
    hashed = log.run("hash", _hash_shard, [(path, rank, str(root), partitions) for rank, path in
                                           enumerate(shard_paths)])
    found = log.run("match", _match_partition, [(part, str(root)) for part in range(partitions)])
    clusters = log.done("cluster")
    if clusters is None:
        clusters = write_shard_clusters([root / "edges" / f"part-{p:03d}.parquet" for p in range(partitions)],
                                        root / "clusters", len(shard_paths))
        log.mark("cluster", clusters)
    stats = {"docs": sum(r["docs"] for r in hashed), "pairs": sum(r["edges"] for r in found), **clusters}
    files = [str(shard_cluster_path(root / "clusters", rank)) for rank in range(len(shard_paths))]
    return DedupResult(files, REASON, ExactDedup.name, stats)


def _hash_shard(path: str, rank: int, root: str, partitions: int) -> dict:
    """Stage 1: (h0, h1, id, shard) of each live document, one file per hash partition."""
    parts = [HASH_SCHEMA.empty_table()]
    for batch in live_documents(path, ["id", "text"]):
        hashes = text_hashes(batch.column("text"))
        parts.append(pa.table({"h0": hashes[:, 0], "h1": hashes[:, 1], "id": batch.column("id"),
                               "shard": np.full(batch.num_rows, rank, np.int32)}, schema=HASH_SCHEMA))
    table = pa.concat_tables(parts)
    partition = table.column("h0").to_numpy() % np.uint64(partitions)
    for part in range(partitions):
        rows = table.filter(pa.array(partition == part))
        write_table_atomic(rows, Path(root) / "hashes" / f"part-{part:03d}" / f"shard-{rank:05d}.parquet")
    return {"docs": table.num_rows}


def _match_partition(part: int, root: str) -> dict:
    """Stage 2: documents of one hash partition with equal hashes -> edges."""
    files = sorted((Path(root) / "hashes" / f"part-{part:03d}").glob("shard-*.parquet"))
    table = pa.concat_tables([HASH_SCHEMA.empty_table()] + [pq.read_table(path) for path in files])
    keys = np.column_stack([table.column("h0").to_numpy(), table.column("h1").to_numpy()])
    edges = key_edges(keys, table.column("id"), table.column("shard").to_numpy())
    write_table_atomic(edges, Path(root) / "edges" / f"part-{part:03d}.parquet")
    return {"edges": edges.num_rows}
