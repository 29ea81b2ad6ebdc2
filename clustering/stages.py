"""The Ray stage workers of the `cluster` flow (flows/cluster.py), one document shard per unit.

They live apart from the flow so that a Ray actor imports only what it runs (the embedder, pyarrow,
the fitted model), not Prefect, DuckDB or the flow: that saves seconds of start-up per actor.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from operators.base import StageStats, split_dropped, with_column
from operators.cluster_assign import ClusterAssign
from operators.embed import EMBEDDING_COLUMN, Embed
from storage.shards import ShardWriter, write_table_atomic

if TYPE_CHECKING:  # the fitted model arrives pickled; its module is imported by unpickling it
    from clustering.climb import ClimbClustering


def embedding_path(out_dir: Path, rank: int) -> Path:
    return Path(out_dir) / "embeddings" / f"part-{rank:05d}.parquet"


def assignment_path(out_dir: Path, rank: int) -> Path:
    return Path(out_dir) / "clusters" / "assignments" / f"part-{rank:05d}.parquet"


class EmbedWorker:
    """One document shard -> embeddings/part-<rank>.parquet (id, embedding), written atomically."""

    def __init__(self, batch_rows: int = 10_000, **embed_options: Any) -> None:
        self.batch_rows = batch_rows
        self.embed = Embed(**embed_options)

    def __call__(self, rank: int, path: str, writer: ShardWriter) -> dict[str, StageStats]:
        self.embed.stats = StageStats()  # the model lives as long as the actor; the counts are per unit
        docs = pq.read_table(path, columns=["id", "text"])
        step = self.batch_rows
        parts = [self.embed(docs.slice(start, step)).select(["id", EMBEDDING_COLUMN])
                 for start in range(0, docs.num_rows, step)]
        value_type = pa.float16() if self.embed.dtype == "float16" else pa.float32()
        schema = pa.schema([("id", pa.string()), (EMBEDDING_COLUMN, pa.list_(value_type, self.embed.encoder.dim))])
        table = pa.concat_tables(parts).cast(schema) if parts else schema.empty_table()
        _write_unit_file(table, embedding_path(writer.out_dir, rank), writer)
        return {self.embed.name: self.embed.stats}


class AssignWorker:
    """One embedding file -> clusters/assignments/part-<rank>.parquet (id, cluster, centroid_distance)."""

    def __init__(self, model: ClimbClustering) -> None:
        self.assign = ClusterAssign(model)

    def __call__(self, rank: int, path: str, writer: ShardWriter) -> dict[str, StageStats]:
        self.assign.stats = StageStats()
        assigned = self.assign(pq.read_table(path))
        _write_unit_file(assigned.select(["id", "cluster", "centroid_distance"]),
                         assignment_path(writer.out_dir, rank), writer)
        return {self.assign.name: self.assign.stats}


class LabelWorker:
    """One document shard + its assignments -> the documents with `cluster` and `super_cluster`;
    documents of pruned clusters go to dropped/ with drop_reason `cluster_pruned`."""

    def __init__(self, model: ClimbClustering) -> None:
        self.assign = ClusterAssign(model)

    def __call__(self, rank: int, path: str, writer: ShardWriter) -> dict[str, StageStats]:
        self.assign.stats = StageStats()
        docs = pq.read_table(path)
        assigned = pq.read_table(assignment_path(writer.out_dir, rank), columns=["id", "cluster"])
        if not docs.column("id").equals(assigned.column("id")):
            raise RuntimeError(f"the assignments of unit {rank} do not match the documents of {path}; "
                               "delete the run's clusters/ and _progress/assign and rerun")
        kept, dropped = split_dropped(self.assign(with_column(docs, "cluster", assigned.column("cluster"))))
        writer.write(kept, dropped)
        return {self.assign.name: self.assign.stats}


def _write_unit_file(table: pa.Table, path: Path, writer: ShardWriter) -> None:
    """Write a unit's one output file atomically and list it in the unit's completion record."""
    write_table_atomic(table, path)
    writer.files.append(str(path.relative_to(writer.out_dir)))
