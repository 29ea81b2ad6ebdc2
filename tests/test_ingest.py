"""The `ingest` flow end to end on the sample corpus plus damaged files, then `mixforge sql` over it."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from flows.ingest import ingest
from mixforge.cli import app
from storage.catalog import open_catalog, query
from storage.manifest import load_manifest

runner = CliRunner()


@pytest.fixture(scope="module")
def inputs(sample_corpus, tmp_path_factory) -> list[str]:
    """The sample corpus, a JSONL file with a bad line, and a WARC cut in the middle of a record."""
    folder = tmp_path_factory.mktemp("inputs")
    lines = [json.dumps({"text": f"A real line number {i}.", "origin": "test"}) for i in range(5)]
    lines.insert(2, "{not json")
    (folder / "mixed.jsonl").write_text("\n".join(lines) + "\n")
    warc = (sample_corpus / "web" / "sample.warc.gz").read_bytes()
    (folder / "cut.warc.gz").write_bytes(warc[: len(warc) // 3])
    for path in sorted((sample_corpus / "docs").iterdir()):
        shutil.copy(path, folder / path.name)
    return [str(folder), str(sample_corpus / "web" / "sample.warc.gz")]


@pytest.fixture(scope="module")
def run_dir(inputs, ray_local, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    ingest(inputs=inputs, out=str(out), progress=False)
    return out


def test_every_document_is_accounted_for(run_dir, sample_corpus):
    manifest = load_manifest(run_dir)
    counts = manifest.stages["ingest"].counts
    con = open_catalog(run_dir)
    n_docs = query(con, "SELECT count(*) AS n FROM docs").column("n")[0].as_py()
    n_dropped = query(con, "SELECT count(*) AS n FROM dropped").column("n")[0].as_py()
    n_quarantined = query(con, "SELECT count(*) AS n FROM quarantine").column("n")[0].as_py()
    assert counts["docs_in"] == n_docs + n_dropped + n_quarantined
    assert (counts["docs_out"], counts["quarantined"]) == (n_docs, n_quarantined)
    truth = json.loads((sample_corpus / "MANIFEST.json").read_text())["counts"]
    # Every sample document and web page, the 5 good JSONL lines, and the pages before the cut.
    cut_pages = n_docs - truth["total"] - 5
    assert 0 < cut_pages < truth["web_pages"]
    bad = query(con, 'SELECT source, "offset", error FROM quarantine ORDER BY source').to_pylist()
    assert [Path(row["source"]).name for row in bad] == ["cut.warc.gz", "mixed.jsonl"]
    assert bad[1]["offset"] == len("\n".join(json.dumps({"text": f"A real line number {i}.", "origin": "test"})
                                             for i in range(2))) + 1
    assert len({r["id"] for r in query(con, "SELECT id FROM docs").to_pylist()}) == n_docs
    assert len(manifest.inputs) == 8 and all(len(f.sha256) == 64 for f in manifest.inputs)


def test_documents_keep_their_fields(run_dir):
    con = open_catalog(run_dir)
    rows = query(con, """SELECT metadata->>'$.origin' AS origin, metadata->>'$.lang' AS lang, count(*) AS n
                         FROM docs WHERE source LIKE '%fortunes%' GROUP BY ALL ORDER BY n DESC""").to_pylist()
    assert rows[0] == {"origin": "fortunes", "lang": "en", "n": 1500}


def test_rerun_skips_completed_units_and_changes_nothing(run_dir, inputs):
    before = {p: p.stat().st_mtime_ns for p in sorted((run_dir / "shards").rglob("*.parquet"))}
    ingest(inputs=inputs, out=str(run_dir), progress=False)
    after = {p: p.stat().st_mtime_ns for p in sorted((run_dir / "shards").rglob("*.parquet"))}
    assert before == after


def test_sql_cli_formats_and_refusals(run_dir, tmp_path):
    result = runner.invoke(app, ["sql", str(run_dir), "SELECT count(*) AS n FROM docs", "--format", "csv"])
    assert result.exit_code == 0
    n_docs = int(result.output.strip().splitlines()[-1])
    result = runner.invoke(app, ["sql", str(run_dir), "SELECT id, url FROM docs ORDER BY id LIMIT 3", "-f", "json"])
    assert result.exit_code == 0 and len(json.loads(result.output)) == 3
    target = tmp_path / "docs.parquet"
    result = runner.invoke(app, ["sql", str(run_dir), "SELECT * FROM docs", "--output", str(target)])
    assert result.exit_code == 0 and pq.read_metadata(target).num_rows == n_docs
    result = runner.invoke(app, ["sql", str(run_dir), f"COPY docs TO '{run_dir}/x.csv'"])
    assert result.exit_code == 2 and "refused a COPY statement" in result.output
    assert not (run_dir / "x.csv").exists()
    result = runner.invoke(app, ["sql", str(run_dir), "SELECT * FROM docs", "--format", "xml"])
    assert result.exit_code == 2 and "--format must be one of" in result.output


def test_manifest_cli_says_what_happened(run_dir):
    result = runner.invoke(app, ["manifest", str(run_dir)])
    assert result.exit_code == 0
    assert "ingest (complete" in result.output and "quarantined" in result.output


def test_sql_interactive_prompt(run_dir):
    result = runner.invoke(app, ["sql", str(run_dir)], input="SELECT count(*) AS n\nFROM quarantine;\n\\q\n")
    assert result.exit_code == 0
    assert "views" in result.output and "2 rows" not in result.output and "\n1 row\n" in result.output


def test_gzip_corruption_is_quarantined_not_fatal(ray_local, tmp_path):
    good = "\n".join(json.dumps({"text": f"document {i} " * 20}) for i in range(2000)).encode()
    blob = bytearray(gzip.compress(good))
    blob[len(blob) // 2: len(blob) // 2 + 64] = b"\x00" * 64
    (tmp_path / "bad.jsonl.gz").write_bytes(bytes(blob))
    out = tmp_path / "run"
    counts = ingest(inputs=[str(tmp_path / "bad.jsonl.gz")], out=str(out), progress=False)
    assert counts["quarantined"] >= 1
    assert counts["docs_in"] == counts["docs_out"] + sum(counts["dropped"].values()) + counts["quarantined"]
