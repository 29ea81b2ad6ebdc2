"""Materialize a mixture: draw documents per domain to a token budget, tokenise, write a token shard.

A token shard is a folder: `tokens.bin` (flat little-endian uint32 token ids of the real tokenizer,
o200k_base by default, each document followed by its end-of-text token), `offsets.npy` (int64,
n_docs + 1 document boundaries into tokens.bin) and `manifest.json` (tokenizer, requested and
realised weights, per-domain tokens, documents, bytes and epochs, and where the documents came
from). A big training run reads it as it is (np.memmap); proxies remap ids to a compact vocabulary
(mixtures/proxy.py), which is why the shard keeps the tokenizer's own ids.

Each domain gets round(weight * budget) tokens (largest remainders, so they sum to the budget):
documents in a seeded random order, tokenised in chunks until the target is reached, the last one
cut to fit. A domain too small for its target is repeated, at most `max_epochs` times; beyond that
its tokens fall short of the target, and the manifest records the shortfall and the realised
weights (the mixture a proxy actually saw).
"""

from __future__ import annotations

import json
import os
import shutil
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mixtures.domains import CorpusDomains

FORMAT = "mixforge-token-shard/1"
TOKENS_FILE = "tokens.bin"
OFFSETS_FILE = "offsets.npy"
MANIFEST_FILE = "manifest.json"
CHUNK_MARGIN = 1.15  # fetch estimated tokens x this, so one chunk usually reaches the target


@dataclass
class TokenShard:
    """A materialized shard opened for reading: tokens as a read-only memmap."""

    path: Path
    tokens: np.ndarray
    offsets: np.ndarray
    manifest: dict

    @classmethod
    def open(cls, path: str | Path) -> TokenShard:
        path = Path(path)
        manifest = json.loads((path / MANIFEST_FILE).read_text())
        if manifest.get("format") != FORMAT:
            raise ValueError(f"{path} is not a token shard ({MANIFEST_FILE} format {manifest.get('format')!r})")
        count = manifest["n_tokens"]
        tokens = (np.memmap(path / TOKENS_FILE, dtype="<u4", mode="r", shape=(count,)) if count
                  else np.empty(0, dtype="<u4"))
        return cls(path, tokens, np.load(path / OFFSETS_FILE), manifest)

    @classmethod
    def write(cls, path: str | Path, tokens: np.ndarray, offsets: np.ndarray, *, n_bytes: int, vocab_size: int,
              **context) -> TokenShard:
        """A shard from token ids already in hand (e.g. a synthetic stream); `context` goes to the manifest."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        np.asarray(tokens, dtype="<u4").tofile(path / TOKENS_FILE)
        np.save(path / OFFSETS_FILE, np.asarray(offsets, dtype=np.int64))
        manifest = {"format": FORMAT, "vocab_size": int(vocab_size), "dtype": "uint32", "n_tokens": len(tokens),
                    "n_docs": len(offsets) - 1, "n_bytes": int(n_bytes),
                    "files": {"tokens": TOKENS_FILE, "offsets": OFFSETS_FILE}, **context}
        (path / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
        return cls.open(path)

    @property
    def bytes_per_token(self) -> float:
        return self.manifest["n_bytes"] / max(self.manifest["n_tokens"], 1)


def split_budget(weights: Mapping[str, float], budget: int) -> dict[str, int]:
    """Integer token targets proportional to the weights that sum exactly to the budget."""
    names = [d for d, w in weights.items() if w > 0]
    if not names:
        raise ValueError("the mixture has no domain with a positive weight")
    shares = np.array([weights[d] for d in names], dtype=float)
    exact = shares / shares.sum() * budget
    targets = np.floor(exact).astype(np.int64)
    targets[np.argsort(-(exact - targets), kind="stable")[: budget - int(targets.sum())]] += 1
    return dict(zip(names, targets.tolist(), strict=True))


class _DomainStream:
    """One pass over a domain's documents in seeded order, tokenised chunk by chunk on demand."""

    def __init__(self, corpus: CorpusDomains, domain: str, split: str, seed: int, encoder, n_threads: int):
        self.corpus, self.encoder, self.n_threads = corpus, encoder, n_threads
        docs = corpus.documents(domain, split)
        rng = np.random.default_rng([seed, zlib.crc32(domain.encode())])
        order = rng.permutation(len(docs))
        self.ids = docs["id"].to_numpy()[order]
        self.estimates = docs["tokens"].to_numpy()[order]
        self.next = 0
        self.docs: list[np.ndarray] = []  # token ids of each document tokenised so far, EOT included
        self.doc_bytes: list[int] = []
        self.tokens = 0

    @property
    def exhausted(self) -> bool:
        return self.next >= len(self.ids)

    def domain_tokens(self) -> int:
        """The domain's tokens in this split: counted if it was read to the end, else extrapolated."""
        if self.exhausted or not self.next:
            return self.tokens
        return round(self.tokens * self.estimates.sum() / max(self.estimates[: self.next].sum(), 1))

    def read_until(self, target: int) -> None:
        """Tokenise further documents until `target` tokens are in hand or the domain runs out."""
        while self.tokens < target and not self.exhausted:
            wanted = (target - self.tokens) * CHUNK_MARGIN
            cumulative = np.cumsum(self.estimates[self.next:])
            stop = self.next + int(np.searchsorted(cumulative, wanted)) + 1
            texts = self.corpus.texts(self.ids[self.next:stop].tolist())
            self.next = stop
            flat, offsets = self.encoder.encode_batch(texts, self.n_threads)
            eot = np.array([self.encoder.eot_token], dtype=np.uint32)
            for i, text in enumerate(texts):
                self.docs.append(np.concatenate([flat[offsets[i]:offsets[i + 1]], eot]))
                self.doc_bytes.append(len(text.encode("utf-8")))
                self.tokens += int(offsets[i + 1] - offsets[i]) + 1


def materialize(corpus: CorpusDomains, weights: Mapping[str, float], budget: int, out_dir: str | Path, *,
                max_epochs: float = 4.0, split: str = "train", seed: int = 0, tokenizer: str = "o200k_base",
                n_threads: int = 1) -> dict:
    """Write the token shard of `weights` x `budget` tokens from `corpus` to `out_dir`; return its manifest."""
    import quicktok

    if budget <= 0:
        raise ValueError(f"the token budget must be positive, got {budget}")
    if max_epochs < 1:
        raise ValueError(f"max_epochs must be at least 1 (one pass), got {max_epochs}")
    unknown = set(weights) - set(corpus.token_counts(split).tokens.index)
    if unknown:
        raise ValueError(f"domains not in {corpus.run_dir.name} (split {split}): {', '.join(sorted(unknown))}")
    encoder = quicktok.get_encoding(tokenizer)
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".tmp-{os.getpid()}-{out_dir.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    offsets, report, position, n_bytes = [0], {}, 0, 0
    with open(tmp / TOKENS_FILE, "wb") as sink:
        for domain, target in split_budget(weights, budget).items():
            stream = _DomainStream(corpus, domain, split, seed, encoder, n_threads)
            stream.read_until(target)
            one_pass = stream.tokens
            take = min(target, int(max_epochs * one_pass))
            written = bytes_written = docs = 0
            while written < take:  # whole passes, then part of one
                for doc, size in zip(stream.docs, stream.doc_bytes, strict=True):
                    piece = doc[: take - written]
                    sink.write(piece.astype("<u4", copy=False).tobytes())
                    written += len(piece)
                    docs += 1
                    bytes_written += size if len(piece) == len(doc) else len(encoder.decode_bytes(piece.tolist()))
                    offsets.append(position + written)
                    if written >= take:
                        break
            position += written
            n_bytes += bytes_written
            domain_tokens = stream.domain_tokens()
            report[domain] = {"weight": float(weights[domain]), "target_tokens": target, "tokens": written,
                              "docs": docs, "unique_docs": len(stream.docs), "bytes": bytes_written,
                              "domain_tokens": domain_tokens, "domain_tokens_estimated": not stream.exhausted,
                              "epochs": round(written / domain_tokens, 4) if domain_tokens else 0.0,
                              "capped": written < target}
    np.save(tmp / OFFSETS_FILE, np.asarray(offsets, dtype=np.int64))
    manifest = {
        "format": FORMAT, "tokenizer": tokenizer, "eot_token": int(encoder.eot_token),
        "vocab_size": int(encoder.n_vocab), "dtype": "uint32",
        "files": {"tokens": TOKENS_FILE, "offsets": OFFSETS_FILE},
        "n_tokens": position, "n_docs": len(offsets) - 1, "n_bytes": n_bytes, "budget": int(budget),
        "shortfall": int(budget - position), "max_epochs": max_epochs, "seed": seed,
        "weights": {d: float(w) for d, w in weights.items()},
        "realised_weights": {d: r["tokens"] / position for d, r in report.items()} if position else {},
        "domains": report,
        "source": {"run_dir": str(corpus.run_dir), "view": corpus.view, "by": corpus.by, "split": split,
                   "valid_fraction": corpus.valid_fraction, "token_estimate": corpus.token_source},
    }
    (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, out_dir)
    return manifest
