"""Read + write Parquet: our readers and ShardWriter against datatrove's reader -> ParquetWriter pipeline.

Same input, same run, one process each (datatrove: LocalPipelineExecutor, tasks=1, workers=1). JSONL is
read as is; WARC pages go through trafilatura on both sides (datatrove: its Trafilatura extractor step,
defaults). Input is the sample corpus (`make sample`) when it is there, else real text generated from
the Python docs on this machine. Prints docs/s and MB/s (input bytes as stored) and our speed-up.

    python benchmarks/ingest.py            # quick (default): < 2 min on 2 cores
    python benchmarks/ingest.py --full     # more data, steadier numbers
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.extractors import Trafilatura
from datatrove.pipeline.readers import JsonlReader, WarcReader
from datatrove.pipeline.writers import ParquetWriter

from operators.base import split_dropped
from operators.reader import reader_for
from storage.shards import ShardWriter

REPO = Path(__file__).resolve().parent.parent

SAMPLE = REPO / "data" / "sample"
PYTHON_DOCS = Path("/usr/share/doc/python3.11/html")


def benchmark_inputs(work: Path, quick: bool) -> dict[str, list[Path]]:
    """Inputs by label, each label's files alone in a folder (datatrove reads folders): the sample
    corpus's JSONL and WARC when it is built, and JSONL generated from the Python docs (more of it, for
    steadier numbers); without the sample corpus, a WARC generated from the Python docs' HTML too."""
    inputs = {"jsonl-gen": [_generate_jsonl(work, 20_000 if quick else 100_000)]}
    if not (SAMPLE / "MANIFEST.json").exists():
        inputs["warc-gen"] = [_generate_warc(work, quick)]
        return inputs
    for label, files in (("jsonl", sorted((SAMPLE / "docs").glob("*.jsonl.*"))),
                         ("warc", [SAMPLE / "web" / "sample.warc.gz"])):
        folder = work / f"input-{label}"
        folder.mkdir()
        inputs[label] = [folder / f.name for f in files]
        for link, original in zip(inputs[label], files, strict=True):
            link.symlink_to(original)
    return inputs


def _generate_jsonl(work: Path, n_docs: int) -> Path:
    """Python doc sources cut into ~3 kB documents (the size of a typical web page's text)."""
    import gzip

    chunks = []
    for source in sorted((PYTHON_DOCS / "_sources").rglob("*.rst.txt")):
        text, start = source.read_text(encoding="utf-8"), 0
        while start < len(text):
            end = text.find("\n\n", start + 3000)
            end = len(text) if end < 0 else end
            if text[start:end].strip():
                chunks.append((source.name, text[start:end]))
            start = end + 2
    path = work / "input-jsonl-gen" / "python-docs.jsonl.gz"
    path.parent.mkdir(parents=True)
    with gzip.open(path, "wt", encoding="utf-8") as out:
        for i in range(n_docs):
            name, text = chunks[i % len(chunks)]
            out.write(json.dumps({"text": text, "id": f"doc-{i}", "source_file": name, "lang": "en"}) + "\n")
    return path


def _generate_warc(work: Path, quick: bool) -> Path:
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    pages = sorted((PYTHON_DOCS / "library").glob("*.html"))
    pages = [p for p in pages if p.stat().st_size <= 80_000][: 80 if quick else 400]
    path = work / "input-warc-gen" / "python-docs.warc.gz"
    path.parent.mkdir(parents=True)
    with path.open("wb") as out:
        writer = WARCWriter(out, gzip=True)
        for page in pages:
            http = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.1")
            writer.write_record(writer.create_warc_record(
                f"https://docs.python.org/3.11/library/{page.name}", "response",
                payload=io.BytesIO(page.read_bytes()), http_headers=http))
    return path


def run_ours(files: list[Path], out: Path) -> int:
    written = 0
    for rank, path in enumerate(files):
        writer = ShardWriter(out, "ingest", rank)
        reader = reader_for(str(path))
        for batch in reader(str(path)):
            kept, dropped = split_dropped(batch.documents)
            writer.write(kept, dropped, batch.quarantine)
            written += kept.num_rows
        writer.close()
    return written


def run_datatrove(label: str, files: list[Path], out: Path, logs: Path) -> int:
    folder = str(files[0].parent)  # holds exactly `files`
    if label.startswith("jsonl"):
        steps = [JsonlReader(folder)]
    else:
        steps = [WarcReader(folder), Trafilatura()]
    executor = LocalPipelineExecutor([*steps, ParquetWriter(str(out), compression="zstd")], tasks=1, workers=1,
                                     logging_dir=str(logs), skip_completed=False)
    with contextlib.redirect_stderr(io.StringIO()):  # its per-task log goes to `logs` as well
        executor.run()
    return sum(pq.ParquetFile(p).metadata.num_rows for p in out.rglob("*.parquet"))


def measure(run, *args) -> tuple[int, float]:
    start = time.perf_counter()
    docs = run(*args)
    return docs, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true", help="more data (default: --quick)")
    parser.add_argument("--quick", action="store_true", help="the default")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mixforge-bench-ingest-") as tmp:
        work = Path(tmp)
        inputs = benchmark_inputs(work, quick=not args.full)
        print(f"{'input':<9} {'pipeline':<28} {'docs':>8} {'seconds':>8} {'docs/s':>9} {'MB/s':>7}")
        for label, files in inputs.items():
            megabytes = sum(f.stat().st_size for f in files) / 1e6
            ours_docs, ours_s = measure(run_ours, files, work / f"ours-{label}")
            dt_docs, dt_s = measure(run_datatrove, label, files, work / f"dt-{label}", work / f"dt-logs-{label}")
            for name, docs, seconds in (("mixforge readers+ShardWriter", ours_docs, ours_s),
                                        ("datatrove reader->Parquet", dt_docs, dt_s)):
                print(f"{label:<9} {name:<28} {docs:>8} {seconds:>8.2f} {docs / seconds:>9.0f} "
                      f"{megabytes / seconds:>7.1f}")
            print(f"{label:<9} speed-up (ours/datatrove, docs/s): {(ours_docs / ours_s) / (dt_docs / dt_s):.2f}x"
                  f"   ({megabytes:.1f} MB in {len(files)} file(s), as stored)")


if __name__ == "__main__":
    main()
