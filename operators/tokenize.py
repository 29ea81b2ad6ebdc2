"""`n_tokens` per document, and optionally the token ids themselves as token shards (storage/token_shards.py).

The encoding is a quicktok encoding name (o200k_base by default; cl100k_base, o200k_harmony, llama3, qwen3;
ids equal tiktoken's) or the path of a Hugging Face tokenizer.json, loaded with the `tokenizers` package.
Text is encoded as plain text: a special-token string inside a document ("<|endoftext|>") is tokenized like
any other text, never turned into the special id, so documents cannot forge separators. Whole batches are
encoded at once on `threads` threads (0: every core of the machine; inside a Ray actor, give it the actor's
CPUs instead).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from operators.base import Operator, with_column
from storage.token_shards import TokenShardWriter

# End-of-document token names, in the order tried for a tokenizer.json.
EOS_NAMES = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "<|eot_id|>")


class TokenEncoder(Protocol):
    name: str
    vocab_size: int
    eos_id: int | None

    def encode_batch(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(uint32 ids of all texts, concatenated; int64 offsets, len(texts) + 1)."""

    def count_batch(self, texts: list[str]) -> np.ndarray:
        """int64 token count of each text."""


class QuicktokEncoder:
    """A quicktok encoding: parallel batch encoding in C++, ids equal tiktoken's encode_ordinary."""

    def __init__(self, encoding: str, threads: int = 0):
        import quicktok

        self.quicktok = quicktok
        self.encoding = quicktok.get_encoding(encoding)
        self.name = encoding
        self.vocab_size = self.encoding.n_vocab
        self.eos_id = self.encoding.eot_token if "<|endoftext|>" in self.encoding.special_tokens_set else None
        self.threads = threads

    def encode_batch(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        tokens, offsets = self.encoding.encode_batch(texts, self.threads)
        return tokens, offsets

    def count_batch(self, texts: list[str]) -> np.ndarray:
        return self.quicktok.count_batch(self.encoding, texts, self.threads)


class HFTokenizerEncoder:
    """A local tokenizer.json (the `tokenizers` package, its own thread pool), without added BOS/EOS."""

    def __init__(self, path: str | Path, threads: int = 0, eos_token: str | None = None):
        import os

        from tokenizers import Tokenizer

        if threads:
            os.environ.setdefault("RAYON_NUM_THREADS", str(threads))
        self.tokenizer = Tokenizer.from_file(str(path))
        self.tokenizer.encode_special_tokens = True  # special-token strings in a document are plain text
        self.name = str(path)
        self.vocab_size = self.tokenizer.get_vocab_size(with_added_tokens=True)
        names = (eos_token,) if eos_token else EOS_NAMES
        self.eos_id = next((i for i in map(self.tokenizer.token_to_id, names) if i is not None), None)

    def encode_batch(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        ids = [np.asarray(e.ids, dtype=np.uint32) for e in self.tokenizer.encode_batch_fast(texts,
                                                                                    add_special_tokens=False)]
        offsets = np.concatenate([[0], np.cumsum([len(i) for i in ids], dtype=np.int64)])
        return (np.concatenate(ids) if ids else np.zeros(0, np.uint32)), offsets

    def count_batch(self, texts: list[str]) -> np.ndarray:
        return np.diff(self.encode_batch(texts)[1])


def load_encoder(encoding: str, threads: int = 0) -> TokenEncoder:
    """A quicktok encoding by name, or a tokenizer.json by path."""
    if encoding.endswith(".json") or Path(encoding).is_file():
        if not Path(encoding).is_file():
            raise FileNotFoundError(f"tokenizer file {encoding} not found")
        return HFTokenizerEncoder(encoding, threads)
    return QuicktokEncoder(encoding, threads)


class Tokenize(Operator):
    """Sets `n_tokens` on every row with text; with a `sink`, also writes the live rows' token ids to it.

    Dropped rows are counted too (so the funnel can say how many tokens each drop reason removed) but never
    reach the token shards. Swap `sink` per unit: `op.sink = op.shard_writer(prefix)`, then
    `op.sink.close()` at the unit's end.
    """

    name = "tokenize"

    def __init__(self, encoding: str = "o200k_base", threads: int = 0, eos: bool = True):
        super().__init__()
        self.encoder = load_encoder(encoding, threads)
        self.eos = eos
        self.sink: TokenShardWriter | None = None

    def shard_writer(self, prefix: str | Path) -> TokenShardWriter:
        eos_id = self.encoder.eos_id if self.eos else None
        if self.eos and eos_id is None:
            raise ValueError(f"{self.encoder.name} has no end-of-text token: use eos=False")
        return TokenShardWriter(prefix, tokenizer=self.encoder.name, vocab_size=self.encoder.vocab_size,
                                eos_id=eos_id)

    def process(self, batch: pa.Table) -> pa.Table:
        texts = pc.fill_null(batch.column("text"), "").to_pylist()
        if self.sink is None:
            counts = self.encoder.count_batch(texts)
        else:
            tokens, offsets = self.encoder.encode_batch(texts)
            counts = np.diff(offsets)
            self._write_live(batch, tokens, offsets)
        return with_column(batch, "n_tokens", pa.array(counts, pa.int64()))

    def _write_live(self, batch: pa.Table, tokens: np.ndarray, offsets: np.ndarray) -> None:
        if "drop_reason" not in batch.column_names or batch.column("drop_reason").null_count == batch.num_rows:
            self.sink.add(tokens, offsets, ids=batch.column("id"), n_bytes=_utf8_bytes(batch.column("text")))
            return
        live = np.flatnonzero(pc.is_null(batch.column("drop_reason")).to_numpy(zero_copy_only=False))
        starts, ends = offsets[live], offsets[live + 1]
        pieces = [tokens[s:e] for s, e in zip(starts.tolist(), ends.tolist(), strict=True)]
        kept = np.concatenate(pieces) if pieces else np.zeros(0, np.uint32)
        rows = pa.array(live)
        self.sink.add(kept, np.concatenate([[0], np.cumsum(ends - starts)]), ids=batch.column("id").take(rows),
                      n_bytes=_utf8_bytes(batch.column("text").take(rows)))


def _utf8_bytes(texts: pa.ChunkedArray) -> int:
    return pc.sum(pc.binary_length(texts)).as_py() or 0
