"""SQL page: read-only DuckDB over the run (the rules of `mixforge sql`), with a row cap, a timeout and
downloads. A refused or failing query is one line, never a traceback."""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import streamlit as st

from dashboards.run import run_sql, view_names
from storage.catalog import QueryRefused

EXAMPLES = {
    "Documents per source": "SELECT source, count(*) AS docs, sum(length(text)) AS chars\n"
                            "FROM docs GROUP BY source ORDER BY docs DESC",
    "Longest documents": "SELECT id, url, length(text) AS chars FROM docs ORDER BY chars DESC LIMIT 20",
    "Drops by reason": "SELECT drop_reason, count(*) AS docs FROM dropped GROUP BY 1 ORDER BY 2 DESC",
    "Tokens per domain": "SELECT domain, count(*) AS docs, sum(n_tokens) AS tokens\n"
                         "FROM docs GROUP BY domain ORDER BY tokens DESC",
    "Quarantined inputs": "SELECT source, \"offset\", error FROM quarantine LIMIT 50",
    "Columns of docs": "DESCRIBE docs",
}


def render(run_dir: Path) -> None:
    st.title("SQL")
    try:
        views = view_names(run_dir)
    except QueryRefused as error:
        st.error(f"Could not open the run: {error}")
        return
    st.caption("Read-only DuckDB over the run. Views: " + (", ".join(f"`{v}`" for v in views) or "none yet")
               + ". Writes, ATTACH, INSTALL and files outside the run are refused.")
    example = st.selectbox("Example queries", ["(write your own)", *EXAMPLES], key="sql_example")
    if example in EXAMPLES and st.session_state.get("sql_example_shown") != example:
        st.session_state["sql_text"] = EXAMPLES[example]
        st.session_state["sql_example_shown"] = example
    with st.form("sql_form"):
        text = st.text_area("Query", key="sql_text", height=140, placeholder="SELECT count(*) FROM docs")
        left, right = st.columns(2)
        max_rows = left.number_input("Row cap", min_value=1, max_value=1_000_000, value=1_000, step=100)
        timeout_s = right.number_input("Timeout (s)", min_value=1, max_value=600, value=30)
        submitted = st.form_submit_button("Run query", type="primary")
    if submitted:
        st.session_state["sql_result"] = run(run_dir, text, int(max_rows), float(timeout_s))
    show(st.session_state.get("sql_result"))


def run(run_dir: Path, text: str, max_rows: int, timeout_s: float) -> dict:
    """The query's result (one row past the cap, to tell whether there were more) or its one-line error."""
    if not text.strip():
        return {"error": "Write a query first (the views are listed above)."}
    try:
        table = run_sql(run_dir, text, limit=max_rows + 1, timeout_s=timeout_s)
    except QueryRefused as error:
        return {"error": str(error)}
    return {"table": table.slice(0, max_rows), "capped": table.num_rows > max_rows, "max_rows": max_rows}


def show(result: dict | None) -> None:
    if result is None:
        return
    if "error" in result:
        st.error(result["error"])
        return
    table: pa.Table = result["table"]
    more = f" (capped at {result['max_rows']:,}: raise the row cap for more)" if result["capped"] else ""
    st.success(f"{table.num_rows:,} row(s){more}")
    st.dataframe(table, hide_index=True)
    left, right = st.columns(2)
    # Callables: the file is made only when its button is clicked.
    left.download_button("Download CSV", lambda: csv_bytes(table), "query.csv", "text/csv", on_click="ignore")
    right.download_button("Download Parquet", lambda: parquet_bytes(table), "query.parquet",
                          "application/vnd.apache.parquet", on_click="ignore")


def csv_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pacsv.write_csv(table, sink)
    return sink.getvalue()


def parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()
