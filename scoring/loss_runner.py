"""Losses of a model family on many documents: cached per (model, document id) in Parquet, computed only for
what the cache lacks, on Ray actors with a GPU each where the cluster has GPUs, else in this process on CPU
threads (or, when asked, on CPU Ray actors).

The cache is a folder of Parquet parts (model key, document id, loss, tokens, bytes), one part per model and
call; a model's key changes when its files or window settings do, so a retrained model is scored afresh.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from scoring.actors import gpus_available, run_batches
from scoring.losses import DocumentLosses, LossModel
from storage.shards import write_table_atomic

CACHE_SCHEMA = pa.schema([pa.field("model", pa.string(), nullable=False), pa.field("id", pa.string(), nullable=False),
                          pa.field("loss", pa.float64()), pa.field("n_tokens", pa.int64()),
                          pa.field("n_bytes", pa.int64())])
BATCH_DOCS = 256  # documents per call to a model (and per Ray task)


class LossCache:
    """Losses kept as Parquet parts in a folder, keyed by (model key, document id)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def read(self, model: str, ids: Sequence[str]) -> dict[str, tuple[float, int, int]]:
        found: dict[str, tuple[float, int, int]] = {}
        wanted = pa.array(list(set(ids)), pa.string())
        for part in sorted(self.folder.glob("part-*.parquet")):
            table = pq.read_table(part, schema=CACHE_SCHEMA, filters=pc.field("model") == model)
            table = table.filter(pc.is_in(table.column("id"), value_set=wanted))
            for doc_id, loss, tokens, size in zip(*(table.column(c).to_pylist() for c in CACHE_SCHEMA.names[1:]),
                                                  strict=True):
                found.setdefault(doc_id, (loss, tokens, size))
        return found

    def write(self, model: str, ids: Sequence[str], losses: DocumentLosses) -> None:
        if not len(ids):
            return
        table = pa.table({"model": [model] * len(ids), "id": list(ids), "loss": losses.loss,
                          "n_tokens": losses.n_tokens.astype(np.int64), "n_bytes": losses.n_bytes.astype(np.int64)},
                         schema=CACHE_SCHEMA)
        write_table_atomic(table, self.folder / f"part-{time.time_ns()}-{os.getpid()}.parquet")


def _chunks(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def family_losses(models: Sequence[LossModel], ids: Sequence[str], texts: Sequence[str],
                  cache: LossCache | str | Path | None = None, use_ray: bool | None = None,
                  batch_docs: int = BATCH_DOCS) -> tuple[np.ndarray, dict[str, int]]:
    """(n_models, n_docs) bits per byte, and per model how many documents were scored now (not cached).

    `use_ray` None: Ray actors when this process is connected to a Ray cluster with GPUs, else this process.
    """
    if len(ids) != len(texts):
        raise ValueError(f"{len(ids)} ids for {len(texts)} texts")
    if len(set(ids)) != len(ids):
        raise ValueError("document ids must be unique (the cache is keyed by them)")
    cache = LossCache(cache) if isinstance(cache, str | Path) else cache
    use_ray = gpus_available() > 0 if use_ray is None else use_ray
    rows, scored = [], {}
    for model in models:
        known = cache.read(model.key, ids) if cache else {}
        todo = [i for i, doc_id in enumerate(ids) if doc_id not in known]
        if todo:
            batches = [[texts[i] for i in todo[s]] for s in _chunks(len(todo), batch_docs)]
            new = DocumentLosses.concat(run_batches(model, "losses", batches, use_ray))
            if cache:
                cache.write(model.key, [ids[i] for i in todo], new)
            known.update(zip((ids[i] for i in todo), zip(new.loss, new.n_tokens, new.n_bytes, strict=True),
                             strict=True))
        values = np.array([known[doc_id] for doc_id in ids], dtype=np.float64).reshape(len(ids), 3)
        rows.append(DocumentLosses(values[:, 0], values[:, 1], values[:, 2]).bits_per_byte())
        scored[model.name] = len(todo)
    return np.vstack(rows) if rows else np.zeros((0, len(ids))), scored
