"""Gopher quality rules (Rae et al. 2021, table A1), deciding as datatrove's GopherQualityFilter does."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from operators.base import Filter
from operators.text_stats import first_failing, ratio, segment_sum, split_lines, text_array, word_tokenizer

STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")


class GopherQuality(Filter):
    """Drops documents with too few or too many words, odd mean word length, many hashes, ellipses,
    bullet or ellipsis lines, few alphabetic words or few stop words.

    Parameters, their defaults and the drop reasons are datatrove's (0 or None turns a check off);
    every statistic is computed for the whole batch at once. Words are datatrove's (spaCy) words
    for `language`.
    """

    name = "gopher_quality"

    def __init__(
        self,
        min_doc_words: int | None = 50,
        max_doc_words: int | None = 100_000,
        min_avg_word_length: int | None = 3,
        max_avg_word_length: int | None = 10,
        max_symbol_word_ratio: float | None = 0.1,
        max_bullet_lines_ratio: float | None = 0.9,
        max_ellipsis_lines_ratio: float | None = 0.3,
        max_non_alpha_words_ratio: float | None = 0.8,
        min_stop_words: int | None = 2,
        stop_words: list[str] | None = None,
        language: str = "en",
    ) -> None:
        super().__init__()
        self.min_doc_words = min_doc_words
        self.max_doc_words = max_doc_words
        self.min_avg_word_length = min_avg_word_length
        self.max_avg_word_length = max_avg_word_length
        self.max_symbol_word_ratio = max_symbol_word_ratio
        self.max_bullet_lines_ratio = max_bullet_lines_ratio
        self.max_ellipsis_lines_ratio = max_ellipsis_lines_ratio
        self.max_non_alpha_words_ratio = max_non_alpha_words_ratio
        self.min_stop_words = min_stop_words
        self.stop_words = sorted(set(STOP_WORDS if stop_words is None else stop_words))
        self.language = language

    def drop_reasons(self, batch: pa.Table) -> pa.Array:
        texts = text_array(batch)
        tokenizer = word_tokenizer(self.language)
        words = tokenizer.split(texts)
        features = words.features
        n_words = words.counts()
        n_kept_words = words.sums(features.is_word)  # datatrove's "non-symbol words"
        mean_length = ratio(words.sums(np.where(features.is_word, features.length, 0)), n_kept_words)
        hashes = pc.count_substring(texts, "#").to_numpy()
        ellipses = pc.count_substring(texts, "...").to_numpy() + pc.count_substring(texts, "…").to_numpy()

        lines, line_offsets = split_lines(texts)
        stripped = pc.utf8_ltrim_whitespace(lines)
        bullet = pc.or_(pc.starts_with(stripped, "•"), pc.starts_with(stripped, "-")).to_numpy(zero_copy_only=False)
        stripped = pc.utf8_rtrim_whitespace(lines)
        ellipsis = pc.or_(pc.ends_with(stripped, "..."), pc.ends_with(stripped, "…")).to_numpy(zero_copy_only=False)
        n_lines = np.diff(line_offsets)

        checks = []
        if self.min_doc_words:
            checks.append(("gopher_short_doc", n_kept_words < self.min_doc_words))
        if self.max_doc_words:
            checks.append(("gopher_long_doc", n_kept_words > self.max_doc_words))
        if self.min_avg_word_length:
            checks.append(("gopher_below_avg_threshold", mean_length < self.min_avg_word_length))
        if self.max_avg_word_length:
            checks.append(("gopher_above_avg_threshold", mean_length > self.max_avg_word_length))
        if self.max_symbol_word_ratio:
            checks.append(("gopher_too_many_hashes", ratio(hashes, n_words) > self.max_symbol_word_ratio))
            checks.append(("gopher_too_many_ellipsis", ratio(ellipses, n_words) > self.max_symbol_word_ratio))
        if self.max_bullet_lines_ratio:
            bullets = ratio(segment_sum(bullet, line_offsets), n_lines)
            checks.append(("gopher_too_many_bullets", bullets > self.max_bullet_lines_ratio))
        if self.max_ellipsis_lines_ratio:
            ellipsis_lines = ratio(segment_sum(ellipsis, line_offsets), n_lines)
            checks.append(("gopher_too_many_end_ellipsis", ellipsis_lines > self.max_ellipsis_lines_ratio))
        if self.max_non_alpha_words_ratio:
            alpha = ratio(words.sums(features.has_alpha), n_words)
            checks.append(("gopher_below_alpha_threshold", alpha < self.max_non_alpha_words_ratio))
        if self.min_stop_words:
            stop_words = self._stop_words_present(tokenizer, words)
            checks.append(("gopher_enough_stop_words", stop_words < self.min_stop_words))
        return first_failing(checks, len(texts))

    def _stop_words_present(self, tokenizer, words) -> np.ndarray:
        """Per document, how many distinct stop words occur among its words."""
        stop_ids = np.sort(tokenizer.ids_of(self.stop_words))
        positions = np.flatnonzero(np.isin(words.ids, stop_ids))
        documents = np.searchsorted(words.offsets, positions, side="right") - 1
        pairs = np.unique(documents * len(stop_ids) + np.searchsorted(stop_ids, words.ids[positions]))
        return np.bincount(pairs // max(len(stop_ids), 1), minlength=len(words.offsets) - 1)
