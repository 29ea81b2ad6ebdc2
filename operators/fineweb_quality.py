"""FineWeb's quality rules (Penedo et al. 2024), deciding as datatrove's FineWebQualityFilter does."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from operators.base import Filter
from operators.text_stats import (
    duplicate_stats,
    first_failing,
    list_offsets,
    ratio,
    segment_sum,
    text_array,
    word_tokenizer,
)


class FineWebQuality(Filter):
    """Drops documents whose non-blank lines rarely end in terminal punctuation, are mostly short,
    repeat characters of other lines, or that are more line breaks than words (lists).

    Parameters, defaults and drop reasons are datatrove's; `stop_chars` None means datatrove's
    TERMINAL_PUNCTUATION. Words are datatrove's (spaCy) words for `language`.
    """

    name = "fineweb_quality"

    def __init__(
        self,
        line_punct_thr: float = 0.12,
        line_punct_exclude_zero: bool = False,
        stop_chars: tuple[str, ...] | None = None,
        short_line_thr: float = 0.67,
        short_line_length: int = 30,
        char_duplicates_ratio: float = 0.01,
        new_line_ratio: float = 0.3,
        language: str = "en",
    ) -> None:
        from datatrove.utils.text import TERMINAL_PUNCTUATION

        super().__init__()
        self.line_punct_thr = line_punct_thr
        self.line_punct_exclude_zero = line_punct_exclude_zero
        self.stop_chars = tuple(stop_chars) if stop_chars is not None else tuple(sorted(TERMINAL_PUNCTUATION))
        self.short_line_threshold = short_line_thr
        self.short_line_length = short_line_length
        self.char_duplicates_ratio = char_duplicates_ratio
        self.new_line_ratio = new_line_ratio
        self.language = language

    def drop_reasons(self, batch: pa.Table) -> pa.Array:
        texts = text_array(batch)
        parts = pc.split_pattern(texts, "\n")
        all_lines = parts.flatten()
        nonblank = pc.not_equal(pc.utf8_trim_whitespace(all_lines), "").to_numpy(zero_copy_only=False)
        lines = all_lines.filter(pa.array(nonblank))
        offsets = np.concatenate(([0], np.cumsum(segment_sum(nonblank, list_offsets(parts)))))
        n_lines = np.diff(offsets)
        checks = [("empty", n_lines == 0)]

        punctuated = ratio(segment_sum(self._ends_with_stop_char(lines), offsets), n_lines)
        exempt = (punctuated == 0) & self.line_punct_exclude_zero
        checks.append(("line_punct_ratio", (punctuated < self.line_punct_thr) & ~exempt))
        short = pc.less_equal(pc.utf8_length(lines), self.short_line_length).to_numpy(zero_copy_only=False)
        checks.append(("short_line_ratio", ratio(segment_sum(short, offsets), n_lines) > self.short_line_threshold))
        newlines = pc.count_substring(texts, "\n").to_numpy()
        chars_without_newlines = pc.utf8_length(texts).to_numpy() - newlines
        repeated_chars = duplicate_stats(lines, offsets)[1]
        checks.append(("char_dup_ratio", ratio(repeated_chars, chars_without_newlines) > self.char_duplicates_ratio))

        alive = np.flatnonzero(~np.logical_or.reduce([failed for _, failed in checks]))
        n_words = np.zeros(len(texts), dtype=np.int64)
        n_words[alive] = word_tokenizer(self.language).split(texts.take(pa.array(alive))).counts()
        checks.append(("list_ratio", ratio(newlines, n_words) > self.new_line_ratio))
        return first_failing(checks, len(texts))

    def _ends_with_stop_char(self, lines: pa.Array) -> np.ndarray:
        """line.endswith(stop_chars), one Arrow lookup per suffix length."""
        ends = np.zeros(len(lines), dtype=bool)
        for length in sorted({len(stop) for stop in self.stop_chars}):
            if length == 0:
                return np.ones(len(lines), dtype=bool)
            suffixes = pc.utf8_slice_codeunits(lines, -length)
            stops = pa.array([stop for stop in self.stop_chars if len(stop) == length], type=pa.large_string())
            ends |= pc.is_in(suffixes, value_set=stops).to_numpy(zero_copy_only=False)
        return ends
