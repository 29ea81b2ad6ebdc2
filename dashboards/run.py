"""The run a dashboard shows: its directory, and read-only SQL over it with a row cap and a timeout.

Every page reads the run through `storage.catalog` (the rules of `mixforge sql`): one locked DuckDB per
run directory, shared by all sessions, and a cursor per query so sessions do not wait on each other.
A query that runs past its timeout is interrupted, so a heavy query cannot hold the app.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import duckdb
import pyarrow as pa
import streamlit as st

from storage.catalog import QueryRefused, open_catalog, query

RUN_DIR_ENV = "MIXFORGE_RUN_DIR"
DEFAULT_TIMEOUT_S = 30.0
NUMERIC_TYPES = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER",
                 "UBIGINT", "FLOAT", "DOUBLE", "DECIMAL")


def run_dir_from_env() -> Path | None:
    """The run directory `mixforge ui` passes to the app (None when the app was started without one)."""
    value = os.environ.get(RUN_DIR_ENV)
    return Path(value).resolve() if value else None


@st.cache_resource(ttl=60, show_spinner=False)
def catalog(run_dir: str) -> duckdb.DuckDBPyConnection:
    """The run's locked DuckDB; reopened after a minute so views of outputs written since appear (the
    view and column lists below are cached as long)."""
    return open_catalog(run_dir)


def reload_catalog() -> None:
    """Forget the open catalog and what it was found to hold, so outputs written since show up."""
    catalog.clear()
    view_names.clear()
    columns.clear()


def run_sql(run_dir: Path, sql: str, *, limit: int | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> pa.Table:
    """Read-only SQL over the run; QueryRefused (one line) for a refused, failing or timed-out query."""
    cursor = catalog(str(run_dir)).cursor()
    outcome: dict[str, object] = {}

    def work() -> None:
        try:
            outcome["table"] = query(cursor, sql, limit=limit)
        except QueryRefused as error:
            outcome["error"] = error

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        cursor.interrupt()
        worker.join()
        if "table" not in outcome:
            raise QueryRefused(f"the query ran longer than the {timeout_s:g} s timeout and was stopped")
    cursor.close()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["table"]


@st.cache_data(ttl=60, show_spinner=False)
def view_names(run_dir: Path) -> list[str]:
    table = run_sql(run_dir, "SELECT view_name FROM duckdb_views() WHERE NOT internal ORDER BY view_name")
    return table.column("view_name").to_pylist()


@st.cache_data(ttl=60, show_spinner=False)
def columns(run_dir: Path, view: str = "docs") -> dict[str, str]:
    """Column name -> DuckDB type of a view; empty when the run has no such view."""
    if view not in view_names(run_dir):
        return {}
    table = run_sql(run_dir, f"DESCRIBE {view}")
    return dict(zip(table.column("column_name").to_pylist(), table.column("column_type").to_pylist(), strict=True))


def is_numeric(duckdb_type: str) -> bool:
    return duckdb_type.upper().startswith(NUMERIC_TYPES)


def quoted(name: str) -> str:
    """A column name as a DuckDB identifier."""
    return '"' + name.replace('"', '""') + '"'
