"""The loss interface PreSelect needs: each document's summed loss and its size in bytes, under a model.

A `LossModel` answers `losses(texts) -> DocumentLosses` for a batch: per document the summed next-token loss
in nats, the tokens it covers and the document's UTF-8 bytes. Bits per byte (loss / ln 2 / bytes) makes
models with different tokenizers comparable. PreSelect (hkust-nlp/PreSelect, `bpc/main.py`, after
hkust-nlp/llm-compression-intelligence `code/evaluation`) sums the loss over the whole text in windows of
1,900 tokens moved by a stride of 512, each window scoring only the tokens no earlier window scored, and
divides by characters; we divide by UTF-8 bytes. For one document either normaliser rescales every model
alike, so which model is better on it, all PreSelect uses, is the same. Deviation: the reference scores a
corpus as one token stream; we score each document on its own, with the tokenizer's BOS (or the proxy's
end-of-text) put before it, so its first token is scored too and no document sees another's context.

Implementations: `scoring.byte_ngram.ByteNgramLM`, `scoring.hf_lm.HFCausalLM` (any Hugging Face causal LM
directory or hub name), `scoring.proxy_lm.ProxyLM` (a mixture experiment's proxy checkpoint).
`windowed_losses` is the one window scheme the two torch models share.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

# PreSelect's bpc/main.py: --block_size 1900 --stride 512
WINDOW = 1900
STRIDE = 512
# Tokens per forward pass on CPU: about one long window (measured here: larger CPU batches only add padding
# and cache misses); on a GPU the models take 65,536.
CPU_BATCH_TOKENS = 2_048


@dataclass
class DocumentLosses:
    """Per document: summed next-token loss (nats), tokens scored, UTF-8 bytes."""

    loss: np.ndarray
    n_tokens: np.ndarray
    n_bytes: np.ndarray

    def bits_per_byte(self) -> np.ndarray:
        """Summed loss in bits over the document's bytes; NaN where nothing was scored (an empty text)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where((self.n_bytes > 0) & (self.n_tokens > 0),
                            self.loss / math.log(2) / np.maximum(self.n_bytes, 1), np.nan)

    @classmethod
    def concat(cls, parts: Sequence[DocumentLosses]) -> DocumentLosses:
        return cls(*(np.concatenate([getattr(p, name) for p in parts]) if parts else np.zeros(0)
                     for name in ("loss", "n_tokens", "n_bytes")))


class LossModel(Protocol):
    """A model that scores documents in batches. `key` names the model and every setting its losses depend on
    (the loss cache is keyed by it)."""

    name: str
    key: str

    def losses(self, texts: Sequence[str]) -> DocumentLosses: ...


def utf8_bytes(texts: Sequence[str]) -> np.ndarray:
    return np.fromiter((len((t or "").encode("utf-8")) for t in texts), dtype=np.int64, count=len(texts))


def plan_windows(n_tokens: int, window: int = WINDOW, stride: int = STRIDE) -> list[tuple[int, int, int]]:
    """(begin, end, first) of each window over a sequence of n tokens: the window holds tokens [begin, end)
    (at most window + 1, the inputs and their next tokens) and scores the targets at positions [first, end),
    those no earlier window scored. Every position 1..n-1 is scored exactly once."""
    if not 0 < stride <= window:
        raise ValueError(f"stride must be within 1..window ({window}), got {stride}")
    spans: list[tuple[int, int, int]] = []
    begin = scored_to = 0
    while n_tokens >= 2:
        end = min(begin + window + 1, n_tokens)
        spans.append((begin, end, max(scored_to, begin + 1)))
        if end >= n_tokens:
            break
        scored_to, begin = end, begin + stride
    return spans


def windowed_losses(forward: Callable, sequences: Sequence[np.ndarray], window: int, stride: int,
                    batch_tokens: int, device: str, pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(summed loss in nats, tokens scored) per sequence, under `forward(ids) -> logits` (batch, time, vocab).

    All windows of all sequences are batched together, longest first, at most `batch_tokens` (padded) per
    forward pass. Padding sits at the right end, where a causal model's earlier positions never see it.
    """
    import torch
    from torch.nn import functional as F

    spans = [(doc, begin, end, first) for doc, ids in enumerate(sequences)
             for begin, end, first in plan_windows(len(ids), window, stride)]
    spans.sort(key=lambda s: s[2] - s[1], reverse=True)
    totals = np.zeros(len(sequences), dtype=np.float64)
    counts = np.zeros(len(sequences), dtype=np.int64)
    start = 0
    while start < len(spans):
        width = spans[start][2] - spans[start][1] - 1  # inputs of the longest window in this batch
        size = max(1, batch_tokens // max(width, 1))
        batch = spans[start:start + size]
        start += size
        inputs = np.full((len(batch), width), pad_id, dtype=np.int64)
        targets = np.full((len(batch), width), -100, dtype=np.int64)
        for row, (doc, begin, end, first) in enumerate(batch):
            ids = sequences[doc]
            inputs[row, :end - begin - 1] = ids[begin:end - 1]
            targets[row, first - begin - 1:end - begin - 1] = ids[first:end]
        with torch.inference_mode():
            logits = forward(torch.from_numpy(inputs).to(device))
            target = torch.from_numpy(targets).to(device)
            loss = F.cross_entropy(logits.float().flatten(0, 1), target.flatten(), ignore_index=-100,
                                   reduction="none").view(len(batch), width).sum(dim=1)
        docs = np.fromiter((s[0] for s in batch), dtype=np.int64, count=len(batch))
        np.add.at(totals, docs, loss.double().cpu().numpy())
        np.add.at(counts, docs, (targets != -100).sum(axis=1))
    return totals, counts


def resolve_device(device: str) -> str:
    """`auto` is cuda when torch sees a GPU, else cpu."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def loss_matrix(models: Sequence[LossModel], texts: Sequence[str]) -> np.ndarray:
    """(n_models, n_texts) bits per byte: row m is model m's normalised loss on every text."""
    return np.vstack([model.losses(texts).bits_per_byte() for model in models])
