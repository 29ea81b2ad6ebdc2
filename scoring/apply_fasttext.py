"""Scores documents with a trained binary fastText classifier (PreSelect's or a DCLM-style quality one).

A callable over Arrow batches (operators.base.Operator, so the score flow's chain counts and times it); the
model loads once per instance, so once per Ray actor. The score column (`preselect` by default) is the
classifier's probability of the positive label, float32.
"""

from __future__ import annotations

import pyarrow as pa

from operators.base import Operator, with_column
from scoring.fasttext_classifier import FastTextClassifier


class ScoreFastText(Operator):
    """Adds `column`: P(positive) under the fastText classifier saved at `model`."""

    name = "score_fasttext"

    def __init__(self, model: str, column: str = "preselect", max_chars: int | None = 20_000) -> None:
        super().__init__()
        self.classifier = FastTextClassifier.load(model, max_chars=max_chars)
        self.column = column
        self.name = f"score_{column}"

    def process(self, batch: pa.Table) -> pa.Table:
        scores = self.classifier.predict_proba(batch.column("text").to_pylist())
        return with_column(batch, self.column, pa.array(scores, type=pa.float32()))
