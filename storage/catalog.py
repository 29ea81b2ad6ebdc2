"""DuckDB over a run's outputs: views with good names, read-only. SQL is the API.

Views (whichever exist): `docs` (the final stage's kept documents), `dropped` (every dropped
document, with its stage and drop_reason), `quarantine` (unreadable input), one
`stage_<name>` per stage (the documents it kept: its shards, or for a stage run fused with others
without its own copy, the next written stage's documents with the drops in between), `clusters` and
`embeddings`. DuckDB itself refuses reads outside the run
directory, ATTACH, INSTALL and configuration changes; we also accept only statements its parser
reports as SELECT or EXPLAIN, so COPY ... TO and CREATE are refused too.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa

from storage.manifest import load_manifest
from storage.schema import DOCUMENT_SCHEMA, QUARANTINE_SCHEMA, STAGE_COLUMNS

READ_ONLY_STATEMENTS = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}
DROPPED_SCHEMA = DOCUMENT_SCHEMA.append(pa.field("drop_reason", STAGE_COLUMNS["drop_reason"]))
_DUCKDB_TYPES = {"int64": "BIGINT", "string": "VARCHAR", "large_string": "VARCHAR"}


class QueryRefused(ValueError):
    """A statement that would write, attach, install or read outside the run; the message says which."""


def _glob(path: Path) -> str:
    return str(path).replace("'", "''")


def view_sources(run_dir: Path) -> dict[str, str]:
    """The view name -> SELECT for each kind of output present in the run directory."""
    views: dict[str, str] = {}
    stages = sorted(p.name for p in (run_dir / "shards").glob("*") if any(p.glob("*.parquet")))
    for stage in stages:
        views[f"stage_{stage}"] = (
            f"SELECT * FROM read_parquet('{_glob(run_dir / 'shards' / stage)}/*.parquet', union_by_name=true)")
    manifest = load_manifest(run_dir)
    views.update(_unwritten_stages(run_dir, list(manifest.stages) if manifest else [], stages))
    final = manifest.final_stage if manifest and manifest.final_stage in stages else (stages[-1] if stages else None)
    if final:
        views["docs"] = f"SELECT * FROM stage_{final}"
    for kind, schema in (("dropped", DROPPED_SCHEMA), ("quarantine", QUARANTINE_SCHEMA)):
        if any((run_dir / kind).glob("*/*.parquet")):
            views[kind] = (f"SELECT * FROM read_parquet('{_glob(run_dir / kind)}/*/*.parquet', "
                           "union_by_name=true, hive_partitioning=false, filename=true)")
        else:  # an empty view, so queries over a run with nothing dropped still answer
            views[kind] = _empty_select(schema)
    for name, path in (("clusters", run_dir / "clusters" / "clusters.parquet"),
                       ("centroids", run_dir / "clusters" / "centroids.parquet")):
        if path.exists():
            views[name] = f"SELECT * FROM read_parquet('{_glob(path)}')"
    if any((run_dir / "embeddings").glob("**/*.parquet")):
        views["embeddings"] = f"SELECT * FROM read_parquet('{_glob(run_dir / 'embeddings')}/**/*.parquet')"
    return views


def _unwritten_stages(run_dir: Path, order: list[str], written: list[str]) -> dict[str, str]:
    """Views of the stages a fused pass ran without writing their survivors (flows.curate): a stage's
    survivors are the next written stage's documents and what the stages up to it dropped. Their columns
    are the written stage's (later annotations such as n_tokens included, its edits of the text too)."""
    views = {}
    for i, stage in enumerate(order):
        later = order[i + 1:]
        written_later = [name for name in later if name in written]
        if stage in written or not written_later:
            continue
        between = later[:later.index(written_later[0]) + 1]
        files = [str(f) for name in between for f in sorted((run_dir / "dropped" / name).glob("*.parquet"))]
        select = f"SELECT * FROM stage_{written_later[0]}"
        if files:
            listed = ", ".join(f"'{_glob(Path(f))}'" for f in files)
            select += (f" UNION ALL BY NAME SELECT * EXCLUDE (drop_reason) FROM read_parquet([{listed}], "
                       "union_by_name=true)")
        views[f"stage_{stage}"] = select
    return views


def _empty_select(schema: pa.Schema) -> str:
    columns = ", ".join(f"NULL::{_DUCKDB_TYPES.get(str(f.type), 'VARCHAR')} AS {f.name}" for f in schema)
    return f"SELECT {columns} WHERE false"


def open_catalog(run_dir: str | Path) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the run's views, locked so it can read only the run directory."""
    run_dir = Path(run_dir).resolve()
    if not run_dir.is_dir():
        raise FileNotFoundError(f"no run directory at {run_dir}")
    con = duckdb.connect(":memory:")
    con.execute(f"SET allowed_directories=['{_glob(run_dir)}/']")
    con.execute("SET enable_external_access=false")
    for name, select in view_sources(run_dir).items():
        con.execute(f"CREATE VIEW {name} AS {select}")
    con.execute("SET lock_configuration=true")
    return con


def check_read_only(con: duckdb.DuckDBPyConnection, sql: str) -> list[str]:
    """The statements of `sql`, each checked to be a SELECT or EXPLAIN; QueryRefused otherwise."""
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as error:
        raise QueryRefused(one_line(error)) from None
    if not statements:
        raise QueryRefused("no SQL statement given")
    for statement in statements:
        if statement.type not in READ_ONLY_STATEMENTS:
            kind = statement.type.name
            raise QueryRefused(f"only SELECT queries are allowed here; refused a {kind} statement: "
                               f"{statement.query.strip()[:80]}")
    return [s.query for s in statements]


def query(con: duckdb.DuckDBPyConnection, sql: str, limit: int | None = None) -> pa.Table:
    """Run read-only SQL; the last statement's result as an Arrow table (at most `limit` rows)."""
    result = None
    for statement in check_read_only(con, sql):
        try:
            relation = con.sql(statement)
            if relation is None:
                continue
            result = relation.limit(limit).to_arrow_table() if limit else relation.to_arrow_table()
        except duckdb.Error as error:
            raise QueryRefused(one_line(error)) from None
    if result is None:
        raise QueryRefused("the query returned no result")
    return result


def one_line(error: Exception) -> str:
    """DuckDB's error as one readable line (its messages span several)."""
    text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    return text[:400]
