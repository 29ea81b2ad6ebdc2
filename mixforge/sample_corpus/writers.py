"""Writers: documents to JSONL/Parquet with their truth rows, pages to WARC and WET."""

from __future__ import annotations

import email.utils
import gzip
import io
import json
import os
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from mixforge.sample_corpus.extract import Doc
from mixforge.sample_corpus.inputs import WebPage
from mixforge.sample_corpus.sources import DOC_SCHEMA, TRUTH_SCHEMA, WEB_DOMAIN


class DocSink:
    """Streams the documents of one origin to JSONL (.gz/.zst) or Parquet, and their truth rows."""

    def __init__(self, path: Path, truth: ParquetRows, rel: str):
        self.path, self.truth, self.rel = path, truth, rel
        self.tmp = path.with_name(path.name + ".tmp")
        self.parquet: ParquetRows | None = None
        if path.suffix == ".parquet":
            self.parquet = ParquetRows(self.tmp, DOC_SCHEMA)
            return
        self.raw = open(self.tmp, "wb")
        if path.suffix == ".gz":
            self.stream = gzip.GzipFile(filename="", mode="wb", fileobj=self.raw, mtime=0)
        else:
            self.stream = zstandard.ZstdCompressor(level=10).stream_writer(self.raw, closefd=False)

    def write(self, doc: Doc) -> None:
        row = {k: doc[k] for k in DOC_SCHEMA.names}
        if self.parquet:
            self.parquet.add(row)
        else:
            self.stream.write(json.dumps(row, ensure_ascii=False).encode() + b"\n")
        self.truth.add({**{k: doc[k] for k in TRUTH_SCHEMA.names if k in doc}, "file": self.rel})

    def close(self) -> None:
        if self.parquet:
            self.parquet.close()
        else:
            self.stream.close()
            self.raw.close()
        os.replace(self.tmp, self.path)


class ParquetRows:
    """Row-at-a-time Parquet writer with bounded row groups (zstd)."""

    def __init__(self, path: Path, schema: pa.Schema, rows_per_group: int = 2000):
        self.path, self.schema, self.rows_per_group = path, schema, rows_per_group
        self.writer = pq.ParquetWriter(path, schema, compression="zstd")
        self.rows: list[dict] = []

    def add(self, row: dict) -> None:
        self.rows.append(row)
        if len(self.rows) >= self.rows_per_group:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            self.writer.write_table(pa.Table.from_pylist(self.rows, schema=self.schema))
            self.rows = []

    def close(self) -> None:
        self.flush()
        self.writer.close()


def _record_id(*parts: str) -> str:
    return f"<urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, '|'.join(parts))}>"


def warc_date(mtime: int) -> str:
    return datetime.fromtimestamp(mtime, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _charset(html: bytes) -> str | None:
    found = re.search(rb"""<meta[^>]+charset\s*=\s*["']?([A-Za-z0-9_-]+)""", html[:4096], re.I)
    return found.group(1).decode("ascii").lower() if found else None


class WarcFiles:
    """The WARC and WET files of the sample, written side by side, one page at a time."""

    def __init__(self, warc_path: Path, wet_path: Path, date: str):
        from warcio.warcwriter import WARCWriter

        self.paths = (warc_path, wet_path)
        self.date, self.pages = date, 0
        self.handles = [open(path.with_name(path.name + ".tmp"), "wb") for path in self.paths]
        self.warc, self.wet = (WARCWriter(handle, gzip=True) for handle in self.handles)
        self._warcinfo(self.warc, warc_path.name)
        self._warcinfo(self.wet, wet_path.name)

    def _warcinfo(self, writer, filename: str) -> None:
        info = (
            b"software: mixforge sample-corpus\r\nformat: WARC File Format 1.0\r\n"
            b"description: web pages of the trafilatura 1.0.0 and htmldate 1.4.0 sdist test caches\r\n"
            b"isPartOf: mixforge-sample\r\n"
        )
        record = writer.create_warc_record(
            "",
            "warcinfo",
            payload=io.BytesIO(info),
            warc_content_type="application/warc-fields",
            warc_headers_dict={
                "WARC-Filename": filename,
                "WARC-Date": self.date,
                "WARC-Record-ID": _record_id("warcinfo", filename),
            },
        )
        writer.write_record(record)

    def add(self, page: WebPage, text: str) -> None:
        from warcio.statusandheaders import StatusAndHeaders

        date = warc_date(page.mtime)
        split = urlsplit(page.url)
        request_id = _record_id("request", page.url)
        response_id = _record_id("response", page.url)
        target = (split.path or "/") + (f"?{split.query}" if split.query else "")
        request = self.warc.create_warc_record(
            page.url,
            "request",
            payload=io.BytesIO(b""),
            http_headers=StatusAndHeaders(
                f"GET {target} HTTP/1.1",
                [("Host", split.netloc), ("User-Agent", "mixforge-sample/1.0"), ("Accept", "text/html")],
                is_http_request=True,
            ),
            warc_headers_dict={
                "WARC-Date": date,
                "WARC-Record-ID": request_id,
                "WARC-Concurrent-To": response_id,
            },
        )
        charset = _charset(page.html)
        content_type = "text/html" + (f"; charset={charset}" if charset else "")
        response = self.warc.create_warc_record(
            page.url,
            "response",
            payload=io.BytesIO(page.html),
            http_headers=StatusAndHeaders(
                "200 OK",
                [
                    ("Date", email.utils.formatdate(page.mtime, usegmt=True)),
                    ("Content-Type", content_type),
                    ("Content-Length", str(len(page.html))),
                ],
                protocol="HTTP/1.1",
            ),
            warc_headers_dict={
                "WARC-Date": date,
                "WARC-Record-ID": response_id,
                "WARC-Concurrent-To": request_id,
                "WARC-Identified-Payload-Type": "text/html",
            },
        )
        truth = {
            "mixforge-origin": page.origin,
            "mixforge-domain": WEB_DOMAIN,
            "mixforge-lang": page.lang,
            "mixforge-lang-source": page.lang_source,
            "mixforge-url-source": page.url_source,
            "mixforge-cache-file": page.name,
        }
        metadata = self.warc.create_warc_record(
            page.url,
            "metadata",
            payload=io.BytesIO("".join(f"{k}: {v}\r\n" for k, v in truth.items()).encode()),
            warc_content_type="application/warc-fields",
            warc_headers_dict={
                "WARC-Date": date,
                "WARC-Record-ID": _record_id("metadata", page.url),
                "WARC-Concurrent-To": response_id,
            },
        )
        for record in (request, response, metadata):
            self.warc.write_record(record)
        conversion = self.wet.create_warc_record(
            page.url,
            "conversion",
            payload=io.BytesIO(text.encode("utf-8")),
            warc_content_type="text/plain",
            warc_headers_dict={
                "WARC-Date": date,
                "WARC-Record-ID": _record_id("conversion", page.url),
                "WARC-Refers-To": response_id,
                # Without it datatrove's WarcReader sniffs with libmagic and drops some texts as code.
                "WARC-Identified-Payload-Type": "text/plain",
            },
        )
        self.wet.write_record(conversion)
        self.pages += 1

    def close(self) -> None:
        for handle, path in zip(self.handles, self.paths, strict=True):
            handle.close()
            os.replace(handle.name, path)
