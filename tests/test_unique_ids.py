"""Input ids are kept as document ids, and unique in the run: a repeat within a part or across files and
parts gets the generated id of its source and offset, the input's id kept in metadata, and is counted."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
from reader_inputs import jsonl_records, write_jsonl

from flows.ingest import ingest
from storage.schema import document_id, source_uri


def test_ids_repeated_across_files_and_parts_are_made_unique_and_counted(tmp_path: Path):
    records = jsonl_records(30)
    first, second = records[:20], [*records[20:], *records[:5]]  # second repeats first's py-0 .. py-4
    second[0] = {**second[0], "id": "py-21"}  # and a repeat inside the second file (of py-21)
    offsets_a = write_jsonl(tmp_path / "a.jsonl", first)
    offsets = write_jsonl(tmp_path / "b.jsonl", second)
    out = tmp_path / "run"
    # units of 8 kB: each file is read in several parts, so repeats also cross parts of one file
    counts = ingest(inputs=[str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")], out=str(out),
                    unit_bytes=8_000, progress=False)
    assert counts["docs_in"] == 35 and counts["docs_out"] == 35
    assert counts["duplicate_ids"] == 6

    rows = duckdb.sql(f"SELECT id, source, \"offset\", metadata FROM read_parquet('{out}/shards/ingest/*.parquet')"
                      ).fetchall()
    assert len({r[0] for r in rows}) == 35
    by_place = {(Path(r[1]).name, r[2]): (r[0], json.loads(r[3] or "{}")) for r in rows}
    for i in range(20):  # the first file keeps every input id
        doc_id, metadata = by_place["a.jsonl", offsets_a[i]]
        assert doc_id == f"py-{i}" and "id" not in metadata
    uri = source_uri(str(tmp_path / "b.jsonl"))
    for row in [10, 11, 12, 13, 14, 1]:  # py-0..py-4 again, and the second py-21
        doc_id, metadata = by_place["b.jsonl", offsets[row]]
        assert doc_id == document_id(uri, offsets[row])
        assert metadata["id"] == second[row]["id"]

    # a rerun finds the stage complete, replaces nothing more and reports the same count
    again = ingest(inputs=[str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")], out=str(out),
                   unit_bytes=8_000, progress=False)
    assert again["duplicate_ids"] == 6
    assert len({r[0] for r in duckdb.sql(f"SELECT id FROM read_parquet('{out}/shards/ingest/*.parquet')"
                                         ).fetchall()}) == 35



def test_curate_makes_the_same_ids_unique_in_its_fused_pass(tmp_path: Path):
    """curate reads and filters in one pass (the filter stage's shards and the drops, no read-stage copy
    unless keep_stage_copies): the ids it makes unique are those the ingest flow makes, in every copy."""
    from flows.config import Filters, RunConfig
    from flows.curate import curate
    from storage.catalog import open_catalog
    from storage.manifest import load_manifest

    records = jsonl_records(30)
    second = [*records[20:], *records[:5]]
    second[0] = {**second[0], "id": "py-21"}
    write_jsonl(tmp_path / "a.jsonl", records[:20])
    write_jsonl(tmp_path / "b.jsonl", second)
    inputs = [str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")]
    ingest(inputs=inputs, out=str(tmp_path / "ingested"), unit_bytes=8_000, progress=False)
    expected = sorted(duckdb.sql(f"SELECT id FROM read_parquet('{tmp_path}/ingested/shards/ingest/*.parquet')"
                                 ).fetchall())
    off = {"enabled": False}
    for copies in (False, True):  # no language ID nor filters: the token counter alone is the filter stage
        config = RunConfig.model_validate({"inputs": {"paths": inputs, "unit_bytes": 8_000}, "langid": off,
                                           "filters": dict.fromkeys(Filters.model_fields, off),
                                           "keep_stage_copies": copies})
        out = tmp_path / f"copies-{copies}"
        curate(config, str(out), progress=False)
        assert load_manifest(out).stages["ingest"].counts["duplicate_ids"] == 6
        con = open_catalog(out)
        for view in ("stage_ingest", "stage_filter"):
            assert sorted(con.execute(f"SELECT id FROM {view}").fetchall()) == expected, (copies, view)
        assert (out / "shards" / "ingest").exists() == copies
