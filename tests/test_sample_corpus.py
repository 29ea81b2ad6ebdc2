"""The sample corpus that `make sample` builds: complete, labelled, consistent with its MANIFEST."""

from __future__ import annotations

import collections
import gzip
import hashlib
import io
import json
import time
from pathlib import Path

import lxml.html
import pyarrow.parquet as pq
import pytest
import zstandard
from warcio.archiveiterator import ArchiveIterator

from mixforge.sample_corpus import build_sample_corpus
from mixforge.sample_corpus.extract import english_leftovers, page_text, words
from mixforge.sample_corpus.sources import DOC_SCHEMA, MIN_DOC_CHARS, MIN_FORTUNE_CHARS, ORIGINS


@pytest.fixture(scope="module")
def manifest(sample_corpus: Path) -> dict:
    return json.loads((sample_corpus / "MANIFEST.json").read_text())


@pytest.fixture(scope="module")
def truth(sample_corpus: Path) -> list[dict]:
    return pq.read_table(sample_corpus / "truth.parquet").to_pylist()


def read_docs(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pylist()
    if path.name.endswith(".jsonl.gz"):
        lines = gzip.open(path, "rt", encoding="utf-8")
    else:
        lines = io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(path.open("rb")), encoding="utf-8")
    with lines:
        return [json.loads(line) for line in lines]


@pytest.fixture(scope="module")
def docs(sample_corpus: Path) -> dict[str, list[dict]]:
    """Documents per file, for every document file the corpus has."""
    return {p.name: read_docs(p) for p in sorted((sample_corpus / "docs").iterdir())}


def warc_records(path: Path) -> list[tuple[str, dict, bytes]]:
    with path.open("rb") as stream:
        return [(r.rec_type, dict(r.rec_headers.headers), r.content_stream().read()) for r in ArchiveIterator(stream)]


def test_warc_has_request_response_and_truth_per_page(sample_corpus: Path, manifest: dict, truth: list[dict]):
    records = warc_records(sample_corpus / "web" / "sample.warc.gz")
    types = collections.Counter(kind for kind, _, _ in records)
    assert records[0][0] == "warcinfo"
    assert types["response"] >= 150
    assert types["response"] == types["request"] == types["metadata"] == manifest["counts"]["web_pages"]
    web_truth = {row["url"]: row for row in truth if row["file"] == "web/sample.warc.gz"}
    responses = {h["WARC-Record-ID"]: h["WARC-Target-URI"] for kind, h, _ in records if kind == "response"}
    assert len(set(responses.values())) == len(responses) == len(web_truth)
    for kind, headers, body in records:
        if kind == "response":
            assert b"<" in body[:2000].lower() and headers["WARC-Identified-Payload-Type"] == "text/html"
        if kind == "metadata":
            fields = dict(line.split(": ", 1) for line in body.decode().splitlines())
            row = web_truth[headers["WARC-Target-URI"]]
            assert responses[headers["WARC-Concurrent-To"]] == row["url"]
            assert (fields["mixforge-origin"], fields["mixforge-lang"]) == (row["origin"], row["lang"])
    assert {row["origin"] for row in web_truth.values()} == {"trafilatura-cache", "htmldate-cache"}


def test_wet_has_plain_text_for_every_response(sample_corpus: Path, manifest: dict):
    warc_ids = {
        h["WARC-Record-ID"]
        for kind, h, _ in warc_records(sample_corpus / "web" / "sample.warc.gz")
        if kind == "response"
    }
    conversions = [
        (h, body.decode("utf-8"))
        for kind, h, body in warc_records(sample_corpus / "web" / "sample.warc.wet.gz")
        if kind == "conversion"
    ]
    assert len(conversions) == manifest["counts"]["web_pages"]
    assert {h["WARC-Refers-To"] for h, _ in conversions} == warc_ids
    texts = [text for _, text in conversions]
    assert all(text.strip() for text in texts)
    assert sum("<div" in text or "<p>" in text for text in texts) == 0
    assert sorted(len(t) for t in texts)[len(texts) // 2] > 1000  # median page: real article text


def test_every_document_has_text_and_its_truth(docs: dict[str, list[dict]], truth: list[dict]):
    by_url = {row["url"]: row for row in truth}
    for name, rows in docs.items():
        assert rows, name
        for doc in rows:
            assert set(doc) == set(DOC_SCHEMA.names)
            minimum = MIN_FORTUNE_CHARS if doc["origin"] == "fortunes" else MIN_DOC_CHARS
            assert len(doc["text"].strip()) >= minimum, doc["url"]
            row = by_url[doc["url"]]
            assert (row["origin"], row["domain"], row["lang"]) == (doc["origin"], doc["domain"], doc["lang"])
            assert row["file"] == f"docs/{name}"
            assert doc["domain"] == ORIGINS[doc["origin"]].domain and doc["lang"]


def test_formats_and_parquet_schema(sample_corpus: Path, docs: dict[str, list[dict]]):
    names = list(docs)
    assert any(n.endswith(".jsonl.gz") for n in names)
    assert any(n.endswith(".jsonl.zst") for n in names)
    assert any(n.endswith(".parquet") for n in names)
    for name in names:
        if name.endswith(".parquet"):
            assert pq.read_schema(sample_corpus / "docs" / name).names == DOC_SCHEMA.names
    assert pq.read_schema(sample_corpus / "truth.parquet").names[:4] == ["url", "origin", "domain", "lang"]


def test_counts_match_manifest(manifest: dict, docs: dict[str, list[dict]], truth: list[dict]):
    counts = manifest["counts"]
    doc_origins = collections.Counter(doc["origin"] for rows in docs.values() for doc in rows)
    truth_origins = collections.Counter(row["origin"] for row in truth)
    assert len(truth) == counts["total"] == sum(len(rows) for rows in docs.values()) + counts["web_pages"]
    assert dict(truth_origins) == counts["by_origin"]
    for origin, n in doc_origins.items():
        assert counts["by_origin"][origin] == n
    assert dict(collections.Counter(row["lang"] for row in truth)) == counts["by_lang"]
    for name, rows in docs.items():
        assert manifest["files"][f"docs/{name}"]["documents"] == len(rows)


def test_sizes_languages_and_unique_urls(manifest: dict, truth: list[dict]):
    counts = manifest["counts"]
    assert {"en", "de", "fr", "es", "it"} <= set(counts["by_lang"])
    assert len(counts["by_lang"]) >= 15
    english = counts["by_lang"]["en"]
    assert english >= 2500 and counts["total"] - english >= 2500
    assert set(counts["by_origin"]) == set(ORIGINS)
    urls = [row["url"] for row in truth]
    assert len(urls) == len(set(urls))


def test_manifest_checksums_match_files(sample_corpus: Path, manifest: dict):
    for rel, entry in manifest["files"].items():
        data = (sample_corpus / rel).read_bytes()
        assert len(data) == entry["bytes"] and hashlib.sha256(data).hexdigest() == entry["sha256"], rel


def test_translations_keep_code_and_drop_english_leftovers():
    vocabulary = frozenset(words("Install the package with the command below."))
    page = page_text(
        lxml.html.fromstring(
            "<div><h1>Paket   installieren</h1>"
            "<p>Installieren Sie das Paket mit dem folgenden\n   Befehl.</p>"
            "<p>Install the package with the command below.</p>"
            "<pre>apt install the package\n  --with command below</pre></div>"
        )
    )
    leftovers = english_leftovers(page, vocabulary)
    assert leftovers == {"Install the package with the command below."}
    assert page.without(leftovers).render() == (
        "Paket installieren\n\nInstallieren Sie das Paket mit dem folgenden Befehl.\n\n"
        "apt install the package\n  --with command below"
    )


def test_tiny_rebuild_is_idempotent_and_deterministic(tmp_path: Path, manifest: dict):
    cache = Path(manifest["cache_dir"])
    first = build_sample_corpus(tmp_path / "s", cache, limit=2, processes=1)
    assert not first["reused"] and first["web_pages"] == 4 and first["by_origin"]["python-doc"] <= 2
    files = sorted(p for p in (tmp_path / "s").rglob("*") if p.is_file())
    stamps = {p: p.stat().st_mtime_ns for p in files}
    started = time.perf_counter()
    second = build_sample_corpus(tmp_path / "s", cache, limit=2, processes=1)
    assert second["reused"] and time.perf_counter() - started < 5
    assert {k: v for k, v in second.items() if k != "reused"} == {k: v for k, v in first.items() if k != "reused"}
    assert {p: p.stat().st_mtime_ns for p in files} == stamps
    build_sample_corpus(tmp_path / "again", cache, limit=2, processes=1, force=True)
    for path in files:
        if path.name != "MANIFEST.json":
            twin = tmp_path / "again" / path.relative_to(tmp_path / "s")
            assert twin.read_bytes() == path.read_bytes(), path.name
