"""The sample corpus as one document table with each document's true origin and language, for the
language-ID and heuristic-filter tests and benchmark."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from operators.reader import reader_for


def sample_documents(root: Path) -> pa.Table:
    """Every document of the sample corpus (docs/ and the WET pages), read by the project's readers,
    with `origin` and `lang` from truth.parquet (joined on url), in file order."""
    paths = sorted(str(path) for path in (root / "docs").iterdir()) + [str(root / "web" / "sample.warc.wet.gz")]
    docs = pa.concat_tables(batch.documents for path in paths for batch in reader_for(path)(path))
    docs = docs.filter(pc.is_null(docs.column("drop_reason"))).drop_columns(["drop_reason"])
    truth = pq.read_table(root / "truth.parquet", columns=["url", "origin", "lang"])
    return docs.join(truth, "url", join_type="inner").sort_by([("source", "ascending"), ("offset", "ascending")])


def per_origin(docs: pa.Table, limit: int, max_chars: int | None = None) -> pa.Table:
    """The same subset every run: per origin, the documents with the lowest ids, at most `limit` of
    them and (if given) at most `max_chars` characters in all."""
    parts = []
    for origin in sorted(set(docs.column("origin").to_pylist())):
        part = docs.filter(pc.equal(docs.column("origin"), origin)).sort_by("id").slice(0, limit)
        if max_chars is not None:
            chars = np.cumsum(pc.utf8_length(part.column("text")).to_numpy(zero_copy_only=False))
            part = part.slice(0, max(int(np.searchsorted(chars, max_chars, side="right")), 1))
        parts.append(part)
    return pa.concat_tables(parts)


# Our operator name -> datatrove's filter of the same rules.
DATATROVE_FILTERS = {
    "gopher_quality": "GopherQualityFilter",
    "gopher_repetition": "GopherRepetitionFilter",
    "fineweb_quality": "FineWebQualityFilter",  # after the Gopher ones: datatrove's word cache is still warm
    "c4_quality": "C4QualityFilter",
}


def datatrove_decisions(texts: list[str], options: dict[str, dict] | None = None) -> dict[str, list]:
    """datatrove's decision on every text by each filter of DATATROVE_FILTERS, called directly
    (`filter(Document)`): the drop reason, or None when kept; for C4 also the text it leaves.

    `options` holds constructor arguments per operator name. A module-level function, so that a
    process pool can run it on slices of the corpus.
    """
    from datatrove.data import Document
    from datatrove.pipeline import filters

    options = options or {}
    instances = {name: getattr(filters, cls)(**options.get(name, {})) for name, cls in DATATROVE_FILTERS.items()}
    decisions: dict[str, list] = {name: [] for name in instances} | {"c4_text": []}
    for index, text in enumerate(texts):
        for name, instance in instances.items():
            document = Document(text=text, id=str(index))
            result = instance.filter(document)
            decisions[name].append(result[1] if isinstance(result, tuple) else (None if result else "dropped"))
            if name == "c4_quality":
                decisions["c4_text"].append(document.text)
    return decisions
