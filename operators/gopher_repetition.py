"""Gopher repetition rules (Rae et al. 2021, table A1), deciding as datatrove's GopherRepetitionFilter does."""

from __future__ import annotations

import bisect
import itertools

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from operators.base import Filter
from operators.text_stats import (
    HASH_MODULUS,
    Words,
    dense_codes,
    duplicate_stats,
    first_failing,
    first_occurrences,
    list_offsets,
    ratio,
    segment_of,
    text_array,
    word_tokenizer,
)

TOP_N_GRAMS = ((2, 0.2), (3, 0.18), (4, 0.16))
DUP_N_GRAMS = ((5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10))


class GopherRepetition(Filter):
    """Drops documents with many repeated paragraphs or lines (by count or characters), a dominant
    word n-gram, or many characters in repeated word n-grams.

    Parameters, defaults and drop reasons are datatrove's. Paragraph and line statistics are Arrow
    kernels over the batch; word n-grams are grouped for all documents at once (`_NGrams`), and
    only the sequential scan of datatrove's repeated n-gram count runs in Python, over the n-grams
    that occur more than once.
    """

    name = "gopher_repetition"

    def __init__(
        self,
        dup_line_frac: float | None = 0.3,
        dup_para_frac: float | None = 0.3,
        dup_line_char_frac: float | None = 0.2,
        dup_para_char_frac: float | None = 0.2,
        top_n_grams: tuple[tuple[int, float], ...] = TOP_N_GRAMS,
        dup_n_grams: tuple[tuple[int, float], ...] = DUP_N_GRAMS,
        language: str = "en",
    ) -> None:
        super().__init__()
        self.dup_line_frac = dup_line_frac
        self.dup_para_frac = dup_para_frac
        self.dup_line_char_frac = dup_line_char_frac
        self.dup_para_char_frac = dup_para_char_frac
        self.top_n_grams = tuple(top_n_grams)
        self.dup_n_grams = tuple(dup_n_grams)
        self.language = language

    def drop_reasons(self, batch: pa.Table) -> pa.Array:
        texts = text_array(batch)
        n_chars = pc.utf8_length(texts).to_numpy()
        checks = [("empty", n_chars == 0)]
        paragraphs = pc.split_pattern_regex(pc.utf8_trim_whitespace(texts), r"\n{2,}")
        checks += self._duplicates(paragraphs, n_chars, "para", self.dup_para_frac, self.dup_para_char_frac)
        lines = pc.split_pattern_regex(texts, r"\n+")
        checks += self._duplicates(lines, n_chars, "line", self.dup_line_frac, self.dup_line_char_frac)

        # Word n-grams only for the documents still in.
        alive = np.flatnonzero(~np.logical_or.reduce([failed for _, failed in checks]))
        words = word_tokenizer(self.language).split(texts.take(pa.array(alive)))
        top, repeated = self._ngram_chars(words)
        for n, limit in self.top_n_grams:
            chars, has_ngrams = top[n]
            checks.append((f"top_{n}_gram", _scatter(has_ngrams & (ratio(chars, n_chars[alive]) > limit), alive,
                                                      len(texts))))
        for n, limit in self.dup_n_grams:
            checks.append((f"duplicated_{n}_n_grams", _scatter(ratio(repeated[n], n_chars[alive]) > limit, alive,
                                                                len(texts))))
        return first_failing(checks, len(texts))

    @staticmethod
    def _duplicates(parts: pa.Array, n_chars: np.ndarray, unit: str, count_limit: float | None,
                    char_limit: float | None) -> list[tuple[str, np.ndarray]]:
        offsets = list_offsets(parts)
        repeated, repeated_chars = duplicate_stats(parts.flatten(), offsets)
        checks = []
        if count_limit:
            checks.append((f"dup_{unit}_frac", ratio(repeated, np.diff(offsets)) > count_limit))
        if char_limit:
            checks.append((f"dup_{unit}_char_frac", ratio(repeated_chars, n_chars) > char_limit))
        return checks

    def _ngram_chars(self, words: Words) -> tuple[dict, dict]:
        """Per n of `top_n_grams`: (characters of the most frequent n-gram times its count, whether the
        document has n-grams); per n of `dup_n_grams`: characters in repeated n-grams."""
        ngrams = _NGrams(words, word_tokenizer(self.language))
        top_ns, dup_ns = {n for n, _ in self.top_n_grams}, {n for n, _ in self.dup_n_grams}
        top, repeated = {}, {}
        for n in range(1, max(top_ns | dup_ns, default=0) + 1):
            if n > 1:
                ngrams.grow()
            if n in top_ns:
                top[n] = ngrams.most_frequent_chars()
            if n in dup_ns:
                repeated[n] = ngrams.repeated_chars()
        return top, repeated


def _scatter(values: np.ndarray, rows: np.ndarray, n_rows: int) -> np.ndarray:
    full = np.zeros(n_rows, dtype=bool)
    full[rows] = values
    return full


class _NGrams:
    """The word n-grams of a batch of documents, for n = 1, 2, ... in turn (`grow`).

    Exact groups of equal word tuples are kept only for n-grams that occur twice or more in their
    document: an n-gram can repeat only where the (n-1)-grams at its first and second word repeat,
    so after the first few n the groups are formed over a small share of the positions. The
    concatenation of each n-gram's words (what datatrove's repeated n-gram count compares) is
    tracked as a polynomial hash, grouped where it may repeat and confirmed by the word tuples
    (or, when those disagree, by the strings themselves).
    """

    def __init__(self, words: Words, tokenizer) -> None:
        self.words, self.tokenizer, self.n = words, tokenizer, 1
        self.ids = words.ids
        self.doc_of = segment_of(words.offsets)
        self.doc_end = words.offsets[1:][self.doc_of]
        self.lengths = words.features.length[self.ids]
        self.chars_before = np.concatenate(([0], np.cumsum(self.lengths)))
        self.hashes = words.features.hash[self.ids]
        self.vocabulary = len(words.features.length)
        self.starts = np.arange(len(self.ids))  # positions where an n-gram fits in its document
        self.joined = self.hashes  # per fitting position: hash of the n-gram's words joined without spaces
        codes = dense_codes(self.doc_of * self.vocabulary + self.ids)
        # Per position: group of its n-gram among n-grams seen twice or more in the document, else -1.
        self.group = np.where(np.bincount(codes)[codes] >= 2, codes, -1) if len(codes) else codes

    def grow(self) -> None:
        """Move on to n + 1."""
        n = self.n = self.n + 1
        fits = self.starts + n - 1 < self.doc_end[self.starts]
        self.starts, self.joined = self.starts[fits], self.joined[fits]
        last = self.starts + n - 1
        self.joined = (self.joined * self.tokenizer.powers(self.lengths[last]) + self.hashes[last]) % HASH_MODULUS
        group = np.full(len(self.ids), -1, dtype=np.int64)
        candidates = np.flatnonzero((self.group[:-1] >= 0) & (self.group[1:] >= 0))
        candidates = candidates[candidates + n - 1 < self.doc_end[candidates]]
        if len(candidates):
            codes = dense_codes(self.group[candidates] * self.vocabulary + self.ids[candidates + n - 1])
            repeated = np.bincount(codes)[codes] >= 2
            group[candidates[repeated]] = codes[repeated]
        self.group = group

    def most_frequent_chars(self) -> tuple[np.ndarray, np.ndarray]:
        """datatrove's find_top_duplicate: length of the most frequent n-gram (" "-joined) times its
        count, the earliest first seen among equally frequent ones (as Counter.most_common picks)."""
        n, n_docs = self.n, len(self.words.offsets) - 1
        has_ngrams = np.zeros(n_docs, dtype=bool)
        has_ngrams[self.doc_of[self.starts]] = True
        # Where no n-gram repeats, every count is 1 and the first n-gram wins.
        at = np.minimum(self.words.offsets[:-1], max(len(self.ids) - n, 0))
        most = np.ones(n_docs, dtype=np.int64)
        repeating = np.flatnonzero(self.group >= 0)
        if len(repeating):
            codes = dense_codes(self.group[repeating])  # in order of first appearance
            first_at = repeating[first_occurrences(codes)]
            counts = np.bincount(codes)
            group_doc = self.doc_of[first_at]  # groups come sorted by document
            doc_starts = np.concatenate(([0], np.flatnonzero(np.diff(group_doc)) + 1))
            docs = group_doc[doc_starts]
            most[docs] = np.maximum.reduceat(counts, doc_starts)
            is_most = counts == most[group_doc]
            winner = np.minimum.reduceat(np.where(is_most, np.arange(len(counts)), len(counts)), doc_starts)
            at[docs] = first_at[winner]
        chars = (self.chars_before[np.minimum(at + n, len(self.ids))] - self.chars_before[at] + n - 1) * most
        return np.where(has_ngrams, chars, 0), has_ngrams

    def repeated_chars(self) -> np.ndarray:
        """datatrove's find_all_duplicate: scan n-grams in order; one whose joined string was seen
        before adds its characters and skips the next n-1. Only n-grams whose string occurs twice or
        more can count, so only those are scanned, in Python."""
        n, n_docs = self.n, len(self.words.offsets) - 1
        chars = np.zeros(n_docs, dtype=np.int64)
        members, groups = self._joined_groups()
        if not len(members):
            return chars
        codes = dense_codes(groups)
        first = first_occurrences(codes)
        repeats = np.flatnonzero(~first)
        at, repeat_codes = members[repeats], codes[repeats]
        first_at = members[first][repeat_codes]
        lengths = self.chars_before[at + n] - self.chars_before[at]
        docs = self.doc_of[at]
        bounds = np.concatenate(([0], np.flatnonzero(np.diff(docs)) + 1, [len(at)])).tolist()
        at, repeat_codes, first_at, lengths = at.tolist(), repeat_codes.tolist(), first_at.tolist(), lengths.tolist()
        for first_run, end in itertools.pairwise(bounds):
            chars[docs[first_run]] = _scan(at[first_run:end], repeat_codes[first_run:end], first_at[first_run:end],
                                           lengths[first_run:end], n)
        return chars

    def _joined_groups(self) -> tuple[np.ndarray, np.ndarray]:
        """Positions whose joined n-gram string occurs twice or more in their document, and a group
        label per position (equal labels: equal strings)."""
        keys = self.doc_of[self.starts] * HASH_MODULUS + self.joined
        # Counting in hash buckets first leaves few positions to group exactly.
        buckets = 1 << max(int(2 * len(keys)).bit_length(), 4)
        slot = keys & (buckets - 1)
        maybe = np.flatnonzero(np.bincount(slot, minlength=buckets)[slot] >= 2)
        codes = dense_codes(keys[maybe])
        shared = np.bincount(codes)[codes] >= 2 if len(codes) else np.zeros(0, dtype=bool)
        members, codes = self.starts[maybe[shared]], codes[shared]
        if not len(members):
            return members, codes
        # Equal hashes are equal strings when the word tuples agree; otherwise compare the strings.
        tuples = self.group[members]
        first_tuple = np.full(codes.max() + 1, -2, dtype=np.int64)
        first_tuple[codes[::-1]] = tuples[::-1]
        unsure = np.flatnonzero((tuples < 0) | (tuples != first_tuple[codes]))
        if len(unsure):
            unsure_codes = np.unique(codes[unsure])
            relabel = np.flatnonzero(np.isin(codes, unsure_codes))
            tokens, ids, n = self.words.tokens, self.ids, self.n
            strings: dict[tuple[int, str], int] = {}
            labels = codes.copy()
            fresh = codes.max() + 1
            for position, start in zip(relabel.tolist(), members[relabel].tolist(), strict=True):
                key = (int(self.doc_of[start]), "".join(tokens[t] for t in ids[start:start + n]))
                labels[position] = strings.setdefault(key, fresh + len(strings))
            codes = labels
        return members, codes


def _scan(at: list[int], codes: list[int], first_at: list[int], lengths: list[int], n: int) -> int:
    """The sequential scan over one document's repeated n-grams (positions ascending).

    An n-gram datatrove visits is counted when its string was visited before. Its first occurrence
    is always visited unless a counted repeat skipped over it; later occurrences are in `at`.
    """
    counted: list[int] = []
    visited: set[int] = set()  # codes with a visited occurrence beyond the first
    skip_until, total = -1, 0
    for start, code, first_start, length in zip(at, codes, first_at, lengths, strict=True):
        if start < skip_until:
            continue
        if code in visited:
            seen = True
        else:
            before = bisect.bisect_left(counted, first_start)
            seen = not (before and first_start < counted[before - 1] + n)
            visited.add(code)
        if seen:
            total += length
            counted.append(start)
            skip_until = start + n
    return total

