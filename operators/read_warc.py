"""WARC and WET readers (warcio's ArchiveIterator), with datatrove's decisions on which records count.

WARC: `response` records whose payload is HTML (WARC-Identified-Payload-Type, else libmagic on the
payload, as datatrove's WarcReader does) become documents, their text extracted by datatrove's
Trafilatura extractor with its defaults (favour_precision=True, include_comments=False,
deduplicate=True). datatrove runs that extractor in a subprocess with a 1 s timeout, and trafilatura's
deduplication remembers text across all the pages that process saw; here it runs in process without a
timeout and its memory starts afresh with each file, so the same file always gives the same output
(max_doc_bytes bounds the work per page).
An empty extraction, or one that raises, is a dropped document with drop_reason "extraction_empty".
WET: `conversion` records, text as is.
Other records (warcinfo, request, metadata, non-HTML responses) are no documents: counted in
`skipped`. `offset` is the record's offset in the file as stored (compressed offsets for .warc.gz,
as in Common Crawl's index). A record cut short (truncated file, corrupt gzip member) is quarantined
at its offset and reading stops there; bytes after the last complete record are reported the same way.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any, BinaryIO

import orjson

from operators.reader import InputError, Parsed, Raw, Reader, RecordError, decode_text

HTML_TYPES = ("text/html", "application/xhtml+xml")
_HEAD_BYTES = 1024


class ArchiveReader(Reader):
    """What WARC and WET share: cutting the file into records, checking each is complete."""

    decompress = False  # warcio reads gzip members itself
    record_type = ""

    def split(self, stream: BinaryIO) -> Iterator[Raw]:
        from warcio.archiveiterator import ArchiveIterator

        size = stream.seek(0, io.SEEK_END)
        stream.seek(0)
        records = ArchiveIterator(stream)
        while True:
            offset = records.offset
            try:
                record = next(records, None)
            except Exception as error:  # warcio raises ArchiveLoadFailed and others on garbage
                raise InputError(offset, f"unreadable WARC record at byte {offset}: "
                                         f"{type(error).__name__}: {error}") from None
            if record is None:
                break
            if record.length is None:  # every WARC record has a Content-Length: this header was cut
                raise InputError(offset, f"WARC record at byte {offset} has no Content-Length "
                                         "(truncated or corrupt file)")
            skip = self.skip_reason(record)
            content: bytes | Exception = b""
            if skip is None:
                try:
                    content = record.content_stream().read(
                        _HEAD_BYTES if record.length > self.max_doc_bytes else None)
                except Exception as error:  # a broken HTTP chunked/gzip body: this record only
                    content = error
            try:
                records.read_to_end()
            except Exception as error:
                raise InputError(offset, f"unreadable WARC record at byte {offset}: "
                                         f"{type(error).__name__}: {error}") from None
            if record.raw_stream.limit > 0:
                raise InputError(offset, f"WARC record at byte {offset} is cut short: "
                                         f"{record.raw_stream.limit} of its {record.length} bytes are missing "
                                         "(truncated or corrupt file)")
            if skip is not None:
                self.skipped[skip] += 1
                continue
            head = content if isinstance(content, bytes) else b""
            yield Raw(offset, record.length, (record, content), head)
        if records.offset < size:
            raise InputError(records.offset, f"{size - records.offset} bytes after the last complete WARC "
                                             f"record (at byte {records.offset}) cannot be read "
                                             "(truncated or corrupt file)")

    def skip_reason(self, record: Any) -> str | None:
        """Why a record is no document of this reader (None: it is one), from its headers alone."""
        return None if record.rec_type == self.record_type else record.rec_type


class WarcReader(ArchiveReader):
    name = "read_warc"
    record_type = "response"

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        from datatrove.pipeline.extractors import Trafilatura

        self.extractor = Trafilatura()

    def split(self, stream: BinaryIO) -> Iterator[Raw]:
        from trafilatura.deduplication import LRU_TEST

        # deduplicate=True drops paragraphs seen more than twice in recent pages (a site's boilerplate),
        # remembered process-wide: start each file afresh so its text depends on the file alone.
        LRU_TEST.clear()
        yield from super().split(stream)

    def skip_reason(self, record: Any) -> str | None:
        reason = super().skip_reason(record)
        if reason is not None:
            return reason
        payload_type = record.rec_headers.get_header("WARC-Identified-Payload-Type")
        if payload_type is not None and payload_type not in HTML_TYPES:
            return "not_html"
        return None

    def parse(self, raw: Raw) -> Parsed | None:
        record, content = _payload(raw)
        content_type = record.rec_headers.get_header("WARC-Identified-Payload-Type")
        if content_type is None:
            import magic

            content_type = magic.from_buffer(content, mime=True)
            if content_type not in HTML_TYPES:
                self.skipped["not_html"] += 1
                return None
        html = decode_text(content)
        try:
            text = self.extractor.extract(html)
        except Exception:  # trafilatura failing on a page is a drop, as in datatrove
            text = None
        if not text or text.isspace():
            return Parsed("", _url(record), warc_metadata(record, content_type), "extraction_empty")
        return Parsed(text, _url(record), warc_metadata(record, content_type))


class WetReader(ArchiveReader):
    name = "read_wet"
    record_type = "conversion"

    def parse(self, raw: Raw) -> Parsed:
        record, content = _payload(raw)
        content_type = record.rec_headers.get_header("Content-Type")
        return Parsed(decode_text(content), _url(record), warc_metadata(record, content_type))


def _payload(raw: Raw) -> tuple[Any, bytes]:
    record, content = raw.data
    if isinstance(content, Exception):
        raise RecordError(f"unreadable payload: {type(content).__name__}: {content}")
    return record, content


def _url(record: Any) -> str | None:
    return record.rec_headers.get_header("WARC-Target-URI")


def warc_metadata(record: Any, content_type: str | None) -> str:
    """Date, record id and content type, plus the X-* and language headers a crawler added."""
    headers = record.rec_headers
    metadata = {
        "date": headers.get_header("WARC-Date"),
        "record_id": headers.get_header("WARC-Record-ID"),
        "content_type": content_type,
    }
    for name, value in headers.headers:
        if name.lower().startswith("x-") or name.lower() == "warc-identified-content-language":
            metadata[name] = value
    return orjson.dumps(metadata).decode()
