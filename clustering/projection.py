"""The 2-D map of the corpus for the dashboard: documents projected from the clustering space.

PCA by default (seconds, deterministic, and the axes mean something); UMAP when asked and installed
(`umap-learn`), which separates clusters better on the page but takes minutes on 100k points.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa

Method = Literal["pca", "umap"]


def project(points: np.ndarray, method: Method = "pca", random_state: int = 0) -> np.ndarray:
    """(n, 2) coordinates of `points` (already in the clustering space: centred, unit length)."""
    if len(points) < 3:
        return np.zeros((len(points), 2), dtype=np.float32)
    if method == "umap":
        try:
            import umap
        except ImportError as error:
            raise ValueError("projection 'umap' needs umap-learn installed; use 'pca'") from error
        return umap.UMAP(n_components=2, random_state=random_state).fit_transform(points).astype(np.float32)
    from sklearn.decomposition import PCA

    return PCA(n_components=2, random_state=random_state).fit_transform(points).astype(np.float32)


def projection_table(ids: list[str], xy: np.ndarray, cluster: np.ndarray, super_cluster: np.ndarray,
                     source: list[str | None]) -> pa.Table:
    """One row per mapped document: id, x, y, cluster, super_cluster (null if pruned), source."""
    super_cluster = np.asarray(super_cluster)
    return pa.table({
        "id": pa.array(ids, pa.string()),
        "x": pa.array(xy[:, 0], pa.float32()),
        "y": pa.array(xy[:, 1], pa.float32()),
        "cluster": pa.array(cluster, pa.int32()),
        "super_cluster": pa.array(super_cluster, pa.int32(), mask=super_cluster < 0),
        "source": pa.array(source, pa.string()),
    })


def write_plot(table: pa.Table, path: Path, title: str) -> Path:
    """An interactive scatter of the map, coloured by super-cluster (plotly HTML; plotly.js is written
    once beside it, so the page works offline)."""
    import plotly.express as px

    frame = table.to_pandas()
    frame["super_cluster"] = frame["super_cluster"].map(lambda s: "pruned" if s != s else f"super {int(s)}")
    figure = px.scatter(frame, x="x", y="y", color="super_cluster", hover_data=["id", "cluster", "source"],
                        title=title, render_mode="webgl", opacity=0.7)
    figure.update_traces(marker={"size": 4})
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.write_html(str(path), include_plotlyjs="directory")
    return path
