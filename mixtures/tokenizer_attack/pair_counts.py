"""Pair counts per category, merge by merge: what the tokenizer's trainer saw at every step.

As the reference's `dump_frequencies.py` (a forked HF BPE trainer that applies a given merge list to a
category's sample and writes all pair counts after each merge), but for all categories at once and
without the per-step dump: the categories' pre-token ("word") frequency tables are joined into one
table of distinct words with a count per category, each merge is applied only to the words that
contain its pair (an index pair -> words), and a word's change is recorded once as (step, pair, word,
delta); one sparse product with the word x category counts then turns those into per-category deltas.
The work is proportional to the symbols merged, not to merges x vocabulary.

Counting matches HF's BpeTrainer: every adjacent pair of a word is counted (overlapping ones too,
"aaa" has ("a","a") twice) and a merge joins the pair's occurrences left to right.

The result is an event table: for every (pair, step) where some category's count of the pair changed,
the change per category, sorted by pair then step. Step t means "before merge t"; the initial counts
are events at step 0 and merge t's changes are events at step t + 1.
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from mixtures.tokenizer_attack.merges import BPEMerges

FLUSH_ENTRIES = 4_000_000  # word-level changes gathered before they are summed per category


@dataclass
class PairHistory:
    """Every pair's count per category at every merge step, as change events (see module docstring)."""

    categories: list[str]
    n_steps: int
    pair_keys: np.ndarray  # distinct pairs, as left * base + right (sorted)
    key_base: int
    event_pair: np.ndarray  # index into pair_keys, non-decreasing
    event_step: np.ndarray  # step of the change, increasing within a pair
    deltas: sp.csr_matrix  # events x categories: count changes
    merge_pair: np.ndarray  # pair index of merge t, -1 when no category ever saw the pair
    n_words: int
    n_bytes: np.ndarray  # sample bytes per category

    @property
    def pair_start(self) -> np.ndarray:
        return np.searchsorted(self.event_pair, np.arange(len(self.pair_keys)))

    def counts_at(self, events: np.ndarray) -> np.ndarray:
        """Dense per-category counts of each event's pair from that event on (sum of its deltas so far)."""
        events = np.asarray(events, np.int64)
        if not len(events):
            return np.zeros((0, len(self.categories)))
        start = self.pair_start[self.event_pair[events]]
        lengths = events - start + 1
        rows = np.repeat(np.arange(len(events)), lengths)
        cols = np.repeat(start - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
        ones = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(events), self.deltas.shape[0]))
        return np.asarray((ones @ self.deltas).todense())


def word_table(word_counts: Mapping[str, Counter]) -> tuple[list[str], sp.csr_matrix]:
    """Distinct words of all categories and their counts (words x categories, CSR)."""
    index: dict[str, int] = {}
    rows, cols, vals = [], [], []
    for k, counts in enumerate(word_counts.values()):
        for word, n in counts.items():
            rows.append(index.setdefault(word, len(index)))
            cols.append(k)
            vals.append(n)
    table = sp.csr_matrix((np.array(vals, np.float64), (rows, cols)), shape=(len(index), len(word_counts)))
    return list(index), table


def count_pairs(merges: BPEMerges, word_counts: Mapping[str, Counter], n_bytes: Mapping[str, int], *,
                n_merges: int | None = None) -> PairHistory:
    """Apply the first `n_merges` merges to every category's words, recording pair counts per step."""
    n_steps = len(merges) if n_merges is None else min(n_merges, len(merges))
    words, table = word_table(word_counts)
    symbols = merges.symbols(words)
    base = 1 << max([merges.n_ids, *(max(w, default=0) + 1 for w in symbols)]).bit_length()  # key = a * base + b
    recorder = _Recorder(table, n_steps + 2)
    index, added = recorder.initial(symbols, base)  # pair -> words holding it (initially; since then)
    lefts, rights, mergeds = merges.left.tolist(), merges.right.tolist(), merges.merged.tolist()
    for t in range(n_steps):
        a, b, c = lefts[t], rights[t], mergeds[t]
        key = a * base + b
        holders = set(index.pop(key, _NONE).tolist())
        holders.update(added.pop(key, ()))
        for w in holders:
            new, changes = _merge(symbols[w], a, b, c, base)
            if changes:
                symbols[w] = new
                recorder.add(t + 1, w, changes)
                for pair, delta in changes.items():
                    if delta > 0:
                        added.setdefault(pair, []).append(w)
        recorder.maybe_flush()
    keys, steps, deltas = recorder.finish()
    pair_keys, event_pair = np.unique(keys, return_inverse=True)
    merge_keys = merges.left[:n_steps] * base + merges.right[:n_steps]
    where = np.searchsorted(pair_keys, merge_keys).clip(max=max(len(pair_keys) - 1, 0))
    merge_pair = np.where(pair_keys[where] == merge_keys, where, -1) if len(pair_keys) else np.full(n_steps, -1)
    return PairHistory(list(word_counts), n_steps, pair_keys, base, event_pair.astype(np.int64),
                       steps.astype(np.int64), deltas, np.asarray(merge_pair, np.int64), len(words),
                       np.array([float(n_bytes[k]) for k in word_counts]))


_NONE = np.zeros(0, np.int64)


def _merge(syms: list[int], a: int, b: int, c: int, base: int) -> tuple[list[int], dict[int, int]]:
    """The word with (a, b) merged left to right, and the pair count changes (as HF's Word::merge)."""
    out: list[int] = []
    changes: dict[int, int] = {}
    i, n = 0, len(syms)
    while i < n:
        if syms[i] == a and i + 1 < n and syms[i + 1] == b:
            changes[a * base + b] = changes.get(a * base + b, 0) - 1
            if out:
                prev = out[-1] * base
                changes[prev + a] = changes.get(prev + a, 0) - 1
                changes[prev + c] = changes.get(prev + c, 0) + 1
            if i + 2 < n:
                after = syms[i + 2]
                changes[b * base + after] = changes.get(b * base + after, 0) - 1
                changes[c * base + after] = changes.get(c * base + after, 0) + 1
            out.append(c)
            i += 2
        else:
            out.append(syms[i])
            i += 1
    return out, {pair: delta for pair, delta in changes.items() if delta}


class _Recorder:
    """Word-level changes, summed per (pair, step) and category in chunks by one sparse product."""

    def __init__(self, table: sp.csr_matrix, span: int) -> None:
        self.table = table
        self.span = span  # key * span + step sorts events by pair, then step
        self.keys, self.words, self.deltas = array("q"), array("q"), array("q")
        self.parts: list[tuple[np.ndarray, sp.csr_matrix]] = []

    def initial(self, symbols: list[list[int]], base: int) -> tuple[dict[int, np.ndarray], dict[int, list[int]]]:
        """Record the step-0 counts of every word's pairs; return the pair -> words index."""
        lengths = np.array([len(w) for w in symbols], np.int64)
        flat = np.fromiter((s for w in symbols for s in w), np.int64, int(lengths.sum()))
        word_of = np.repeat(np.arange(len(symbols)), lengths)
        inside = word_of[1:] == word_of[:-1]
        keys = (flat[:-1] * base + flat[1:])[inside]
        holders = word_of[1:][inside]
        self.keys.frombytes((keys * self.span).tobytes())
        self.words.frombytes(holders.tobytes())
        self.deltas.frombytes(np.ones(len(keys), np.int64).tobytes())
        order = np.argsort(keys, kind="stable")
        uniq, first = np.unique(keys[order], return_index=True)
        return dict(zip(uniq.tolist(), np.split(holders[order], first[1:]), strict=True)), {}

    def add(self, step: int, word: int, changes: dict[int, int]) -> None:
        span = self.span
        self.keys.extend([key * span + step for key in changes])
        self.words.extend([word] * len(changes))
        self.deltas.extend(changes.values())

    def maybe_flush(self) -> None:
        if len(self.keys) >= FLUSH_ENTRIES:
            self._flush()

    def _flush(self) -> None:
        if not len(self.keys):
            return
        combined = np.frombuffer(self.keys, np.int64)
        uniq, inverse = np.unique(combined, return_inverse=True)
        changes = sp.csr_matrix((np.frombuffer(self.deltas, np.int64).astype(np.float64),
                                 (inverse, np.frombuffer(self.words, np.int64))),
                                shape=(len(uniq), self.table.shape[0]))
        per_category = (changes @ self.table).tocsr()
        per_category.eliminate_zeros()
        keep = np.diff(per_category.indptr) > 0
        self.parts.append((uniq[keep], per_category[keep]))
        self.keys, self.words, self.deltas = array("q"), array("q"), array("q")

    def finish(self) -> tuple[np.ndarray, np.ndarray, sp.csr_matrix]:
        self._flush()
        combined = np.concatenate([p[0] for p in self.parts]) if self.parts else np.zeros(0, np.int64)
        deltas = sp.vstack([p[1] for p in self.parts]).tocsr() if self.parts else \
            sp.csr_matrix((0, self.table.shape[1]))
        order = np.argsort(combined, kind="stable")
        return combined[order] // self.span, combined[order] % self.span, deltas[order]
