"""Shards, manifest and the read-only DuckDB catalog, on small tables of real text."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from storage.catalog import QueryRefused, open_catalog, query
from storage.manifest import Manifest, describe, describe_input, load_manifest, save_manifest
from storage.schema import DOCUMENT_SCHEMA, SchemaError, check_documents, document_id
from storage.shards import (
    ShardWriter,
    completed_units,
    discard_partial_unit,
    mark_unit_done,
    stage_files,
)

FORTUNES = Path("/usr/share/games/fortunes/fortunes")


def real_documents(n: int, source: str = "fortunes") -> pa.Table:
    texts = [t.strip() for t in FORTUNES.read_text(errors="replace").split("\n%\n") if t.strip()][:n]
    return pa.table({
        "id": [document_id(source, i) for i in range(len(texts))],
        "text": pa.array(texts, pa.large_string()),
        "url": [None] * len(texts),
        "source": [source] * len(texts),
        "offset": pa.array(range(len(texts)), pa.int64()),
        "metadata": ['{"origin": "fortunes"}'] * len(texts),
    }, schema=DOCUMENT_SCHEMA)


def test_document_id_is_stable_and_distinct():
    assert document_id("a.jsonl", 0) == document_id("a.jsonl", 0)
    assert len({document_id("a.jsonl", i) for i in range(10_000)}) == 10_000
    assert document_id("a.jsonl", 1) != document_id("b.jsonl", 1)


def test_check_documents_names_the_bad_column():
    docs = real_documents(5)
    check_documents(docs)
    with pytest.raises(SchemaError, match="missing column 'text'"):
        check_documents(docs.drop_columns(["text"]))
    with pytest.raises(SchemaError, match="column 'offset' is string"):
        check_documents(docs.set_column(4, "offset", pa.array(["x"] * 5)))


def test_shard_writer_splits_files_and_counts_rows(tmp_path):
    docs = real_documents(250)
    writer = ShardWriter(tmp_path, "ingest", 3, max_rows_per_file=100)
    for start in range(0, 250, 50):
        writer.write(kept=docs.slice(start, 50))
    writer.write(dropped=docs.slice(0, 7).append_column("drop_reason", pa.array(["short"] * 7)))
    files = writer.close()
    kept_files = stage_files(tmp_path, "shards", "ingest")
    assert [p.name for p in kept_files] == ["part-00003-0000.parquet", "part-00003-0001.parquet",
                                            "part-00003-0002.parquet"]
    assert sum(pq.read_metadata(p).num_rows for p in kept_files) == 250
    assert writer.rows == {"shards": 250, "dropped": 7, "quarantine": 0}
    assert len(files) == 4 and not list(tmp_path.rglob(".tmp-*"))
    assert pq.read_table(kept_files[0]).column("text").to_pylist() == docs.slice(0, 100).column("text").to_pylist()


def test_resume_bookkeeping_discards_partial_units(tmp_path):
    docs = real_documents(20)
    for rank in (0, 1):
        writer = ShardWriter(tmp_path, "ingest", rank)
        writer.write(kept=docs)
        writer.close()
    mark_unit_done(tmp_path, "ingest", 0, {"rank": 0})
    (tmp_path / "shards" / "ingest" / ".tmp-99-part-00001-0001.parquet").write_bytes(b"half a file")
    assert set(completed_units(tmp_path, "ingest")) == {0}
    assert discard_partial_unit(tmp_path, "ingest", 1) == 2
    assert [p.name for p in stage_files(tmp_path, "shards", "ingest")] == ["part-00000-0000.parquet"]


def test_manifest_roundtrip_and_plain_words(tmp_path):
    source = tmp_path / "input.txt"
    source.write_bytes(b"hello world\n" * 1000)
    manifest = Manifest(command="ingest")
    manifest.inputs = [describe_input(str(source))]
    record = manifest.stage("ingest")
    record.status, record.units, record.units_done = "complete", 1, 1
    record.counts = {"docs_in": 10, "docs_out": 7, "dropped": {"empty_text": 2}, "quarantined": 1}
    manifest.final_stage = "ingest"
    save_manifest(manifest, tmp_path)
    loaded = load_manifest(tmp_path)
    assert loaded.inputs[0].size == 12_000
    assert loaded.inputs[0].sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    text = describe(loaded)
    assert "10 documents in, 7 kept, 2 dropped (2 empty_text), 1 quarantined" in text
    assert "`docs` view reads stage 'ingest'" in text


@pytest.fixture()
def run_dir(tmp_path) -> Path:
    docs = real_documents(40)
    writer = ShardWriter(tmp_path, "ingest", 0)
    writer.write(kept=docs.slice(0, 30), dropped=docs.slice(30, 10).append_column(
        "drop_reason", pa.array(["too_short"] * 10)))
    writer.close()
    (tmp_path.parent / "secret.csv").write_text("a,b\n1,2\n")
    return tmp_path


def test_catalog_views_answer_queries(run_dir):
    con = open_catalog(run_dir)
    assert query(con, "SELECT count(*) AS n FROM docs").column("n").to_pylist() == [30]
    assert query(con, "SELECT drop_reason, count(*) AS n FROM dropped GROUP BY 1").to_pylist() == \
        [{"drop_reason": "too_short", "n": 10}]
    assert query(con, "SELECT count(*) AS n FROM stage_ingest").column("n").to_pylist() == [30]


@pytest.mark.parametrize("sql, refusal", [
    ("COPY (SELECT * FROM docs) TO 'out.csv'", "refused a COPY statement"),
    ("CREATE TABLE t AS SELECT 1", "refused a CREATE statement"),
    ("ATTACH 'other.duckdb'", "refused a ATTACH statement"),
    ("INSTALL httpfs", "refused a"),
    ("SET enable_external_access=true", "refused a"),
    ("SELECT 1; DROP VIEW docs", "refused a DROP statement"),
    ("SELECT * FROM read_csv('{secret}')", "Permission Error"),
    ("SELECT * FROM nowhere", "Table with name nowhere does not exist"),
    ("SELEC 1", "syntax error"),
])
def test_catalog_refuses_writes_and_outside_reads(run_dir, sql, refusal):
    con = open_catalog(run_dir)
    with pytest.raises(QueryRefused, match=refusal) as error:
        query(con, sql.format(secret=run_dir.parent / "secret.csv"))
    assert "\n" not in str(error.value)
    assert query(con, "SELECT count(*) AS n FROM docs").column("n").to_pylist() == [30]
