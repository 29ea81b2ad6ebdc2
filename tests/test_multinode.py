"""The pipeline (`mixforge run`: curate stages, then CLIMB clustering) on a real 2-node Ray cluster on loopback
(separate `ray start` processes), and with faults: Ray workers killed mid-stage, the flow process SIGKILLed and
rerun. Every run must end equal to one undisturbed reference run on the embedded Ray: the same documents (ids,
text digests, cluster and super-cluster), the same rows and distinct ids in every stage, the same counts per
stage and the same cluster table (k-means, its seeded sample and the Ward merge are deterministic).

A pipeline run costs this 2-core box ~70 s whatever its size (Ray start, an actor pool per stage), so the module
makes three: the reference, one SIGKILLed-and-rerun on the embedded Ray, one on the cluster with workers killed.
The SIGKILL test runs before the cluster fixture starts its nodes: it needs no cluster.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest
import yaml

from flows.pipeline import pipeline
from mixforge.local_cluster import LoopbackCluster, is_alive, loopback_cluster, prefect_api_url
from storage.catalog import open_catalog, query
from storage.manifest import load_manifest

MIXFORGE = str(Path(sys.executable).with_name("mixforge"))
DOCS = ("python-doc.jsonl.gz", "postgresql-doc.parquet", "debian-reference.jsonl.zst")


@pytest.fixture(scope="module")
def config_file(sample_corpus, tmp_path_factory) -> Path:
    """Three files of the sample corpus (three units per stage), documents over 3 kB quarantined (keeps ~880 of
    2,019 and the run short), no token shards, eight clusters."""
    path = tmp_path_factory.mktemp("multinode") / "pipeline.yaml"
    path.write_text(yaml.safe_dump({
        "inputs": {"paths": [str(sample_corpus / "docs" / name) for name in DOCS], "max_doc_bytes": 3000},
        "tokenize": {"write_token_shards": False},
        "cluster": {"n_clusters": 8, "projection_points": 200},
    }))
    return path


@pytest.fixture(scope="module")
def reference(config_file, ray_local, tmp_path_factory) -> Path:
    """The pipeline on the embedded single-node Ray, undisturbed."""
    out = tmp_path_factory.mktemp("reference") / "run"
    pipeline(config=str(config_file), out=str(out), progress=False)
    return out


@pytest.fixture(scope="module")
def run_env(reference) -> dict[str, str]:
    """Environment of the `mixforge run` subprocesses: this session's Prefect API (the reference run started
    it), no inherited RAY_ADDRESS (so without --ray-address a run starts its own embedded Ray)."""
    env = {**os.environ, "PREFECT_API_URL": prefect_api_url(), "TQDM_DISABLE": "1"}
    env.pop("RAY_ADDRESS", None)
    return env


@pytest.fixture(scope="module")
def cluster():
    with loopback_cluster(nodes=2, cpus_per_node=1) as running:
        yield running


def run_command(config: Path, out: Path, address: str | None = None) -> list[str]:
    return [MIXFORGE, "run", str(config), "--out", str(out), "--no-progress",
            *(["--ray-address", address] if address else [])]


def cluster_env(cluster: LoopbackCluster, run_env: dict[str, str]) -> dict[str, str]:
    return {**run_env, **cluster.auth_env}


@contextlib.contextmanager
def started(command: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    """`command` running with its output in `log`; killed on the way out if a failed assertion left it running."""
    with open(log, "wb") as sink:
        process = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def outcome(run: Path) -> dict:
    """What must not depend on where or how often the run ran: the final documents with their clusters, the
    rows and distinct ids in every stage's shards and in the drops, the manifest's counts per stage (seconds
    aside), the cluster table."""
    con = open_catalog(run)
    manifest = load_manifest(run)
    documents = query(con, "SELECT id, md5(text) AS digest, cluster, super_cluster FROM docs ORDER BY id")
    views = [f"stage_{stage}" for stage in manifest.stages if any((run / "shards" / stage).glob("*.parquet"))]
    rows = {view: query(con, f"SELECT count(*) AS n, count(DISTINCT id) AS ids FROM {view}").to_pylist()[0]
            for view in [*views, "dropped"]}
    return {
        "final_stage": manifest.final_stage,
        "documents": documents.to_pylist(),
        "rows": rows,
        "counts": {stage: {k: v for k, v in record.counts.items() if k != "seconds"}
                   for stage, record in manifest.stages.items()},
        "status": {stage: record.status for stage, record in manifest.stages.items()},
        "clusters": pq.read_table(run / "clusters" / "clusters.parquet").to_pylist(),
    }


def test_reference_run_is_complete_and_duplicate_free(reference):
    expected = outcome(reference)
    assert expected["final_stage"] == "cluster" and set(expected["status"].values()) == {"complete"}
    assert {"ingest", "filter", "minhash_dedup", "tokenize", "embed", "assign", "cluster"} <= set(expected["counts"])
    assert all(row["n"] == row["ids"] > 0 for row in expected["rows"].values())
    assert len(expected["documents"]) == expected["counts"]["cluster"]["docs_out"] > 300
    assert len({doc["cluster"] for doc in expected["documents"]}) >= 6


def completion_records(run: Path) -> dict[Path, str]:
    return {path: path.read_text() for path in sorted((run / "_progress").glob("*/[0-9]*.json"))}


def test_sigkilled_flow_resumes_without_duplicates_or_losses(config_file, reference, run_env, tmp_path):
    """kill -9 of the `mixforge run` process once the cluster sub-flow has embedded some shards (every curate
    stage done): its embedded Ray goes with it, and the rerun redoes no completed unit, curate's or embed's, and
    ends equal to the reference."""
    out = tmp_path / "killed"
    command = run_command(config_file, out)
    log = tmp_path / "killed.log"
    with started(command, run_env, log) as process:
        deadline = time.monotonic() + 180
        while not list((out / "_progress" / "embed").glob("[0-9]*.json")):
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "no shard was embedded in 180 s"
            time.sleep(0.05)
        ray_processes = {child: name_of(child) for child in psutil.Process(process.pid).children(recursive=True)}
        process.kill()
        process.wait(timeout=30)
    assert {"raylet", "gcs_server"} <= set(ray_processes.values())  # it was the run's own embedded Ray
    assert not leaked_after_kill(ray_processes), "Ray processes outlived the killed flow"

    done = completion_records(out)
    outputs = {path: (out / path).stat().st_mtime_ns
               for record in done.values() for path in json.loads(record)["files"]}
    assert len(outputs) > 10 and load_manifest(out).final_stage == "tokenize"  # curate done, clustering not

    resumed = subprocess.run(command, env=run_env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    after = completion_records(out)
    assert {path: after[path] for path in done} == done  # completed units were skipped, not redone
    assert {path: (out / path).stat().st_mtime_ns for path in outputs} == outputs
    assert outcome(out) == outcome(reference)


# Not counted as leaks (the test stops them itself): Ray's two agents, which poll the raylet and exit on their own
# about a minute after it died (measured 60-70 s), and processes the raylet was still starting when the driver
# died (still called python3: not yet connected, so nothing to notice the death until their imports finish).
STRAGGLER = "ray straggler"
AGENT_TITLES = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")
STARTING_SCRIPTS = ("dashboard/agent.py", "runtime_env/agent/main.py", "workers/default_worker.py")


def leaked_after_kill(processes: dict[psutil.Process, str], timeout: float = 15) -> list[str]:
    """The processes, stragglers aside, still alive `timeout` s after their driver was killed: the GCS, raylet,
    dashboard and monitors share its fate, the workers follow their raylet. Stops whatever is left, stragglers
    included, so nothing outlives the test."""
    core = [process for process, name in processes.items() if name != STRAGGLER]
    deadline = time.monotonic() + timeout
    while any(map(is_alive, core)) and time.monotonic() < deadline:
        time.sleep(0.2)
    leaked = [f"{processes[process]} ({describe(process)})" for process in core if is_alive(process)]
    for process in filter(is_alive, processes):
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    return leaked


def describe(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())[:200]
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return "gone"


def name_of(process: psutil.Process) -> str:
    """The process's name, or STRAGGLER for Ray's agents and processes still starting."""
    try:
        name, argv = process.name(), process.cmdline()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return "?"
    starting = name.startswith("python") and any(arg.endswith(STARTING_SCRIPTS) for arg in argv)
    return STRAGGLER if name in AGENT_TITLES or starting else name


def test_a_driver_without_the_clusters_token_gets_one_line_naming_the_fix(cluster, config_file, run_env, tmp_path):
    """A `ray start` cluster wants its token: joining it by address without one fails with one line (none of
    the GCS client's retry lines) that says to set RAY_AUTH_MODE=token, and nothing is written."""
    env = {k: v for k, v in run_env.items() if not k.startswith("RAY_AUTH")}
    done = subprocess.run(run_command(config_file, tmp_path / "run", cluster.address), env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ConnectionError") and "RAY_AUTH_MODE=token" in lines[0]
    assert not (tmp_path / "run" / "shards").exists()


def test_two_node_run_with_killed_workers_equals_the_embedded_run(cluster, config_file, reference, run_env,
                                                                  tmp_path):
    """`mixforge run --ray-address` on the 2-node cluster; once the filter stage has completed some units but
    not all, SIGKILL every Ray worker running units (one per node). Ray retries the units' tasks they were
    running on new workers; both nodes run units, and the run ends equal to the reference."""
    out = tmp_path / "two-node"
    log = tmp_path / "two-node.log"
    busy_nodes: set[int] = set()
    killed, filter_units_done = [], 0
    with started(run_command(config_file, out, cluster.address), cluster_env(cluster, run_env), log) as process:
        deadline = time.monotonic() + 300
        while process.poll() is None:
            assert time.monotonic() < deadline, "the run did not finish in 300 s"
            workers = cluster.worker_processes("_run_unit")
            busy_nodes.update(workers)
            filter_units_done = filter_units_done or len(list((out / "_progress" / "filter").glob("[0-9]*.json")))
            if filter_units_done and not killed:
                for worker in (worker for node in workers.values() for worker in node):
                    with contextlib.suppress(psutil.NoSuchProcess):
                        worker.kill()
                        killed.append(worker.pid)
            time.sleep(0.5 if killed else 0.05)
    output = log.read_text()
    assert process.returncode == 0, output[-3000:]
    assert killed and filter_units_done < len(DOCS), "no Ray worker was killed while the filter stage ran"
    assert "worker died or was killed while executing a task" in output  # a unit was cut off (Ray retried it)
    assert busy_nodes == {0, 1}, "both nodes should have run units"
    assert outcome(out) == outcome(reference)
