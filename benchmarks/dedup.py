"""MinHash near-dedup: ours against datatrove's MinHash pipeline on the same documents, in the same run.

Input: the sample corpus (`make sample`: docs in 24 languages, web pages, fortunes) when it is built, else
sections of the Python docs on this machine; with near-duplicates, exact copies and shared boilerplate
planted (tests/dedup_inputs.py). Both sides use datatrove's default MinhashConfig and compute the same
signatures; both find the duplicate clusters and drop all but one document of each.

  datatrove: Signature -> Buckets -> Cluster -> Filter (JSONL in and out) with LocalPipelineExecutor,
             tasks=1, workers=1 (one core), in a fresh interpreter; the time of its four steps.
  ours:      minhash_dedup + mark_shards (Parquet shards in and out) on a local Ray with 1 CPU (one core),
             Ray start excluded, worker start-up (spaCy import) included; and the in-batch operator
             MinHashDedup over the whole corpus in this process (compute only).

    python benchmarks/dedup.py            # quick (default): 2,500 documents, < 2 min on 2 idle cores
    python benchmarks/dedup.py --full     # the whole corpus, and 2 cores on both sides too
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
SAMPLE = REPO / "data" / "sample"

from dedup_inputs import datatrove_minhash, plant, python_doc_sections, write_jsonl, write_shards  # noqa: E402

from flows.engine import fan_out, init_ray  # noqa: E402
from operators.dup_clusters import mark_shards  # noqa: E402
from operators.minhash_dedup import MinHashDedup, minhash_dedup  # noqa: E402


def corpus_texts() -> tuple[str, list[str]]:
    """(label, texts): the sample corpus's documents when built, else Python doc sections."""
    if not (SAMPLE / "MANIFEST.json").exists():
        return "python-docs", python_doc_sections()
    import pandas as pd

    texts = []
    for path in sorted((SAMPLE / "docs").iterdir()):
        frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_json(path, lines=True)
        texts.extend(t for t in frame["text"].tolist() if isinstance(t, str) and t.strip())
    return "sample-corpus", texts


def run_ours(shards: list[str], work: Path, cpus: int) -> float:
    import ray

    init_ray(num_cpus=cpus)
    start = time.perf_counter()
    result = minhash_dedup(shards, work / f"work-{cpus}", tasks=fan_out)
    mark_shards(shards, result, work / f"out-{cpus}", "dedup", tasks=fan_out)
    seconds = time.perf_counter() - start
    ray.shutdown()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true", help="the whole corpus, and also compare on 2 cores")
    parser.add_argument("--quick", action="store_true", help="the default small run (what `make bench` runs)")
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    label, texts = corpus_texts()
    if not args.full:
        texts = random.Random(0).sample(texts, min(len(texts), 2500))
    corpus = plant(texts, n_base=None, n_edit=100, n_reorder=50, n_shuffle=25, n_exact=50, n_boilerplate=150)
    n = len(corpus.texts)
    with tempfile.TemporaryDirectory(prefix="bench-dedup-") as tmp:
        work = Path(tmp)
        shards, ids = write_shards(corpus, work / "shards", 8)
        write_jsonl(corpus.texts, ids, work / "jsonl")
        write_jsonl(corpus.texts, ids, work / "jsonl-2", n_files=2)
        print(f"input: {label}, {n} documents, {sum(map(len, corpus.texts)) / 1e6:.1f} M chars")
        print(f"{'pipeline':<44} {'cores':>5} {'seconds':>8} {'docs/s/core':>12}")
        rows = []

        theirs = datatrove_minhash(work / "jsonl", work / "datatrove-1")
        rows.append(("datatrove MinHash (4 steps, LocalPipelineExecutor)", 1, theirs["seconds"]))
        rows.append(("ours minhash_dedup + mark_shards (Ray)", 1, run_ours(shards, work, 1)))
        table = pa.concat_tables([pq.read_table(path) for path in shards])
        operator = MinHashDedup()
        start = time.perf_counter()
        out = operator(table)
        rows.append(("ours MinHashDedup operator (in-process)", 1, time.perf_counter() - start))
        if args.full:
            theirs2 = datatrove_minhash(work / "jsonl-2", work / "datatrove-2", tasks=2, workers=2)
            rows.append(("datatrove MinHash (4 steps, LocalPipelineExecutor)", 2, theirs2["seconds"]))
            rows.append(("ours minhash_dedup + mark_shards (Ray)", 2, run_ours(shards, work, 2)))
        for name, cores, seconds in rows:
            print(f"{name:<44} {cores:>5} {seconds:>8.2f} {n / seconds / cores:>12.0f}")
        kept = out.num_rows - operator.stats.dropped["minhash_duplicate"]
        print(f"kept: datatrove {theirs['kept']}, ours {kept}")
        base = rows[0][2]
        for name, cores, seconds in rows[1:]:
            reference = next(s for nm, c, s in rows if nm.startswith("datatrove") and c == cores)
            print(f"speed-up per core, {name} vs datatrove ({cores} core{'s' * (cores > 1)}): "
                  f"{reference / seconds:.1f}x")
        print(json.dumps({"docs": n, "datatrove_1core_s": round(base, 2),
                          "ours_ray_1core_s": round(rows[1][2], 2), "ours_operator_s": round(rows[2][2], 2)}))


if __name__ == "__main__":
    main()
