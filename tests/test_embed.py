"""The Embed operator on real documents: both backends, vector layout, and that vectors carry meaning."""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from operators.embed import (
    EMBEDDING_COLUMN,
    Embed,
    build_static_model,
    minilm_path,
    static_model_path,
    vector_array,
    vectors,
)


@pytest.fixture(scope="module")
def static_embed() -> Embed:
    """The model2vec embedder; distils and caches the model first if this machine has not yet (~2 min)."""
    build_static_model()
    return Embed("model2vec")


@pytest.fixture(scope="module")
def docs(sample_corpus) -> pa.Table:
    """40 PostgreSQL manual pages, 40 fortunes and 40 Python manual pages, in that order."""
    postgres = pq.read_table(sample_corpus / "docs" / "postgresql-doc.parquet").slice(0, 40)
    import pandas as pd

    fortunes = pd.read_json(sample_corpus / "docs" / "fortunes.jsonl.gz", lines=True)
    python = pd.read_json(sample_corpus / "docs" / "python-doc.jsonl.gz", lines=True)
    texts = postgres.column("text").to_pylist() + fortunes[fortunes.lang == "en"].text.head(40).tolist() + \
        python.text.head(40).tolist()
    return pa.table({"id": [f"doc-{i}" for i in range(len(texts))], "text": texts})


def test_static_vectors_are_unit_rows_in_a_fixed_size_list(static_embed, docs):
    out = static_embed(docs)
    assert out.column("id").equals(docs.column("id"))
    assert out.schema.field(EMBEDDING_COLUMN).type == pa.list_(pa.float32(), 256)
    matrix = vectors(out.column(EMBEDDING_COLUMN))
    assert matrix.shape == (120, 256)
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-3)
    assert static_embed.stats.docs_in == static_embed.stats.docs_out == 120


def test_static_vectors_equal_the_mean_of_the_models_token_vectors(static_embed, docs):
    """Same tokens as the model's own `encode`, same pooling: the exact mean (float64) of the token rows, and
    `StaticModel.encode`'s own output up to its float16 rounding."""
    from model2vec import StaticModel

    raw = StaticModel.from_pretrained(str(static_model_path()), normalize=True)
    texts = docs.column("text").to_pylist()
    got = vectors(static_embed(docs).column(EMBEDDING_COLUMN))
    cut = raw.max_length * raw.median_token_length
    table = raw.embedding.astype(np.float64)
    exact = np.stack([table[ids].mean(axis=0) for ids in raw.tokenize([text[:cut] for text in texts])])
    exact /= np.linalg.norm(exact, axis=1, keepdims=True)
    np.testing.assert_allclose(got, exact, atol=1e-6)
    np.testing.assert_allclose(got, raw.encode(texts, use_multiprocessing=False), atol=2e-3)


def test_vectors_place_documents_near_their_own_kind(static_embed, docs):
    """Mean cosine similarity within a source beats that across sources, for all three sources."""
    matrix = vectors(static_embed(docs).column(EMBEDDING_COLUMN))
    matrix = matrix - matrix.mean(axis=0)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    similarity = matrix @ matrix.T
    groups = [slice(0, 40), slice(40, 80), slice(80, 120)]
    for i, own in enumerate(groups):
        within = similarity[own, own][~np.eye(40, dtype=bool)].mean()
        across = max(similarity[own, other].mean() for j, other in enumerate(groups) if j != i)
        assert within > across + 0.1, (i, within, across)


def test_cached_model_is_reused_not_distilled_again():
    start = time.perf_counter()
    path = build_static_model()
    assert time.perf_counter() - start < 1.0
    assert (path / "model.safetensors").exists() and path == static_model_path()


def test_sentence_transformers_backend_equals_the_raw_model(docs):
    """The packaged MiniLM through the operator (float16 storage) matches SentenceTransformer.encode."""
    from sentence_transformers import SentenceTransformer

    few = docs.take([0, 40, 80])
    few = few.set_column(1, "text", pa.array([text[:1000] for text in few.column("text").to_pylist()]))
    embed = Embed("sentence-transformers", device="cpu", dtype="float16", batch_size=4)
    out = embed(few)
    assert out.schema.field(EMBEDDING_COLUMN).type == pa.list_(pa.float16(), 384)
    raw = SentenceTransformer(str(minilm_path()), device="cpu")
    expected = raw.encode(few.column("text").to_pylist(), normalize_embeddings=True)
    np.testing.assert_allclose(vectors(out.column(EMBEDDING_COLUMN)), expected, atol=2e-3)


def test_float16_round_trip_and_empty_batch(static_embed):
    matrix = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)
    np.testing.assert_allclose(vectors(vector_array(matrix, "float16")), matrix, rtol=1e-3, atol=1e-3)
    empty = static_embed(pa.table({"id": pa.array([], pa.string()), "text": pa.array([], pa.string())}))
    assert empty.num_rows == 0 and empty.schema.field(EMBEDDING_COLUMN).type == pa.list_(pa.float32(), 256)


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="unknown embedding backend"):
        Embed("word2vec")
