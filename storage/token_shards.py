"""Token shards: token ids a trainer memory-maps as they are, one format for the curate flow and mixtures.

A shard is named by a path prefix P (`<out>/tokens/part-00000`, `<experiment>/best`); its files sit beside
each other, all little-endian and without headers, so `np.memmap` (or `np.fromfile`) reads them directly:
  P.tokens.u32    uint32 token ids of every document in order. With an EOS id, each document is followed
                  by one EOS token (the tokenizer's end-of-text), so a trainer can cut fixed-length windows
                  anywhere and still see where documents end; without one, documents are simply concatenated.
  P.offsets.i64   int64, n_docs + 1 entries, offsets[0] == 0: document i (its EOS included) is
                  tokens[offsets[i]:offsets[i+1]], and offsets[-1] is the number of tokens.
  P.ids.parquet   optional: `id` and `n_tokens` (without the EOS) of each document, in the same order.
  P.json          the header: format, tokenizer, vocab_size, eos_id, dtypes, n_docs, n_tokens, n_bytes
                  (UTF-8 bytes of the text encoded, when the writer knew them), file names, and whatever
                  context the writer added (a mixture's weights, epochs and sources, say).
Every file is written under a temporary name and renamed, and the header comes last: a shard is complete
exactly when its header exists. A writer removes an older header of its name before it writes anything, so a
killed rewrite never leaves an old header in front of new data; the reader also checks the file sizes.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from storage.shards import write_json_atomic, write_table_atomic

FORMAT = "mixforge-token-shard/2"
TOKEN_DTYPE, OFFSET_DTYPE = np.dtype("<u4"), np.dtype("<i8")
LAYOUT_KEYS = ("format", "tokenizer", "vocab_size", "eos_id", "dtype", "offsets_dtype", "n_docs", "n_tokens",
               "n_bytes", "files")


class IncompleteTokenShard(FileNotFoundError):
    """The shard has no header: never written, still being written, or its writer was killed."""


@dataclass(frozen=True)
class TokenShardFiles:
    """The paths of shard P's files (they need not exist)."""

    tokens: Path
    offsets: Path
    ids: Path
    header: Path

    @classmethod
    def of(cls, prefix: str | Path) -> TokenShardFiles:
        prefix = Path(prefix)
        return cls(*(prefix.with_name(f"{prefix.name}.{suffix}")
                     for suffix in ("tokens.u32", "offsets.i64", "ids.parquet", "json")))

    def remove(self) -> None:
        """Delete the shard, header first (so what is left of it is never taken as complete)."""
        for path in (self.header, self.tokens, self.offsets, self.ids):
            path.unlink(missing_ok=True)


class TokenShardWriter:
    """Streams documents into shard `prefix`: token ids go to disk as they come, offsets (8 bytes a document)
    and ids stay in memory until `close`. Used as a context manager, a writer left without `close` (an error)
    removes its temporary files."""

    def __init__(self, prefix: str | Path, *, tokenizer: str, vocab_size: int, eos_id: int | None):
        self.files = TokenShardFiles.of(prefix)
        self.name = Path(prefix).name
        self.layout = {"format": FORMAT, "tokenizer": tokenizer, "vocab_size": int(vocab_size),
                       "eos_id": None if eos_id is None else int(eos_id), "dtype": "uint32", "offsets_dtype": "int64"}
        folder = self.files.tokens.parent
        folder.mkdir(parents=True, exist_ok=True)
        self.files.header.unlink(missing_ok=True)  # an older shard of this name is no longer complete
        leftover = re.compile(rf"\.tmp-\d+-{re.escape(self.name)}\.(tokens\.u32|offsets\.i64|ids\.parquet|json)")
        for stale in folder.glob(".tmp-*"):  # what a killed writer of this name left
            if leftover.fullmatch(stale.name):
                stale.unlink()
        self._tmp = self._temporary(self.files.tokens)
        self._tokens = open(self._tmp, "wb")
        self._ends: list[np.ndarray] = []
        self._ids: list[pa.Array] | None = None
        self._n_tokens: list[np.ndarray] = []
        self._n_bytes: int | None = 0
        self._written = 0
        self.closed = False

    @staticmethod
    def _temporary(path: Path) -> Path:
        return path.with_name(f".tmp-{os.getpid()}-{path.name}")

    def __enter__(self) -> TokenShardWriter:
        return self

    def __exit__(self, *exc) -> None:
        if not self.closed:
            self.discard()

    def add(self, tokens: np.ndarray, offsets: np.ndarray, *, ids: pa.Array | pa.ChunkedArray | Sequence[str]
            | None = None, n_bytes: int | None = None) -> None:
        """Append documents: `tokens[offsets[i]:offsets[i+1]]` are document i's ids, without EOS (the writer
        adds it). `ids` must come with every call or with none; `n_bytes` is their text's UTF-8 size."""
        offsets = np.asarray(offsets, dtype=np.int64)
        tokens, offsets = np.asarray(tokens)[offsets[0]:offsets[-1]], offsets - offsets[0]
        lengths = np.diff(offsets)
        if self._ends and (ids is None) != (self._ids is None):
            raise ValueError(f"{self.name}: give document ids with every batch of a shard or with none")
        if ids is not None:
            if isinstance(ids, pa.ChunkedArray):
                ids = ids.combine_chunks()
            ids = ids.cast(pa.string()) if isinstance(ids, pa.Array) else pa.array(ids, pa.string())
            if len(ids) != len(lengths):
                raise ValueError(f"{self.name}: {len(ids)} ids for {len(lengths)} documents")
            self._ids = [*(self._ids or []), ids]
        eos = self.layout["eos_id"]
        if eos is not None:
            tokens, lengths = np.insert(tokens, offsets[1:], np.uint32(eos)), lengths + 1
        self._tokens.write(np.ascontiguousarray(tokens, dtype=TOKEN_DTYPE).tobytes())
        self._ends.append(self._written + np.cumsum(lengths))
        self._written += int(lengths.sum())
        self._n_tokens.append(np.diff(offsets))
        self._n_bytes = None if n_bytes is None or self._n_bytes is None else self._n_bytes + int(n_bytes)

    def close(self, **context) -> dict:
        """Publish the shard (data files, then the header with `context`); return the header."""
        reserved = sorted(set(context) & set(LAYOUT_KEYS))
        if reserved:
            raise ValueError(f"header context may not set the layout keys {', '.join(reserved)}")
        self._tokens.close()
        os.replace(self._tmp, self.files.tokens)
        offsets = np.concatenate([[0], *self._ends]).astype(OFFSET_DTYPE)
        tmp = self._temporary(self.files.offsets)
        offsets.tofile(tmp)
        os.replace(tmp, self.files.offsets)
        n_docs = len(offsets) - 1
        if self._ids is None:
            self.files.ids.unlink(missing_ok=True)
        else:
            n_tokens = np.concatenate(self._n_tokens) if self._n_tokens else np.zeros(0, np.int64)
            write_table_atomic(pa.table({"id": pa.concat_arrays(self._ids), "n_tokens": n_tokens}), self.files.ids)
        header = {**self.layout, "n_docs": n_docs, "n_tokens": int(offsets[-1]), "n_bytes": self._n_bytes,
                  "files": {"tokens": self.files.tokens.name, "offsets": self.files.offsets.name,
                            "ids": None if self._ids is None else self.files.ids.name}, **context}
        write_json_atomic(header, self.files.header)
        self.closed = True
        return header

    def discard(self) -> None:
        """Abandon the shard: remove the token ids written so far."""
        self._tokens.close()
        self._tmp.unlink(missing_ok=True)
        self.closed = True


@dataclass
class TokenShard:
    """A complete shard opened for reading: tokens and offsets memory-mapped, ids read when asked for."""

    prefix: Path
    header: dict
    tokens: np.ndarray
    offsets: np.ndarray

    @classmethod
    def open(cls, prefix: str | Path) -> TokenShard:
        files = TokenShardFiles.of(prefix)
        if not files.header.exists():
            raise IncompleteTokenShard(f"{prefix}: no complete token shard ({files.header.name} is missing: never "
                                       "written, or its writer did not finish)")
        header = json.loads(files.header.read_text())
        if header.get("format") != FORMAT:
            raise ValueError(f"{files.header} is not a token shard header (format {header.get('format')!r})")
        for path, dtype, count in ((files.tokens, TOKEN_DTYPE, header["n_tokens"]),
                                   (files.offsets, OFFSET_DTYPE, header["n_docs"] + 1)):
            size = path.stat().st_size if path.exists() else None
            if size != count * dtype.itemsize:
                raise ValueError(f"{path}: {size} bytes, its header says {count} x {dtype.itemsize}: a damaged shard")
        tokens = np.memmap(files.tokens, dtype=TOKEN_DTYPE, mode="r") if header["n_tokens"] else \
            np.zeros(0, TOKEN_DTYPE)
        return cls(Path(prefix), header, tokens, np.memmap(files.offsets, dtype=OFFSET_DTYPE, mode="r"))

    @property
    def n_docs(self) -> int:
        return self.header["n_docs"]

    @property
    def n_tokens(self) -> int:
        return self.header["n_tokens"]

    @cached_property
    def ids(self) -> pa.Table | None:
        """`id` and `n_tokens` of each document, or None when the writer gave no ids."""
        return pq.read_table(TokenShardFiles.of(self.prefix).ids) if self.header["files"]["ids"] else None

    def document(self, i: int) -> np.ndarray:
        return self.tokens[self.offsets[i]:self.offsets[i + 1]]


def write_token_shard(prefix: str | Path, tokens: np.ndarray, offsets: np.ndarray, *, tokenizer: str,
                      vocab_size: int, eos_id: int | None = None, ids: Sequence[str] | None = None,
                      n_bytes: int | None = None, **context) -> TokenShard:
    """A shard from token ids already in hand (a synthetic stream, say); `context` goes to the header."""
    with TokenShardWriter(prefix, tokenizer=tokenizer, vocab_size=vocab_size, eos_id=eos_id) as writer:
        writer.add(tokens, offsets, ids=ids, n_bytes=n_bytes)
        writer.close(**context)
    return TokenShard.open(prefix)


def list_token_shards(folder: str | Path) -> list[Path]:
    """The prefixes of the complete shards in `folder`, sorted by name."""
    def is_header(path: Path) -> bool:
        header = json.loads(path.read_text())
        return isinstance(header, dict) and header.get("format") == FORMAT

    return sorted(p.with_suffix("") for p in Path(folder).glob("*.json") if not p.name.startswith(".tmp-")
                  and is_header(p))
