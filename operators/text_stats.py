"""Text statistics the heuristic filters share, computed over a whole Arrow batch at once.

datatrove computes them one document at a time in Python; here every row of a batch goes through
pyarrow.compute and numpy kernels with the same definitions (Python's whitespace, `str.splitlines`,
datatrove's spaCy word tokens), so the filters built on them take datatrove's decisions, only faster.
Arrow's UTF-8 whitespace is exactly Python's `str.isspace` set, which the tests check.
"""

from __future__ import annotations

import functools
import itertools
import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from operators.spacy_tokens import (
    IS_ALPHA,
    SpecialCaseBridges,
    default_sentence_punct,
    load_word_tokenizer,
    own_pipeline,
    tokenize_chunks,
    tokens_of,
)

# The boundaries `str.splitlines()` splits on, "\r\n" first so that it counts once (RE2 syntax).
LINE_BOUNDARY = "\r\n|[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]"

# Python's `\S+` (str.isspace): the chunks `split_whitespace` gives.
_NON_SPACE = re.compile(r"\S+")

# Polynomial hash of a token's characters (base 2**32, so `int.from_bytes` of its UTF-32 computes it):
# the hash of a word n-gram's concatenation follows from its tokens' hashes and lengths. P < 2**31 keeps
# every product inside int64.
HASH_MODULUS = 1_500_000_001
HASH_BASE = 2**32 % HASH_MODULUS


def text_array(batch: pa.Table) -> pa.Array:
    """The batch's `text` as one large_string array, nulls read as empty documents."""
    column = batch.column("text")
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    return pc.fill_null(array.cast(pa.large_string()), "")


def list_offsets(lists: pa.Array) -> np.ndarray:
    """Offsets of a (possibly sliced) list array into its `flatten()`ed values."""
    offsets = lists.offsets.to_numpy().astype(np.int64)
    return offsets - offsets[0]


def segment_sum(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Sum of `values` within each [offsets[i], offsets[i+1]) segment (empty segments sum to 0)."""
    totals = np.concatenate(([0], np.cumsum(values, dtype=np.int64)))
    return totals[offsets[1:]] - totals[offsets[:-1]]


def segment_of(offsets: np.ndarray) -> np.ndarray:
    """For every element, the index of the segment it belongs to."""
    return np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))


def dense_codes(keys: np.ndarray | pa.Array) -> np.ndarray:
    """Equal keys get equal codes, numbered in order of first appearance (0, 1, 2, ...)."""
    if len(keys) == 0:
        return np.zeros(0, dtype=np.int64)
    encoded = pc.dictionary_encode(keys if isinstance(keys, pa.Array) else pa.array(keys))
    return encoded.indices.to_numpy().astype(np.int64)


def first_occurrences(codes: np.ndarray) -> np.ndarray:
    """Mask of the elements that are the first with their code (codes from `dense_codes`)."""
    first = np.ones(len(codes), dtype=bool)
    if len(codes) > 1:
        first[1:] = codes[1:] > np.maximum.accumulate(codes)[:-1]
    return first


def first_failing(checks: list[tuple[str, np.ndarray]], n_rows: int) -> pa.Array:
    """Per row, the reason of the first check (in order) that fails it, or null: datatrove's filters
    return at the first failing check."""
    reasons = np.full(n_rows, None, dtype=object)
    for reason, failed in reversed(checks):
        reasons[failed] = reason
    return pa.array(reasons, type=pa.string())


def ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator as Python divides ints; NaN (failing no comparison) where datatrove
    would divide by zero."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.maximum(denominator, 1), np.nan)


def split_whitespace(texts: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """Every text's `str.split()`: (all chunks, flat; offsets of each text's chunks). Arrow's split
    also yields "" before leading and after trailing whitespace; those are dropped."""
    parts = pc.utf8_split_whitespace(texts)
    values, offsets = parts.flatten(), list_offsets(parts)
    nonempty = pc.greater(pc.binary_length(values), 0).to_numpy(zero_copy_only=False)
    counts = segment_sum(nonempty, offsets)
    return values.filter(pa.array(nonempty)), np.concatenate(([0], np.cumsum(counts)))


def split_lines(texts: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """Every text's `str.splitlines()`: (all lines, flat; offsets of each text's lines)."""
    parts = pc.split_pattern_regex(texts, LINE_BOUNDARY)
    values, offsets = parts.flatten(), list_offsets(parts)
    # A split leaves a trailing "" (after a final line break, or for "") where splitlines() leaves nothing.
    last = offsets[1:] - 1
    drop = pc.utf8_length(values.take(pa.array(last))).to_numpy() == 0
    keep = np.ones(len(values), dtype=bool)
    keep[last[drop]] = False
    counts = np.diff(offsets) - drop
    return values.filter(pa.array(keep)), np.concatenate(([0], np.cumsum(counts)))


def duplicate_stats(values: pa.Array, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """datatrove's `find_duplicates` on every segment: (repeated elements, their characters) per segment."""
    if len(values) == 0:
        zeros = np.zeros(len(offsets) - 1, dtype=np.int64)
        return zeros, zeros
    codes = dense_codes(values)
    groups = dense_codes(segment_of(offsets) * (int(codes.max()) + 1) + codes)
    repeated = ~first_occurrences(groups)
    lengths = pc.utf8_length(values).to_numpy()
    return segment_sum(repeated, offsets), segment_sum(np.where(repeated, lengths, 0), offsets)


@dataclass
class TokenFeatures:
    """What the filters need to know about each distinct token, indexed by token id."""

    length: np.ndarray  # characters
    is_word: np.ndarray  # has a character outside datatrove's PUNCTUATION_SET ("non-symbol word")
    has_alpha: np.ndarray  # has a character with str.isalpha()
    is_punct: np.ndarray  # spaCy's Token.is_punct
    ends_sentence: np.ndarray  # one of the sentencizer's punct_chars
    hash: np.ndarray  # polynomial hash of the characters, mod HASH_MODULUS

    @classmethod
    def empty(cls) -> TokenFeatures:
        return cls(*(np.zeros(0, dtype=dtype) for dtype in (np.int64, bool, bool, bool, bool, np.int64)))

    def extended(self, other: TokenFeatures) -> TokenFeatures:
        pairs = zip(vars(self).values(), vars(other).values(), strict=True)
        return TokenFeatures(*(np.concatenate(pair) for pair in pairs))


@dataclass
class Words:
    """datatrove's `split_into_words` of every text of a batch: token ids, flat, and each text's offsets."""

    ids: np.ndarray
    offsets: np.ndarray
    features: TokenFeatures
    tokens: list[str]  # token strings by id

    bridged: np.ndarray | None = None  # texts whose chunkwise words may differ (see WordTokenizer.split)

    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)

    def replaced(self, texts: np.ndarray, other: Words) -> Words:
        """These words with those of `texts` (indices, ascending) taken from `other`, in order."""
        pieces, counts, previous = [], self.counts().copy(), 0
        for rank, text in enumerate(texts.tolist()):
            pieces.append(self.ids[self.offsets[previous]:self.offsets[text]])
            pieces.append(other.ids[other.offsets[rank]:other.offsets[rank + 1]])
            counts[text] = other.offsets[rank + 1] - other.offsets[rank]
            previous = text + 1
        pieces.append(self.ids[self.offsets[previous]:])
        offsets = np.concatenate(([0], np.cumsum(counts)))
        return Words(np.concatenate(pieces), offsets, other.features, other.tokens, self.bridged)

    def sums(self, feature: np.ndarray) -> np.ndarray:
        """Per text, the sum of a per-token-id feature over its words."""
        return segment_sum(feature[self.ids], self.offsets)


class WordTokenizer:
    """datatrove's word tokenizer for a language, made batch-wise and cached per whitespace-free chunk.

    spaCy's rule-based tokenizer splits text at whitespace before it applies prefixes, suffixes,
    infixes and special cases, and datatrove drops the whitespace tokens: a text's words are the
    tokens of its whitespace-separated chunks, one after the other. So every distinct chunk is
    tokenized once (many in one spaCy call) and reused, which on Zipfian text skips nearly all spaCy
    work. The one spaCy rule that reaches across chunks is handled by `SpecialCaseBridges`
    (operators.spacy_tokens: spaCy's internals, guarded by the spaCy version they were proven on).
    Languages whose datatrove tokenizer is not spaCy's rule-based one are tokenized text by text.
    """

    def __init__(self, language: str, max_chunks: int = 500_000) -> None:
        self.language = language
        self.max_chunks = max_chunks  # the cache (about 250 bytes a chunk) starts over beyond this
        self._datatrove = load_word_tokenizer(language)
        self._nlp, self._is_punct = own_pipeline(self._datatrove)
        self.chunkwise = self._nlp is not None and SpecialCaseBridges.applies(self._nlp.tokenizer)
        if self.chunkwise:
            self._bridges = SpecialCaseBridges(self._nlp.tokenizer)
        self.sentence_punct = frozenset(self._nlp.get_pipe("sentencizer").punct_chars if self._nlp is not None
                                        else default_sentence_punct())
        self._powers = np.ones(1, dtype=np.int64)
        self.reset()

    def reset(self) -> None:
        """Empty the chunk cache (it also starts over by itself beyond `max_chunks`)."""
        self._token_index: dict[str, int] = {}
        self.tokens: list[str] = []
        self.features = TokenFeatures.empty()
        self._chunk_index: dict[str, int] = {}
        self._chunk_start = np.zeros(0, dtype=np.int64)
        self._chunk_count = np.zeros(0, dtype=np.int64)
        self._chunk_tokens = np.zeros(0, dtype=np.int64)
        # Each chunk's edge tokens before special-case matching, and which pattern token its last and
        # first ones are (see SpecialCaseBridges).
        self._chunk_heads: list[tuple] = []
        self._chunk_tails: list[tuple] = []
        self._chunk_last_kind = np.zeros(0, dtype=np.int64)
        self._chunk_first_kind = np.zeros(0, dtype=np.int64)

    def split(self, texts: pa.Array, whole_if_bridged: bool = True) -> Words:
        """The words of every text (texts must not be null).

        Where a special-case match bridges chunks of a text, those chunks are tokenized together, as
        datatrove does; a text with an "IS_ALPHA" token is tokenized without it, as datatrove does
        (in steady state: the first such text of a process keeps it). With `whole_if_bridged` False
        these texts keep their chunkwise words, flagged in `Words.bridged`.
        """
        if len(self._chunk_index) > self.max_chunks or len(self.tokens) > self.max_chunks:
            self.reset()
        if not self.chunkwise:
            return self._split_each(texts, self._datatrove.word_tokenize)
        chunks, chunk_offsets = split_whitespace(texts)
        chunk_ids = self.chunk_ids(chunks)
        ids, ends = self.chunk_tokens(chunk_ids)
        words = Words(ids, ends[chunk_offsets], self.features, self.tokens)
        regions = self._bridged_regions(chunk_ids, chunk_offsets)
        words.bridged = np.zeros(len(texts), dtype=bool)
        words.bridged[list(regions)] = True
        with_alpha = segment_sum(ids == self._token_index.get(IS_ALPHA, -1), words.offsets) > 0
        words.bridged |= with_alpha
        if whole_if_bridged and words.bridged.any():
            rows = np.flatnonzero(words.bridged)
            retokenized = [
                self._token_ids(self._tokenize_whole(text.replace(IS_ALPHA, ""))) if with_alpha[row] else
                self._retokenized(text, ids[ends[chunk_offsets[row]]:ends[chunk_offsets[row + 1]]],
                                  ends[chunk_offsets[row]:chunk_offsets[row + 1] + 1] - ends[chunk_offsets[row]],
                                  regions[row])
                for row, text in zip(rows.tolist(), texts.take(pa.array(rows)).to_pylist(), strict=True)
            ]
            offsets = np.concatenate(([0], np.cumsum([len(text_ids) for text_ids in retokenized])))
            words = words.replaced(rows, Words(np.concatenate(retokenized), offsets, self.features, self.tokens))
        return words

    def ids_of(self, words: list[str]) -> np.ndarray:
        """Token ids of those of `words` the vocabulary holds (valid until the next `split`)."""
        return np.array([self._token_index[word] for word in words if word in self._token_index], dtype=np.int64)

    def chunk_ids(self, chunks: pa.Array) -> np.ndarray:
        """Ids of whitespace-free chunks, tokenizing the ones not seen before."""
        encoded = pc.dictionary_encode(chunks)
        distinct = encoded.dictionary.to_pylist()
        index = self._chunk_index
        mapping = np.fromiter((index.get(chunk, -1) for chunk in distinct), dtype=np.int64, count=len(distinct))
        new = np.flatnonzero(mapping < 0)
        if len(new):
            mapping[new] = self._add_chunks([distinct[i] for i in new])
        return mapping[encoded.indices.to_numpy()]

    def chunk_tokens(self, chunk_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(token ids, offsets per chunk) of the given chunks."""
        counts = self._chunk_count[chunk_ids]
        ends = np.concatenate(([0], np.cumsum(counts)))
        token_index = np.repeat(self._chunk_start[chunk_ids] - ends[:-1], counts) + np.arange(ends[-1])
        return self._chunk_tokens[token_index], ends

    def _add_chunks(self, chunks: list[str]) -> np.ndarray:
        with self._nlp.memory_zone():
            texts, bounds = tokenize_chunks(self._nlp.tokenizer, chunks)
        token_ids = self._token_ids(texts)
        first_id = len(self._chunk_index)
        for offset, chunk in enumerate(chunks):
            self._chunk_index[chunk] = first_id + offset
        self._chunk_start = np.concatenate((self._chunk_start, len(self._chunk_tokens) + bounds[:-1]))
        self._chunk_count = np.concatenate((self._chunk_count, np.diff(bounds)))
        self._chunk_tokens = np.concatenate((self._chunk_tokens, token_ids))
        heads, tails = self._bridges.edges(chunks, [texts[a:b] for a, b in itertools.pairwise(bounds.tolist())])
        self._chunk_heads += heads
        self._chunk_tails += tails
        last_kind = [self._bridges.lefts.get(tail[-1][0], 0) if tail else 0 for tail in tails]
        first_kind = [self._bridges.rights.get(head[0][0], 0) if head else 0 for head in heads]
        self._chunk_last_kind = np.concatenate((self._chunk_last_kind, last_kind))
        self._chunk_first_kind = np.concatenate((self._chunk_first_kind, first_kind))
        return np.arange(first_id, first_id + len(chunks))

    def _bridged_regions(self, chunk_ids: np.ndarray, chunk_offsets: np.ndarray) -> dict[int, list[tuple[int, int]]]:
        """Per text (that has any), the runs of its chunks that special-case patterns bridge and whose
        tokens that changes: (first chunk, last chunk), numbered within the text."""
        if len(chunk_ids) < 2:
            return {}
        kinds = self._bridges.pairs[self._chunk_last_kind[chunk_ids[:-1]], self._chunk_first_kind[chunk_ids[1:]]]
        candidates = np.flatnonzero(kinds)
        text_of = np.searchsorted(chunk_offsets, candidates, side="right") - 1
        inside = candidates + 1 < chunk_offsets[text_of + 1]
        runs: dict[int, list[list]] = {}
        for boundary, text in zip(candidates[inside].tolist(), text_of[inside].tolist(), strict=True):
            first, end = chunk_offsets[text], chunk_offsets[text + 1]
            left = self._edge_tokens(chunk_ids, boundary, first - 1, self._chunk_tails)
            right = self._edge_tokens(chunk_ids, boundary + 1, end, self._chunk_heads)
            crossing = self._bridges.crossing(left, right)
            if crossing is None:
                continue
            text_runs, at = runs.setdefault(text, []), boundary - first
            if text_runs and text_runs[-1][1] == at:  # a run of chunks joined boundary after boundary
                text_runs[-1][1:] = [at + 1, text_runs[-1][2] or crossing]
            else:
                text_runs.append([at, at + 1, crossing])
        regions = {text: [(a, b) for a, b, changes in text_runs if changes] for text, text_runs in runs.items()}
        return {text: text_regions for text, text_regions in regions.items() if text_regions}

    def _retokenized(self, text: str, ids: np.ndarray, ends: np.ndarray, regions: list[tuple[int, int]]) -> np.ndarray:
        """A text's token ids with its bridged regions (chunk ranges) tokenized as one piece each."""
        spans = [match.span() for match in _NON_SPACE.finditer(text)]
        pieces, done = [], 0
        for first, last in regions:
            pieces.append(ids[ends[done]:ends[first]])
            pieces.append(self._token_ids(self._tokenize_whole(text[spans[first][0]:spans[last][1]])))
            done = last + 1
        pieces.append(ids[ends[done]:])
        return np.concatenate(pieces)

    def _edge_tokens(self, chunk_ids: np.ndarray, at: int, stop: int, edges: list[tuple]) -> tuple:
        """Up to `reach` edge tokens from chunk `at` towards `stop` (a pattern may span short chunks)."""
        reach, tokens, step = self._bridges.reach, (), 1 if stop > at else -1
        while at != stop and len(tokens) < reach:
            tokens = tokens + edges[chunk_ids[at]] if step > 0 else edges[chunk_ids[at]] + tokens
            at += step
        return tokens[:reach] if step > 0 else tokens[-reach:]

    def _tokenize_whole(self, text: str) -> list[str]:
        with self._nlp.memory_zone():
            texts, _ = tokens_of(self._nlp.tokenizer(text), text, np.zeros(1, dtype=np.int64))
        return texts

    def _split_each(self, texts: pa.Array, tokenize) -> Words:
        words = [tokenize(text) for text in texts.to_pylist()]
        ids = self._token_ids([word for text_words in words for word in text_words])
        offsets = np.concatenate(([0], np.cumsum([len(text_words) for text_words in words], dtype=np.int64)))
        return Words(ids, offsets, self.features, self.tokens)

    def _token_ids(self, texts: list[str]) -> np.ndarray:
        index = self._token_index
        ids = np.empty(len(texts), dtype=np.int64)
        new: list[int] = []
        for position, text in enumerate(texts):
            token_id = index.get(text)
            if token_id is None:
                token_id = index[text] = len(self.tokens)
                self.tokens.append(text)
                new.append(position)
            ids[position] = token_id
        if new:
            self.features = self.features.extended(self._features([texts[i] for i in new]))
        return ids

    def _features(self, texts: list[str]) -> TokenFeatures:
        from datatrove.utils.text import PUNCTUATION_SET

        def flags(test) -> np.ndarray:
            return np.fromiter(map(test, texts), dtype=bool, count=len(texts))

        return TokenFeatures(
            length=np.fromiter(map(len, texts), dtype=np.int64, count=len(texts)),
            is_word=flags(lambda text: any(ch not in PUNCTUATION_SET for ch in text)),
            has_alpha=flags(lambda text: any(ch.isalpha() for ch in text)),
            is_punct=flags(self._is_punct),
            ends_sentence=flags(self.sentence_punct.__contains__),
            hash=np.fromiter(
                (int.from_bytes(text.encode("utf-32-be", "surrogatepass"), "big") % HASH_MODULUS for text in texts),
                dtype=np.int64,
                count=len(texts),
            ),
        )

    def powers(self, exponents: np.ndarray) -> np.ndarray:
        """HASH_BASE ** exponents mod HASH_MODULUS."""
        top = int(exponents.max()) if len(exponents) else 0
        if len(self._powers) <= top:
            powers = self._powers.tolist()
            while len(powers) <= top:
                powers.append(powers[-1] * HASH_BASE % HASH_MODULUS)
            self._powers = np.asarray(powers, dtype=np.int64)
        return self._powers[exponents]


@functools.cache
def word_tokenizer(language: str) -> WordTokenizer:
    """One tokenizer (and chunk cache) per language per process, shared by the filters."""
    return WordTokenizer(language)
