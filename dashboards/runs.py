"""Runs page: what the run did (manifest), where documents went (funnel per stage), what it holds
(tokens per domain or cluster), the mixture its experiment found, and what could not be read (quarantine)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from dashboards.run import columns, quoted, run_sql, view_names
from storage.catalog import QueryRefused
from storage.manifest import Manifest, StageRecord, describe, load_manifest

GROUP_COLUMNS = ("domain", "super_cluster", "cluster", "lang", "source")
QUARANTINE_ROWS = 500


def render(run_dir: Path) -> None:
    st.title("Run")
    manifest = load_manifest(run_dir)
    if manifest is None:
        st.warning(f"No manifest.json in {run_dir}: this does not look like a mixforge run.")
    else:
        show_manifest(manifest)
        show_funnel(manifest)
        show_best_mixture(manifest)
    try:
        show_tokens(run_dir)
        show_quarantine(run_dir)
    except QueryRefused as error:
        st.error(f"Could not read the run's shards: {error}")


def show_manifest(manifest: Manifest) -> None:
    cols = st.columns(4)
    cols[0].metric("Run", manifest.run_id)
    cols[1].metric("Inputs", f"{len(manifest.inputs):,}")
    cols[2].metric("Stages", f"{len(manifest.stages):,}")
    cols[3].metric("Final stage", manifest.final_stage or "-")
    st.text(describe(manifest))
    with st.expander("Inputs, config and versions"):
        if manifest.inputs:
            st.dataframe(pd.DataFrame([f.model_dump() for f in manifest.inputs]), hide_index=True)
        st.json(manifest.config, expanded=False)
        st.json(manifest.versions, expanded=False)


def in_pipeline_order(manifest: Manifest) -> list[StageRecord]:
    """Stages by start time; a stage that sees more documents comes first when starts tie (the manifest's
    JSON does not keep the order stages ran in)."""
    return sorted(manifest.stages.values(), key=lambda r: (r.started or "", -r.counts.get("docs_in", 0)))


def funnel_table(manifest: Manifest) -> pd.DataFrame:
    """One row per stage: documents in and out, drops by reason, quarantined, tokens kept."""
    rows = []
    for record in in_pipeline_order(manifest):
        c = record.counts
        row = {"stage": record.name, "status": record.status, "docs_in": c.get("docs_in", 0),
               "docs_out": c.get("docs_out", 0), "quarantined": c.get("quarantined", 0),
               "tokens_out": c.get("tokens_out", 0), "seconds": record.seconds}
        row.update({f"dropped: {reason}": n for reason, n in c.get("dropped", {}).items()})
        rows.append(row)
    return pd.DataFrame(rows).fillna(0)


def show_funnel(manifest: Manifest) -> None:
    st.subheader("Funnel")
    if not manifest.stages:
        st.info("The manifest records no stages yet.")
        return
    table = funnel_table(manifest)
    labels = ["read"] + table["stage"].tolist()
    counts = [int(table["docs_in"].iloc[0])] + table["docs_out"].astype(int).tolist()
    figure = go.Figure(go.Funnel(y=labels, x=counts, textinfo="value+percent initial"))
    figure.update_layout(height=120 + 60 * len(labels), margin={"t": 10, "b": 10})
    st.plotly_chart(figure)
    st.dataframe(table, hide_index=True)


def show_best_mixture(manifest: Manifest) -> None:
    """The best mixture the pipeline's mixture experiment found (the RegMix page refits and relaunches)."""
    mixture = manifest.config.get("mixture") or {}
    if not mixture.get("best"):
        return
    st.subheader("Best mixture")
    by = (manifest.config.get("pipeline") or {}).get("mixture", {}).get("by", "domain")
    predicted = ", ".join(f"{t} {v:.4f}" for t, v in (mixture.get("predicted") or {}).items())
    st.caption(f"Weights over `{by}` that the experiment predicts minimise the loss on {', '.join(mixture['targets'])}"
               f" (predicted: {predicted}); files in mixtures/, details on the RegMix page.")
    weights = pd.Series(mixture["best"], name="weight").sort_values(ascending=False)
    figure = go.Figure(go.Bar(x=[str(d) for d in weights.index], y=weights.values))
    figure.update_layout(xaxis_title=by, yaxis_title="weight", height=300, margin={"t": 10}, xaxis_type="category")
    st.plotly_chart(figure)


def show_tokens(run_dir: Path) -> None:
    st.subheader("Tokens by group")
    docs = columns(run_dir)
    if not docs:
        st.info("The run has no documents yet (no shards).")
        return
    groups = [c for c in GROUP_COLUMNS if c in docs]
    if not groups:
        st.info("The documents have no column to group by yet (domain, cluster, lang, source).")
        return
    by = st.selectbox("Group by", groups, key="runs_group_by")
    if "n_tokens" in docs:
        measure, label = "sum(n_tokens)", "tokens"
    else:
        measure, label = "count(*)", "documents"
        st.caption("No `n_tokens` column yet (the tokenize stage adds it): counting documents.")
    table = run_sql(run_dir, f"SELECT CAST({quoted(by)} AS VARCHAR) AS {quoted(by)}, {measure} AS {label}, "
                             f"count(*) AS documents FROM docs GROUP BY 1 ORDER BY 2 DESC LIMIT 200",
                    ).to_pandas()
    table[by] = table[by].fillna("(none)")
    figure = go.Figure(go.Bar(x=table[by], y=table[label]))
    figure.update_layout(xaxis_title=by, yaxis_title=label, height=380, margin={"t": 10})
    st.plotly_chart(figure)
    st.dataframe(table, hide_index=True)


def show_quarantine(run_dir: Path) -> None:
    st.subheader("Quarantine")
    if "quarantine" not in view_names(run_dir):
        st.success("Nothing quarantined: every input was readable.")
        return
    total = run_sql(run_dir, "SELECT count(*) AS n FROM quarantine").column("n")[0].as_py()
    st.caption(f"{total:,} unreadable input(s); showing up to {QUARANTINE_ROWS}.")
    table = run_sql(run_dir, "SELECT * EXCLUDE (filename) FROM quarantine ORDER BY source, \"offset\"",
                    limit=QUARANTINE_ROWS)
    st.dataframe(table, hide_index=True)
