"""Puts documents in their CLIMB cluster and super-cluster; documents of pruned clusters are dropped.

Two uses, one operator. Over embedding batches (an `embedding` column) it finds each document's nearest
centroid (`cluster`, `centroid_distance`); over document batches that already carry `cluster` it only
maps clusters to super-clusters. Either way, a cluster the model pruned (super-cluster -1) gets
`drop_reason = "cluster_pruned"` and a null `super_cluster`.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from operators.base import Operator, with_column
from operators.embed import EMBEDDING_COLUMN, vectors
from storage.schema import STAGE_COLUMNS

PRUNED = "cluster_pruned"


class ClusterModel(Protocol):
    """What the operator needs of a fitted clustering (clustering.climb.ClimbClustering)."""

    super_cluster_: np.ndarray  # super-cluster of each cluster, -1 where the cluster was pruned

    def assign(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


class ClusterAssign(Operator):
    name = "cluster_assign"

    def __init__(self, model: ClusterModel) -> None:
        super().__init__()
        self.model = model

    def process(self, batch: pa.Table) -> pa.Table:
        if EMBEDDING_COLUMN in batch.column_names:
            labels, distances = self.model.assign(vectors(batch.column(EMBEDDING_COLUMN)))
            batch = with_column(batch, "cluster", pa.array(labels, type=STAGE_COLUMNS["cluster"]))
            batch = with_column(batch, "centroid_distance", pa.array(distances, type=pa.float32()))
        else:
            labels = batch.column("cluster").to_numpy()
        supers = self.model.super_cluster_[labels] if len(labels) else np.zeros(0, dtype=np.int64)
        pruned = supers < 0
        batch = with_column(batch, "super_cluster", pa.array(supers, type=STAGE_COLUMNS["super_cluster"],
                                                             mask=pruned))
        reasons = pa.array(np.where(pruned, PRUNED, None), type=pa.string())
        if "drop_reason" in batch.column_names:
            reasons = pc.coalesce(batch.column("drop_reason"), reasons)
        return with_column(batch, "drop_reason", reasons)
