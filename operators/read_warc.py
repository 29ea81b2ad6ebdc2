"""WARC, ARC and WET readers (warcio's ArchiveIterator), with datatrove's decisions on which records count.

WARC: `response` records with HTTP status 200 whose payload is HTML (WARC-Identified-Payload-Type, else
libmagic on the payload, as datatrove's WarcReader does) become documents, their text extracted by datatrove's
Trafilatura extractor with its defaults (favour_precision=True, include_comments=False,
deduplicate=True). datatrove runs that extractor in a subprocess with a 1 s timeout, and trafilatura's
deduplication remembers text across all the pages that process saw; here it runs in process without a
timeout and its memory starts afresh with each file, so the same file always gives the same output
(max_doc_bytes bounds the work per page).
An empty extraction, or one that raises, is a dropped document with drop_reason "extraction_empty".
ARC files (.arc, .arc.gz: older web archives) are read through warcio's ARC support (arc2warc): the
file header becomes a warcinfo record and every ARC record a response.
WET: `conversion` records, text as is.
Every other record is counted in `stats.skipped` by reason: its WARC type (warcinfo, request, revisit,
metadata, resource, ...), `not_200` for a response of another HTTP status (datatrove does not check the
status; a redirect or error page is no document), `not_html` for another payload type. So for an archive,
records = documents + skipped + quarantined.
`offset` is the record's offset in the file as stored (compressed offsets for .warc.gz, as in Common
Crawl's index). A file gzipped whole rather than record by record (some wget/wpull settings) cannot be
indexed like that: warcio refuses it, and it is read again as one decompressed stream, its offsets then
offsets in that stream (like JSONL's). A record cut short (truncated file, corrupt gzip member) is
quarantined at its offset (where the last complete record ended: never negative) and reading stops there;
bytes after the last complete record are reported the same way.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any, BinaryIO

import orjson

from operators.reader import InputError, Parsed, Raw, Reader, RecordError, decode_text, raise_if_transient

HTML_TYPES = ("text/html", "application/xhtml+xml")
_HEAD_BYTES = 1024
_NON_CHUNKED = "non-chunked gzip"  # in warcio's ArchiveLoadFailed for a file gzipped whole


class ArchiveReader(Reader):
    """What WARC and WET share: cutting the file into records, checking each is complete."""

    decompress = False  # warcio reads gzip members itself
    record_type = ""

    def split(self, stream: BinaryIO) -> Iterator[Raw]:
        size = stream.seek(0, io.SEEK_END)
        stream.seek(0)
        done = 0  # records cut so far (documents and skipped)
        try:
            for raw in self._records(stream, size, 0):
                done += 1
                if raw is not None:
                    yield raw
        except _WholeFileGzip:
            from isal import igzip

            stream.seek(0)
            for index, raw in enumerate(self._records(igzip.IGzipFile(fileobj=stream, mode="rb"), None, done)):
                if raw is not None and index >= done:
                    yield raw

    def _records(self, stream: BinaryIO, size: int | None, counted: int) -> Iterator[Raw | None]:
        """Each record in order: a Raw for a document, None for a skipped one (counted from the
        `counted`-th on). `size`: the file's, to report bytes after the last record (None: unknown)."""
        from warcio.archiveiterator import ArchiveIterator

        records = ArchiveIterator(stream, arc2warc=True)
        offset, index = 0, 0
        gzipped: bool | None = None  # known from the first record: are the records gzip members?
        while True:
            try:
                record = next(records, None)
            except Exception as error:  # warcio raises ArchiveLoadFailed and others on garbage
                raise_if_transient(error)
                if _NON_CHUNKED in str(error) and size is not None:
                    raise _WholeFileGzip from None
                raise InputError(offset, f"unreadable WARC record at byte {offset}: "
                                         f"{type(error).__name__}: {error}") from None
            if record is None:
                break
            if gzipped is None:
                gzipped = records.reader.decompressor is not None
            elif gzipped and records.reader.decompressor is None:
                # warcio reads a gzip member it cannot inflate as plain bytes: in a gzipped WARC that
                # member is corrupt, whatever header-like garbage it parsed from it
                raise InputError(offset, f"unreadable WARC record at byte {offset}: its gzip member is corrupt")
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
                    raise_if_transient(error)
                    content = error
                skip = self.skip_content(record, content)
            try:
                records.read_to_end()
            except Exception as error:
                raise_if_transient(error)
                raise InputError(offset, f"unreadable WARC record at byte {offset}: "
                                         f"{type(error).__name__}: {error}") from None
            if record.raw_stream.limit > 0:
                raise InputError(offset, f"WARC record at byte {offset} is cut short: "
                                         f"{record.raw_stream.limit} of its {record.length} bytes are missing "
                                         "(truncated or corrupt file)")
            if skip is not None:
                if index >= counted:
                    self.stats.skipped[skip] += 1
                yield None
            else:
                head = content if isinstance(content, bytes) else b""
                yield Raw(offset, record.length, (record, content), head)
            index += 1
            offset = max(records.offset, offset)  # where the next record starts
        if size is not None and offset < size:
            raise InputError(offset, f"{size - offset} bytes after the last complete WARC record "
                                     f"(at byte {offset}) cannot be read (truncated or corrupt file)")

    def skip_reason(self, record: Any) -> str | None:
        """Why a record is no document of this reader (None: it may be one), from its headers alone."""
        return None if record.rec_type == self.record_type else record.rec_type

    def skip_content(self, record: Any, content: bytes | Exception) -> str | None:
        """Why a record is no document, judged from its payload (None: it is one)."""
        return None


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
        if record.http_headers is not None and record.http_headers.get_statuscode() != "200":
            return "not_200"
        payload_type = record.rec_headers.get_header("WARC-Identified-Payload-Type")
        if payload_type is not None and payload_type not in HTML_TYPES:
            return "not_html"
        return None

    def skip_content(self, record: Any, content: bytes | Exception) -> str | None:
        if isinstance(content, bytes) and _payload_type(record, content) not in HTML_TYPES:
            return "not_html"
        return None

    def parse(self, raw: Raw) -> Parsed:
        record, content = _payload(raw)
        content_type = _payload_type(record, content)
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


class _WholeFileGzip(Exception):
    """warcio found several records in one gzip member: the file is gzipped whole."""


def _payload_type(record: Any, content: bytes) -> str:
    """The crawler's identification of the payload, else libmagic's (as datatrove)."""
    identified = record.rec_headers.get_header("WARC-Identified-Payload-Type")
    if identified is not None:
        return identified
    import magic

    return magic.from_buffer(content, mime=True)


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
