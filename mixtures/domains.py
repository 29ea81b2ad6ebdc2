"""Domains of a curated run: any document column (or a JSON field of `metadata`) splits the corpus.

Reads the run's shards through the read-only DuckDB catalog (storage/catalog.py), so the same SQL
works on a laptop sample and on a shared run directory. Token counts come from `n_tokens` when the
tokenize stage ran; otherwise they are estimated as n_chars/4 or length(text)/4 (about 4 characters
per token for English BPE) and `token_source` says so.

Documents can be split, by a hash of their id, into a training part and a held-out part
(`valid_fraction`): the held-out part of a domain is its validation set, never trained on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from storage.catalog import open_catalog

SPLITS = ("all", "train", "valid")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
HASH_BUCKETS = 10_000


class DomainError(ValueError):
    """The run or the domain column cannot be used; the message names it and what is available."""


@dataclass
class DomainTokens:
    """Documents and tokens per domain, and where the token counts came from."""

    by: str
    docs: pd.Series
    tokens: pd.Series
    token_source: str

    def table(self) -> pd.DataFrame:
        frame = pd.DataFrame({"docs": self.docs, "tokens": self.tokens})
        frame["share"] = frame["tokens"] / frame["tokens"].sum()
        return frame


class CorpusDomains:
    """The kept documents of a run (`stage`, default the final one), with a domain and a token count each."""

    def __init__(self, run_dir: str | Path, by: str, *, stage: str | None = None, valid_fraction: float = 0.0):
        self.run_dir = Path(run_dir)
        if not (self.run_dir / "shards").is_dir():
            raise DomainError(f"{self.run_dir} is not a run directory (no shards/ folder)")
        if not 0.0 <= valid_fraction < 1.0:
            raise DomainError(f"valid_fraction must be in [0, 1), got {valid_fraction}")
        self.con = open_catalog(self.run_dir)
        views = {row[0] for row in self.con.sql("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
        self.view = f"stage_{stage}" if stage else "docs"
        if self.view not in views:
            stages = sorted(v.removeprefix("stage_") for v in views if v.startswith("stage_"))
            raise DomainError(f"{self.run_dir}: no documents for stage '{stage}'; "
                              f"stages: {', '.join(stages) or 'none'}")
        self.columns = self.con.sql(f"SELECT * FROM {self.view} LIMIT 0").columns
        self.by = by
        self.domain_sql = self._domain_sql(by)
        self.tokens_sql, self.token_source = self._tokens_sql()
        self.valid_fraction = valid_fraction

    def _domain_sql(self, by: str) -> str:
        if by in self.columns:
            return f'coalesce(CAST("{by}" AS VARCHAR), \'(null)\')'
        head, _, path = by.partition(".")
        if path and head in self.columns and all(_NAME.match(part) for part in path.split(".")):
            return f"coalesce(json_extract_string(\"{head}\", '$.{path}'), '(null)')"
        raise DomainError(f"no column '{by}' in {self.run_dir.name}/{self.view}; columns: {', '.join(self.columns)}"
                          " (a JSON field of metadata is written metadata.<field>)")

    def _tokens_sql(self) -> tuple[str, str]:
        estimates = [("n_tokens", "n_tokens"), ("n_chars", "n_chars / 4"), ("text", "length(text) / 4")]
        present = [(name, sql) for name, sql in estimates if name in self.columns]
        if not present:
            raise DomainError(f"{self.run_dir.name}/{self.view} has none of n_tokens, n_chars, text to count tokens")
        source = present[0][0] if present[0][0] == "n_tokens" else f"{present[0][1]} (no n_tokens column)"
        return f"CAST(ceil(coalesce({', '.join(sql for _, sql in present)})) AS BIGINT)", source

    def where(self, split: str = "all", domains: list[str] | None = None) -> str:
        """SQL WHERE clause for one split (train/valid by id hash) and, optionally, some domains."""
        if split not in SPLITS:
            raise DomainError(f"split must be one of {', '.join(SPLITS)}, got '{split}'")
        clauses = ["drop_reason IS NULL"] if "drop_reason" in self.columns else []
        cut = int(round(self.valid_fraction * HASH_BUCKETS))
        if split != "all" and cut:
            clauses.append(f"hash(id) % {HASH_BUCKETS} {'<' if split == 'valid' else '>='} {cut}")
        if split == "valid" and not cut:
            clauses.append("false")
        if domains is not None:
            quoted = ", ".join("'" + d.replace("'", "''") + "'" for d in domains)
            clauses.append(f"{self.domain_sql} IN ({quoted or 'NULL'})")
        return " AND ".join(clauses) or "true"

    def token_counts(self, split: str = "all") -> DomainTokens:
        """Documents and tokens per domain (largest first)."""
        rows = self.con.sql(
            f"SELECT {self.domain_sql} AS domain, count(*) AS docs, sum({self.tokens_sql}) AS tokens "
            f"FROM {self.view} WHERE {self.where(split)} GROUP BY 1 ORDER BY tokens DESC, domain").df()
        if rows.empty:
            raise DomainError(f"{self.run_dir.name}/{self.view} has no documents in split '{split}'")
        rows = rows.set_index("domain")
        return DomainTokens(self.by, rows["docs"].astype(int), rows["tokens"].astype(int), self.token_source)

    def documents(self, domain: str, split: str = "all", columns: str = "id") -> pd.DataFrame:
        """Columns (SQL select list) plus `tokens` of one domain's documents, in id order."""
        return self.con.sql(f"SELECT {columns}, {self.tokens_sql} AS tokens FROM {self.view} "
                            f"WHERE {self.where(split, [domain])} ORDER BY id").df()

    def texts(self, ids: list[str]) -> list[str]:
        """Texts of the given document ids, in the order given."""
        import pyarrow as pa

        wanted = pa.table({"id": pa.array(ids, pa.string()), "pos": pa.array(range(len(ids)), pa.int64())})
        self.con.register("wanted_ids", wanted)
        try:
            rows = self.con.sql(f"SELECT d.text FROM wanted_ids w JOIN {self.view} d USING (id) ORDER BY w.pos")
            return [text for (text,) in rows.fetchall()]
        finally:
            self.con.unregister("wanted_ids")


def count_domain_tokens(run_dir: str | Path, by: str, *, stage: str | None = None) -> DomainTokens:
    return CorpusDomains(run_dir, by, stage=stage).token_counts()
