"""Real documents with planted duplicates, for the dedup tests and benchmark.

The base documents are the sections of Python's own reST docs (python3.11-doc on this machine), with natural
near-duplicates among them removed (exact 5-gram Jaccard >= 0.3), so the planted ones are the only truth.
Planted: copies with a few words changed (1-2% of the words, at least 2), copies with two paragraphs swapped
("reorder"), copies with all paragraphs shuffled ("shuffle": a much larger change for 5-gram shingles when
paragraphs are short), exact copies, and a header and footer paragraph (PostgreSQL's legal notice, extracted with
trafilatura) added to many distinct documents: those share boilerplate but are not duplicates.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np
import pyarrow as pa

from storage.schema import DOCUMENT_SCHEMA, document_id
from storage.shards import write_table_atomic

PYTHON_SOURCES = Path("/usr/share/doc/python3.11/html/_sources")
LEGAL_NOTICE = Path("/usr/share/doc/postgresql-doc-15/html/legalnotice.html")
HEADING = re.compile(r"\n(?=[^\n]+\n[=\-~^\"*+#]{3,}\n)")


def python_doc_sections(min_words: int = 150, max_words: int = 1500) -> list[str]:
    """Sections (split at reST headings) of the Python docs, in file order."""
    sections = []
    for path in sorted(PYTHON_SOURCES.rglob("*.rst.txt")):
        for part in HEADING.split(path.read_text(encoding="utf-8")):
            if min_words <= len(part.split()) <= max_words:
                sections.append(part.strip())
    assert len(sections) > 1000, f"python3.11-doc gave only {len(sections)} sections"
    return sections


def without_near_duplicates(texts: list[str], threshold: float = 0.3) -> list[str]:
    """Drop every text whose exact word-5-gram Jaccard with an earlier kept one is >= threshold."""
    from scipy.sparse import csr_matrix

    rows, cols = [], []
    for i, text in enumerate(texts):
        words = re.findall(r"\w+", text.lower())
        grams = {hash(tuple(words[j:j + 5])) & 0x7FFFFFFF for j in range(max(1, len(words) - 4))}
        rows.extend([i] * len(grams))
        cols.extend(grams)
    _, col_index = np.unique(cols, return_inverse=True)
    matrix = csr_matrix((np.ones(len(rows), np.float32), (rows, col_index)))
    sizes = np.asarray(matrix.sum(axis=1)).ravel()
    overlap = (matrix @ matrix.T).tocoo()
    jaccard = overlap.data / (sizes[overlap.row] + sizes[overlap.col] - overlap.data)
    close = (overlap.row < overlap.col) & (jaccard >= threshold)
    dropped = set(overlap.col[close].tolist())
    return [text for i, text in enumerate(texts) if i not in dropped]


def legal_notice() -> tuple[str, str]:
    """(header, footer) boilerplate: the first lines and the permission paragraph of PostgreSQL's notice."""
    import trafilatura

    lines = trafilatura.extract(LEGAL_NOTICE.read_text(encoding="utf-8")).splitlines()
    return "\n".join(lines[1:3]), lines[5]


@dataclass
class PlantedCorpus:
    texts: list[str]
    kinds: list[str]  # base, edit, reorder, shuffle, exact, boilerplate
    truth: dict[str, set[tuple[int, int]]] = field(default_factory=dict)  # kind -> (original, copy) pairs

    def true_pairs(self) -> set[tuple[int, int]]:
        return set().union(*self.truth.values())


def plant(sections: list[str], n_base: int | None = 700, n_edit: int = 60, n_reorder: int = 40, n_shuffle: int = 30,
          n_exact: int = 30, n_boilerplate: int = 150, seed: int = 0) -> PlantedCorpus:
    """`n_base` distinct sections (None: all) with the copies planted on distinct originals."""
    rng = random.Random(seed)
    base = without_near_duplicates(sections)
    rng.shuffle(base)
    base = base[:n_base]
    assert n_base is None or len(base) == n_base, f"only {len(base)} distinct sections"
    n_base = len(base)
    texts, kinds = list(base), ["base"] * n_base
    truth: dict[str, set[tuple[int, int]]] = {"edit": set(), "reorder": set(), "shuffle": set(), "exact": set()}
    vocabulary = sorted({w for text in base[:200] for w in text.split() if w.isalpha() and len(w) > 3})
    paragraphed = [i for i, text in enumerate(base) if len(_paragraphs(text)) >= 4]
    long_enough = [i for i, text in enumerate(base) if len(text.split()) >= 200]
    reorder = rng.sample(paragraphed, n_reorder + n_shuffle)
    rest = [i for i in range(n_base) if i not in set(reorder)]
    edit_and_exact = rng.sample(rest, n_edit + n_exact)
    taken = set(reorder) | set(edit_and_exact)
    boilerplate = rng.sample([i for i in long_enough if i not in taken], n_boilerplate)

    def add(kind: str, original: int, text: str) -> None:
        truth[kind].add((original, len(texts)))
        texts.append(text)
        kinds.append(kind)

    for i in edit_and_exact[:n_edit]:
        words = base[i].split(" ")
        for position in rng.sample(range(len(words)), max(2, round(len(words) * rng.choice([0.01, 0.02])))):
            words[position] = rng.choice(vocabulary)
        add("edit", i, " ".join(words))
    for i in edit_and_exact[n_edit:]:
        add("exact", i, base[i])
    for n, i in enumerate(reorder):
        paragraphs = _paragraphs(base[i])
        moved = paragraphs[:]
        if n < n_reorder:
            a, b = rng.sample(range(len(moved)), 2)
            moved[a], moved[b] = moved[b], moved[a]
        while moved == paragraphs:
            rng.shuffle(moved)
        add("reorder" if n < n_reorder else "shuffle", i, "\n\n".join(moved))
    header, footer = legal_notice()
    for i in boilerplate:
        texts[i] = f"{header}\n\n{base[i]}\n\n{footer}"
        kinds[i] = "boilerplate"
    return PlantedCorpus(texts, kinds, truth)


def _paragraphs(text: str) -> list[str]:
    return [p for p in re.split(r"\n\s*\n", text) if p.strip()]


def cluster_pairs(labels: dict[int, object]) -> set[tuple[int, int]]:
    """All (i, j), i < j, of documents that share a cluster label."""
    members: dict[object, list[int]] = {}
    for doc, label in labels.items():
        members.setdefault(label, []).append(doc)
    return {pair for group in members.values() for pair in combinations(sorted(group), 2)}


def write_shards(corpus: PlantedCorpus, folder: Path, n_shards: int, seed: int = 1) -> tuple[list[str], list[str]]:
    """The corpus as document-schema shards in a shuffled order (copies and originals land in different
    shards); returns (shard paths, each document's id by its index in the corpus)."""
    source = "planted://python-docs"
    ids = [document_id(source, offset) for offset in range(len(corpus.texts))]
    order = list(range(len(corpus.texts)))
    random.Random(seed).shuffle(order)
    paths = []
    for rank, part in enumerate(np.array_split(np.array(order), n_shards)):
        table = pa.table({"id": [ids[i] for i in part], "text": [corpus.texts[i] for i in part],
                          "url": [f"https://docs.python.org/3.11/#{i}" for i in part], "source": [source] * len(part),
                          "offset": part.astype(np.int64), "metadata": [None] * len(part)}, schema=DOCUMENT_SCHEMA)
        path = folder / f"part-{rank:05d}.parquet"
        write_table_atomic(table, path)
        paths.append(str(path))
    return paths, ids


def write_jsonl(texts: list[str], ids: list[str], folder: Path, n_files: int = 1) -> None:
    """The same documents as JSONL for datatrove's reader (file k holds documents k::n_files)."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n_files):
        with open(folder / f"docs-{k:03d}.jsonl", "w", encoding="utf-8") as out:
            for i in range(k, len(texts), n_files):
                out.write(json.dumps({"id": ids[i], "text": texts[i]}) + "\n")


# datatrove's four MinHash steps with LocalPipelineExecutor, run in a fresh interpreter (its executor with
# workers > 1 needs a __main__ guard, and its logging must not leak into pytest's process).
DATATROVE_MINHASH = """
import json, struct, sys, time
from pathlib import Path
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup.minhash import (MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster,
                                              MinhashDedupFilter, MinhashDedupSignature)
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter

if __name__ == "__main__":
    src, work, tasks, workers = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    config = MinhashConfig()
    quiet = dict(logging_dir=None, skip_completed=False)
    start = time.perf_counter()
    LocalPipelineExecutor([JsonlReader(src), MinhashDedupSignature(f"{work}/sigs", config=config)],
                          tasks=tasks, workers=workers, **quiet).run()
    LocalPipelineExecutor([MinhashDedupBuckets(f"{work}/sigs", f"{work}/buckets", config=config)],
                          tasks=config.num_buckets, workers=workers, **quiet).run()
    LocalPipelineExecutor([MinhashDedupCluster(f"{work}/buckets", f"{work}/remove", config=config,
                                               save_cluster_id=True)], tasks=1, **quiet).run()
    LocalPipelineExecutor([JsonlReader(src), MinhashDedupFilter(f"{work}/remove"),
                           JsonlWriter(f"{work}/out", compression=None)], tasks=tasks, workers=workers, **quiet).run()
    seconds = time.perf_counter() - start
    clusters = {}
    path = Path(work) / "remove" / "000000.clusters"
    if path.exists():
        data = path.read_bytes()
        for doc, cluster in struct.iter_unpack("<2I", data):
            clusters[doc] = cluster
    kept = sum(1 for f in Path(work, "out").glob("*.jsonl") for _ in open(f))
    print(json.dumps({"seconds": seconds, "kept": kept, "clusters": clusters}))
"""


def datatrove_minhash(src: Path, work: Path, tasks: int = 1, workers: int = 1) -> dict:
    """Run datatrove's MinHash pipeline on the JSONL files in `src`: {"seconds", "kept", "clusters": {doc
    index in rank 0's input: cluster id}} (doc index = line number when tasks=1 and there is one file)."""
    import json
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", DATATROVE_MINHASH, str(src), str(work), str(tasks), str(workers)],
                          capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["clusters"] = {int(doc): cluster for doc, cluster in result["clusters"].items()}
    return result
