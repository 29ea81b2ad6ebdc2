"""`mixforge sql`: any question about a run is one read-only DuckDB query away."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from mixforge.options import fail

FORMATS = ("table", "csv", "json")


def register(app: typer.Typer) -> None:
    app.command("sql")(sql)


def sql(
    run_dir: Path = typer.Argument(..., help="A run directory (views: docs, dropped, quarantine, clusters...)."),
    query: str = typer.Argument(None, help="SQL to run; omit it for an interactive prompt."),
    fmt: str = typer.Option("table", "--format", "-f", help="table, csv or json."),
    output: Path = typer.Option(None, "--output", "-o", help="Write the result to FILE (.csv, .json, .parquet)."),
    max_rows: int = typer.Option(50, help="Rows to print as a table (files get every row)."),
) -> None:
    """Query a run's shards with DuckDB (read-only: writes, ATTACH, INSTALL and outside files are refused)."""
    from storage.catalog import QueryRefused, open_catalog

    if fmt not in FORMATS:
        fail(f"--format must be one of {', '.join(FORMATS)}, not '{fmt}'")
    if output is not None and output.suffix.lower() not in (".csv", ".json", ".parquet"):
        fail(f"--output must end in .csv, .json or .parquet, not '{output.name}'")
    try:
        con = open_catalog(run_dir)
    except FileNotFoundError as error:
        fail(str(error))
    if query is None:
        _interactive(con, fmt)
        return
    try:
        _run(con, query, fmt, output, max_rows)
    except QueryRefused as error:
        fail(str(error))


def _run(con, query: str, fmt: str, output: Path | None, max_rows: int) -> None:
    from storage.catalog import query as run_query

    table = run_query(con, query)
    if output is not None:
        _write(table, output)
        typer.echo(f"wrote {table.num_rows:,} rows to {output}")
    elif fmt == "table":
        _print_table(table, max_rows)
    else:
        sys.stdout.write(_render(table, fmt))


def _render(table, fmt: str) -> str:
    import io

    import pyarrow.csv as pacsv

    if fmt == "csv":
        sink = io.BytesIO()
        pacsv.write_csv(table, sink)
        return sink.getvalue().decode()
    import json

    return json.dumps(table.to_pylist(), default=str, ensure_ascii=False, indent=1) + "\n"


def _write(table, output: Path) -> None:
    import pyarrow.parquet as pq

    output.parent.mkdir(parents=True, exist_ok=True)
    if output.suffix.lower() == ".parquet":
        pq.write_table(table, output, compression="zstd")
    else:
        output.write_text(_render(table, output.suffix.lower().lstrip(".")))


def _print_table(table, max_rows: int) -> None:
    from rich.console import Console
    from rich.table import Table

    view = Table(show_lines=False)
    for name in table.column_names:
        view.add_column(name, overflow="fold", max_width=60)
    for row in table.slice(0, max_rows).to_pylist():
        view.add_row(*[_cell(v) for v in row.values()])
    console = Console()
    console.print(view)
    more = f" (showing {max_rows})" if table.num_rows > max_rows else ""
    console.print(f"{table.num_rows:,} row(s){more}")


def _cell(value) -> str:
    text = "NULL" if value is None else str(value)
    return text if len(text) <= 200 else text[:197] + "..."


def _interactive(con, fmt: str) -> None:
    from storage.catalog import QueryRefused

    views = [row[0] for row in con.sql("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()]
    typer.echo(f"mixforge sql: views {', '.join(views) or '(none)'}. End statements with ';', quit with \\q.")
    buffer = ""
    while True:
        try:
            line = input("sql> " if not buffer else "...> ")
        except EOFError:
            break
        if line.strip() in ("\\q", "quit", "exit"):
            break
        buffer += line + "\n"
        if not buffer.strip().endswith(";"):
            continue
        try:
            _run(con, buffer, fmt, None, 50)
        except QueryRefused as error:
            typer.echo(f"error: {error}", err=True)
        buffer = ""
