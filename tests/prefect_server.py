"""A real local Prefect server for tests: `prefect server start` on a free port with its own PREFECT_HOME (so
its own database), stopped with everything it started. A test module imports `prefect_server_fixture` and
asks for `prefect_server`; `small_config` is a curate config that runs in seconds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mixforge import services
from mixforge.local_cluster import free_port
from mixforge.services import prefect_api, prefect_server

BIN = Path(sys.executable).parent


def stop(process: subprocess.Popen, sig: int = signal.SIGINT) -> None:
    """Stop a process we started in its own session, and everything it started; SIGKILL after 20 s."""
    if process.poll() is None:
        os.killpg(process.pid, sig)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@pytest.fixture(name="prefect_server")
def prefect_server_fixture(tmp_path):
    """A Prefect server on a free port with its own database; yields (API URL, environment for clients).
    Its scheduler looks for schedules that need runs every 2 s (default 60 s), so a schedule added to a
    deployment gets its runs at once."""
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_API_URL": prefect_api(port), "PREFECT_RUNNER_POLL_FREQUENCY": "2",
           "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2", "PREFECT_LOGGING_LEVEL": "INFO"}
    server = prefect_server(port, tmp_path / "server.log", env)
    try:
        yield env["PREFECT_API_URL"], env
    finally:
        services.stop(server)


def small_config(tmp_path: Path, input_file: Path) -> Path:
    """Read one file and tokenize it: enough to run every curate task the worker has to run, in seconds."""
    config = tmp_path / "small.yaml"
    config.write_text(yaml.safe_dump({
        "inputs": {"paths": [str(input_file)]},
        "ray": {"num_cpus": 1},
        "langid": {"enabled": False},
        "filters": {name: {"enabled": False} for name in ("gopher_quality", "gopher_repetition", "c4_quality",
                                                          "fineweb_quality")},
        "dedup": {"exact": {"enabled": False}, "minhash": {"enabled": False}},
        "tokenize": {"count_before_filters": False},
    }))
    return config
