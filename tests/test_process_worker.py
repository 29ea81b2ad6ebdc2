"""The project's prefect.yaml on a real Prefect server: a process worker executes a scheduled deployment run.

What a user does (docs/cluster.md, section 4), with the real CLI: `prefect work-pool create mixforge-process
--type process`, `prefect deploy --all` from the checkout with MIXFORGE_HOME (the checkout) and MIXFORGE_RUNS
set, `prefect worker start --pool mixforge-process`. `curate/nightly` keeps its nightly cron from prefect.yaml;
the test adds a second schedule to it through the API, as one would in the UI: an interval schedule anchored
a few seconds ahead whose parameters swap the config for a small one (one file of the sample corpus). The
server's scheduler creates the run from that schedule (no `prefect deployment run`), the worker picks it up and
runs it in a subprocess, and its output is checked against counts computed from the input file.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import yaml
from prefect_server import BIN, prefect_server_fixture, small_config, stop  # noqa: F401 (the fixture)

from flows.config import load_config
from flows.pipeline import PipelineConfig
from operators.tokenize import QuicktokEncoder
from storage.manifest import load_manifest

REPO = Path(__file__).resolve().parent.parent
POOL = "mixforge-process"
WORKER = "test-process-worker"


def test_a_process_worker_runs_a_scheduled_run_of_the_prefect_yaml_deployment(prefect_server, sample_corpus,
                                                                                tmp_path):
    api, server_env = prefect_server
    runs_dir = tmp_path / "runs"
    worker_env = {**server_env, "TQDM_DISABLE": "1", "PREFECT_WORKER_QUERY_SECONDS": "2"}
    worker_env.pop("RAY_ADDRESS", None)  # the run starts its own local Ray, not one this test session knows of
    prefect(["work-pool", "create", POOL, "--type", "process"], server_env)
    worker_log = tmp_path / "worker.log"
    with open(worker_log, "wb") as log:
        worker = subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--name", WORKER],
                                  env=worker_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                  cwd=tmp_path)
        try:  # the deployments carry the two variables: the worker's environment has neither
            prefect(["--no-prompt", "deploy", "--all"],
                    {**server_env, "MIXFORGE_HOME": str(REPO), "MIXFORGE_RUNS": str(runs_dir)})
            deployment = check_deployments(api, runs_dir)
            fortunes = sample_corpus / "docs" / "fortunes.jsonl.gz"
            schedule_id = add_schedule_soon(api, deployment["id"], small_config(tmp_path, fortunes))
            run = wait_for_completed_run(api, deployment["id"], worker, worker_log, timeout=150)
        finally:
            stop(worker)
    assert run["created_by"]["id"] == schedule_id and run["auto_scheduled"] is True  # the schedule made it
    assert run["work_pool_name"] == POOL
    assert f"Worker '{WORKER}' submitting flow run '{run['id']}'" in worker_log.read_text()

    out = runs_dir / f"curate-{datetime.fromisoformat(run['expected_start_time']).astimezone(UTC):%Y-%m-%d}"
    manifest = load_manifest(out)
    assert manifest.final_stage == "tokenize" and list(manifest.stages) == ["ingest", "tokenize"]
    with gzip.open(fortunes, "rt", encoding="utf-8") as lines:
        texts = [json.loads(line)["text"] for line in lines]
    tokens = int(QuicktokEncoder("o200k_base").count_batch(texts).sum())
    assert manifest.stages["ingest"].counts["docs_out"] == len(texts) > 1000
    counts = manifest.stages["tokenize"].counts
    assert (counts["docs_in"], counts["docs_out"], counts["tokens_out"]) == (len(texts), len(texts), tokens)


def prefect(args: list[str], env: dict[str, str]) -> None:
    """The Prefect CLI in the checkout, as a user runs it there; fails with its output."""
    done = subprocess.run([str(BIN / "prefect"), *args], env=env, cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, f"prefect {' '.join(args)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


def check_deployments(api: str, runs_dir: Path) -> dict:
    """Every deployment of prefect.yaml is on the server; the scheduled ones name configs that load. Returns
    curate/nightly, deployed with the cron of prefect.yaml and its env-templated parameters."""
    declared = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
    deployed = httpx.post(f"{api}/deployments/filter", json={}).json()
    flows = {flow["id"]: flow["name"] for flow in httpx.post(f"{api}/flows/filter", json={}).json()}
    assert sorted((flows[d["flow_id"]], d["name"], d["work_pool_name"]) for d in deployed) == sorted(
        (d["entrypoint"].rsplit(":", 1)[1], d["name"], POOL) for d in declared)
    pipeline = httpx.get(f"{api}/deployments/name/pipeline/nightly").json()
    load_config(pipeline["parameters"]["config"], model=PipelineConfig)
    curate = httpx.get(f"{api}/deployments/name/curate/nightly").json()
    assert [s["schedule"]["cron"] for s in curate["schedules"]] == ["0 3 * * *"]
    assert curate["parameters"]["out"] == f"{runs_dir}/curate-{{date}}"
    assert curate["pull_steps"] == [{"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}]
    load_config(curate["parameters"]["config"])
    return curate


def add_schedule_soon(api: str, deployment_id: str, config: Path) -> str:
    """A daily interval schedule whose first run is 15 s from now, overriding `config`; returns its id."""
    anchor = datetime.now(UTC) + timedelta(seconds=15)
    response = httpx.post(f"{api}/deployments/{deployment_id}/schedules", json=[{
        "schedule": {"interval": 86400, "anchor_date": anchor.isoformat(), "timezone": "UTC"},
        "active": True, "parameters": {"config": str(config)},
    }])
    assert response.status_code == 201, response.text
    return response.json()[0]["id"]


def wait_for_completed_run(api: str, deployment_id: str, worker: subprocess.Popen, log: Path, timeout: float) -> dict:
    """The first run of the deployment to complete; fails at once if one fails or the worker dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert worker.poll() is None, log.read_text()[-3000:]
        runs = httpx.post(f"{api}/flow_runs/filter",
                          json={"flow_runs": {"deployment_id": {"any_": [deployment_id]}}}).json()
        assert not {run["state_type"] for run in runs} & {"FAILED", "CRASHED"}, log.read_text()[-3000:]
        completed = [run for run in runs if run["state_type"] == "COMPLETED"]
        if completed:
            return completed[0]
        time.sleep(1)
    raise AssertionError(f"no scheduled run completed in {timeout} s:\n{log.read_text()[-3000:]}")
