"""Readers on real input: what comes out of JSONL, Parquet, WARC and WET files, ids, URLs and globs."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from reader_inputs import (
    fortunes,
    html_pages,
    jsonl_records,
    write_jsonl,
    write_lines,
    write_warc,
    write_wet,
)

from operators.base import split_dropped
from operators.read_jsonl import JsonlReader
from operators.read_parquet import ParquetReader
from operators.read_warc import WarcReader, WetReader
from operators.reader import READ_SCHEMA, Reader, expand_inputs, reader_for
from storage.schema import QUARANTINE_SCHEMA, check_documents, document_id


def read_all(reader: Reader, path: str) -> tuple[pa.Table, pa.Table]:
    batches = list(reader(path))
    documents = pa.concat_tables([b.documents for b in batches]) if batches else READ_SCHEMA.empty_table()
    quarantine = pa.concat_tables([b.quarantine for b in batches]) if batches else QUARANTINE_SCHEMA.empty_table()
    return documents, quarantine


@pytest.fixture(scope="module")
def records() -> list[dict]:
    return jsonl_records(40)


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".jsonl.zst"])
def test_jsonl_reads_every_line_with_offsets_ids_and_metadata(tmp_path: Path, records: list[dict], suffix: str):
    path = tmp_path / f"python-docs{suffix}"
    offsets = write_jsonl(path, records)
    reader = JsonlReader()
    documents, quarantine = read_all(reader, str(path))

    assert quarantine.num_rows == 0
    assert documents.schema == READ_SCHEMA
    check_documents(documents)
    rows = documents.to_pylist()
    assert [r["text"] for r in rows] == [r["text"] for r in records]
    assert [r["url"] for r in rows] == [r["url"] for r in records]
    assert [r["offset"] for r in rows] == offsets  # line starts in the decompressed stream
    assert {r["source"] for r in rows} == {str(path)}
    assert [r["id"] for r in rows] == [r["id"] for r in records]  # the corpus's own ids, as datatrove keeps them
    assert all(r["drop_reason"] is None for r in rows)
    # every field other than text, url and id is kept
    assert json.loads(rows[3]["metadata"]) == {"domain": "docs.python.org", "lang": "en"}
    assert reader.stats.docs_in == reader.stats.docs_out == len(records)
    assert reader.stats.chars_out == sum(len(r["text"]) for r in records)


def test_jsonl_text_key_and_batching(tmp_path: Path, records: list[dict]):
    path = tmp_path / "content.jsonl"
    write_jsonl(path, [{"content": r["text"], "lang": "en"} for r in records])
    reader = JsonlReader(text_key="content", batch_size=7)
    batches = list(reader(str(path)))
    assert [b.documents.num_rows for b in batches] == [7, 7, 7, 7, 7, 5]
    texts = [t for b in batches for t in b.documents.column("text").to_pylist()]
    assert texts == [r["text"] for r in records]
    assert batches[0].documents.column("url").null_count == 7


def test_blank_and_whitespace_documents(tmp_path: Path, records: list[dict]):
    """Blank lines are no records; a document whose text is only whitespace is dropped as empty_text."""
    path = tmp_path / "gaps.jsonl"
    lines = [json.dumps({"text": records[0]["text"]}).encode() + b"\n", b"\n", b"  \n",
             json.dumps({"text": " \n\t "}).encode() + b"\n", json.dumps({"text": ""}).encode() + b"\n",
             json.dumps({"text": records[1]["text"]}).encode() + b"\n"]
    offsets = write_lines(path, lines)
    reader = JsonlReader()
    documents, quarantine = read_all(reader, str(path))
    assert documents.column("offset").to_pylist() == [offsets[0], offsets[3], offsets[4], offsets[5]]
    assert documents.column("drop_reason").to_pylist() == [None, "empty_text", "empty_text", None]
    assert quarantine.num_rows == 0
    assert reader.stats.docs_in == 4 and reader.stats.docs_out == 2
    assert dict(reader.stats.dropped) == {"empty_text": 2}


def test_parquet_rows_and_metadata(tmp_path: Path, records: list[dict]):
    path = tmp_path / "python-docs.parquet"
    table = pa.Table.from_pylist([{**r, "n_lines": r["text"].count("\n")} for r in records])
    pq.write_table(table, path, row_group_size=16)
    documents, quarantine = read_all(ParquetReader(batch_size=10), str(path))
    assert quarantine.num_rows == 0
    assert documents.column("text").to_pylist() == [r["text"] for r in records]
    assert documents.column("url").to_pylist() == [r["url"] for r in records]
    assert documents.column("offset").to_pylist() == list(range(len(records)))
    assert documents.column("id").to_pylist() == [r["id"] for r in records]
    meta = json.loads(documents.column("metadata")[5].as_py())
    assert meta == {"domain": "docs.python.org", "lang": "en", "n_lines": records[5]["text"].count("\n")}


def test_warc_extracts_html_like_datatrove(tmp_path: Path):
    """Same records, same text as datatrove's WarcReader followed by its Trafilatura extractor."""
    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.readers import WarcReader as DatatroveWarcReader
    from trafilatura.deduplication import LRU_TEST
    from warcio.archiveiterator import ArchiveIterator

    pages = html_pages(10)
    path = tmp_path / "crawl.warc.gz"
    write_warc(path, pages, extras=True)
    reader = WarcReader()
    documents, quarantine = read_all(reader, str(path))

    LRU_TEST.clear()  # trafilatura's deduplication memory: start datatrove's pass as ours started
    extractor = Trafilatura()
    theirs = {doc.metadata["url"]: extractor.extract(doc.text)
              for doc in DatatroveWarcReader(str(tmp_path)).read_file(path.name)}
    assert len(theirs) == len(pages)  # the PNG and the text/plain response are no documents there either
    ours = dict(zip(documents.column("url").to_pylist(), documents.column("text").to_pylist(), strict=True))
    assert ours == theirs
    future = ours[pages[0][0]]  # library/__future__.html: the page's text, without markup or navigation
    assert "Future statement definitions" in future and "<div" not in future and "Navigation" not in future

    assert quarantine.num_rows == 0
    assert dict(reader.stats.skipped) == {"warcinfo": 1, "request": len(pages), "not_html": 2}
    assert reader.stats.docs_in == reader.stats.docs_out == len(pages)
    with path.open("rb") as f:
        records = ArchiveIterator(f)
        response_offsets = [records.get_record_offset() for r in records if r.rec_type == "response"]
    assert documents.column("offset").to_pylist() == response_offsets[: len(pages)]
    meta = json.loads(documents.column("metadata")[0].as_py())
    assert meta["content_type"] == "text/html"
    assert meta["X-Origin"] == "python3.11-doc" and meta["WARC-Identified-Content-Language"] == "eng"
    assert meta["record_id"].startswith("<urn:uuid:") and meta["date"]


def test_wet_text_as_is(tmp_path: Path):
    texts = [(f"https://fortunes.example/{i}", text) for i, text in enumerate(fortunes(25))]
    path = tmp_path / "CC-MAIN-sample.warc.wet.gz"
    write_wet(path, texts)
    reader = reader_for(str(path))
    assert isinstance(reader, WetReader)
    documents, quarantine = read_all(reader, str(path))
    assert quarantine.num_rows == 0
    assert list(zip(documents.column("url").to_pylist(), documents.column("text").to_pylist(), strict=True)) == texts
    assert dict(reader.stats.skipped) == {"warcinfo": 1}
    meta = json.loads(documents.column("metadata")[0].as_py())
    assert meta["content_type"] == "text/plain" and meta["WARC-Identified-Content-Language"] == "eng"


def test_reader_for_by_extension_and_options():
    assert type(reader_for("a/b.jsonl.zst")) is JsonlReader
    assert type(reader_for("s3://bucket/x.ndjson.gz")) is JsonlReader
    assert type(reader_for("x.parquet")) is ParquetReader
    assert type(reader_for("CC-MAIN-x.warc.gz")) is WarcReader
    assert type(reader_for("CC-MAIN-x.warc.wet.gz")) is WetReader
    # one set of options serves mixed inputs: each reader takes those it knows
    jsonl = reader_for("x.jsonl", text_key="content", batch_size=10)
    assert (jsonl.text_key, jsonl.batch_size) == ("content", 10)
    assert reader_for("x.warc", text_key="content", batch_size=10).batch_size == 10
    with pytest.raises(TypeError, match="text_kye"):
        reader_for("x.jsonl", text_kye="content")
    with pytest.raises(ValueError, match="no reader for 'notes.txt'"):
        reader_for("notes.txt")


def test_generated_ids_are_stable_across_reads_and_paths(tmp_path: Path, records: list[dict],
                                                         monkeypatch: pytest.MonkeyPatch):
    """Without ids of their own, documents get 128-bit ids of the canonical source URI and offset: the same
    by any path to the file (relative, file://, a symlink), other for another file."""
    first, second = tmp_path / "a.jsonl.gz", tmp_path / "b.jsonl.gz"
    plain = [{k: v for k, v in r.items() if k != "id"} for r in records]
    offsets = write_jsonl(first, plain)
    write_jsonl(second, plain)
    (tmp_path / "link.jsonl.gz").symlink_to(first)
    monkeypatch.chdir(tmp_path)
    ids_1 = read_all(JsonlReader(), str(first))[0].column("id").to_pylist()
    assert ids_1 == [document_id(first.as_uri(), o) for o in offsets] and all(len(i) == 32 for i in ids_1)
    for other_path in ("a.jsonl.gz", f"file://{first}", "link.jsonl.gz"):
        assert read_all(JsonlReader(batch_size=3), other_path)[0].column("id").to_pylist() == ids_1
    ids_other = read_all(JsonlReader(), str(second))[0].column("id").to_pylist()
    assert len(set(ids_1)) == len(records)
    assert not set(ids_1) & set(ids_other)  # same content, other file: other documents


def test_input_ids_kept_and_duplicates_made_unique(tmp_path: Path, records: list[dict]):
    """id_key names the field; numbers are ids too; a repeated id is counted, replaced by the generated id,
    and kept in metadata; a document without one gets the generated id."""
    rows = [{"doc": 7, "text": records[0]["text"]}, {"doc": "b", "text": records[1]["text"]},
            {"doc": 7, "text": records[2]["text"], "lang": "en"}, {"text": records[3]["text"]}]
    path = tmp_path / "ids.jsonl"
    offsets = write_jsonl(path, rows)
    reader = JsonlReader(id_key="doc")
    documents = read_all(reader, str(path))[0].to_pylist()
    generated = [document_id(path.as_uri(), o) for o in offsets]
    assert [d["id"] for d in documents] == ["7", "b", generated[2], generated[3]]
    assert json.loads(documents[2]["metadata"]) == {"doc": "7", "lang": "en"}
    assert reader.stats.duplicate_ids == 1 and reader.stats.docs_out == 4
    table = pa.table({"text": [r["text"] for r in records[:3]], "id": [10, 11, 10]})
    pq.write_table(table, tmp_path / "ids.parquet")
    reader = ParquetReader()
    documents = read_all(reader, str(tmp_path / "ids.parquet"))[0].to_pylist()
    assert [d["id"] for d in documents[:2]] == ["10", "11"] and len(documents[2]["id"]) == 32
    assert json.loads(documents[2]["metadata"]) == {"id": "10"} and reader.stats.duplicate_ids == 1


def test_memory_url_reads_like_a_local_file(tmp_path: Path, records: list[dict]):
    local = tmp_path / "docs.jsonl.gz"
    offsets = write_jsonl(local, records)
    memory = fsspec.filesystem("memory")
    memory.pipe("/readers-test/part-0.jsonl.gz", local.read_bytes())
    try:
        [url] = expand_inputs(["memory://readers-test/*.jsonl.gz"])
        assert url == "memory:///readers-test/part-0.jsonl.gz"
        remote, _ = read_all(reader_for(url), url)
    finally:
        memory.rm("/readers-test", recursive=True)
    assert remote.column("text").to_pylist() == [r["text"] for r in records]
    assert remote.column("source").unique().to_pylist() == [url]
    assert remote.column("id").to_pylist() == [r["id"] for r in records]
    assert remote.column("offset").to_pylist() == offsets


def test_expand_inputs_dirs_globs_dedup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "web" / "deep").mkdir(parents=True)
    (tmp_path / "_progress").mkdir()
    names = ["a.jsonl", "b.jsonl.gz", "web/c.warc.gz", "web/deep/d.parquet", "web/deep/e.warc.wet.gz",
             "notes.txt", "web/README", "MANIFEST.json", "web/.tmp-1-f.parquet", "_progress/0.jsonl"]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    known = sorted(str(tmp_path / n) for n in names[:5])
    assert expand_inputs([str(tmp_path)]) == known
    assert expand_inputs([str(tmp_path / "*.jsonl*"), str(tmp_path / "a.jsonl"), f"file://{tmp_path}/web"]) == \
        sorted([known[0], known[1], *known[2:5]])
    assert expand_inputs([str(tmp_path / "**" / "*.gz")]) == [known[1], known[2], known[4]]
    monkeypatch.chdir(tmp_path)
    assert expand_inputs(["web/deep/d.parquet", "./a.jsonl"]) == [known[0], known[3]]
    assert expand_inputs(["MANIFEST.json"]) == [str(tmp_path / "MANIFEST.json")]  # named: read as JSONL
    with pytest.raises(ValueError, match="no reader for 'notes.txt'"):
        expand_inputs(["notes.txt"])
    with pytest.raises(FileNotFoundError, match="no input files"):
        expand_inputs([str(tmp_path / "*.csv")])
    with pytest.raises(FileNotFoundError, match="input not found"):
        expand_inputs([str(tmp_path / "missing.jsonl")])


def test_sample_corpus_every_document_read(sample_corpus: Path):
    """Every document of the sample corpus's truth table comes out of its JSONL, Parquet and WET files
    (the WARC holds the same pages as the WET; its extraction is checked against datatrove above)."""
    files = expand_inputs([str(sample_corpus / "docs"), str(sample_corpus / "web" / "*.wet.gz")])
    assert {reader_for(f).name for f in files} == {"read_jsonl", "read_parquet", "read_wet"}
    urls: Counter = Counter()
    for path in files:
        for batch in reader_for(path)(path):
            kept, dropped = split_dropped(batch.documents)
            assert dropped.num_rows == 0 and batch.quarantine.num_rows == 0
            urls.update(kept.column("url").to_pylist())
    truth = pq.read_table(sample_corpus / "truth.parquet", columns=["url"])
    assert urls == Counter(truth.column("url").to_pylist())
