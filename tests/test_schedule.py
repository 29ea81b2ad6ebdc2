"""A scheduled run of the `curate` deployment: a real Prefect server, `mixforge deploy` serving it, cron.

The server (`prefect server start`, own PREFECT_HOME and port) schedules the deployment's cron runs; the
`mixforge deploy` process (flow.serve) picks the run up and executes it. The test waits for a run the
schedule created (auto_scheduled) to complete and checks its output directory, named by the scheduled date.
"""

from __future__ import annotations

import subprocess
import time
from datetime import datetime
from pathlib import Path

import httpx
from prefect_server import BIN, prefect_server_fixture, small_config, stop  # noqa: F401 (the fixture)
from typer.testing import CliRunner

from mixforge.cli import app
from storage.manifest import load_manifest

DEPLOYMENT = "schedule-test"


def test_deploy_needs_a_server(tmp_path, monkeypatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    config = tmp_path / "run.yaml"
    config.write_text("inputs: {paths: [x.jsonl]}\n")
    result = CliRunner().invoke(app, ["deploy", str(config), "--out", str(tmp_path / "runs")])
    assert result.exit_code == 2 and "PREFECT_API_URL" in result.output


def test_a_cron_scheduled_run_of_the_deployment_completes(prefect_server, sample_corpus, tmp_path):
    api, env = prefect_server
    config = small_config(tmp_path, sample_corpus / "docs" / "fortunes.jsonl.gz")
    runs_dir = tmp_path / "runs"
    log = open(tmp_path / "deploy.log", "wb")
    served = subprocess.Popen([str(BIN / "mixforge"), "deploy", str(config), "--out", f"{runs_dir}/{{date}}",
                               "--cron", "* * * * *", "--name", DEPLOYMENT],
                              env={**env, "TQDM_DISABLE": "1"}, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True, cwd=tmp_path)
    try:
        run = wait_for_completed_run(api, served, tmp_path / "deploy.log", timeout=210)
    finally:
        stop(served)
        log.close()
    assert run["auto_scheduled"] is True  # created by the schedule, not by hand
    deployment = httpx.get(f"{api}/deployments/name/curate/{DEPLOYMENT}").json()
    assert [s["schedule"]["cron"] for s in deployment["schedules"]] == ["* * * * *"]
    expected = datetime.fromisoformat(run["expected_start_time"])
    assert expected.second == 0  # on a minute boundary, as cron put it
    out = runs_dir / expected.strftime("%Y-%m-%d")
    manifest = load_manifest(out)
    assert manifest.final_stage == "tokenize" and list(manifest.stages) == ["ingest", "tokenize"]
    kept = manifest.stages["tokenize"].counts["docs_out"]
    assert kept == manifest.stages["ingest"].counts["docs_out"] > 1000
    assert any((out / "shards" / "tokenize").glob("part-*.parquet"))


def wait_for_completed_run(api: str, served: subprocess.Popen, log: Path, timeout: float) -> dict:
    """The first run of the deployment to complete; fails at once if one fails or the server process dies."""
    deadline = time.monotonic() + timeout
    deployment_id = None
    while time.monotonic() < deadline:
        assert served.poll() is None, log.read_text()[-3000:]
        if deployment_id is None:
            response = httpx.get(f"{api}/deployments/name/curate/{DEPLOYMENT}")
            deployment_id = response.json()["id"] if response.status_code == 200 else None
        if deployment_id is not None:
            runs = httpx.post(f"{api}/flow_runs/filter",
                              json={"flow_runs": {"deployment_id": {"any_": [deployment_id]}}}).json()
            states = {run["state_type"] for run in runs}
            assert not states & {"FAILED", "CRASHED"}, log.read_text()[-3000:]
            completed = [run for run in runs if run["state_type"] == "COMPLETED"]
            if completed:
                return completed[0]
        time.sleep(2)
    raise AssertionError(f"no scheduled run completed in {timeout} s:\n{log.read_text()[-3000:]}")
