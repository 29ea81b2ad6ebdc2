"""The cluster table: what each cluster is (terms, representative documents) and holds (size, tokens,
mean scores, source mix). DuckDB aggregates the documents joined with their cluster assignments in
place, out of core; only a bounded text sample per cluster reaches Python, for the c-TF-IDF terms."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
from scipy import sparse
from sklearn.feature_extraction.text import CountVectorizer

REPRESENTATIVES = 3
SNIPPET_CHARS = 300
TOP_SOURCES = 5
# Letters only, three or more: drops numbers, markup leftovers and most code punctuation, any script.
TERM_PATTERN = r"(?u)\b[^\W\d_]{3,}\b"


def _files(paths: Sequence[Path]) -> str:
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"


class ClusterCorpus:
    """Documents joined with their assignments (id, cluster, centroid_distance), as DuckDB views."""

    def __init__(self, doc_files: Sequence[Path], assignment_files: Sequence[Path], source_field: str = "source"):
        self.con = duckdb.connect(":memory:")
        self.con.execute(f"CREATE VIEW docs AS SELECT * FROM read_parquet({_files(doc_files)}, union_by_name=true)")
        self.con.execute(f"CREATE VIEW assignments AS SELECT * FROM read_parquet({_files(assignment_files)})")
        self.columns = {row[0]: row[1] for row in self.con.sql("DESCRIBE docs").fetchall()}
        self.source = self._source_expression(source_field)

    def __enter__(self) -> ClusterCorpus:
        return self

    def __exit__(self, *exc: object) -> None:
        self.con.close()

    def _source_expression(self, field: str) -> str:
        """SQL for a document's source label: `source` means the input file's name; another column is
        used as is; anything else is read from the metadata JSON (e.g. `origin`)."""
        if field == "source":
            return "regexp_extract(d.source, '[^/]+$')"
        if field in self.columns:
            return f'CAST(d."{field}" AS VARCHAR)'
        key = field.removeprefix("metadata.").replace("'", "''")
        return f"json_extract_string(d.metadata, '$.{key}')"

    def score_columns(self, requested: Sequence[str] = ()) -> list[str]:
        """Numeric score columns present: PreSelect, DataMan and any requested (e.g. for pruning)."""
        numeric = ("FLOAT", "DOUBLE", "INTEGER", "BIGINT", "SMALLINT", "TINYINT", "DECIMAL")
        wanted = [c for c in self.columns if c == "preselect" or c.startswith("dataman_")] + list(requested)
        return [c for c in dict.fromkeys(wanted) if c in self.columns and self.columns[c].startswith(numeric)]

    def statistics(self, n_clusters: int, score_columns: Sequence[str]) -> pa.Table:
        """Per cluster (all of 0..n_clusters-1): size, tokens, mean distance, mean scores, top source."""
        tokens = "d.n_tokens" if "n_tokens" in self.columns else "strlen(d.text) / 4"
        scores = "".join(f', d."{c}"' for c in score_columns)
        means = "".join(f', avg("{c}") AS "mean_{c}"' for c in score_columns)
        stats = self.con.sql(f"""
            WITH joined AS (
                SELECT a.cluster, a.centroid_distance, {tokens} AS tokens, {self.source} AS src {scores}
                FROM assignments a JOIN docs d USING (id)),
            per_cluster AS (
                SELECT cluster, count(*) AS size, CAST(round(sum(tokens)) AS BIGINT) AS tokens,
                       CAST(avg(centroid_distance) AS FLOAT) AS mean_distance {means}
                FROM joined GROUP BY cluster),
            sources AS (
                SELECT cluster, src, count(*) AS n, sum(count(*)) OVER (PARTITION BY cluster) AS total
                FROM joined GROUP BY cluster, src),
            mix AS (
                SELECT cluster, list({{'source': src, 'share': CAST(n / total AS FLOAT)}} ORDER BY n DESC, src)
                       AS source_mix
                FROM sources GROUP BY cluster)
            SELECT c.cluster, coalesce(p.size, 0) AS size, coalesce(p.tokens, 0) AS tokens, p.mean_distance
                   {"".join(f', p."mean_{c}"' for c in score_columns)},
                   m.source_mix[1].source AS top_source, m.source_mix[1].share AS top_source_share,
                   m.source_mix[:{TOP_SOURCES}] AS source_mix
            FROM range({n_clusters}) c(cluster)
            LEFT JOIN per_cluster p USING (cluster) LEFT JOIN mix m USING (cluster)
            ORDER BY c.cluster""")
        return stats.to_arrow_table()

    def representatives(self, n: int = REPRESENTATIVES) -> pa.Table:
        """The `n` documents nearest each centroid: ids and the start of their text."""
        return self.con.sql(f"""
            WITH nearest AS (
                SELECT cluster, id, centroid_distance FROM assignments
                QUALIFY row_number() OVER (PARTITION BY cluster ORDER BY centroid_distance, id) <= {n})
            SELECT cluster, list(id ORDER BY centroid_distance, id) AS representative_ids,
                   list(left(d.text, {SNIPPET_CHARS}) ORDER BY centroid_distance, id) AS representative_texts
            FROM nearest JOIN docs d USING (id) GROUP BY cluster ORDER BY cluster""").to_arrow_table()

    def text_sample(self, per_cluster: int, max_chars: int) -> pa.Table:
        """Up to `per_cluster` documents' text per cluster (a fixed pseudo-random pick), for the terms."""
        return self.con.sql(f"""
            SELECT a.cluster, left(d.text, {max_chars}) AS text FROM assignments a JOIN docs d USING (id)
            QUALIFY row_number() OVER (PARTITION BY a.cluster ORDER BY hash(a.id)) <= {per_cluster}
            """).to_arrow_table()

    def sources(self, ids: Sequence[str]) -> dict[str, str]:
        """Source label of each id (for the map's hover)."""
        wanted = pa.table({"id": pa.array(list(ids), pa.string())})
        self.con.register("wanted", wanted)
        rows = self.con.sql(f"SELECT d.id, {self.source} FROM docs d SEMI JOIN wanted USING (id)").fetchall()
        self.con.unregister("wanted")
        return dict(rows)


def distinctive_terms(texts: Sequence[str], clusters: np.ndarray, n_clusters: int,
                      n_terms: int = 10) -> list[list[str]]:
    """The `n_terms` words that most distinguish each cluster, by class-based TF-IDF (Grootendorst 2022,
    BERTopic): a term's frequency in the cluster, L1-normalised, times log(1 + A / f_t), where A is the
    average number of words per cluster and f_t the term's frequency over all clusters."""
    empty: list[list[str]] = [[] for _ in range(n_clusters)]
    if not len(texts):
        return empty
    vectorizer = CountVectorizer(stop_words="english", token_pattern=TERM_PATTERN, max_features=100_000)
    try:
        counts = vectorizer.fit_transform(texts)
    except ValueError:  # nothing but stop words and numbers
        return empty
    onehot = sparse.csr_matrix((np.ones(len(clusters)), (clusters, np.arange(len(clusters)))),
                               shape=(n_clusters, len(clusters)))
    tf = (onehot @ counts).tocsr().astype(np.float64)
    words = np.asarray(tf.sum(axis=1)).ravel()
    term_totals = np.asarray(tf.sum(axis=0)).ravel()
    idf = np.log1p(words[words > 0].mean() / np.maximum(term_totals, 1))
    weights = (sparse.diags(1 / np.maximum(words, 1)) @ tf @ sparse.diags(idf)).tocsr().sorted_indices()
    vocabulary = vectorizer.get_feature_names_out()
    terms = []
    for row in weights:
        top = row.indices[np.argsort(-row.data, kind="stable")[:n_terms]]
        terms.append([str(vocabulary[i]) for i in top])
    return terms


def cluster_table(corpus: ClusterCorpus, model, statistics: pa.Table, *, n_terms: int = 10,
                  terms_docs_per_cluster: int = 100, terms_max_chars: int = 2000) -> pa.Table:
    """One row per k-means cluster: its super-cluster (null if pruned), statistics, c-TF-IDF terms and
    the documents nearest its centroid. `model` is a fitted, pruned and merged ClimbClustering."""
    n = model.n_clusters_
    sample = corpus.text_sample(terms_docs_per_cluster, terms_max_chars)
    terms = distinctive_terms(sample.column("text").to_pylist(), sample.column("cluster").to_numpy(), n, n_terms)
    nearest = corpus.representatives()
    ids: list[list[str]] = [[] for _ in range(n)]
    texts: list[list[str]] = [[] for _ in range(n)]
    for row in nearest.to_pylist():
        ids[row["cluster"]] = row["representative_ids"]
        texts[row["cluster"]] = row["representative_texts"]
    supers = model.super_cluster_
    head = {
        "cluster": pa.array(np.arange(n), pa.int32()),
        "super_cluster": pa.array(supers, pa.int32(), mask=supers < 0),
        "pruned": pa.array(supers < 0),
    }
    stats = {name: statistics.column(name) for name in statistics.column_names if name != "cluster"}
    tail = {
        "terms": pa.array(terms, pa.list_(pa.string())),
        "representative_ids": pa.array(ids, pa.list_(pa.string())),
        "representative_texts": pa.array(texts, pa.list_(pa.string())),
    }
    return pa.table({**head, **stats, **tail})


def centroid_table(model, sizes: np.ndarray) -> pa.Table:
    """The centroids in the clustering space (the embedding minus `mean_`, unit length), with the
    mean vector and merge height in the file's metadata so the space can be rebuilt."""
    supers = model.super_cluster_
    centers = np.ascontiguousarray(model.cluster_centers_, dtype=np.float32)
    table = pa.table({
        "cluster": pa.array(np.arange(model.n_clusters_), pa.int32()),
        "super_cluster": pa.array(supers, pa.int32(), mask=supers < 0),
        "size": pa.array(sizes, pa.int64()),
        "centroid": pa.FixedSizeListArray.from_arrays(pa.array(centers.reshape(-1)), centers.shape[1]),
    })
    metadata = {
        "space": "embedding - mean, then L2-normalised",
        "mean": ",".join(f"{v:.7g}" for v in model.mean_),
        "radius": f"{model.radius_:.7g}",
        "merge_height": f"{model.merge_height_:.7g}",
    }
    return table.replace_schema_metadata(metadata)
