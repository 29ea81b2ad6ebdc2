"""The pipeline (`mixforge run`) on 1 and on 2 Ray nodes of this one machine: what a second node costs.

Both nodes share the same two cores, so a second node cannot speed anything up here; what the comparison
shows is the overhead of running multi-node (a second raylet and object store, objects moved between
nodes, scheduling across them): report the ratio as overhead, not as speed-up. Setups, each a `mixforge run`
subprocess of the same config into a fresh run directory:

    embedded   no --ray-address: the run starts its own Ray with every core (what `mixforge run` does alone)
    1 node     `ray start --head --num-cpus 2`; the run connects with --ray-address  (the fair baseline)
    2 nodes    `ray start --head --num-cpus 1` + `ray start --address ... --num-cpus 1`, connected likewise

Per stage: wall seconds of its Prefect task (scheduling and actor start-up included) and the manifest's
seconds (the stage's units' own time, summed over units: work, not wall). Total: the pipeline flow run's
wall time, and the subprocess's (imports, Ray start or connect, Prefect). The outputs of all setups are
checked to hold the same documents.

    python benchmarks/pipeline.py            # quick (default): 3 docs files of the sample corpus, ~4 min
    python benchmarks/pipeline.py --full     # docs + web pages of the sample corpus, 30 clusters
    python benchmarks/pipeline.py --repeats 3   # medians of 3 runs per setup (single runs here vary by ~10%)

A run of the quick pipeline costs ~60 s here whatever its size (Ray start, an actor pool per stage, Prefect), so
three setups take ~4 min.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
SAMPLE = Path(os.environ.get("MIXFORGE_SAMPLE_CORPUS", REPO / "data" / "sample"))
MIXFORGE = str(Path(sys.executable).with_name("mixforge"))
QUICK_DOCS = ("python-doc.jsonl.gz", "postgresql-doc.parquet", "debian-reference.jsonl.zst")
# Prefect task name -> the manifest's stage (tasks without a stage: describe-inputs, fit, prune, tables, map)
TASK_STAGES = {"read": "ingest", "filter": "filter", "exact-dedup": "exact_dedup", "minhash-dedup": "minhash_dedup",
               "tokenize": "tokenize", "embed": "embed", "assign": "assign", "label": "cluster"}
SETUPS = {"embedded": None, "1 node": (1, 2), "2 nodes": (2, 1)}  # (nodes, CPUs per node)


def write_config(folder: Path, full: bool) -> Path:
    """Quick: the config of tests/test_multinode.py (3 docs files, documents over 3 kB quarantined, 8 clusters).
    Full: every docs file and the web pages of the sample corpus, 30 clusters."""
    if full:
        inputs = {"paths": [str(SAMPLE / "docs"), str(SAMPLE / "web" / "sample.warc.gz")]}
        cluster = {"n_clusters": 30, "projection_points": 2000}
    else:
        inputs = {"paths": [str(SAMPLE / "docs" / name) for name in QUICK_DOCS], "max_doc_bytes": 3000}
        cluster = {"n_clusters": 8, "projection_points": 200}
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"inputs": inputs, "tokenize": {"write_token_shards": False}, "cluster": cluster}))
    return path


@contextmanager
def ray_setup(name: str) -> Iterator[tuple[dict[str, str], list[str], float]]:
    """(extra environment, extra CLI arguments, cluster start-up seconds) of a setup, its cluster running."""
    from mixforge.local_cluster import loopback_cluster

    shape = SETUPS[name]
    if shape is None:
        yield {}, [], 0.0
        return
    start = time.perf_counter()
    with loopback_cluster(nodes=shape[0], cpus_per_node=shape[1]) as cluster:
        yield cluster.auth_env, ["--ray-address", cluster.address], time.perf_counter() - start


def run_pipeline(config: Path, out: Path, env: dict[str, str], args: list[str]) -> dict:
    """Run `mixforge run` once; its process and flow wall seconds, per-task wall and per-stage unit seconds."""
    from storage.manifest import load_manifest

    since = datetime.now(UTC)
    start = time.perf_counter()
    result = subprocess.run([MIXFORGE, "run", str(config), "--out", str(out), "--no-progress", *args], env=env,
                            capture_output=True, text=True)
    process_seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"mixforge run failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    flow_seconds, tasks = prefect_timings(since)
    units = {stage: record.seconds for stage, record in load_manifest(out).stages.items()}
    return {"process": process_seconds, "flow": flow_seconds, "tasks": tasks, "units": units}


def prefect_timings(since: datetime, wait: float = 20.0) -> tuple[float, dict[str, float]]:
    """Wall seconds of the pipeline flow run started after `since` and of each task of its sub-flows."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterParentFlowRunId,
        FlowRunFilterStartTime,
    )

    deadline = time.monotonic() + wait
    with get_client(sync_client=True) as client:
        while True:  # the server records states from events: give it a moment to catch up
            runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["pipeline"])),
                                         flow_run_filter=FlowRunFilter(start_time=FlowRunFilterStartTime(after_=since)))
            subflows = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run.id for run in runs])))
            tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(
                any_=[run.id for run in subflows]))) if subflows else []
            finished = [r for r in [*runs, *tasks] if r.end_time is not None]
            if len(runs) == 1 and tasks and len(finished) == len(runs) + len(tasks) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    if len(runs) != 1 or len(finished) != len(runs) + len(tasks):
        raise SystemExit("Prefect did not record the pipeline's flow and task runs")
    order = sorted(tasks, key=lambda r: r.start_time)
    seconds = {r.name.rsplit("-", 1)[0]: (r.end_time - r.start_time).total_seconds() for r in order}
    return (runs[0].end_time - runs[0].start_time).total_seconds(), seconds


def documents(run: Path) -> list[tuple]:
    from storage.catalog import open_catalog, query

    rows = query(open_catalog(run), "SELECT id, md5(text) AS digest, cluster FROM docs ORDER BY id").to_pylist()
    return [tuple(row.values()) for row in rows]


def medians(runs: list[dict]) -> dict:
    """One setup's repeats folded into medians, keeping the shape of a single run's timings."""
    folded: dict = {key: statistics.median(run[key] for run in runs) for key in ("flow", "process")}
    for key in ("tasks", "units"):
        folded[key] = {name: statistics.median(run[key].get(name, 0.0) for run in runs) for name in runs[0][key]}
    return folded


def report(results: dict[str, list[dict]], startup: dict[str, float]) -> None:
    timings = {name: medians(runs) for name, runs in results.items()}
    one, two = timings["1 node"], timings["2 nodes"]

    def row(label: str, cells: list[str], ratio: str) -> None:
        print(f"{label:<16}" + "".join(f"{cell:>20}" for cell in cells) + f"{ratio:>18}")

    print("\nWall seconds per stage (its Prefect task, start to end) and, in brackets, the stage's units' own seconds"
          " summed over units (manifest); medians over repeats.")
    row("stage", list(timings), "2 nodes / 1 node")
    for task, seconds in one["tasks"].items():
        stage = TASK_STAGES.get(task)
        cells = [f"{t['tasks'].get(task, 0.0):.1f}" + (f" [{t['units'].get(stage, 0.0):5.1f}]" if stage else " " * 8)
                 for t in timings.values()]
        row(task, cells, f"{two['tasks'].get(task, 0.0) / seconds:.2f}x" if seconds >= 1 else "-")
    for key, label in (("flow", "pipeline flow"), ("process", "whole process")):
        row(label, [f"{t[key]:.1f}" + " " * 8 for t in timings.values()], f"{two[key] / one[key]:.2f}x")
    row("cluster start", [f"{startup[name]:.1f}" + " " * 8 for name in timings], "(not in totals)")
    ratio = two["flow"] / one["flow"]
    print(f"\nPipeline flow, 2 nodes x 1 CPU / 1 node x 2 CPUs: {ratio:.2f} ({two['flow']:.1f} s vs "
          f"{one['flow']:.1f} s;"
          f" embedded Ray, its start-up included, {timings['embedded']['flow']:.1f} s). On one machine this measures"
          " the overhead of a second node, never a speed-up (both nodes share the same cores): above 1 it is what"
          " the second node costs; at or below 1 the second node costs nothing measurable at this size.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 docs files, 8 clusters (the default)")
    parser.add_argument("--full", action="store_true", help="the whole sample corpus, 30 clusters")
    parser.add_argument("--repeats", type=int, default=1, help="runs per setup (medians are reported)")
    args = parser.parse_args()
    if not (SAMPLE / "MANIFEST.json").exists():
        raise SystemExit(f"no sample corpus at {SAMPLE}: run `make sample` first")

    with tempfile.TemporaryDirectory(prefix="mixforge-bench-pipeline-") as tmp:
        work = Path(tmp)
        os.environ.setdefault("PREFECT_HOME", str(work / "prefect"))
        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
        os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
        os.environ.pop("RAY_ADDRESS", None)
        from mixforge.local_cluster import prefect_api_url

        env = {**os.environ, "PREFECT_API_URL": prefect_api_url(), "TQDM_DISABLE": "1"}
        config = write_config(work, args.full)
        print(f"Pipeline of {config} ({'full' if args.full else 'quick'}), {os.cpu_count()} cores, "
              f"{args.repeats} run(s) per setup")
        results: dict[str, list[dict]] = {}
        startup: dict[str, float] = {}
        reference = None
        for name in SETUPS:
            with ray_setup(name) as (extra, cli, seconds):
                startup[name] = seconds
                for repeat in range(args.repeats):
                    out = work / f"{name.replace(' ', '-')}-{repeat}"
                    results.setdefault(name, []).append(run_pipeline(config, out, {**env, **extra}, cli))
                    print(f"  {name:<9} run {repeat + 1}: {results[name][-1]['flow']:.1f} s flow, "
                          f"{results[name][-1]['process']:.1f} s process", flush=True)
                    docs = documents(out)
                    if reference is not None and docs != reference:
                        raise SystemExit(f"{name}: the run's documents differ from the embedded run's")
                    reference = reference or docs
        report(results, startup)


if __name__ == "__main__":
    main()
