"""The one document schema. Stages add columns; these names never change meaning."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import xxhash

# Columns every reader produces. `metadata` is the input's other fields as a JSON object (DuckDB:
# `metadata->>'$.domain'`), so nothing a corpus carries is lost.
DOCUMENT_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("text", pa.large_string()),
        pa.field("url", pa.string()),
        pa.field("source", pa.string(), nullable=False),
        pa.field("offset", pa.int64(), nullable=False),
        pa.field("metadata", pa.string()),
    ]
)

# Columns curation and clustering stages add, with their types, so every writer agrees on them. (Scores
# are scoring's to name and type: storage knows nothing of scoring.)
STAGE_COLUMNS: dict[str, pa.DataType] = {
    "lang": pa.string(),
    "lang_score": pa.float32(),
    "n_chars": pa.int64(),
    "n_tokens": pa.int64(),
    "dup_cluster": pa.string(),
    "cluster": pa.int32(),
    "super_cluster": pa.int32(),
    "drop_reason": pa.string(),
}

# Unreadable input: where it was, what went wrong, and the first bytes to look at.
QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("offset", pa.int64()),
        pa.field("error", pa.string(), nullable=False),
        pa.field("snippet", pa.string()),
    ]
)


def document_id(uri: str, offset: int) -> str:
    """Id of the document at `offset` of the input at `uri` (see `source_uri`), for inputs without ids of
    their own: the same file always gets the same ids, by whichever path it is named. 128 bits (32 hex
    characters): a collision among 10^12 documents has odds of about 10^-15 (a 64-bit hash expects one at
    about 5 x 10^9)."""
    return xxhash.xxh3_128_hexdigest(f"{uri}\x00{offset}")


def source_uri(source: str) -> str:
    """The canonical URI of an input: file:// of the real path (symlinks and relative paths resolved)
    for local files, the fsspec URL as given otherwise."""
    if "://" in source and not source.startswith("file://"):
        return source
    return Path(source.removeprefix("file://")).resolve().as_uri()


def empty_quarantine() -> pa.Table:
    return QUARANTINE_SCHEMA.empty_table()


class SchemaError(ValueError):
    """A table lacks a column the document schema requires, or has it with the wrong type."""


def check_documents(table: pa.Table) -> None:
    """Raise SchemaError naming the first missing or mistyped document column."""
    for field in DOCUMENT_SCHEMA:
        if field.name not in table.column_names:
            raise SchemaError(f"missing column '{field.name}' ({field.type})")
        actual = table.schema.field(field.name).type
        if actual != field.type and not (_is_text(actual) and _is_text(field.type)):
            raise SchemaError(f"column '{field.name}' is {actual}, expected {field.type}")


def _is_text(dtype: pa.DataType) -> bool:
    return pa.types.is_string(dtype) or pa.types.is_large_string(dtype)
