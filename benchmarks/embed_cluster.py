"""Embedding and CLIMB clustering against the libraries they wrap, measured in the same run.

1. Embedding docs/s: our Ray stage (actors holding the model, reading document shards, writing
   embedding Parquet) against calling the encoder directly on the same texts in this process:
   model2vec (`StaticModel.encode`, its own thread pool on all cores) and, on a subset,
   sentence-transformers (`SentenceTransformer.encode`). The ratio is the stage's speed over the raw
   encoder's. For model2vec our actors pool token vectors with a sparse product (operators/embed.py)
   rather than `StaticModel.encode`'s float16 buckets, so a second line compares the stage with that
   same encoder called in this process: that ratio is what Ray itself costs.
2. k-means at 10k and 100k documents: our fit (ClimbClustering: sample, k-means, merge) against
   scikit-learn's KMeans with the same k and n_init on the same vectors, with the k-means objective
   of each on all documents; then assignment of every document by our Ray stage against
   `KMeans.predict`.

Texts are the sample corpus's documents (`make sample`), repeated to the size asked for; the 100k
vectors are the real embeddings repeated with a little Gaussian jitter (then renormalised).

Each timing is the best of `--repeats` runs (raw and Ray interleaved), as the machine may be shared.

    python benchmarks/embed_cluster.py            # quick (default): 10k docs embedded, k-means at 10k
    python benchmarks/embed_cluster.py --full     # 60k docs embedded, k-means at 10k and 100k
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from clustering.climb import ClimbClustering, default_n_clusters
from clustering.stages import AssignWorker, EmbedWorker
from flows.cluster import EmbedConfig
from flows.engine import init_ray, run_stage
from operators.embed import EMBEDDING_COLUMN, StaticEncoder, build_static_model, minilm_path, vector_array

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "data" / "sample"
SHARDS = 8


def sample_texts(n: int) -> list[str]:
    """`n` real documents: the sample corpus's documents files, cycled."""
    texts: list[str] = []
    for path in sorted((SAMPLE / "docs").iterdir()):
        if path.suffix == ".parquet":
            texts += pq.read_table(path, columns=["text"]).column("text").to_pylist()
        else:
            texts += pd.read_json(path, lines=True, dtype=False).text.tolist()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(texts))
    return [texts[order[i % len(texts)]] for i in range(n)]


def write_units(work: Path, name: str, table: pa.Table) -> list[str]:
    """The table cut into SHARDS Parquet files: the units a stage runs over."""
    folder = work / name
    folder.mkdir(parents=True)
    step = -(-table.num_rows // SHARDS)
    paths = []
    for rank, start in enumerate(range(0, table.num_rows, step)):
        paths.append(str(folder / f"part-{rank:05d}.parquet"))
        pq.write_table(table.slice(start, step), paths[-1])
    return paths


def stage(name: str, units: list[str], out: Path, worker) -> list[dict]:
    """A Ray stage as the cluster flow runs it: one actor per CPU, all started at once."""
    return run_stage(name, units, out, worker, progress=False)


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def embed_benchmark(work: Path, texts: list[str], config: EmbedConfig, raw_encode, repeats: int,
                    label: str | None = None) -> np.ndarray:
    """Print docs/s of the Ray stage and of `raw_encode(texts)`; return the raw vectors.

    The stage's fixed cost (starting actors, importing and loading the model) is measured on its own,
    as the same stage over one-document shards, so the steady rate a large corpus sees is shown too.
    """
    label = label or config.backend
    docs = pa.table({"id": [f"d{i}" for i in range(len(texts))], "text": texts})
    units = write_units(work / label, "docs", docs)
    tiny = [write_units(work / label, f"tiny-{i}", docs.slice(i, 1))[0] for i in range(2)]
    worker = partial(EmbedWorker, **config.model_dump())
    raw_times, ray_times, fixed_times = [], [], []
    for attempt in range(repeats):
        raw, seconds = timed(lambda: raw_encode(texts))
        raw_times.append(seconds)
        out = work / label / f"run-{attempt}"
        ray_times.append(timed(lambda: stage("embed", units, out, worker))[1])  # noqa: B023
        assert pq.read_table(sorted((out / "embeddings").glob("*.parquet"))).num_rows == len(texts)
        fixed_out = work / label / f"fixed-{attempt}"
        fixed_times.append(timed(lambda: stage("embed", tiny, fixed_out, worker))[1])  # noqa: B023
    n = len(texts)
    raw_rate, ray_rate = n / min(raw_times), n / min(ray_times)
    fixed = min(fixed_times)
    steady = "start-up dominates; use --full"
    if fixed < min(ray_times) / 2:  # else the difference is mostly the start-up's own variance
        steady_rate = n / (min(ray_times) - fixed)
        steady = f"{steady_rate:7,.0f} docs/s, ratio {steady_rate / raw_rate:.2f}"
    print(f"embed {label:21s} {n:>6,} docs: raw encoder {raw_rate:7,.0f} docs/s | Ray stage "
          f"{ray_rate:7,.0f} docs/s, ratio {ray_rate / raw_rate:.2f} | without its {fixed:.1f} s start-up {steady}")
    return raw


def on_all_cores(encode, chunk: int = 1024):
    """`encode` over chunks of the texts in one thread per core, as `StaticModel.encode` runs its own
    batches (the tokenizer and the sparse product release the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    def encode_all(texts: list[str]) -> np.ndarray:
        with ThreadPoolExecutor(os.cpu_count()) as pool:
            return np.concatenate(list(pool.map(encode, [texts[i:i + chunk] for i in range(0, len(texts), chunk)])))

    return encode_all


def kmeans_benchmark(work: Path, X: np.ndarray) -> None:
    """Our fit and Ray assignment against sklearn KMeans (same k, same n_init) on the same vectors."""
    from sklearn.cluster import KMeans

    n = len(X)
    ours, fit_seconds = timed(lambda: ClimbClustering(random_state=0).fit(X))
    k = ours.n_clusters_
    points = ours.to_cluster_space(X)
    reference, ref_seconds = timed(lambda: KMeans(k, n_init=ours.n_init_, random_state=0).fit(points))
    ours_objective = float(np.mean(ours.assign(X)[1] ** 2))
    ref_objective = float(reference.inertia_ / n)
    print(f"fit    {n:>7,} docs, k={k:<4} ours {fit_seconds:6.1f} s   sklearn KMeans {ref_seconds:6.1f} s   "
          f"speed-up {ref_seconds / fit_seconds:.2f}x   objective ours/sklearn {ours_objective / ref_objective:.3f}")

    table = pa.table({"id": [f"d{i}" for i in range(n)], EMBEDDING_COLUMN: vector_array(X)})
    units = write_units(work / f"assign-{n}", "embeddings", table)
    out = work / f"assign-{n}" / "run"
    _, ray_seconds = timed(lambda: stage("assign", units, out, partial(AssignWorker, ours)))
    _, local_seconds = timed(lambda: ours.assign(X))
    _, predict_seconds = timed(lambda: reference.predict(points))
    print(f"assign {n:>7,} docs        Ray stage {ray_seconds:6.2f} s ({n / ray_seconds:9,.0f} docs/s)   "
          f"in-process {local_seconds:5.2f} s   sklearn predict {predict_seconds:5.2f} s   "
          f"ratio Ray/predict {predict_seconds / ray_seconds:.2f}")


def jittered(X: np.ndarray, n: int, scale: float = 0.02) -> np.ndarray:
    rng = np.random.default_rng(1)
    rows = X[np.arange(n) % len(X)] + rng.normal(0, scale, (n, X.shape[1])).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="more documents, steadier numbers")
    parser.add_argument("--quick", action="store_true", help="the default; kept for `make bench`")
    parser.add_argument("--repeats", type=int, default=None, help="runs per timing, the best counts "
                        "(default 1, --full 2)")
    args = parser.parse_args()
    n_static, n_transformer = (60_000, 512) if args.full else (10_000, 32)
    kmeans_sizes = (10_000, 100_000) if args.full else (10_000,)
    repeats = args.repeats or (2 if args.full else 1)
    if not (SAMPLE / "MANIFEST.json").exists():
        raise SystemExit(f"the sample corpus is missing at {SAMPLE}: run `make sample` first")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    init_ray(num_cpus=os.cpu_count())
    from model2vec import StaticModel
    from sentence_transformers import SentenceTransformer

    static = StaticModel.from_pretrained(str(build_static_model()), normalize=True)
    transformer = SentenceTransformer(str(minilm_path()), device="cpu")
    texts = sample_texts(n_static)
    print(f"{os.cpu_count()} CPUs; texts from {SAMPLE}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        # The raw encoders as a user would call them (model2vec: its own process pool above 10k texts).
        X = embed_benchmark(work, texts, EmbedConfig(), static.encode, repeats)
        embed_benchmark(work, texts, EmbedConfig(), on_all_cores(StaticEncoder().encode), repeats,
                        label="model2vec-ours")
        embed_benchmark(work, [t[:20_000] for t in texts[:n_transformer]],
                        EmbedConfig(backend="sentence-transformers", device="cpu"),
                        lambda t: transformer.encode(t, batch_size=32, normalize_embeddings=True), repeats)
        X = X.astype(np.float32)
        for n in kmeans_sizes:
            kmeans_benchmark(work, X[:n] if n <= len(X) else jittered(X, n))
    print(f"(k = sqrt(n/2): {default_n_clusters(10_000)} at 10k, {default_n_clusters(100_000)} at 100k; our fit: "
          "full k-means up to 50k sampled rows, mini-batch above; 3 restarts up to 20k rows, 1 above; --full "
          "adds 100k)")


if __name__ == "__main__":
    main()
