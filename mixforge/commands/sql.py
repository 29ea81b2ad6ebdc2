"""`mixforge sql`: any question about a run is one read-only DuckDB query away.

In a terminal the result is a table that fits the screen, as DuckDB's own CLI draws it: one line per row,
a long value cut with an ellipsis, the middle columns left out (with a count) when they cannot all fit,
`--max-width` to choose. `--format csv|json|markdown` and `--output FILE` give every value whole, lists,
structs, maps and blobs included, rendered by DuckDB's own CSV and JSON writers (markdown: DuckDB's text
form of each value).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import typer

from mixforge.options import fail

FORMATS = ("table", "csv", "json", "markdown")
OUTPUT_SUFFIXES = {".csv": "csv", ".json": "json", ".md": "markdown", ".parquet": "parquet"}
MIN_COLUMN_WIDTH = 8  # a column cut narrower than this tells nothing: leave columns out instead
ELLIPSIS = "…"


def register(app: typer.Typer) -> None:
    app.command("sql")(sql)


def sql(
    run_dir: Path = typer.Argument(..., help="A run directory (views: docs, dropped, quarantine, clusters...)."),
    query: str = typer.Argument(None, help="SQL to run; omit it for an interactive prompt."),
    fmt: str = typer.Option("table", "--format", "-f", help="table (fits the terminal), csv, json or markdown "
                                                            "(full values)."),
    output: Path = typer.Option(None, "--output", "-o", help="Write the result to FILE (.csv, .json, .md, .parquet)."),
    max_rows: int = typer.Option(50, help="Rows to print as a table (files get every row)."),
    max_width: int = typer.Option(None, help="Width of the table in characters (default: the terminal's)."),
) -> None:
    """Query a run's shards with DuckDB (read-only: writes, ATTACH, INSTALL and outside files are refused)."""
    from storage.catalog import QueryRefused, open_catalog

    if fmt not in FORMATS:
        fail(f"--format must be one of {', '.join(FORMATS)}, not '{fmt}'")
    if output is not None and output.suffix.lower() not in OUTPUT_SUFFIXES:
        fail(f"--output must end in {', '.join(OUTPUT_SUFFIXES)}, not '{output.name}'")
    try:
        con = open_catalog(run_dir)
    except FileNotFoundError as error:
        fail(f"{error} (give the --out directory of a run)")
    width = max_width or shutil.get_terminal_size((120, 24)).columns
    if query is None:
        _interactive(con, fmt, width)
        return
    try:
        _run(con, query, fmt, output, max_rows, width)
    except QueryRefused as error:
        fail(str(error))


def _run(con, query: str, fmt: str, output: Path | None, max_rows: int, width: int) -> None:
    from storage.catalog import query as run_query

    table = run_query(con, query)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        kind = OUTPUT_SUFFIXES[output.suffix.lower()]
        if kind == "parquet":
            import pyarrow.parquet as pq

            pq.write_table(table, output, compression="zstd")
        else:
            output.write_text(render(table, kind))
        typer.echo(f"wrote {table.num_rows:,} rows to {output}")
    elif fmt == "table":
        typer.echo(box(table, max_rows, width))
    else:
        sys.stdout.write(render(table, fmt))


def _duckdb(table):
    """A plain in-memory DuckDB holding `table` as `result` (the catalog's refuses writing files)."""
    import duckdb

    con = duckdb.connect(":memory:")
    con.register("result", table)
    return con


def render(table, fmt: str) -> str:
    """Every row, every value whole: DuckDB's CSV or JSON writer, or a markdown table of its text forms."""
    con = _duckdb(table)
    if fmt == "markdown":
        names, rows = _as_text(con, "SELECT * FROM result")
        lines = ["| " + " | ".join(_md(n) for n in names) + " |", "|" + "---|" * len(names)]
        lines += ["| " + " | ".join(_md(v) for v in row) + " |" for row in rows]
        return "\n".join(lines) + "\n"
    options = "HEADER" if fmt == "csv" else "FORMAT json, ARRAY true"
    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / f"result.{fmt}"
        con.execute(f"COPY result TO '{target}' ({options})")
        text = target.read_text(encoding="utf-8")
    return text if text.endswith("\n") else text + "\n"


def _as_text(con, select: str) -> tuple[list[str], list[tuple[str, ...]]]:
    """Column names and every value as DuckDB writes it as text (NULL for nulls)."""
    relation = con.sql(select)
    names = relation.columns
    if not names:
        return names, []
    cast = ", ".join(f'coalesce(CAST("{n.replace(chr(34), chr(34) * 2)}" AS VARCHAR), \'NULL\')' for n in names)
    return names, con.sql(f"SELECT {cast} FROM ({select})").fetchall()


def _md(value: str) -> str:
    return value.replace("|", "\\|").replace("\r\n", "<br>").replace("\n", "<br>")


def box(table, max_rows: int, width: int) -> str:
    """The result as DuckDB's CLI draws it (duckbox): names and types on top, one line per row, values cut
    to fit `width` with an ellipsis, middle columns left out when even cut columns do not fit."""
    from rich.cells import cell_len

    con = _duckdb(table)
    types = [str(t) for t in con.sql("SELECT * FROM result").types]
    names, rows = _as_text(con, f"SELECT * FROM result LIMIT {max(max_rows, 0)}")
    rows = [[_one_line(v) for v in row] for row in rows]
    numeric = [t.split("(")[0] in _NUMERIC for t in types]
    natural = [max([cell_len(n), cell_len(t)] + [cell_len(r[i]) for r in rows]) for i, (n, t) in
               enumerate(zip(names, types, strict=True))]
    shown = _columns_that_fit(natural, width)
    elided = len(names) - len(shown)
    if elided:  # an ellipsis column (-1) where the middle ones were
        cut = next(k for k in range(len(shown)) if k + 1 == len(shown) or shown[k + 1] != shown[k] + 1) + 1
        shown = shown[:cut] + [-1] + shown[cut:]
    widths = _shrink([natural[i] if i >= 0 else 1 for i in shown], width - 3 * len(shown) - 1)
    numeric_shown = [i >= 0 and numeric[i] for i in shown]

    def line(values: list[str], left: str, middle: str, right: str, fill: str = " ") -> str:
        cells = [_fit(v, w, right_align, fill) for v, w, right_align in zip(values, widths, numeric_shown,
                                                                             strict=True)]
        return left + fill + (fill + middle + fill).join(cells) + fill + right

    def pick(values: list[str]) -> list[str]:
        return [values[i] if i >= 0 else ELLIPSIS for i in shown]

    out = [line(["─" * w for w in widths], "┌", "┬", "┐", "─"),
           line(pick(names), "│", "│", "│"), line(pick(types), "│", "│", "│"),
           line(["─" * w for w in widths], "├", "┼", "┤", "─")]
    out += [line(pick(row), "│", "│", "│") for row in rows]
    out.append(line(["─" * w for w in widths], "└", "┴", "┘", "─"))
    footer = f"{table.num_rows:,} row{'s' * (table.num_rows != 1)}"
    if table.num_rows > len(rows):
        footer += f" ({len(rows):,} shown)"
    if elided:
        footer += f", {len(names)} columns ({len(names) - elided} shown; --max-width or --format csv for all)"
    return "\n".join(out) + "\n" + footer


_NUMERIC = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT",
            "UHUGEINT", "FLOAT", "DOUBLE", "DECIMAL"}


def _one_line(value: str) -> str:
    return value.replace("\r", "\\r").replace("\n", "\\n").replace("\t", "\\t")


def _columns_that_fit(natural: list[int], width: int) -> list[int]:
    """Indexes of the columns to show: all if each gets at least MIN_COLUMN_WIDTH (or its own width, if
    less), else as many as fit, taken from both ends (the middle is left out, as DuckDB's CLI does)."""
    def need(columns: list[int], elided: bool) -> int:
        return sum(min(natural[i], MIN_COLUMN_WIDTH) + 3 for i in columns) + 1 + 4 * elided

    every = list(range(len(natural)))
    if need(every, False) <= width:
        return every
    left, right = [], []
    for k in range(len(natural)):
        candidate = k // 2 if k % 2 == 0 else len(natural) - 1 - k // 2
        trial = sorted(left + right + [candidate])
        if need(trial, True) > width and trial:
            break
        (left if k % 2 == 0 else right).append(candidate)
    return sorted(left + right) or [0]


def _shrink(widths: list[int], room: int) -> list[int]:
    """Column widths summing to at most `room`: the widest cut first, none below MIN_COLUMN_WIDTH."""
    widths = list(widths)
    while sum(widths) > room:
        widest = max(range(len(widths)), key=widths.__getitem__)
        if widths[widest] <= MIN_COLUMN_WIDTH:
            break
        widths[widest] -= 1
    return widths


def _fit(value: str, width: int, right: bool, fill: str) -> str:
    from rich.cells import cell_len, set_cell_size

    if cell_len(value) > width:
        value = set_cell_size(value, width - 1) + ELLIPSIS
    pad = fill * (width - cell_len(value))
    return pad + value if right else value + pad


def _interactive(con, fmt: str, width: int) -> None:
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
            _run(con, buffer, fmt, None, 50, width)
        except QueryRefused as error:
            typer.echo(f"error: {error}", err=True)
        buffer = ""
