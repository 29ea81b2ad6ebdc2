"""Rates documents with a trained DataMan student rater, a callable over Arrow batches: `dataman_<criterion>`
(float32, 1-5), `dataman_overall` and `domain`. The rater loads once per instance, so once per Ray actor."""

from __future__ import annotations

import pyarrow as pa

from operators.base import Operator, with_column
from scoring.students import StudentRater


class ScoreStudents(Operator):
    """Adds the student rater's fourteen criterion columns and the domain."""

    name = "score_students"

    def __init__(self, model: str) -> None:
        super().__init__()
        self.rater = StudentRater.load(model)

    def process(self, batch: pa.Table) -> pa.Table:
        predictions = self.rater.predict(batch.column("text").to_pylist())
        domains = predictions.pop("domain")
        for column, values in predictions.items():
            batch = with_column(batch, column, pa.array(values, type=pa.float32()))
        return with_column(batch, "domain", pa.array(list(domains), type=pa.string()))
