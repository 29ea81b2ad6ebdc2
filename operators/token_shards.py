"""Token-id shards a trainer can memory-map: one flat token array and document offsets per unit.

Files of shard `name` in `folder` (all little-endian, no headers, so `np.memmap` reads them as they are):
  name.tokens.u32    uint32 token ids of every document in order. With an EOS id, each document is followed
                     by one EOS token (the encoding's end-of-text), so a trainer can cut fixed-length windows
                     anywhere and still see where documents end; with none, documents are simply concatenated.
  name.offsets.i64   int64, n_docs + 1 entries: document i (its EOS included) is tokens[offsets[i]:offsets[i+1]].
  name.ids.parquet   `id` and `n_tokens` (without the EOS) of each document, in the same order.
  name.json          encoding, vocabulary size, eos_id, counts; written last, so it marks a complete shard.
Every file is written to a temporary name and renamed, so a killed run leaves no half shard under these names.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from storage.shards import write_json_atomic, write_table_atomic


class TokenShardWriter:
    """Streams one unit's documents into a token shard: token ids go to disk as they come, offsets stay in memory
    (8 bytes a document)."""

    def __init__(self, folder: str | Path, name: str, *, encoding: str, vocab_size: int, eos_id: int | None):
        self.folder = Path(folder)
        self.name = name
        self.header = {"encoding": encoding, "vocab_size": vocab_size, "eos_id": eos_id, "dtype": "uint32"}
        self.folder.mkdir(parents=True, exist_ok=True)
        self._tmp = self.folder / f".tmp-{os.getpid()}-{name}.tokens.u32"
        self._tokens = open(self._tmp, "wb")
        self._ends: list[np.ndarray] = []
        self._ids: list[pa.Array] = []
        self._n_tokens: list[np.ndarray] = []
        self._written = 0

    def add(self, ids: pa.Array | pa.ChunkedArray, tokens: np.ndarray, offsets: np.ndarray) -> None:
        """Append documents: `tokens[offsets[i]:offsets[i+1]]` are document i's ids (no EOS yet)."""
        lengths = np.diff(offsets).astype(np.int64)
        eos = self.header["eos_id"]
        if eos is not None:
            tokens, lengths = np.insert(tokens, offsets[1:], np.uint32(eos)), lengths + 1
        self._tokens.write(np.ascontiguousarray(tokens, dtype="<u4").tobytes())
        self._ends.append(self._written + np.cumsum(lengths))
        self._written += int(lengths.sum())
        self._ids.append(ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids)
        self._n_tokens.append(np.diff(offsets).astype(np.int64))

    def close(self) -> dict:
        """Write offsets, ids and header; return the header (with counts)."""
        self._tokens.close()
        os.replace(self._tmp, self.folder / f"{self.name}.tokens.u32")
        offsets = np.concatenate([[0], *self._ends]).astype("<i8")
        tmp = self.folder / f".tmp-{os.getpid()}-{self.name}.offsets.i64"
        offsets.tofile(tmp)
        os.replace(tmp, self.folder / f"{self.name}.offsets.i64")
        ids = pa.concat_arrays(self._ids) if self._ids else pa.array([], pa.string())
        n_tokens = np.concatenate(self._n_tokens) if self._n_tokens else np.zeros(0, np.int64)
        write_table_atomic(pa.table({"id": ids, "n_tokens": n_tokens}), self.folder / f"{self.name}.ids.parquet")
        header = {**self.header, "documents": len(ids), "tokens": int(offsets[-1])}
        write_json_atomic(header, self.folder / f"{self.name}.json")
        return header


@dataclass
class TokenShard:
    tokens: np.ndarray  # np.memmap, uint32
    offsets: np.ndarray  # np.memmap, int64, n_docs + 1
    ids: pa.Table  # id, n_tokens
    header: dict

    def document(self, i: int) -> np.ndarray:
        return self.tokens[self.offsets[i]:self.offsets[i + 1]]


def read_token_shard(folder: str | Path, name: str) -> TokenShard:
    """Memory-map a complete token shard (its header must exist)."""
    folder = Path(folder)
    header = json.loads((folder / f"{name}.json").read_text())
    tokens = np.memmap(folder / f"{name}.tokens.u32", dtype="<u4", mode="r") if header["tokens"] else \
        np.zeros(0, np.uint32)
    offsets = np.memmap(folder / f"{name}.offsets.i64", dtype="<i8", mode="r")
    return TokenShard(tokens, offsets, pq.read_table(folder / f"{name}.ids.parquet"), header)
