"""Clusters page: the 2-D map of the corpus, the cluster table, representative documents, and how
clusters merge into super-clusters. Reads what the `cluster` flow writes under `<run>/clusters/`."""

from __future__ import annotations

import numbers
from pathlib import Path

import pandas as pd
import plotly.express as px
import pyarrow.parquet as pq
import streamlit as st

from dashboards.run import columns, run_sql, view_names
from storage.catalog import QueryRefused

PROJECTION = Path("clusters") / "projection.parquet"
MAX_POINTS = 50_000
SIZE_COLUMNS = ("tokens", "size", "docs", "n_docs")
TEXT_CHARS = 1200


def render(run_dir: Path) -> None:
    st.title("Clusters")
    try:
        views = view_names(run_dir)
    except QueryRefused as error:
        st.error(f"Could not open the run: {error}")
        return
    projection = run_dir / PROJECTION
    if "clusters" not in views and not projection.exists():
        st.info("This run has no clusters yet: the `cluster` flow (`mixforge cluster CONFIG.yaml --out RUN`) "
                "writes them under clusters/.")
        return
    try:
        if projection.exists():
            show_map(projection)
        if "clusters" in views:
            show_table(run_dir)
    except (QueryRefused, OSError, ValueError) as error:
        st.error(f"Could not read the clusters: {error}")


def super_label(value) -> str:
    """A super-cluster id for legends; null means the cluster was pruned (CLIMB's quality pruning)."""
    return "pruned" if pd.isna(value) else f"super {int(value)}"


def show_map(projection: Path) -> None:
    st.subheader("Map")
    frame = pq.read_table(projection).to_pandas()
    if not {"x", "y"} <= set(frame.columns):
        st.warning(f"{PROJECTION} has no x and y columns (found {', '.join(frame.columns)}).")
        return
    if len(frame) > MAX_POINTS:
        st.caption(f"Showing {MAX_POINTS:,} of {len(frame):,} mapped documents, drawn at random.")
        frame = frame.sample(MAX_POINTS, random_state=0)
    colour_by = [c for c in ("super_cluster", "cluster") if c in frame.columns]
    colour = st.radio("Colour by", colour_by, horizontal=True, key="clusters_colour") if colour_by else None
    if colour == "super_cluster":
        frame[colour] = frame[colour].map(super_label)
    elif colour:
        frame[colour] = frame[colour].astype(str)
    hover = [c for c in ("id", "cluster", "super_cluster", "source") if c in frame.columns]
    figure = px.scatter(frame, x="x", y="y", color=colour, hover_data=hover, render_mode="webgl", opacity=0.7,
                        category_orders={colour: sorted(frame[colour].unique(), key=natural)} if colour else None)
    figure.update_traces(marker={"size": 4})
    figure.update_layout(height=560, margin={"t": 10}, legend_title_text=colour or "")
    st.plotly_chart(figure)


def natural(label: str) -> tuple:
    """Sort "super 2" before "super 10" and "pruned" last."""
    head, _, number = label.rpartition(" ")
    return (label == "pruned", head, int(number) if number.isdigit() else 0, label)


def show_table(run_dir: Path) -> None:
    table = run_sql(run_dir, "SELECT * FROM clusters ORDER BY 1").to_pandas()
    st.subheader(f"Cluster table ({len(table):,} clusters)")
    listed = [c for c in table.columns if c.startswith("representative_")]
    st.dataframe(table.drop(columns=listed), hide_index=True)
    size = next((c for c in SIZE_COLUMNS if c in table.columns), None)
    if "super_cluster" in table.columns and "cluster" in table.columns:
        st.subheader("Clusters in super-clusters")
        merged = table.assign(super_cluster=table["super_cluster"].map(super_label),
                              cluster=table["cluster"].astype(str).radd("cluster "))
        figure = px.treemap(merged, path=["super_cluster", "cluster"], values=size)
        figure.update_layout(height=480, margin={"t": 10, "l": 0, "r": 0, "b": 0})
        st.plotly_chart(figure)
    if "cluster" in table.columns:
        show_representatives(run_dir, table)


def show_representatives(run_dir: Path, table: pd.DataFrame) -> None:
    """The documents nearest the chosen cluster's centroid, as the cluster table lists them (texts, or ids
    looked up in `docs`); without such a list, the cluster's first documents."""
    st.subheader("Representative documents")
    cluster = st.selectbox("Cluster", table["cluster"].tolist(), key="clusters_pick")
    row = table[table["cluster"] == cluster].iloc[0]
    if "terms" in table.columns and row["terms"] is not None and len(row["terms"]):
        st.markdown("Distinctive terms: " + ", ".join(f"`{term}`" for term in row["terms"]))
    if listed(row, "representative_texts") and listed(row, "representative_ids"):
        found = [{"id": i, "text": text} for i, text in zip(row["representative_ids"], row["representative_texts"],
                                                            strict=True)]
        st.caption("Nearest the centroid (from the cluster table).")
    else:
        found = documents_of(run_dir, row)
    if not found:
        st.info("No documents of this cluster found.")
    for doc in found:
        with st.container(border=True):
            st.caption(doc["id"])
            st.text((doc["text"] or "").strip())


def listed(row: pd.Series, column: str) -> bool:
    return column in row.index and row[column] is not None and len(row[column]) > 0


def documents_of(run_dir: Path, row: pd.Series) -> list[dict]:
    docs = columns(run_dir)
    if "text" not in docs:
        return []
    if listed(row, "representative_ids"):
        order = [str(i) for i in row["representative_ids"]]
        found = run_sql(run_dir, f"SELECT id, left(text, {TEXT_CHARS}) AS text FROM docs "
                                 f"WHERE id IN ({', '.join(quoted_value(i) for i in order)})").to_pylist()
        st.caption("Nearest the centroid (ids from the cluster table).")
        return sorted(found, key=lambda doc: order.index(doc["id"]))
    if "cluster" in docs:
        st.caption("The cluster table lists no representatives: the cluster's first documents.")
        return run_sql(run_dir, f"SELECT id, left(text, {TEXT_CHARS}) AS text FROM docs "
                                f"WHERE cluster = {quoted_value(row['cluster'])}", limit=3).to_pylist()
    return []


def quoted_value(value) -> str:
    return str(int(value)) if isinstance(value, numbers.Integral) else "'" + str(value).replace("'", "''") + "'"
