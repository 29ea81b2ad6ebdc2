"""Category samples for the attack: texts from files or globs, or a run's documents grouped by a column.

Each category is sampled up to `max_bytes` of UTF-8 text (whole documents; the last one may pass the
budget, and the bytes actually taken are what the LP normalises by). Files are taken in a seeded random
order, documents in file order; a run's documents in id order (ids are hashes, so that is a fixed
pseudo-random order). JSONL, Parquet, WARC and WET go through the project's readers (operators/); any
other file is one plain-text document (source code, .txt, .md).
"""

from __future__ import annotations

import glob
import random
from collections.abc import Iterator
from pathlib import Path

from operators.reader import decode_text, reader_for, reader_name

DEFAULT_SAMPLE_BYTES = 8 * 2**20


class SampleError(ValueError):
    """A category spec names nothing readable; the message says which."""


def parse_category(spec: str) -> tuple[str, str]:
    """`NAME=PATH_OR_GLOB` -> (name, pattern)."""
    name, sep, pattern = spec.partition("=")
    if not sep or not name.strip() or not pattern.strip():
        raise SampleError(f"category '{spec}' must be NAME=PATH (a file, folder or glob)")
    return name.strip(), pattern.strip()


def category_files(pattern: str) -> list[str]:
    """The files a path, folder (recursively) or glob names, sorted."""
    path = Path(pattern)
    if path.is_dir():
        files = [str(p) for p in path.rglob("*") if p.is_file()]
    else:
        files = [p for p in glob.glob(pattern, recursive=True) if Path(p).is_file()]
    if not files:
        raise SampleError(f"no files match '{pattern}'")
    return sorted(files)


def file_texts(path: str) -> Iterator[str]:
    """The documents of one file: through a reader for known corpus formats, else the whole file."""
    if reader_name(path) is None:
        yield decode_text(Path(path).read_bytes())
        return
    for batch in reader_for(path)(path):
        docs = batch.documents
        keep = docs.column("drop_reason").is_null() if "drop_reason" in docs.column_names else None
        texts = docs.column("text") if keep is None else docs.filter(keep).column("text")
        yield from (t for t in texts.to_pylist() if t)


def take_bytes(texts: Iterator[str], max_bytes: int) -> tuple[list[str], int]:
    """Whole texts until `max_bytes` are reached, and their UTF-8 size."""
    taken, size = [], 0
    for text in texts:
        if size >= max_bytes:
            break
        taken.append(text)
        size += len(text.encode("utf-8"))
    return taken, size


def sample_files(pattern: str, max_bytes: int = DEFAULT_SAMPLE_BYTES, *, seed: int = 0) -> list[str]:
    files = category_files(pattern)
    random.Random(seed).shuffle(files)
    texts, size = take_bytes((t for f in files for t in file_texts(f)), max_bytes)
    if not size:
        raise SampleError(f"'{pattern}' holds no text")
    return texts


def sample_run(run_dir: str | Path, by: str, max_bytes: int = DEFAULT_SAMPLE_BYTES, *,
               stage: str | None = None, domains: list[str] | None = None) -> dict[str, list[str]]:
    """Each domain's documents (by `by`, as in mixtures/domains.py) up to `max_bytes`, read-only DuckDB."""
    from mixtures.domains import CorpusDomains

    corpus = CorpusDomains(run_dir, by, stage=stage)
    names = domains if domains is not None else corpus.token_counts().tokens.index.tolist()
    samples = {}
    for name in names:  # whole documents while the bytes before them are under the budget, as take_bytes
        rows = corpus.con.sql(
            f"SELECT text FROM (SELECT text, sum(strlen(text)) OVER (ORDER BY id ROWS UNBOUNDED PRECEDING) "
            f"- strlen(text) AS before FROM {corpus.view} WHERE {corpus.where('all', [name])} "
            f"AND text IS NOT NULL) WHERE before < {int(max_bytes)} ORDER BY before").fetchall()
        samples[name] = [text for (text,) in rows]
    return samples
