"""Materialize a mixture: draw documents per domain to a token budget, tokenise, write a token shard.

The shard is the project's one token-shard format (storage/token_shards.py: flat little-endian uint32 ids
of the real tokenizer, o200k_base by default, each document followed by its end-of-text token; int64
offsets; document ids; a JSON header written last). Its header carries the mixture: requested and
realised weights, per-domain tokens, documents, bytes and epochs, and where the documents came from.
A big training run reads it as it is (np.memmap); proxies remap ids to a compact vocabulary
(mixtures/proxy.py), which is why the shard keeps the tokenizer's own ids.

Each domain gets round(weight * budget) tokens (largest remainders, so they sum to the budget):
documents in a seeded random order, tokenised in chunks until the target is reached, the last one
cut to fit (keeping its end-of-text). A domain too small for its target is repeated, at most
`max_epochs` times; beyond that its tokens fall short of the target, and the header records the
shortfall and the realised weights (the mixture a proxy actually saw).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from mixtures.domains import CorpusDomains
from storage.token_shards import TokenShardWriter

CHUNK_MARGIN = 1.15  # fetch estimated tokens x this, so one chunk usually reaches the target


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
        self.docs: list[np.ndarray] = []  # token ids of each document tokenised so far, without its end-of-text
        self.doc_bytes: list[int] = []
        self.tokens = 0  # of those documents, one end-of-text each included

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
            for i, text in enumerate(texts):
                self.docs.append(flat[offsets[i]:offsets[i + 1]])
                self.doc_bytes.append(len(text.encode("utf-8")))
                self.tokens += int(offsets[i + 1] - offsets[i]) + 1

    def write(self, sink: TokenShardWriter, take: int) -> tuple[int, int, int]:
        """Write `take` tokens (end-of-text included): whole passes over the documents read, then the documents
        that fit whole, then the next one cut to fit. Returns the tokens, bytes and documents written."""
        flat = np.concatenate(self.docs) if self.docs else np.zeros(0, np.uint32)
        offsets = np.concatenate([[0], np.cumsum([len(d) for d in self.docs], dtype=np.int64)])
        ends = offsets[1:] + np.arange(1, len(self.docs) + 1)  # with each document's end-of-text
        sizes = np.cumsum([0, *self.doc_bytes])
        written = n_bytes = docs = 0
        while written < take:
            whole = int(np.searchsorted(ends, take - written, side="right"))
            if whole:
                sink.add(flat, offsets[: whole + 1], ids=self.ids[:whole], n_bytes=int(sizes[whole]))
                written, n_bytes, docs = written + int(ends[whole - 1]), n_bytes + int(sizes[whole]), docs + whole
            if whole < len(self.docs) and written < take:
                piece = self.docs[whole][: take - written - 1]
                size = len(self.encoder.decode_bytes(piece.tolist()))
                sink.add(piece, [0, len(piece)], ids=self.ids[whole:whole + 1], n_bytes=size)
                written, n_bytes, docs = take, n_bytes + size, docs + 1
        return written, n_bytes, docs


def materialize(corpus: CorpusDomains, weights: Mapping[str, float], budget: int, prefix: str | Path, *,
                max_epochs: float = 4.0, split: str = "train", seed: int = 0, tokenizer: str = "o200k_base",
                n_threads: int = 1) -> dict:
    """Write the token shard of `weights` x `budget` tokens from `corpus` at `prefix`; return its header."""
    import quicktok

    if budget <= 0:
        raise ValueError(f"the token budget must be positive, got {budget}")
    if max_epochs < 1:
        raise ValueError(f"max_epochs must be at least 1 (one pass), got {max_epochs}")
    unknown = set(weights) - set(corpus.token_counts(split).tokens.index)
    if unknown:
        raise ValueError(f"domains not in {corpus.run_dir.name} (split {split}): {', '.join(sorted(unknown))}")
    encoder = quicktok.get_encoding(tokenizer)
    report, position = {}, 0
    with TokenShardWriter(Path(prefix), tokenizer=tokenizer, vocab_size=encoder.n_vocab,
                          eos_id=encoder.eot_token) as sink:
        for domain, target in split_budget(weights, budget).items():
            stream = _DomainStream(corpus, domain, split, seed, encoder, n_threads)
            stream.read_until(target)
            written, n_bytes, docs = stream.write(sink, min(target, int(max_epochs * stream.tokens)))
            position += written
            domain_tokens = stream.domain_tokens()
            report[domain] = {"weight": float(weights[domain]), "target_tokens": target, "tokens": written,
                              "docs": docs, "unique_docs": len(stream.docs), "bytes": n_bytes,
                              "domain_tokens": domain_tokens, "domain_tokens_estimated": not stream.exhausted,
                              "epochs": round(written / domain_tokens, 4) if domain_tokens else 0.0,
                              "capped": written < target}
        return sink.close(
            budget=int(budget), shortfall=int(budget - position), max_epochs=max_epochs, seed=seed,
            weights={d: float(w) for d, w in weights.items()},
            realised_weights={d: r["tokens"] / position for d, r in report.items()} if position else {},
            domains=report,
            source={"run_dir": str(corpus.run_dir), "view": corpus.view, "by": corpus.by, "split": split,
                    "valid_fraction": corpus.valid_fraction, "token_estimate": corpus.token_source})
