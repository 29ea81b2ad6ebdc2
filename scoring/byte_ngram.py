"""Byte n-gram LMs: a PreSelect model family one can train in seconds on a CPU, no torch needed.

An interpolated byte n-gram model with Witten-Bell smoothing (a proper distribution over the 256 byte
values at every position), counted and scored with numpy over whole batches. Models of different orders or
trained on different data have different skills on different kinds of text, which is what a PreSelect family
needs. Its tokens are bytes, so `losses` reports tokens = bytes; the whole document is scored unless
`max_bytes` asks for a cut.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from scoring.losses import DocumentLosses

# Context bytes are digits 1..256 (0 is "before the document") of a base-258 number, so a context of up
# to 6 bytes followed by the predicted byte fits in 64 bits without collisions: the counts are exact.
BASE = np.uint64(258)
MAX_ORDER = 7


def _encode(texts: Sequence[str], max_bytes: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated UTF-8 bytes of the texts (each cut to max_bytes) and each text's start offset."""
    chunks = [(text or "").encode("utf-8")[:max_bytes] if max_bytes else (text or "").encode("utf-8")
              for text in texts]
    lengths = np.fromiter((len(c) for c in chunks), dtype=np.int64, count=len(chunks))
    starts = np.zeros(len(chunks) + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    return np.frombuffer(b"".join(chunks), dtype=np.uint8), starts


def _context_keys(data: np.ndarray, starts: np.ndarray, order: int) -> list[np.ndarray]:
    """Per position, the exact key of its preceding k bytes for k = 0..order-1 (before a text's start: 0)."""
    position = np.arange(len(data), dtype=np.int64) - np.repeat(starts[:-1], np.diff(starts))
    digits = data.astype(np.uint64) + np.uint64(1)
    keys = [np.zeros(len(data), dtype=np.uint64)]
    for k in range(1, order):
        previous = np.zeros(len(data), dtype=np.uint64)
        previous[k:] = digits[:-k]
        previous[position < k] = 0
        keys.append(keys[-1] * BASE + previous)
    return keys


def _lookup(index: pd.Index, values: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """values[i] where index[i] == query, else 0 (a hash lookup: several times faster than searchsorted)."""
    position = index.get_indexer(queries)
    return np.where(position >= 0, values[position], 0)


class ByteNgramLM:
    """Interpolated Witten-Bell byte n-gram LM: fit(texts) / bits_per_byte(texts) / save / load.

    P_k(b | c) = (count(c, b) + T(c) * P_{k-1}(b | c')) / (count(c) + T(c)), where c' drops the oldest
    byte of c and T(c) counts the distinct bytes seen after c; the order -1 model is uniform over 256.
    `max_bytes` cuts long documents (training and scoring) to their first bytes.
    """

    def __init__(self, order: int = 4, max_bytes: int | None = None, name: str | None = None) -> None:
        if not 1 <= order <= MAX_ORDER:
            raise ValueError(f"order must be 1..{MAX_ORDER}, got {order}")
        self.order = order
        self.max_bytes = max_bytes
        self.name = name or f"byte-{order}gram"

    def fit(self, texts: Sequence[str]) -> ByteNgramLM:
        data, starts = _encode(texts, self.max_bytes)
        symbols = data.astype(np.uint64) + np.uint64(1)
        self.tables_: list[tuple[np.ndarray, ...]] = []
        for context in _context_keys(data, starts, self.order):
            pairs, pair_counts = np.unique(context * BASE + symbols, return_counts=True)
            contexts, context_counts = np.unique(context, return_counts=True)
            # distinct followers of each context: the unique pairs grouped by their context
            followed, followers = np.unique(pairs // BASE, return_counts=True)
            self.tables_.append((pairs, pair_counts.astype(np.int64), contexts, context_counts.astype(np.int64),
                                 _lookup(pd.Index(followed), followers.astype(np.int64), contexts)))
        self.n_bytes_ = int(len(data))
        self._index()
        return self

    @property
    def key(self) -> str:
        """Name and shape of the model, and for a loaded one its file's path, size and time."""
        return (f"ngram:{self.name}:order={self.order}:max_bytes={self.max_bytes}:trained_on={self.n_bytes_}"
                + getattr(self, "source_", ""))

    def _index(self) -> None:
        """Hash indexes over the pair and context keys of every order, for scoring."""
        self.indexes_ = [(pd.Index(pairs), pd.Index(contexts)) for pairs, _, contexts, _, _ in self.tables_]

    def byte_bits(self, data: np.ndarray, starts: np.ndarray) -> np.ndarray:
        """Bits for each byte of `data` (uint8) given the bytes before it in its text (texts begin at `starts`)."""
        symbols = data.astype(np.uint64) + np.uint64(1)
        probability = np.full(len(data), 1.0 / 256.0)
        for (_, pair_counts, _, context_counts, followers), (pairs, contexts), context in zip(
                self.tables_, self.indexes_, _context_keys(data, starts, self.order), strict=True):
            position = contexts.get_indexer(context)
            seen = np.where(position >= 0, context_counts[position], 0)
            distinct = np.where(position >= 0, followers[position], 0)
            count = _lookup(pairs, pair_counts, context * BASE + symbols)
            denominator = np.maximum(seen + distinct, 1)
            probability = np.where(seen > 0, (count + distinct * probability) / denominator, probability)
        return -np.log2(probability)

    def losses(self, texts: Sequence[str]) -> DocumentLosses:
        data, starts = _encode(texts, self.max_bytes)
        bits = self.byte_bits(data, starts)
        lengths = np.diff(starts)
        totals = np.zeros(len(texts))
        nonempty = lengths > 0
        if nonempty.any():
            totals[nonempty] = np.add.reduceat(bits, starts[:-1][nonempty])
        return DocumentLosses(totals * math.log(2), lengths, lengths)

    def bits_per_byte(self, texts: Sequence[str]) -> np.ndarray:
        return self.losses(texts).bits_per_byte()

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {f"{k}_{i}": array for k, table in enumerate(self.tables_) for i, array in enumerate(table)}
        tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
        with open(tmp, "wb") as handle:
            np.savez(handle, order=self.order, max_bytes=self.max_bytes or 0, name=self.name,
                     n_bytes=self.n_bytes_, **arrays)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> ByteNgramLM:
        with np.load(path) as saved:
            model = cls(order=int(saved["order"]), max_bytes=int(saved["max_bytes"]) or None, name=str(saved["name"]))
            model.tables_ = [tuple(saved[f"{k}_{i}"] for i in range(5)) for k in range(model.order)]
            model.n_bytes_ = int(saved["n_bytes"])
        stat = Path(path).stat()
        model.source_ = f":{Path(path).resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
        model._index()
        return model
