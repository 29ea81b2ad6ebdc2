"""Verify page: the verifications of this run (`mixforge verify`, mixtures/verify.py), each candidate's score
(change of target loss against the base-only anneal) with its spread over seeds, sortable, and the per-seed
results behind it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from mixtures.verify import RECORD_FILE, RESULTS_FILE, SUMMARY_FILE

VERDICT_COLOURS = {"better": "#2e7d32", "unclear": "#9e9e9e", "worse": "#c62828"}
SHOWN = ("rank", "candidate", "score", "spread", "worst_seed", "best_seed", "score_bpb", "verdict", "n_seeds",
         "candidate_share")


def verifications_in(run_dir: Path) -> list[Path]:
    """Folders up to three levels under the run holding a finished verification."""
    found = {p.parent for depth in ("", "*/", "*/*/", "*/*/*/") for p in run_dir.glob(f"{depth}{SUMMARY_FILE}")}
    return sorted(f for f in found if (f / RECORD_FILE).exists())


def render(run_dir: Path) -> None:
    st.title("Verify")
    st.caption("Ultra-FineWeb's verification: a base proxy annealed on a blend of each candidate with base data, "
               "against the same anneal on base data alone. Score: the mean drop of the target loss (nats/token; "
               "positive = the candidate helps), with its spread over seeds.")
    folders = verifications_in(run_dir)
    if not folders:
        st.info("No verification in this run yet: `mixforge verify CONFIG.yaml` writes one (default "
                "<run>/verify/).")
        return
    names = [str(f.relative_to(run_dir)) if f != run_dir else "." for f in folders]
    folder = run_dir / st.selectbox("Verification", names, key="verify_folder")
    try:
        summary = pd.read_parquet(folder / SUMMARY_FILE)
        results = pd.read_parquet(folder / RESULTS_FILE)
        record = json.loads((folder / RECORD_FILE).read_text())
    except (OSError, ValueError) as error:
        st.error(f"Could not read the verification in {folder}: {' '.join(str(error).split())}")
        return
    show_summary(summary, record)
    show_results(results)


def show_summary(summary: pd.DataFrame, record: dict) -> None:
    config = record.get("config", {})
    anneal = config.get("anneal", {})
    targets = ", ".join(t["name"] for t in config.get("targets", []))
    st.caption(f"Base: `{record.get('checkpoint')}`; targets: {targets}; anneal {anneal.get('budget_tokens', 0):,} "
               f"tokens, {anneal.get('fraction', 0.3):.0%} candidate.")
    order = summary.sort_values("score")
    figure = go.Figure(go.Bar(x=order["score"], y=order["candidate"], orientation="h",
                              error_x={"type": "data", "array": order["spread"]},
                              marker_color=[VERDICT_COLOURS.get(v, "#9e9e9e") for v in order["verdict"]]))
    figure.update_layout(height=120 + 28 * len(order), margin={"t": 10}, xaxis_title="score (nats/token)")
    st.plotly_chart(figure)
    shown = [c for c in SHOWN if c in summary.columns] + [c for c in summary.columns if c.startswith("delta_")]
    number = st.column_config.NumberColumn(format="%+.4f")
    st.dataframe(summary[shown], hide_index=True, key="verify_summary",
                 column_config={c: number for c in ("score", "worst_seed", "best_seed", "score_bpb")}
                 | {c: number for c in shown if c.startswith("delta_")})


def show_results(results: pd.DataFrame) -> None:
    with st.expander("Every anneal (candidate x seed x target)"):
        st.dataframe(results, hide_index=True, key="verify_results")
