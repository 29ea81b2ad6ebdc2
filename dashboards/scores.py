"""Scores page: the scorers trained from the run (flows/scorers.py), the distribution of each score column,
the score by cluster or domain, and what a threshold would keep (documents and tokens) before anyone runs
`select` with it.

Histograms and quantiles are computed by DuckDB over the shards, so the page stays light on any corpus.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from dashboards.run import columns, is_numeric, quoted, run_sql
from storage.catalog import QueryRefused

GROUP_COLUMNS = ("super_cluster", "cluster", "domain", "lang", "source")
FLOAT_TYPES = ("FLOAT", "DOUBLE", "DECIMAL")
MAX_GROUPS = 60
QUARTILES = (0.0, 0.25, 0.5, 0.75, 1.0)
BINS = 40
SCORERS = "scorers"  # where flows/scorers.py writes the models and their records


def score_columns(docs: dict[str, str]) -> list[str]:
    """Score columns of `docs`: preselect, dataman_*, and any float column ending in _score."""
    return [name for name, kind in docs.items() if is_numeric(kind) and (
        name == "preselect" or name.startswith("dataman_")
        or (name.endswith("_score") and kind.upper().startswith(FLOAT_TYPES)))]


def render(run_dir: Path) -> None:
    st.title("Scores")
    try:
        docs = columns(run_dir)
        if not docs:
            st.info("The run has no documents yet (no shards).")
            return
        scores = score_columns(docs)
        if not scores:
            st.info("The documents carry no score columns yet (preselect, dataman_*, *_score): "
                    "the `score` flow adds them.")
            return
        score = st.selectbox("Score", scores, key="scores_column")
        tokens = "n_tokens" in docs
        low, high = score_range(run_dir, score)
        if low is None:
            st.info(f"`{score}` has no values yet.")
            return
        threshold = show_threshold(run_dir, score, low, high, tokens)
        show_histogram(run_dir, score, low, high, threshold)
        groups = [c for c in GROUP_COLUMNS if c in docs]
        if groups:
            show_by_group(run_dir, score, groups)
    except QueryRefused as error:
        st.error(f"Could not read the scores: {error}")
    show_scorers(run_dir)


def trained_scorers(run_dir: Path) -> dict[str, dict]:
    """The records the `train_scorers` flow wrote (scorers/<name>.json), by scorer."""
    records = {}
    for path in sorted((run_dir / SCORERS).glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(record, dict) and "scorer" in record:
            records[record["scorer"]] = record
    return records


def scorer_rows(records: dict[str, dict]) -> pd.DataFrame:
    """One row per trained scorer: the column it writes and what it learnt from."""
    rows = []
    if "classifier" in records:
        r = records["classifier"]
        rows.append({"scorer": "DCLM-style fastText", "column": r["column"], "model": r["model"],
                     "learnt from": f"{r['positives']:,} positives, {r['negatives']:,} negatives (SQL split)"})
    if "preselect" in records:
        r = records["preselect"]
        rows.append({"scorer": "PreSelect", "column": r["column"], "model": r["model"],
                     "learnt from": f"{len(r['family'])} byte n-gram LMs; {r['positives']:,} positives, "
                                    f"{r['negatives']:,} negatives of {r['documents']:,} documents by strength"})
    if "dataman" in records:
        r = records["dataman"]
        agreement = r.get("agreement") or {}
        held = (f"; on {r['held_out']:,} held-out: within 1 of the teacher {agreement['within_1']:.0%}, mean "
                f"Spearman {agreement['spearman']:.2f}, same domain {agreement['domain']:.0%}" if agreement else "")
        rows.append({"scorer": "DataMan students", "column": "dataman_*, domain", "model": r["model"],
                     "learnt from": f"{r['rated']:,} documents rated by {r['annotator']}{held}"})
    return pd.DataFrame(rows)


def show_scorers(run_dir: Path) -> None:
    records = trained_scorers(run_dir)
    if not records:
        return
    st.subheader("Scorers trained from this run")
    st.caption(f"Models and what they learnt from are in {SCORERS}/ (read its Parquet files with SQL: "
               f"`read_parquet('{run_dir / SCORERS}/preselect_strength.parquet')`).")
    st.table(scorer_rows(records).set_index("scorer"))
    if "preselect" in records:
        family = pd.DataFrame(records["preselect"]["family"])[["path", "domain", "train_docs", "benchmark_bpb"]]
        st.caption("PreSelect's model family: each model's benchmark score is minus its bits per byte on the "
                   "benchmark set; a document's strength is how well the models' losses on it rank the same way.")
        st.dataframe(family, hide_index=True)


def score_range(run_dir: Path, score: str) -> tuple[float | None, float | None]:
    row = run_sql(run_dir, f"SELECT min({quoted(score)})::DOUBLE AS lo, max({quoted(score)})::DOUBLE AS hi "
                           f"FROM docs WHERE isfinite({quoted(score)}::DOUBLE)").to_pylist()[0]
    return row["lo"], row["hi"]


def threshold_counts(run_dir: Path, score: str, threshold: float, keep_above: bool) -> dict:
    """Documents and tokens a threshold keeps, and the totals they are a share of."""
    test = ">=" if keep_above else "<="
    tokens = "n_tokens" in columns(run_dir)
    token_sum = "sum(n_tokens)" if tokens else "NULL"
    kept_tokens = f"sum(n_tokens) FILTER (WHERE {quoted(score)} {test} {threshold!r})" if tokens else "NULL"
    return run_sql(run_dir, f"SELECT count(*) AS docs, count(*) FILTER (WHERE {quoted(score)} {test} {threshold!r}) "
                            f"AS kept_docs, {token_sum}::BIGINT AS tokens, {kept_tokens}::BIGINT AS kept_tokens "
                            f"FROM docs").to_pylist()[0]


def show_threshold(run_dir: Path, score: str, low: float, high: float, tokens: bool) -> float:
    st.subheader("Threshold preview")
    left, right = st.columns([3, 1])
    step = (high - low) / 100 if high > low else 1.0
    threshold = left.slider("Threshold", min_value=low, max_value=max(high, low + step), value=low + (high - low) / 2,
                            step=step, key=f"scores_threshold_{score}")
    keep_above = right.radio("Keep documents", ["at or above", "at or below"], key="scores_keep") == "at or above"
    counts = threshold_counts(run_dir, score, threshold, keep_above)
    cols = st.columns(2)
    cols[0].metric("Documents kept", f"{counts['kept_docs']:,} of {counts['docs']:,}",
                   f"{share(counts['kept_docs'], counts['docs']):.1%}", delta_color="off", delta_arrow="off")
    if tokens:
        kept_tokens = counts["kept_tokens"] or 0
        cols[1].metric("Tokens kept", f"{kept_tokens:,} of {counts['tokens']:,}",
                       f"{share(kept_tokens, counts['tokens']):.1%}", delta_color="off", delta_arrow="off")
    else:
        cols[1].caption("No `n_tokens` column yet: token counts come with the tokenize stage.")
    return threshold


def share(part: int, whole: int | None) -> float:
    return part / whole if whole else 0.0


def histogram(run_dir: Path, score: str, low: float, high: float, bins: int = BINS) -> pd.DataFrame:
    """Documents per bin of `score` over [low, high]: columns centre, docs."""
    width = (high - low) / bins if high > low else 1.0
    s = quoted(score)
    table = run_sql(run_dir, f"SELECT least(floor(({s} - {low!r}) / {width!r}), {bins - 1})::INTEGER AS bin, "
                             f"count(*) AS docs FROM docs WHERE isfinite({s}::DOUBLE) GROUP BY 1 ORDER BY 1",
                    ).to_pandas()
    return pd.DataFrame({"centre": low + (table["bin"] + 0.5) * width, "docs": table["docs"]})


def by_group(run_dir: Path, score: str, by: str) -> pd.DataFrame:
    """Per value of `by` (best mean first): docs, mean and the quartiles (min, q1, median, q3, max)."""
    s = quoted(score)
    # One quantile aggregate with a list of fractions sorts each group once (three separate ones: 2x slower).
    table = run_sql(run_dir, f"SELECT CAST({quoted(by)} AS VARCHAR) AS {quoted(by)}, count(*) AS docs, "
                             f"avg({s}) AS mean, quantile_cont({s}, {list(QUARTILES)}) AS q FROM docs "
                             f"WHERE isfinite({s}::DOUBLE) GROUP BY 1 ORDER BY mean DESC LIMIT {MAX_GROUPS}",
                    ).to_pandas()
    table[["min", "q1", "median", "q3", "max"]] = pd.DataFrame(table.pop("q").tolist(), index=table.index)
    table[by] = table[by].fillna("(none)")
    return table


def show_histogram(run_dir: Path, score: str, low: float, high: float, threshold: float) -> None:
    st.subheader("Distribution")
    table = histogram(run_dir, score, low, high)
    width = (high - low) / BINS if high > low else 1.0
    figure = go.Figure(go.Bar(x=table["centre"], y=table["docs"], width=width))
    figure.add_vline(x=threshold, line_dash="dash", annotation_text="threshold")
    figure.update_layout(xaxis_title=score, yaxis_title="documents", height=340, margin={"t": 20}, bargap=0.02)
    st.plotly_chart(figure)


def show_by_group(run_dir: Path, score: str, groups: list[str]) -> None:
    st.subheader("Score by group")
    by = st.selectbox("Group by", groups, key="scores_group_by")
    table = by_group(run_dir, score, by)
    # Precomputed quartiles: plotly draws the boxes without the raw scores.
    figure = go.Figure(go.Box(x=table[by], q1=table["q1"], median=table["median"], q3=table["q3"],
                              lowerfence=table["min"], upperfence=table["max"], mean=table["mean"], name=score))
    figure.update_layout(xaxis_title=by, yaxis_title=score, height=380, margin={"t": 20}, xaxis_type="category")
    st.plotly_chart(figure)
    st.dataframe(table, hide_index=True)
