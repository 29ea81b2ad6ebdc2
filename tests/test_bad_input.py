"""Bad input at the reader: the run goes on, the bad part is quarantined with file and offset, and every
record seen is a document, a drop or a quarantine row."""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from reader_inputs import doc_texts, html_pages, jsonl_records, write_jsonl, write_lines, write_warc

from operators.read_jsonl import JsonlReader
from operators.read_parquet import ParquetReader
from operators.read_warc import WarcReader
from operators.reader import READ_SCHEMA, Reader, reader_for
from storage.schema import QUARANTINE_SCHEMA


def read_accounted(reader: Reader, path: Path) -> tuple[list[dict], list[dict]]:
    """All documents and quarantine rows of `path`, after checking the counts add up."""
    batches = list(reader(str(path)))
    documents = pa.concat_tables([b.documents for b in batches] or [READ_SCHEMA.empty_table()]).to_pylist()
    quarantine = pa.concat_tables([b.quarantine for b in batches] or [QUARANTINE_SCHEMA.empty_table()]).to_pylist()
    stats = reader.stats
    assert stats.docs_in == stats.docs_out + sum(stats.dropped.values()) + stats.quarantined
    assert stats.docs_in == len(documents) + len(quarantine)
    assert stats.quarantined == len(quarantine)
    assert all(q["source"] == str(path) for q in quarantine)
    return documents, quarantine


@pytest.fixture(scope="module")
def records() -> list[dict]:
    return jsonl_records(40)


@pytest.fixture(scope="module")
def pages() -> list[tuple[str, bytes]]:
    return html_pages(8)


def clean_read(reader: Reader, path: Path) -> list[dict]:
    documents, quarantine = read_accounted(reader, path)
    assert not quarantine
    return documents


def test_corrupt_gzip_jsonl(tmp_path: Path, records: list[dict]):
    """gzip checks its CRC only at the end of a member, so what a flip garbles before that is read as it
    comes; the documents before the flip are intact and the failure is quarantined where it surfaced."""
    path = tmp_path / "docs.jsonl.gz"
    offsets = write_jsonl(path, records)
    plain = gzip.decompress(path.read_bytes())
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 20] = bytes(b ^ 0x55 for b in data[middle:middle + 20])
    path.write_bytes(bytes(data))
    damaged = _decompress_until_error(bytes(data))
    first_bad = next(i for i, (a, b) in enumerate(zip(plain, damaged, strict=False)) if a != b)

    documents, quarantine = read_accounted(JsonlReader(), path)
    failure = quarantine[-1]
    assert failure["error"].startswith(f"unreadable input at byte {failure['offset']} (decompressed)")
    assert all(d["offset"] < failure["offset"] for d in documents)
    # every line that ends before the flip and before the failure is read, as it was written
    ends = [*offsets[1:], len(plain)]
    intact = [i for i, (o, end) in enumerate(zip(offsets, ends, strict=True))
              if end <= first_bad and o < failure["offset"]]
    assert 5 < len(intact) < len(records)
    by_offset = {d["offset"]: d["text"] for d in documents}
    assert all(by_offset[offsets[i]] == records[i]["text"] for i in intact)


def _decompress_until_error(data: bytes) -> bytes:
    decompressor, out = zlib.decompressobj(31), []
    for start in range(0, len(data), 1024):
        try:
            out.append(decompressor.decompress(data[start:start + 1024]))
        except zlib.error:
            break
    return b"".join(out)


def test_corrupt_gzip_member_of_warc(tmp_path: Path, pages: list[tuple[str, bytes]]):
    """A WARC's gzip members are checked one by one: the records before the bad one are read, the bad
    one is quarantined at its offset, and reading stops there. Flips at several places of the member (and
    records whose ids and dates differ run to run) cover both ways warcio meets them: an error, or the
    member read as plain bytes whose garbage may parse as a record header."""
    path = tmp_path / "crawl.warc.gz"
    bad = 5
    for eighth in range(1, 8):
        write_warc(path, pages)
        good = clean_read(WarcReader(), path)
        data = bytearray(path.read_bytes())
        start, end = good[bad]["offset"], good[bad + 1]["offset"]
        flip = start + (end - start) * eighth // 8
        data[flip:flip + 20] = bytes(b ^ 0x55 for b in data[flip:flip + 20])
        path.write_bytes(bytes(data))

        documents, quarantine = read_accounted(WarcReader(), path)
        assert [d["text"] for d in documents] == [d["text"] for d in good[:bad]], eighth
        assert len(quarantine) == 1 and quarantine[0]["offset"] == start, (eighth, quarantine)
        assert "truncated or corrupt" in quarantine[0]["error"] or "unreadable WARC record" in quarantine[0]["error"]


@pytest.mark.parametrize("compressed", [False, True])
@pytest.mark.parametrize("where", ["payload", "header"])
def test_truncated_warc(tmp_path: Path, pages: list[tuple[str, bytes]], compressed: bool, where: str):
    path = tmp_path / ("crawl.warc.gz" if compressed else "crawl.warc")
    write_warc(path, pages)
    good = clean_read(WarcReader(), path)
    cut_record = 6
    start = good[cut_record]["offset"]
    end = good[cut_record + 1]["offset"] if cut_record + 1 < len(good) else path.stat().st_size
    cut = (start + end) // 2 if where == "payload" else start + 30
    path.write_bytes(path.read_bytes()[:cut])

    documents, quarantine = read_accounted(WarcReader(), path)
    assert [d["text"] for d in documents] == [d["text"] for d in good[:cut_record]]
    assert len(quarantine) == 1
    assert quarantine[0]["offset"] == start
    assert quarantine[0]["error"].endswith("(truncated or corrupt file)")


def test_invalid_utf8_line_is_quarantined_at_its_byte(tmp_path: Path, records: list[dict]):
    """JSON is UTF-8 by definition: a line that is not is corrupt input, quarantined, not patched."""
    lines = [json.dumps(r).encode() + b"\n" for r in records[:6]]
    broken = lines[3]
    at = len(broken) // 2
    lines[3] = broken[:at] + b"\xff\xfe" + broken[at:]
    path = tmp_path / "docs.jsonl"
    offsets = write_lines(path, lines)

    documents, quarantine = read_accounted(JsonlReader(), path)
    assert [d["offset"] for d in documents] == offsets[:3] + offsets[4:]
    assert quarantine == [{"source": str(path), "offset": offsets[3],
                           "error": f"invalid UTF-8 at byte {offsets[3] + at}",
                           "snippet": lines[3][:800].decode("utf-8", errors="replace")[:200]}]


def test_non_json_lines(tmp_path: Path, records: list[dict]):
    good = [json.dumps(r).encode() + b"\n" for r in records[:4]]
    lines = [good[0], b"this line is prose, not JSON\n", good[1], good[2][: len(good[2]) // 2] + b"\n", good[3],
             b"[1, 2, 3]\n"]
    path = tmp_path / "docs.jsonl"
    offsets = write_lines(path, lines)

    documents, quarantine = read_accounted(JsonlReader(), path)
    assert [d["text"] for d in documents] == [r["text"] for r in records[:4] if r is not records[2]]
    assert [(q["offset"], q["error"].split(":")[0]) for q in quarantine] == [
        (offsets[1], "not JSON"), (offsets[3], "not JSON"), (offsets[5], "not a JSON object but list")]
    assert quarantine[0]["snippet"] == "this line is prose, not JSON\n"


def test_missing_text_field(tmp_path: Path, records: list[dict]):
    path = tmp_path / "docs.jsonl"
    rows = [records[0], {"content": records[1]["text"], "lang": "en"}, {"text": None, "url": "x"},
            {"text": 42}, records[2]]
    offsets = write_jsonl(path, rows)

    documents, quarantine = read_accounted(JsonlReader(), path)
    assert [d["offset"] for d in documents] == [offsets[0], offsets[4]]
    assert [(q["offset"], q["error"]) for q in quarantine] == [
        (offsets[1], "no 'text' field (fields: content, lang)"),
        (offsets[2], "no 'text' field (fields: url)"),
        (offsets[3], "field 'text' is int, not a string"),
    ]


@pytest.mark.parametrize("name", ["empty.jsonl", "empty.jsonl.gz", "empty.jsonl.zst", "empty.warc.gz",
                                  "empty.warc.wet.gz", "empty.parquet", "blank-lines.jsonl",
                                  "zero-rows.parquet"])
def test_empty_file(tmp_path: Path, name: str):
    path = tmp_path / name
    if name == "blank-lines.jsonl":
        path.write_bytes(b"\n\n  \n")
    elif name == "zero-rows.parquet":
        pq.write_table(pa.table({"text": pa.array([], pa.string())}), path)
    else:
        path.write_bytes(b"")
    reader = reader_for(str(path))
    documents, quarantine = read_accounted(reader, path)
    assert documents == [] and quarantine == []
    assert reader.stats.docs_in == 0


def test_50_mb_document(tmp_path: Path, records: list[dict]):
    """Quarantined with its size and the first 200 characters, without holding it whole; the next line
    is read at its right offset."""
    text = "\n\n".join(t for _, t in doc_texts(40))
    huge = {"text": text * (50 * 2**20 // len(text) + 1), "id": "huge"}
    path = tmp_path / "docs.jsonl"
    offsets = write_jsonl(path, [records[0], huge, records[1]])
    line_bytes = offsets[2] - offsets[1] - 1
    assert line_bytes > 50 * 2**20

    documents, quarantine = read_accounted(JsonlReader(), path)
    assert [(d["offset"], d["text"]) for d in documents] == [(offsets[0], records[0]["text"]),
                                                              (offsets[2], records[1]["text"])]
    assert quarantine == [{"source": str(path), "offset": offsets[1],
                           "error": f"document of {line_bytes} bytes exceeds max_doc_bytes={8 * 2**20}",
                           "snippet": json.dumps(huge)[:200]}]


def test_oversized_parquet_row_and_warc_record(tmp_path: Path, records: list[dict], pages: list[tuple[str, bytes]]):
    table = pa.table({"text": [r["text"] for r in records[:5]]})
    pq.write_table(table, tmp_path / "docs.parquet")
    limit = sorted(len(r["text"].encode()) for r in records[:5])[2]
    documents, quarantine = read_accounted(ParquetReader(max_doc_bytes=limit), tmp_path / "docs.parquet")
    assert len(documents) == 3 and len(quarantine) == 2
    assert all(len(d["text"].encode()) <= limit for d in documents)

    write_warc(tmp_path / "crawl.warc.gz", pages)
    limit = sorted(len(html) for _, html in pages)[4]
    documents, quarantine = read_accounted(WarcReader(max_doc_bytes=limit), tmp_path / "crawl.warc.gz")
    assert len(documents) + len(quarantine) == len(pages) and len(quarantine) >= 3
    assert all(q["error"].startswith("document of ") and q["snippet"].startswith("\n<!DOCTYPE html>")
               for q in quarantine)


@pytest.mark.parametrize("problem", ["no text column", "text is not a string"])
def test_parquet_with_wrong_schema(tmp_path: Path, records: list[dict], problem: str):
    if problem == "no text column":
        table = pa.table({"content": [r["text"] for r in records], "lang": ["en"] * len(records)})
        expected = "no text column 'text' (schema: content: string, lang: string)"
    else:
        table = pa.table({"text": list(range(len(records))), "lang": ["en"] * len(records)})
        expected = "text column 'text' is int64, not a string (schema: text: int64, lang: string)"
    path = tmp_path / "docs.parquet"
    pq.write_table(table, path)

    documents, quarantine = read_accounted(ParquetReader(), path)
    assert documents == []
    assert quarantine == [{"source": str(path), "offset": None, "error": expected, "snippet": None}]


def test_file_that_cannot_be_opened(tmp_path: Path):
    path = tmp_path / "gone.jsonl.gz"
    documents, quarantine = read_accounted(JsonlReader(), path)
    assert documents == []
    assert len(quarantine) == 1 and quarantine[0]["offset"] is None
    assert quarantine[0]["error"].startswith(f"cannot open {path}: FileNotFoundError")


def test_not_a_parquet_file(tmp_path: Path, records: list[dict]):
    path = tmp_path / "docs.parquet"
    write_jsonl(path, records[:3])  # JSON lines under a .parquet name
    documents, quarantine = read_accounted(ParquetReader(), path)
    assert documents == [] and len(quarantine) == 1
    assert quarantine[0]["error"].startswith("not a readable Parquet file")
