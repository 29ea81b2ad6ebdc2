"""Real documents for the scoring tests and benchmark: the sample corpus's Debian documentation and fortunes.

Each document keeps its `origin` (python-doc, postgresql-doc, debian-handbook, debian-reference, fortunes)
and `lang`, which the tests use as the truth. A run directory with one upstream stage can be made from
them, for the operators and flows that read shards.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pandas as pd
import pyarrow as pa

from storage.schema import DOCUMENT_SCHEMA, document_id
from storage.shards import write_table_atomic

DOC_FILES = ("python-doc.jsonl.gz", "postgresql-doc.parquet", "fortunes.jsonl.gz", "debian-handbook.parquet",
             "debian-reference.jsonl.zst")


@functools.cache
def sample_docs(corpus: Path) -> pd.DataFrame:
    """Every document of the sample corpus's docs/ (text, url, origin, domain, lang), shuffled with a fixed seed."""
    frames = []
    for name in DOC_FILES:
        path = corpus / "docs" / name
        frames.append(pd.read_parquet(path) if name.endswith(".parquet") else pd.read_json(path, lines=True))
    docs = pd.concat(frames, ignore_index=True)[["text", "url", "origin", "domain", "lang"]]
    return docs.sample(frac=1.0, random_state=0).reset_index(drop=True)


def write_run(docs: pd.DataFrame, out: Path, stage: str = "tokenize", n_shards: int = 2,
              with_tokens: bool = True) -> list[str]:
    """Write `docs` as a run's `shards/<stage>` (document schema + n_chars/n_tokens); return the shard paths."""
    paths = []
    for rank in range(n_shards):
        part = docs.iloc[rank::n_shards]
        source = f"sample/{rank}"
        columns = {
            "id": [document_id(source, i) for i in range(len(part))],
            "text": part["text"].tolist(),
            "url": part["url"].tolist(),
            "source": [f"{origin}.jsonl" for origin in part["origin"]],
            "offset": list(range(len(part))),
            "metadata": [json.dumps({"origin": o, "lang": lang}) for o, lang in zip(part["origin"], part["lang"],
                                                                                  strict=True)],
        }
        table = pa.table(columns, schema=DOCUMENT_SCHEMA)
        table = table.append_column("n_chars", pa.array(part["text"].str.len().tolist(), pa.int64()))
        if with_tokens:  # a fixed ratio stands in for a tokenizer: ~4 characters per token
            table = table.append_column("n_tokens", pa.array((part["text"].str.len() // 4 + 1).tolist(), pa.int64()))
        path = out / "shards" / stage / f"part-{rank:05d}-0000.parquet"
        write_table_atomic(table, path)
        paths.append(str(path))
    return paths
