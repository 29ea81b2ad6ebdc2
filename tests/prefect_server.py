"""A real local Prefect server for tests: `prefect server start` on a free port with its own PREFECT_HOME (so
its own database), stopped with everything it started. A test module imports `prefect_server_fixture` and
asks for `prefect_server`; `small_config` is a curate config that runs in seconds."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
           "PREFECT_API_URL": f"http://127.0.0.1:{port}/api", "PREFECT_RUNNER_POLL_FREQUENCY": "2",
           "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2", "PREFECT_LOGGING_LEVEL": "INFO"}
    log = open(tmp_path / "server.log", "wb")
    server = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                              env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "Prefect server not healthy after 90 s"
            try:
                if httpx.get(f"{env['PREFECT_API_URL']}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        yield env["PREFECT_API_URL"], env
    finally:
        stop(server, signal.SIGTERM)
        log.close()


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
