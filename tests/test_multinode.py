"""Runs on a real 2-node Ray cluster on loopback (separate `ray start` processes), with faults."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from ray_cluster import loopback_cluster

from flows.ingest import ingest
from storage.catalog import open_catalog, query
from storage.manifest import load_manifest

MIXFORGE = str(Path(sys.executable).with_name("mixforge"))


@pytest.fixture(scope="module")
def cluster():
    with loopback_cluster(nodes=2, cpus_per_node=1) as running:
        yield running


@pytest.fixture(scope="module")
def inputs(sample_corpus) -> list[str]:
    return [str(sample_corpus / "docs"), str(sample_corpus / "web" / "sample.warc.wet.gz")]


def ingest_cmd(inputs: list[str], out: Path, address: str | None) -> list[str]:
    return [MIXFORGE, "ingest", *inputs, "--out", str(out), *(["--ray-address", address] if address else [])]


def documents(run: Path) -> list[tuple]:
    rows = query(open_catalog(run), "SELECT id, md5(text) AS digest FROM docs ORDER BY id").to_pylist()
    return [(row["id"], row["digest"]) for row in rows]


@pytest.fixture(scope="module")
def reference_run(inputs, tmp_path_factory, ray_local) -> Path:
    """The same ingest on the embedded single-node Ray, undisturbed."""
    out = tmp_path_factory.mktemp("local")
    ingest(inputs=inputs, out=str(out), progress=False)
    return out


def test_two_node_run_equals_local_run(cluster, inputs, reference_run, tmp_path):
    out = tmp_path / "cluster"
    result = subprocess.run(ingest_cmd(inputs, out, cluster.address), capture_output=True, text=True,
                            env=cluster.env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert documents(out) == documents(reference_run)
    assert load_manifest(out).stages["ingest"].counts == load_manifest(reference_run).stages["ingest"].counts | {
        "seconds": load_manifest(out).stages["ingest"].counts["seconds"]}


def test_killing_a_ray_worker_mid_stage_loses_nothing(cluster, inputs, reference_run, tmp_path):
    out = tmp_path / "killed-worker"
    process = subprocess.Popen(ingest_cmd(inputs, out, cluster.address), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, env=cluster.env)
    killed = []
    deadline = time.monotonic() + 240
    while not killed and process.poll() is None and time.monotonic() < deadline:
        workers = cluster.worker_processes("_UnitRunner")
        if workers and list((out / "_progress" / "ingest").glob("*.json")):
            workers[0].kill()
            killed.append(workers[0].pid)
        time.sleep(0.2)
    _, stderr = process.communicate(timeout=300)
    assert killed, "no Ray worker was running a unit while the stage ran"
    assert process.returncode == 0, stderr[-2000:]
    assert documents(out) == documents(reference_run)
