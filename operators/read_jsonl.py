"""JSONL reader (.jsonl/.json/.ndjson, plain, gzip or zstd): one JSON object per line.

`offset` is the line's start in the decompressed stream. The text field is configurable; the url field
fills `url`; the id field (`id_key`, as datatrove's) is the document id where a line has one; every other
field (domain, language...) is kept in `metadata`.
A line that is not valid UTF-8 is quarantined with the byte where the encoding breaks: JSON text is
UTF-8 by definition (RFC 8259), so such a line is corrupt input, not a document to patch with
replacement characters.
A compressed stream that stops decompressing (cut file, corrupt gzip/zstd) ends the file with one
quarantine row at the decompressed offset of the line being read. gzip checks its CRC only at the end of
a member, so bytes flipped inside a single-member file decompress to garbage until that check: lines up
to the flip are read intact, garbled lines after it are mostly quarantined as not JSON, and the CRC
failure is the last quarantine row of the file.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, BinaryIO

import orjson

from operators.reader import InputError, Parsed, Raw, Reader, RecordError, input_id, raise_if_transient

_SKIP_CHUNK = 2**20


class JsonlReader(Reader):
    name = "read_jsonl"

    def __init__(self, text_key: str = "text", url_key: str | None = "url", id_key: str | None = "id",
                 **options: Any) -> None:
        super().__init__(**options)
        self.text_key = text_key
        self.url_key = url_key
        self.id_key = id_key

    def split(self, stream: BinaryIO) -> Iterator[Raw]:
        offset = 0
        limit = self.max_doc_bytes + 1  # a line over the limit is never held whole in memory
        while True:
            line = _read_line(stream, limit, offset)
            if not line:
                return
            n_bytes, newline = len(line), line.endswith(b"\n")
            if n_bytes == limit and not newline:
                rest, newline = _skip_line(stream, offset)
                n_bytes += rest
            if line.strip():
                yield Raw(offset, n_bytes - newline, line, line)
            offset += n_bytes

    def parse(self, raw: Raw) -> Parsed:
        line: bytes = raw.data
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError as error:
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as bad:
                raise RecordError(f"invalid UTF-8 at byte {raw.offset + bad.start}") from None
            raise RecordError(f"not JSON: {error}") from None
        if not isinstance(record, dict):
            raise RecordError(f"not a JSON object but {type(record).__name__}")
        text = record.pop(self.text_key, None)
        if text is None:
            raise RecordError(f"no '{self.text_key}' field (fields: {', '.join(record) or 'none'})")
        if not isinstance(text, str):
            raise RecordError(f"field '{self.text_key}' is {type(text).__name__}, not a string")
        url = record.pop(self.url_key, None) if self.url_key else None
        doc_id = input_id(record, self.id_key)
        metadata = orjson.dumps(record).decode() if record else None
        return Parsed(text, None if url is None else str(url), metadata, id=doc_id, id_key=self.id_key or "id")


def _read_line(stream: BinaryIO, limit: int, offset: int) -> bytes:
    try:
        return stream.readline(limit)
    except Exception as error:  # a corrupt or cut compressed stream surfaces here, from any codec
        raise_if_transient(error)
        raise InputError(offset, f"unreadable input at byte {offset} (decompressed): "
                                 f"{type(error).__name__}: {error}") from None


def _skip_line(stream: BinaryIO, offset: int) -> tuple[int, bool]:
    """Read past the rest of an over-long line: (bytes skipped, whether it ended with a newline)."""
    skipped = 0
    while True:
        chunk = _read_line(stream, _SKIP_CHUNK, offset)
        skipped += len(chunk)
        if not chunk or chunk.endswith(b"\n"):
            return skipped, bool(chunk)
