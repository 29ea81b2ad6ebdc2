"""Parquet reader: one row per document, `offset` = the row's index in the file.

The text column is configurable; the url column fills `url`; the id column (`id_key`, as datatrove's) is
the document id where a row has one; every other column (dump, language score...) is kept in `metadata`.
A file without the text column, or with a text column that is not a string, is quarantined whole with the
schema it has. Text that is not valid UTF-8 is
quarantined row by row, as in the JSONL reader.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any, BinaryIO

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from operators.reader import InputError, Parsed, Raw, Reader, RecordError, input_id, raise_if_transient


class ParquetReader(Reader):
    name = "read_parquet"
    decompress = False  # Parquet compresses inside the file
    part_kind = "row_groups"  # a unit of a big file is a run of row groups; offsets stay the file's rows

    def __init__(self, text_key: str = "text", url_key: str | None = "url", id_key: str | None = "id",
                 **options: Any) -> None:
        super().__init__(**options)
        self.text_key = text_key
        self.url_key = url_key
        self.id_key = id_key

    def split(self, stream: BinaryIO) -> Iterator[Raw]:
        if stream.seek(0, io.SEEK_END) == 0:  # an empty file holds no documents, like an empty JSONL file
            return
        stream.seek(0)
        try:
            parquet = pq.ParquetFile(stream)
        except Exception as error:  # not Parquet at all, or a cut footer
            raise_if_transient(error)
            raise InputError(None, f"not a readable Parquet file: {type(error).__name__}: {error}") from None
        schema = parquet.schema_arrow
        self._check_schema(schema)
        url_key = self.url_key if self.url_key in schema.names else None
        groups = range(*self.part) if self.part else range(parquet.num_row_groups)  # a unit's row groups
        row = sum(parquet.metadata.row_group(group).num_rows for group in range(groups.start))
        batches = parquet.iter_batches(batch_size=self.batch_size, row_groups=list(groups))
        while True:
            try:
                batch = next(batches, None)
            except Exception as error:  # a corrupt page or row group
                raise_if_transient(error)
                raise InputError(row, f"unreadable Parquet data from row {row}: "
                                      f"{type(error).__name__}: {error}") from None
            if batch is None:
                return
            texts = pc.cast(batch.column(self.text_key), pa.large_binary())
            sizes = pc.binary_length(texts).to_pylist()
            urls = batch.column(url_key).to_pylist() if url_key else [None] * batch.num_rows
            others = batch.drop_columns([c for c in (self.text_key, url_key) if c]).to_pylist()
            for text, size, url, other in zip(texts.to_pylist(), sizes, urls, others, strict=True):
                yield Raw(row, size or 0, (text, url, other), text or b"")
                row += 1

    def _check_schema(self, schema: pa.Schema) -> None:
        described = ", ".join(f"{f.name}: {f.type}" for f in schema)
        if self.text_key not in schema.names:
            raise InputError(None, f"no text column '{self.text_key}' (schema: {described})")
        dtype = schema.field(self.text_key).type
        if not (pa.types.is_string(dtype) or pa.types.is_large_string(dtype) or pa.types.is_string_view(dtype)):
            raise InputError(None, f"text column '{self.text_key}' is {dtype}, not a string (schema: {described})")

    def parse(self, raw: Raw) -> Parsed:
        data, url, other = raw.data
        if data is None:
            raise RecordError(f"text column '{self.text_key}' is null")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as bad:
            raise RecordError(f"invalid UTF-8 at byte {bad.start} of the text") from None
        doc_id = input_id(other, self.id_key)
        metadata = orjson.dumps(other, default=str).decode() if other else None
        return Parsed(text, None if url is None else str(url), metadata, id=doc_id, id_key=self.id_key or "id")
