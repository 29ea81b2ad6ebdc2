"""C4's line and page rules (Raffel et al. 2020), deciding and cleaning as datatrove's C4QualityFilter does."""

from __future__ import annotations

import functools

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from operators.base import Filter, with_column
from operators.text_stats import (
    Words,
    first_failing,
    segment_sum,
    split_lines,
    split_whitespace,
    text_array,
    word_tokenizer,
)

END_PUNCTUATION = (".", "?", "!", '"', "'")
POLICY_SUBSTRINGS = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")
# Stands in for a whitespace token between chunks when sentences are counted (see `_sentences`).
_SPACE_TOKEN = "\U0010ffff"


class C4Quality(Filter):
    """Keeps a document's lines that end in terminal punctuation, have enough words, no overlong word,
    no "javascript" and no cookie or terms-of-use notice (with Wikipedia citations removed), and
    drops documents with "lorem ipsum", a curly bracket or too few sentences in those lines.

    Kept documents get the cleaned text (kept lines joined), as in datatrove. Parameters, defaults
    and drop reasons are datatrove's. Line rules are Arrow kernels over all lines of the batch;
    sentences are counted as datatrove's spaCy sentencizer counts them, from cached chunk tokens.
    """

    name = "c4_quality"

    def __init__(
        self,
        split_paragraph: bool = True,
        remove_citations: bool = True,
        filter_no_terminal_punct: bool = True,
        min_num_sentences: int = 5,
        min_words_per_line: int = 3,
        max_word_length: int = 1000,
        filter_lorem_ipsum: bool = True,
        filter_javascript: bool = True,
        filter_curly_bracket: bool = True,
        filter_policy: bool = True,
        language: str = "en",
    ) -> None:
        super().__init__()
        self.split_paragraph = split_paragraph
        self.remove_citations = remove_citations
        self.filter_no_terminal_punct = filter_no_terminal_punct
        self.min_num_sentences = min_num_sentences
        self.min_words_per_line = min_words_per_line
        self.max_word_length = max_word_length
        self.filter_lorem_ipsum = filter_lorem_ipsum
        self.filter_javascript = filter_javascript
        self.filter_curly_bracket = filter_curly_bracket
        self.filter_policy = filter_policy
        self.language = language
        self._cleaned: pa.Array | None = None

    def process(self, batch: pa.Table) -> pa.Table:
        out = super().process(batch)  # drop_reasons leaves the cleaned texts behind
        cleaned, self._cleaned = self._cleaned, None
        if cleaned is None:
            return out
        original = out.column("text")
        text = pc.if_else(pc.is_null(out.column("drop_reason")), cleaned, original.cast(pa.large_string()))
        return with_column(out, "text", text.cast(original.type))

    def drop_reasons(self, batch: pa.Table) -> pa.Array:
        texts = text_array(batch)
        lines, offsets = self._lines(texts)
        stripped = pc.utf8_trim_whitespace(lines)
        words, word_offsets = split_whitespace(stripped)
        n_words = np.diff(word_offsets)
        line = pc.replace_substring_regex(stripped, _citation_pattern(), "") if self.remove_citations else stripped
        lowered = _lower(line, POLICY_SUBSTRINGS + ("lorem ipsum", "javascript"))

        # The per-line steps of datatrove's loop, in its order: skip the line, or end the document.
        eligible = n_words >= self.min_words_per_line
        if self.max_word_length != -1:
            word_lengths = pc.utf8_length(words).to_numpy()
            eligible &= segment_sum(word_lengths > self.max_word_length, word_offsets) == 0
        if self.filter_no_terminal_punct:
            terminal = _any(pc.ends_with(line, end) for end in END_PUNCTUATION)
            eligible &= terminal & ~_any([pc.ends_with(line, "...")])
        lorem = eligible & self.filter_lorem_ipsum & _any([pc.match_substring(lowered, "lorem ipsum")])
        eligible &= ~lorem
        if self.filter_javascript:
            eligible &= ~_any([pc.match_substring(lowered, "javascript")])
        curly = eligible & self.filter_curly_bracket & _any([pc.match_substring(line, "{")])
        eligible &= ~curly
        if self.filter_policy:
            eligible &= ~_any(pc.match_substring(lowered, policy) for policy in POLICY_SUBSTRINGS)
        kept = eligible

        ending = _first_per_segment(lorem | curly, offsets)
        ended = ending >= 0
        n_sentences = np.zeros(len(texts), dtype=np.int64)
        if self.min_num_sentences != -1:
            per_line = self._sentences(line, kept) if self.split_paragraph else kept.astype(np.int64)
            n_sentences = segment_sum(np.where(kept, per_line, 0), offsets)
        checks = [
            ("lorem_ipsum", ended & lorem[np.maximum(ending, 0)]),
            ("curly_bracket", ended & curly[np.maximum(ending, 0)]),
            ("too_few_sentences", n_sentences < self.min_num_sentences),
        ]
        self._cleaned = self._joined(line, kept, offsets)
        return first_failing(checks, len(texts))

    def _lines(self, texts: pa.Array) -> tuple[pa.Array, np.ndarray]:
        if self.split_paragraph:
            return split_lines(texts)
        from datatrove.utils.text import split_into_sentences

        sentences = [split_into_sentences(text, self.language) for text in texts.to_pylist()]
        offsets = np.concatenate(([0], np.cumsum([len(parts) for parts in sentences], dtype=np.int64)))
        return pa.array([part for parts in sentences for part in parts], type=pa.large_string()), offsets

    def _sentences(self, lines: pa.Array, kept: np.ndarray) -> np.ndarray:
        """Per line (counted where kept), len(split_into_sentences(line)) as datatrove computes it.

        spaCy's sentencizer starts a sentence at each token that is neither punctuation nor a
        sentence-ending character and follows a sentence-ending one (punctuation between them
        aside), and datatrove counts at least one. Whitespace that is not a lone space becomes a
        token too: a stand-in chunk marks it.
        """
        counts = np.ones(len(lines), dtype=np.int64)
        rows = np.flatnonzero(kept)
        marked = pc.replace_substring_regex(lines.take(pa.array(rows)), _whitespace_token_pattern(),
                                            f" {_SPACE_TOKEN} ")
        tokenizer = word_tokenizer(self.language)
        words = tokenizer.split(marked, whole_if_bridged=False) if tokenizer.chunkwise else None
        if words is None:
            bridged = np.ones(len(rows), dtype=bool)
        else:
            bridged = words.bridged
            counts[rows] = 1 + _sentence_starts(words)
        if bridged.any():
            from datatrove.utils.text import split_into_sentences

            exact = [len(split_into_sentences(text, self.language)) for text in lines.take(pa.array(rows[bridged]))
                     .to_pylist()]
            counts[rows[bridged]] = exact
        return counts

    def _joined(self, lines: pa.Array, kept: np.ndarray, offsets: np.ndarray) -> pa.Array:
        """Per document, its kept lines joined as datatrove joins them, stripped."""
        kept_offsets = np.concatenate(([0], np.cumsum(segment_sum(kept, offsets))))
        kept_lines = pa.LargeListArray.from_arrays(pa.array(kept_offsets, type=pa.int64()),
                                                   lines.filter(pa.array(kept)))
        joined = pc.binary_join(kept_lines, pa.scalar("\n" if self.split_paragraph else " ", pa.large_string()))
        return pc.utf8_trim_whitespace(joined)


def _sentence_starts(words: Words) -> np.ndarray:
    """Per text, the sentencizer's sentence starts after the first: tokens that are neither punctuation
    nor sentence-ending and whose previous token, other punctuation skipped, ends a sentence."""
    features = words.features
    ends = features.ends_sentence[words.ids]
    plain = ~features.is_punct[words.ids] & ~ends
    counted = np.flatnonzero(ends | plain)  # the tokens not skipped
    text_of = np.searchsorted(words.offsets, counted, side="right") - 1
    starts = ends[counted[:-1]] & plain[counted[1:]] & (text_of[:-1] == text_of[1:])
    return np.bincount(text_of[1:][starts], minlength=len(words.offsets) - 1)


def _first_per_segment(mask: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Per segment, the index of its first True element, or -1."""
    first = np.full(len(offsets) - 1, -1, dtype=np.int64)
    positions = np.flatnonzero(mask)
    segments = np.searchsorted(offsets, positions, side="right") - 1
    unique, index = np.unique(segments, return_index=True)
    first[unique] = positions[index]
    return first


def _any(masks) -> np.ndarray:
    arrays = [mask.to_numpy(zero_copy_only=False) for mask in masks]
    return np.logical_or.reduce(arrays) if arrays else np.zeros(0, dtype=bool)


def _lower(lines: pa.Array, needles: tuple[str, ...]) -> pa.Array:
    """str.lower() of every line, as far as finding `needles` in it goes.

    Arrow lowercases like Python except for a few characters; the only one whose lowercase holds
    ASCII is U+0130, which Python lowercases to "i" plus a combining dot.
    """
    if all(needle.isascii() for needle in needles):
        return pc.utf8_lower(pc.replace_substring(lines, "\u0130", "i\u0307"))
    return pa.array([line.lower() for line in lines.to_pylist()], type=pa.large_string())


@functools.cache
def _citation_pattern() -> str:
    """datatrove's CITATION_REGEX in RE2, with Python's `\\d` (decimal digits of Python's Unicode
    version, which differ from RE2's \\p{Nd})."""
    return rf"\[[{_char_class(str.isdecimal)}]*\]|\[edit\]|\[citation needed\]"


@functools.cache
def _whitespace_token_pattern() -> str:
    """Whitespace runs spaCy makes a token of: all but a lone space."""
    spaces = _char_class(str.isspace, limit=0x3001)
    others = _char_class(lambda ch: ch.isspace() and ch != " ", limit=0x3001)
    return f"[{spaces}]{{2,}}|[{others}]"


def _char_class(test, limit: int = 0x110000) -> str:
    """An RE2 character class body (ranges of \\x{...}) of the characters passing `test`."""
    ranges: list[list[int]] = []
    for code in range(limit):
        if test(chr(code)):
            if ranges and ranges[-1][1] == code - 1:
                ranges[-1][1] = code
            else:
                ranges.append([code, code])
    return "".join(f"\\x{{{a:x}}}" if a == b else f"\\x{{{a:x}}}-\\x{{{b:x}}}" for a, b in ranges)
