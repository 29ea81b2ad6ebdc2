"""CLIMB's clustering step (Diao et al. 2025; NeMo-Curator nemotron-climb-data-curation) as an estimator.

k-means on L2-normalised embeddings, fitted on a sample; clusters whose mean quality scores fall under
thresholds are pruned; the kept centroids are merged bottom-up into super-clusters by Ward linkage, as
the recipe's `3_prune.py` does (`fcluster(linkage(centroids[kept], "ward"), t=1.5, "distance")`).

- Centring. Sentence embeddings, static ones most of all, share a common direction, which compresses
  every cosine distance ("all-but-the-top", Mu & Viswanath 2018). We subtract the fit sample's mean
  before normalising (`mean_`; `center=False` is the recipe). On the sample corpus this lifted
  super-cluster purity at 6-8 super-clusters from 0.78 to 0.83-0.85.
- The merge threshold's unit (`merge_units`). "euclidean" is the recipe's: `merge_distance` is the Ward
  height the tree is cut at, 1.5 by default, the tutorial's. Ward heights grow with the spread of the
  embedding model and, near the top of the tree, as sqrt(number of centroids), so a height chosen for
  ~1,000 stella-400M centroids does not carry to another model or k. "normalised", our default, divides
  the cut height by `radius_ * sqrt(kept clusters)`, where `radius_` is the RMS document-to-centroid
  distance: a dimensionless threshold. On the sample corpus's English documents (3,304, five sources;
  model2vec vectors, centred), the recipe's 1.5 gave 2 super-clusters at the default k = 41 (fortunes
  against all the manuals, source purity 0.78), 5 at k = 80 and 10 at k = 160; normalised 0.16 gave
  8-9 at every k from 20 to 160 (purity 0.79-0.84).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.utils.validation import check_array, check_is_fitted

# Above this many sample rows, k-means runs on mini-batches (sklearn's full Lloyd is O(n k d) per pass).
FULL_KMEANS_MAX_ROWS = 50_000
# n_init="auto": 3 restarts up to this many sample rows (cheap, and steadier super-clusters on small
# corpora: source purity 0.83-0.86 over six seeds against 0.80-0.86 with one), 1 above.
RESTARTS_MAX_ROWS = 20_000
# Rows per block when assigning, so the (rows x clusters) score matrix stays small.
ASSIGN_BLOCK_ROWS = 32_768
MergeUnits = Literal["euclidean", "normalised"]
# The default cut of each unit: the recipe's Ward height (3_prune.py --merge-threshold 1.5), and ours.
MERGE_DISTANCE: dict[str, float] = {"euclidean": 1.5, "normalised": 0.16}
MERGE_UNITS: MergeUnits = "normalised"  # see the module docstring


def default_n_clusters(n_docs: int, max_clusters: int = 1000) -> int:
    """sqrt(n/2), the textbook rule of thumb, capped (CLIMB used 1,000 clusters for its corpora)."""
    return int(min(max(2, round(math.sqrt(n_docs / 2))), max_clusters, max(n_docs, 1)))


class ClimbClustering(ClusterMixin, BaseEstimator):
    """k-means -> prune -> merge. `merge_distance` is in `merge_units` (None: that unit's default, see
    MERGE_DISTANCE). Learned: `mean_`, `cluster_centers_`, `radius_`, `kept_`, `super_cluster_` (per
    cluster; -1 = pruned), `n_super_clusters_`, `linkage_`, `merge_height_` (the cut, in Ward heights)."""

    def __init__(self, n_clusters: int | None = None, *, max_clusters: int = 1000, fit_sample: int = 100_000,
                 center: bool = True, merge_units: MergeUnits = MERGE_UNITS, merge_distance: float | None = None,
                 n_super_clusters: int | None = None,
                 prune_thresholds: Mapping[str, float] | None = None, n_init: int | Literal["auto"] = "auto",
                 random_state: int | None = 0) -> None:
        self.n_clusters = n_clusters
        self.max_clusters = max_clusters
        self.fit_sample = fit_sample
        self.center = center
        self.merge_units = merge_units
        self.merge_distance = merge_distance
        self.n_super_clusters = n_super_clusters
        self.prune_thresholds = prune_thresholds
        self.n_init = n_init
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: None = None) -> ClimbClustering:
        """Fit k-means on (a sample of) X and merge all clusters into super-clusters (nothing pruned yet)."""
        X = check_array(X, dtype=np.float32)
        if len(X) < 2:
            raise ValueError(f"need at least 2 documents to cluster, got {len(X)}")
        sample = X
        if len(X) > self.fit_sample:
            rng = np.random.default_rng(self.random_state)
            sample = X[np.sort(rng.choice(len(X), self.fit_sample, replace=False))]
        k = self.n_clusters or default_n_clusters(len(X), self.max_clusters)
        k = min(k, len(sample))
        self.mean_ = sample.mean(axis=0) if self.center else np.zeros(X.shape[1], dtype=np.float32)
        points = self.to_cluster_space(sample)
        self.n_init_ = self.n_init if self.n_init != "auto" else (3 if len(points) <= RESTARTS_MAX_ROWS else 1)
        if len(points) <= FULL_KMEANS_MAX_ROWS:
            kmeans = KMeans(k, n_init=self.n_init_, random_state=self.random_state)
        else:
            kmeans = MiniBatchKMeans(k, n_init=self.n_init_, batch_size=4096, random_state=self.random_state)
        kmeans.fit(points)
        self.cluster_centers_ = kmeans.cluster_centers_.astype(np.float32)
        self.n_clusters_ = k
        _, distances = self._nearest(points)
        self.radius_ = float(np.sqrt(np.mean(distances**2)))
        self.kept_ = np.ones(k, dtype=bool)
        self.labels_ = self.predict(X)
        return self._merge()

    def to_cluster_space(self, X: np.ndarray) -> np.ndarray:
        """Centre (on the fit sample's mean) and L2-normalise: the space the centroids live in."""
        points = np.asarray(X, dtype=np.float32) - self.mean_
        norms = np.linalg.norm(points, axis=1, keepdims=True)
        return points / np.maximum(norms, 1e-12)

    def assign(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(nearest cluster, Euclidean distance to its centroid) of each row, in the clustering space."""
        check_is_fitted(self, "cluster_centers_")
        labels = np.empty(len(X), dtype=np.int32)
        distances = np.empty(len(X), dtype=np.float32)
        for start in range(0, len(X), ASSIGN_BLOCK_ROWS):
            block = slice(start, start + ASSIGN_BLOCK_ROWS)
            labels[block], distances[block] = self._nearest(self.to_cluster_space(X[block]))
        return labels, distances

    def _nearest(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Nearest centroid: argmax of x.c - |c|^2/2 (|x - c|^2 = |x|^2 - 2 x.c + |c|^2), one matrix product."""
        half_norms = 0.5 * np.einsum("ij,ij->i", self.cluster_centers_, self.cluster_centers_)
        scores = points @ self.cluster_centers_.T - half_norms
        labels = scores.argmax(axis=1)
        squared = np.einsum("ij,ij->i", points, points) - 2.0 * scores[np.arange(len(points)), labels]
        return labels, np.sqrt(np.maximum(squared, 0.0))

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.assign(X)[0]

    def predict_super(self, X: np.ndarray) -> np.ndarray:
        """Super-cluster of each row (-1 where its cluster was pruned)."""
        return self.super_cluster_[self.predict(X)]

    def prune(self, cluster_means: Mapping[str, np.ndarray]) -> ClimbClustering:
        """Drop clusters whose mean of a score column is under its threshold, then merge again.

        `cluster_means[column][c]` is cluster c's mean score. Thresholds for columns not given (no
        scores yet) are ignored, so pruning is off until a scoring stage has run; a NaN mean (no scored
        document in the cluster) keeps the cluster.
        """
        check_is_fitted(self, "cluster_centers_")
        kept = np.ones(self.n_clusters_, dtype=bool)
        self.prune_columns_ = []
        for column, threshold in (self.prune_thresholds or {}).items():
            if column not in cluster_means:
                continue
            means = np.asarray(cluster_means[column], dtype=np.float64)
            kept &= ~(means < threshold)
            self.prune_columns_.append(column)
        self.kept_ = kept
        return self._merge()

    def _merge(self) -> ClimbClustering:
        """Ward linkage over the kept centroids, cut at `merge_distance` (or into `n_super_clusters`)."""
        if self.merge_units not in MERGE_DISTANCE:
            raise ValueError(f"merge_units must be one of {', '.join(MERGE_DISTANCE)}, got '{self.merge_units}'")
        kept = np.flatnonzero(self.kept_)
        self.super_cluster_ = np.full(self.n_clusters_, -1, dtype=np.int64)
        distance = MERGE_DISTANCE[self.merge_units] if self.merge_distance is None else self.merge_distance
        scale = self.radius_ * math.sqrt(max(len(kept), 1)) if self.merge_units == "normalised" else 1.0
        self.merge_height_ = distance * scale
        self.linkage_ = np.zeros((0, 4))
        if len(kept) == 1:
            self.super_cluster_[kept] = 0
        elif len(kept) > 1:
            self.linkage_ = linkage(self.cluster_centers_[kept].astype(np.float64), method="ward")
            if self.n_super_clusters:
                groups = fcluster(self.linkage_, t=min(self.n_super_clusters, len(kept)), criterion="maxclust")
            else:
                groups = fcluster(self.linkage_, t=self.merge_height_, criterion="distance")
            # Number super-clusters in the order of their first member cluster, so ids are stable.
            _, first = np.unique(groups, return_index=True)
            order = {group: rank for rank, group in enumerate(groups[np.sort(first)])}
            self.super_cluster_[kept] = [order[g] for g in groups]
        self.n_super_clusters_ = int(self.super_cluster_.max() + 1) if len(kept) else 0
        return self
