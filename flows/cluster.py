"""The `cluster` flow (CLIMB): embed every document, fit k-means on a sample, assign every document,
prune clusters by quality, merge the rest into super-clusters, then write `cluster` and `super_cluster`
on the documents (stage `cluster`), the cluster table, the centroids and a 2-D map.

Outputs in the run directory:
    embeddings/part-<rank>.parquet        id, embedding (one file per document shard of the input stage)
    clusters/assignments/part-<rank>.parquet   id, cluster, centroid_distance
    clusters/model.joblib                 the fitted ClimbClustering (before pruning), reused on rerun
    clusters/clusters.parquet, centroids.parquet, projection.parquet, projection.html
    shards/cluster/, dropped/cluster/     the documents with their clusters; pruned clusters' documents

Resumable: embed, assign and cluster are Ray stages with per-shard completion records, and the fit is
saved; each keeps its work only while its fingerprint (inputs, settings, code) is unchanged, the engine's
one policy (flows.engine.start_stage): a rerun with other settings is refused naming what differs, and with
`restart` redoes only the stages it changes (a new merge distance: the labelling, not the embeddings).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from prefect import flow, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from clustering.climb import MERGE_DISTANCE, MERGE_UNITS, ClimbClustering, MergeUnits, default_n_clusters
from clustering.projection import project, projection_table, write_plot
from clustering.stages import AssignWorker, EmbedWorker, LabelWorker, assignment_path, embedding_path
from clustering.table import ClusterCorpus, centroid_table, cluster_table
from flows.engine import cluster_gpus, code_version, fingerprint, init_ray, record_stage, run_stage, start_stage
from operators.embed import EMBEDDING_COLUMN, Backend, VectorType, build_static_model, vectors
from storage.manifest import Manifest, describe, load_manifest, package_versions, save_manifest
from storage.shards import shard_digest, stage_files, write_table_atomic

EMBED_STAGE = "embed"
ASSIGN_STAGE = "assign"
STAGE = "cluster"
# The settings the k-means fit depends on (pruning and merging apply after it).
FIT_SETTINGS = {"n_clusters", "max_clusters", "fit_sample", "center", "seed"}


class EmbedConfig(BaseModel):
    """How documents become vectors (`embed:` section of the run config)."""

    model_config = ConfigDict(extra="forbid")

    backend: Backend = "model2vec"
    model: str | None = Field(None, description="model2vec: a model folder (default: the cached MiniLM "
                                                "distillation); sentence-transformers: a local path or hub "
                                                "name (default: the packaged all-MiniLM-L6-v2)")
    batch_size: int | None = Field(None, gt=0, description="encoder batch (default 1024 static, 32 CPU, 256 GPU)")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    fp16: bool = Field(False, description="sentence-transformers on CUDA: run the model in half precision")
    dtype: VectorType = Field("float32", description="stored vector type (float16 halves the size)")
    max_chars: int | None = Field(20_000, gt=0, description="text cut before encoding (the models read 256-512 "
                                                            "tokens anyway)")
    batch_rows: int = Field(10_000, gt=0, description="documents per encode call")


class ClusterConfig(BaseModel):
    """CLIMB clustering (`cluster:` section of the run config)."""

    model_config = ConfigDict(extra="forbid")

    input_stage: str | None = Field(None, description="document stage to cluster (default: the run's final "
                                                      "stage before clustering)")
    n_clusters: int | None = Field(None, ge=2, description="k (default sqrt(n/2), capped at max_clusters)")
    max_clusters: int = Field(1000, ge=2)
    fit_sample: int = Field(100_000, ge=2, description="documents k-means is fitted on")
    center: bool = True
    merge_units: MergeUnits = Field(MERGE_UNITS, description="normalised: merge_distance is the Ward height / "
                                    "(radius * sqrt(kept clusters)), steady across k and embedding models; "
                                    "euclidean: the Ward height on the centroids itself (CLIMB's recipe)")
    merge_distance: float | None = Field(None, gt=0, description="where the Ward tree is cut, in merge_units "
                                         f"(default: {MERGE_DISTANCE['normalised']:g} normalised, "
                                         f"{MERGE_DISTANCE['euclidean']:g} euclidean as the recipe's 3_prune.py)")
    n_super_clusters: int | None = Field(None, ge=1, description="cut into this many super-clusters instead")
    prune: dict[str, float] = Field(default_factory=dict, description="score column -> minimum cluster mean")
    source_field: str = Field("source", description="'source' (input file name), a column, or a metadata key")
    terms: int = Field(10, ge=1)
    terms_docs_per_cluster: int = Field(100, ge=1)
    projection: Literal["pca", "umap"] = "pca"
    projection_points: int = Field(20_000, ge=0)
    seed: int = 0

    def estimator(self, n_docs: int) -> ClimbClustering:
        """The estimator for a corpus of `n_docs` (k follows the corpus, not the sample k-means sees)."""
        k = self.n_clusters or default_n_clusters(n_docs, self.max_clusters)
        return ClimbClustering(k, max_clusters=self.max_clusters, fit_sample=self.fit_sample,
                               center=self.center, merge_units=self.merge_units, merge_distance=self.merge_distance,
                               n_super_clusters=self.n_super_clusters, prune_thresholds=self.prune,
                               random_state=self.seed)


def input_stage(config: ClusterConfig, manifest: Manifest) -> str:
    """The document stage to cluster: as configured, else the one a previous clustering used, else the
    run's final stage (never `cluster` itself)."""
    previous = manifest.config.get(STAGE, {}).get("input_stage")
    stage = config.input_stage or previous or manifest.final_stage
    if not stage or stage == STAGE:
        raise ValueError("cannot tell which document stage to cluster: set cluster.input_stage")
    return stage


def read_sample(files: list[Path], n: int, seed: int) -> tuple[list[str], np.ndarray]:
    """About `n` (id, vector) rows drawn uniformly from the embedding files, in file order."""
    total = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    fraction = min(1.0, n / max(total, 1))
    rng = np.random.default_rng(seed)
    ids: list[str] = []
    parts: list[np.ndarray] = []
    for path in files:
        table = pq.read_table(path)
        if fraction < 1.0:
            table = table.filter(pa.array(rng.random(table.num_rows) < fraction))
        ids.extend(table.column("id").to_pylist())
        parts.append(vectors(table.column(EMBEDDING_COLUMN)))
    return ids[:n], np.concatenate(parts)[:n]


@task(name="embed", retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def embed_stage(units: list[str], out_dir: Path, config: EmbedConfig, progress: bool) -> list[dict]:
    if config.backend == "model2vec" and not config.model:
        build_static_model()  # once here, not in every actor at once
    resources: dict = {"num_cpus": 1.0}
    gpus = cluster_gpus()
    if config.backend == "sentence-transformers" and config.device != "cpu" and gpus:
        resources = {"num_cpus": 1.0, "num_gpus": 1.0, "max_parallel": gpus}
    worker = partial(EmbedWorker, **config.model_dump())
    return run_stage(EMBED_STAGE, units, out_dir, worker, progress=progress, **resources)


@task(name="fit", cache_policy=NO_CACHE)
def fit_stage(files: list[Path], out_dir: Path, config: ClusterConfig, print_: str) -> ClimbClustering:
    """Fit k-means on a sample of the embeddings, or reuse the fit saved by an earlier run (kept only with
    the same fingerprint, checked before; with this run's pruning and merging settings: they apply after
    the fit)."""
    import joblib

    path = out_dir / "clusters" / "model.joblib"
    if path.exists():
        return joblib.load(path)["model"].set_params(merge_units=config.merge_units,
                                                     merge_distance=config.merge_distance,
                                                     n_super_clusters=config.n_super_clusters,
                                                     prune_thresholds=config.prune)
    _, sample = read_sample(files, config.fit_sample, config.seed)
    model = config.estimator(sum(pq.ParquetFile(f).metadata.num_rows for f in files)).fit(sample)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".tmp-{path.name}")
    joblib.dump({"fingerprint": print_, "model": model}, staging)
    staging.replace(path)
    return model


@task(name="assign", retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def assign_stage(files: list[str], out_dir: Path, model: ClimbClustering, progress: bool) -> list[dict]:
    return run_stage(ASSIGN_STAGE, files, out_dir, partial(AssignWorker, model), progress=progress)


@task(name="label", retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def label_stage(units: list[str], out_dir: Path, model: ClimbClustering, progress: bool) -> list[dict]:
    return run_stage(STAGE, units, out_dir, partial(LabelWorker, model), progress=progress)


@task(name="prune", cache_policy=NO_CACHE)
def prune_stage(corpus: ClusterCorpus, model: ClimbClustering, config: ClusterConfig, stage: str) -> pa.Table:
    """Per-cluster statistics over all documents; prune clusters by their mean scores, merge the rest."""
    scores = corpus.score_columns(list(config.prune))
    statistics = corpus.statistics(model.n_clusters_, scores)
    missing = sorted(set(config.prune) - set(scores))
    if missing:
        print(f"pruning by {', '.join(missing)} skipped: no such score column in stage '{stage}' yet")
    model.prune({column: statistics.column(f"mean_{column}").to_numpy(zero_copy_only=False) for column in scores})
    return statistics


@task(name="tables", cache_policy=NO_CACHE)
def table_stage(corpus: ClusterCorpus, model: ClimbClustering, statistics: pa.Table, config: ClusterConfig,
                out_dir: Path) -> pa.Table:
    """clusters/clusters.parquet (the cluster table) and clusters/centroids.parquet."""
    table = cluster_table(corpus, model, statistics, n_terms=config.terms,
                          terms_docs_per_cluster=config.terms_docs_per_cluster)
    write_table_atomic(table, out_dir / "clusters" / "clusters.parquet")
    write_table_atomic(centroid_table(model, statistics.column("size").to_numpy()),
                       out_dir / "clusters" / "centroids.parquet")
    return table


@task(name="map", cache_policy=NO_CACHE)
def map_stage(out_dir: Path, corpus: ClusterCorpus, model: ClimbClustering, config: ClusterConfig) -> Path:
    """Project a sample of documents to 2-D, save the points for the dashboard and an HTML plot."""
    files = sorted((out_dir / "embeddings").glob("part-*.parquet"))
    ids, sample = read_sample(files, config.projection_points, config.seed + 1)
    labels, _ = model.assign(sample)
    xy = project(model.to_cluster_space(sample), config.projection, config.seed)
    sources = corpus.sources(ids)
    table = projection_table(ids, xy, labels, model.super_cluster_[labels], [sources.get(i) for i in ids])
    write_table_atomic(table, out_dir / "clusters" / "projection.parquet")
    title = f"{len(ids):,} documents, {model.n_clusters_} clusters, {model.n_super_clusters_} super-clusters"
    return write_plot(table, out_dir / "clusters" / "projection.html", title)


@flow(name="cluster", log_prints=True)
def cluster(out: str, config: ClusterConfig | None = None, embed: EmbedConfig | None = None,
            ray_address: str | None = None, progress: bool = True, restart: bool = False) -> dict:
    """Embed, fit, assign, prune, merge and label the documents of a run; write the cluster table and map.
    A rerun with other settings or inputs is refused (RunMismatch) unless `restart`."""
    config = config or ClusterConfig()
    embed = embed or EmbedConfig()
    out_dir = Path(out).resolve()
    manifest = load_manifest(out_dir)
    if manifest is None:
        raise FileNotFoundError(f"no run at {out_dir} (manifest.json missing): run `mixforge ingest` first")
    stage = input_stage(config, manifest)
    units = [str(p) for p in stage_files(out_dir, "shards", stage)]
    if not units:
        raise ValueError(f"stage '{stage}' of {out_dir} has no document shards to cluster")
    manifest.config[STAGE] = {**config.model_dump(), "input_stage": stage}
    manifest.config[EMBED_STAGE] = embed.model_dump()
    manifest.versions = package_versions()
    save_manifest(manifest, out_dir)
    init_ray(ray_address)

    # Each stage's fingerprint covers everything upstream, so a change redoes exactly what it affects.
    embed_parts = {"inputs": [shard_digest(u) for u in units], "stage": stage, "config": embed.model_dump(),
                   "code": code_version("operators.embed", "clustering.stages")}
    start_stage(out_dir, EMBED_STAGE, embed_parts, [out_dir / "embeddings"], restart)
    embedding_files = [str(embedding_path(out_dir, rank)) for rank in range(len(units))]
    record_stage(manifest, EMBED_STAGE, units, embed_stage(units, out_dir, embed, progress))
    save_manifest(manifest, out_dir)

    fit_parts = {"upstream": fingerprint(embed_parts), "config": config.model_dump(include=FIT_SETTINGS),
                 "code": code_version("clustering.climb")}
    start_stage(out_dir, "fit", fit_parts, [out_dir / "clusters" / "model.joblib"], restart)
    fit_print = fingerprint(fit_parts)
    model = fit_stage([Path(f) for f in embedding_files], out_dir, config, fit_print)
    start_stage(out_dir, ASSIGN_STAGE, {"upstream": fit_print}, [out_dir / "clusters" / "assignments"], restart)
    records = assign_stage(embedding_files, out_dir, model, progress)
    record_stage(manifest, ASSIGN_STAGE, embedding_files, records)

    assignment_files = [assignment_path(out_dir, rank) for rank in range(len(units))]
    with ClusterCorpus([Path(u) for u in units], assignment_files, config.source_field) as corpus:
        statistics = prune_stage(corpus, model, config, stage)
        settings = {"prune": config.prune, "merge_units": config.merge_units, "merge_distance": config.merge_distance,
                    "n_super_clusters": config.n_super_clusters}
        start_stage(out_dir, STAGE, {"upstream": fit_print, "config": settings,
                                     "merge": model.super_cluster_.tolist()}, [], restart)
        record_stage(manifest, STAGE, units, label_stage(units, out_dir, model, progress))
        table = table_stage(corpus, model, statistics, config, out_dir)
        plot = map_stage(out_dir, corpus, model, config)
    manifest.final_stage = STAGE
    save_manifest(manifest, out_dir)

    summary = summarize(table, model)
    create_markdown_artifact(markdown=summary + f"\n\n```\n{describe(manifest)}\n```", key="cluster-summary",
                             description="CLIMB clustering")
    create_link_artifact(link=plot.as_uri(), link_text="2-D map of the corpus (plotly)", key="cluster-map")
    print(summary)
    sizes = statistics.column("size").to_numpy()
    return {
        "documents": int(sizes.sum()),
        "clusters": model.n_clusters_,
        "kept_clusters": int(model.kept_.sum()),
        "super_clusters": model.n_super_clusters_,
        "pruned_documents": int(sizes[~model.kept_].sum()),
    }


def summarize(table: pa.Table, model: ClimbClustering) -> str:
    """The super-clusters as a Markdown table: clusters, documents, tokens, main source, top terms."""
    rows = [row for row in table.to_pylist() if row["super_cluster"] is not None]
    lines = [f"**{model.n_clusters_} clusters** ({int((~model.kept_).sum())} pruned) merged into "
             f"**{model.n_super_clusters_} super-clusters** (Ward cut at {model.merge_height_:.3f}).", "",
             "| super-cluster | clusters | documents | tokens | main source | terms |", "|---|---|---|---|---|---|"]
    for super_cluster in range(model.n_super_clusters_):
        members = sorted((r for r in rows if r["super_cluster"] == super_cluster), key=lambda r: -r["size"])
        size = sum(r["size"] for r in members)
        tokens = sum(r["tokens"] for r in members)
        terms = ", ".join(dict.fromkeys(t for r in members[:3] for t in r["terms"][:4]))
        main = members[0]["top_source"] if members else ""
        lines.append(f"| {super_cluster} | {len(members)} | {size:,} | {tokens:,} | {main} | {terms} |")
    return "\n".join(lines)
