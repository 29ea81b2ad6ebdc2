"""Tokenize: the operator on Arrow batches against calling quicktok directly on Python lists, same run.

Input: the sample corpus's documents (`make sample`) when built, else the Python docs' reST sources (three
times over with --full), cut into Arrow batches of 4,096 rows. The direct calls get their texts as Python
lists already made; the operator starts from the Arrow batch (as it does in a stage), so its overhead is the
conversion, the `n_tokens` column and, with a sink, writing the token shard.

    python benchmarks/tokenization.py           # quick (default): o200k_base, < 1 min
    python benchmarks/tokenization.py --full    # more text, and cl100k_base too
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pyarrow as pa

from operators.tokenize import Tokenize

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "data" / "sample"
PYTHON_SOURCES = Path("/usr/share/doc/python3.11/html/_sources")
BATCH_ROWS = 4096


def corpus_texts() -> tuple[str, list[str]]:
    if (SAMPLE / "MANIFEST.json").exists():
        import pandas as pd

        texts = []
        for path in sorted((SAMPLE / "docs").iterdir()):
            frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_json(path, lines=True)
            texts.extend(frame["text"].dropna().tolist())
        return "sample-corpus", texts
    return "python-docs", [p.read_text(encoding="utf-8") for p in sorted(PYTHON_SOURCES.rglob("*.rst.txt"))]


def best_of_interleaved(runs: int, direct, ours) -> tuple[float, float]:
    """Best time of each over `runs` alternating rounds, so load that drifts during the run hits both."""
    best = [float("inf"), float("inf")]
    for _ in range(runs):
        for k, fn in enumerate((direct, ours)):
            start = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - start)
    return best[0], best[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--quick", action="store_true", help="the default small run (what `make bench` runs)")
    args = parser.parse_args()
    import quicktok

    label, texts = corpus_texts()
    texts = texts * (3 if args.full else 1)
    batches = [pa.table({"id": [str(i) for i in range(start, start + len(chunk))],
                         "text": pa.array(chunk, pa.large_string())})
               for start in range(0, len(texts), BATCH_ROWS) for chunk in [texts[start:start + BATCH_ROWS]]]
    lists = [batch.column("text").to_pylist() for batch in batches]
    runs = 5 if args.full else 3
    print(f"input: {label}, {len(texts)} documents, {sum(map(len, texts)) / 1e6:.1f} M chars, "
          f"{len(batches)} batches; best of {runs}")
    print(f"{'encoding':<12} {'threads':>7} {'what':<40} {'Mtok/s':>8} {'vs direct':>9}")
    for encoding in ("o200k_base", "cl100k_base") if args.full else ("o200k_base",):
        encoder = quicktok.get_encoding(encoding)
        tokens = sum(len(encoder.encode_batch(texts_, 0)[0]) for texts_ in lists)
        for threads in (1, 0):
            count = Tokenize(encoding, threads=threads)
            direct_count, ours_count = best_of_interleaved(
                runs, lambda: [quicktok.count_batch(encoder, t, threads) for t in lists],  # noqa: B023
                lambda: [count(b) for b in batches])  # noqa: B023
            with tempfile.TemporaryDirectory() as tmp:
                sink = Tokenize(encoding, threads=threads)

                def encode_to_shard() -> None:
                    sink.sink = sink.shard_writer(Path(tmp) / "bench")  # noqa: B023
                    for batch in batches:
                        sink(batch)  # noqa: B023
                    sink.sink.close()  # noqa: B023

                direct_encode, ours_encode = best_of_interleaved(
                    runs, lambda: [encoder.encode_batch(t, threads) for t in lists], encode_to_shard)  # noqa: B023
            label_threads = threads or "all"
            for what, seconds, reference in (("quicktok.count_batch (list)", direct_count, direct_count),
                                             ("Tokenize -> n_tokens (Arrow batch)", ours_count, direct_count),
                                             ("encoder.encode_batch (list)", direct_encode, direct_encode),
                                             ("Tokenize + token shard (Arrow -> disk)", ours_encode, direct_encode)):
                print(f"{encoding:<12} {label_threads:>7} {what:<40} {tokens / seconds / 1e6:>8.2f} "
                      f"{reference / seconds:>8.2f}x")


if __name__ == "__main__":
    main()
