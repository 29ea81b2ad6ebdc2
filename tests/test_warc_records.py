"""Every WARC/ARC record accounted for: a document, skipped with its reason, or quarantined, on archives
written the way other crawlers write them (revisits, metadata, resources, non-HTML and non-200 responses,
a file gzipped whole, ARC)."""

from __future__ import annotations

import gzip
from pathlib import Path

import pyarrow as pa
import pytest
from reader_inputs import CRAWL_SKIPPED, html_pages, write_arc, write_crawl, write_warc

from operators.read_warc import WarcReader
from operators.reader import reader_for

PAGES = 4


@pytest.fixture(scope="module")
def pages() -> list[tuple[str, bytes]]:
    return html_pages(PAGES)


def read(path: Path) -> tuple[WarcReader, list[dict], list[dict]]:
    reader = reader_for(str(path))
    batches = list(reader(str(path)))
    documents = pa.concat_tables([b.documents for b in batches]).to_pylist()
    quarantine = pa.concat_tables([b.quarantine for b in batches]).to_pylist()
    return reader, documents, quarantine


def records_in(path: Path) -> int:
    """The records warcio finds in the file (decompressed whole first, as it refuses whole-file gzip)."""
    import io

    from warcio.archiveiterator import ArchiveIterator

    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return sum(1 for _ in ArchiveIterator(io.BytesIO(data), arc2warc=True))


@pytest.mark.parametrize("name,whole", [("crawl.warc", False), ("crawl.warc.gz", False), ("crawl.warc.gz", True)])
def test_every_record_has_an_outcome(tmp_path: Path, pages, name: str, whole: bool):
    path = tmp_path / name
    write_crawl(path, pages, whole_gzip=whole)
    reader, documents, quarantine = read(path)
    stats = reader.stats
    assert quarantine == []
    assert dict(stats.skipped) == {**CRAWL_SKIPPED, "request": PAGES}
    assert [d["url"] for d in documents] == [url for url, _ in pages] + [pages[0][0].rsplit("/", 2)[0] + "/empty.html"]
    assert [d["drop_reason"] for d in documents] == [None] * PAGES + ["extraction_empty"]
    assert stats.docs_in == stats.docs_out + sum(stats.dropped.values()) + stats.quarantined
    assert records_in(path) == stats.docs_in + sum(stats.skipped.values()) + stats.quarantined
    assert all(d["offset"] >= 0 for d in documents)


def test_whole_file_gzip_reads_like_the_plain_file(tmp_path: Path, pages):
    """Offsets of a file gzipped whole are offsets in its decompressed stream: those of the plain WARC."""
    write_crawl(tmp_path / "crawl.warc", pages)
    (tmp_path / "crawl.warc.gz").write_bytes(gzip.compress((tmp_path / "crawl.warc").read_bytes()))
    _, plain, _ = read(tmp_path / "crawl.warc")
    _, whole, _ = read(tmp_path / "crawl.warc.gz")
    assert [(d["offset"], d["text"]) for d in whole] == [(d["offset"], d["text"]) for d in plain]


def test_cut_whole_file_gzip_is_quarantined_at_a_real_offset(tmp_path: Path, pages):
    """warcio's own offsets go negative inside a gzip member that holds many records; ours are where the
    last complete record ended."""
    path = tmp_path / "cut.warc.gz"
    write_crawl(path, pages, whole_gzip=True)
    _, full, _ = read(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])
    reader, documents, quarantine = read(path)
    assert len(quarantine) == 1 and quarantine[0]["offset"] >= 0
    assert documents == full[: len(documents)] and 0 < len(documents) < len(full)
    assert quarantine[0]["offset"] >= documents[-1]["offset"]
    assert reader.stats.docs_in == len(documents) + 1


@pytest.mark.parametrize("name", ["crawl.arc", "crawl.arc.gz"])
def test_arc_files_read_like_warc(tmp_path: Path, pages, name: str):
    """The same pages in an ARC file and a WARC give the same documents."""
    write_arc(tmp_path / name, pages)
    write_warc(tmp_path / "same.warc.gz", pages)
    reader, documents, quarantine = read(tmp_path / name)
    _, warc_documents, _ = read(tmp_path / "same.warc.gz")
    assert quarantine == []
    assert [(d["url"], d["text"]) for d in documents] == [(d["url"], d["text"]) for d in warc_documents]
    assert dict(reader.stats.skipped) == {"warcinfo": 1, "not_html": 1}
    assert records_in(tmp_path / name) == len(documents) + 2


def test_ingest_manifest_counts_every_record(tmp_path: Path, pages, ray_local):
    """The run's manifest and summary carry the skipped records by reason next to documents and drops."""
    from flows.ingest import ingest
    from storage.manifest import describe, load_manifest

    (tmp_path / "in").mkdir()
    write_crawl(tmp_path / "in" / "crawl.warc.gz", pages)
    write_arc(tmp_path / "in" / "old.arc.gz", pages)
    ingest(inputs=[str(tmp_path / "in")], out=str(tmp_path / "run"), progress=False)
    manifest = load_manifest(tmp_path / "run")
    counts = manifest.stages["ingest"].counts
    skipped = {**CRAWL_SKIPPED, "request": PAGES}
    skipped["warcinfo"] += 1
    skipped["not_html"] += 1
    assert counts["skipped"] == skipped
    assert counts["docs_in"] == 2 * PAGES + 1 and counts["docs_out"] == 2 * PAGES
    assert counts["dropped"] == {"extraction_empty": 1} and counts["quarantined"] == 0
    records = records_in(tmp_path / "in" / "crawl.warc.gz") + records_in(tmp_path / "in" / "old.arc.gz")
    assert records == counts["docs_in"] + sum(counts["skipped"].values()) + counts["quarantined"]
    assert f"{sum(skipped.values())} records skipped (" in describe(manifest)
