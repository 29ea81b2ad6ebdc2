"""`mixforge sql` output: a table that fits the terminal like DuckDB's CLI, and every DuckDB type whole
in csv, json and markdown (lists, structs, maps, blobs), as DuckDB's own writers render them."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rich.cells import cell_len
from typer.testing import CliRunner

from mixforge.cli import app

runner = CliRunner()
LONG = "Python is an easy to learn, powerful programming language.\nIt has efficient high-level data structures. " * 4


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A run directory whose `clusters` view holds lists, structs, maps, blobs and long text, and whose
    `docs` view is 30 columns wide."""
    run = tmp_path_factory.mktemp("run")
    (run / "clusters").mkdir()
    clusters = pa.table({
        "cluster": pa.array([0, 1, 2], pa.int32()),
        "size": pa.array([120, 7, 3_000_000], pa.int64()),
        "terms": pa.array([["python", "module", "import"], ["debian", "apt"], []], pa.list_(pa.string())),
        "centroid": pa.array([[0.5, -0.25], [1.0, 0.0], [0.0, 0.125]], pa.list_(pa.float32())),
        "info": pa.array([{"label": "code", "share": 0.5}, {"label": "a|b", "share": 0.25}, None],
                         pa.struct([("label", pa.string()), ("share", pa.float64())])),
        "langs": pa.array([[("en", 3), ("de", 1)], [("fr", 2)], []], pa.map_(pa.string(), pa.int64())),
        "raw": pa.array([b"\x00\xffPK", b"plain", None], pa.binary()),
        "sample": pa.array([LONG, "short", None], pa.large_string()),
    })
    pq.write_table(clusters, run / "clusters" / "clusters.parquet")
    wide = pa.table({f"column_{i:02d}": pa.array([i * 1000 + r for r in range(60)], pa.int64()) for i in range(30)})
    (run / "shards" / "ingest").mkdir(parents=True)
    pq.write_table(wide, run / "shards" / "ingest" / "part-00000-0000.parquet")
    return run


def sql(run: Path, *args: str) -> str:
    result = runner.invoke(app, ["sql", str(run), *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_table_fits_the_terminal_with_ellipses(run: Path):
    out = sql(run, "SELECT * FROM clusters ORDER BY cluster", "--max-width", "100")
    lines = out.rstrip("\n").splitlines()
    assert len(lines) == 4 + 3 + 1 + 1  # top, names, types, rule, 3 rows, bottom, footer
    assert all(cell_len(line) <= 100 for line in lines[:-1]) and cell_len(lines[0]) >= 90
    assert lines[1].split("│")[1:-1][0].strip() == "cluster" and "VARCHAR[]" in lines[2]
    first_row = lines[4]
    assert "[python, module, import]"[:6] in first_row and "…" in first_row  # cut, on one line
    assert "\n" not in first_row and lines[-1] == "3 rows"
    assert "│     120 │" in lines[4] and "│ 3000000 │" in lines[6]  # numbers right-aligned


def test_too_many_columns_are_elided_with_a_count(run: Path):
    narrow = sql(run, "SELECT * FROM docs ORDER BY column_00", "--max-width", "80", "--max-rows", "5")
    lines = narrow.rstrip("\n").splitlines()
    assert all(cell_len(line) <= 80 for line in lines[:-1])
    assert "column_00" in lines[1] and "column_29" in lines[1] and "column_15" not in lines[1] and "…" in lines[1]
    shown = lines[1].count("column_")
    assert lines[-1] == f"60 rows (5 shown), 30 columns ({shown} shown; --max-width or --format csv for all)"
    wide = sql(run, "SELECT * FROM docs ORDER BY column_00", "--max-width", "400", "--max-rows", "5")
    assert wide.rstrip("\n").splitlines()[1].count("column_") == 30


def test_csv_and_json_are_duckdb_writers_output(run: Path, tmp_path: Path):
    query = "SELECT * FROM clusters ORDER BY cluster"
    reference = duckdb.connect()
    source = f"(SELECT * FROM read_parquet('{run}/clusters/clusters.parquet') ORDER BY cluster)"
    reference.execute(f"COPY {source} TO '{tmp_path}/ref.csv' (HEADER)")
    reference.execute(f"COPY {source} TO '{tmp_path}/ref.json' (FORMAT json, ARRAY true)")
    csv_out = sql(run, query, "--format", "csv")
    assert csv_out == (tmp_path / "ref.csv").read_text()
    assert "\"[python, module, import]\"" in csv_out and LONG.splitlines()[1] in csv_out  # whole values
    rows = json.loads(sql(run, query, "--format", "json"))
    assert rows == json.loads((tmp_path / "ref.json").read_text())
    assert rows[0]["terms"] == ["python", "module", "import"] and rows[0]["info"] == {"label": "code", "share": 0.5}
    assert rows[0]["langs"] == {"en": 3, "de": 1} and rows[0]["sample"] == LONG and rows[2]["raw"] is None
    assert sql(run, query, "--output", str(tmp_path / "out.json")).startswith("wrote 3 rows")
    assert json.loads((tmp_path / "out.json").read_text()) == rows


def test_markdown_has_every_value_whole(run: Path):
    out = sql(run, "SELECT cluster, terms, info, sample FROM clusters ORDER BY cluster", "--format", "markdown")
    lines = out.rstrip("\n").splitlines()
    assert lines[0] == "| cluster | terms | info | sample |" and lines[1] == "|---|---|---|---|"
    assert len(lines) == 5
    assert "[python, module, import]" in lines[2] and LONG.replace("\n", "<br>") in lines[2]
    assert "a\\|b" in lines[3] and lines[4].endswith("| NULL | NULL |")
