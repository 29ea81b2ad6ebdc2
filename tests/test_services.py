"""`mixforge up` / `mixforge down`: a real Ray head and a real Prefect server, used by later commands, stopped after.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest
from prefect_server import small_config

from flows import engine
from mixforge import services
from mixforge.local_cluster import free_port, is_alive

MIXFORGE = str(Path(sys.executable).with_name("mixforge"))


def mixforge(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([MIXFORGE, *args], env=env, capture_output=True, text=True, timeout=300)


def ray_jobs(address: str, env: dict[str, str]) -> list[str]:
    """The entry points of the jobs the Ray cluster at `address` has seen (its drivers' command lines)."""
    probe = (f"import json, ray; from ray._private import state; ray.init(address='{address}', log_to_driver=False); "
             "print(json.dumps([job['Entrypoint'] for job in state.jobs()]))")
    result = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture
def user_env(tmp_path):
    """A user's environment with no Ray or Prefect of its own: a record and a Prefect home in tmp_path."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "PREFECT_API_URL")}
    env |= {"MIXFORGE_SERVICES": str(tmp_path / "services" / "services.json"),
            "PREFECT_HOME": str(tmp_path / "prefect-home"), "TQDM_DISABLE": "1"}
    return env


def test_up_starts_services_that_later_commands_use_and_down_stops_them(tmp_path, user_env, sample_corpus):
    port = free_port()
    started = mixforge("up", "--cpus", "1", "--prefect-port", str(port), env=user_env)
    assert started.returncode == 0, started.stderr[-2000:]
    record_file = Path(user_env["MIXFORGE_SERVICES"])
    try:
        assert stat.S_IMODE(record_file.stat().st_mode) == 0o600  # it holds the Ray head's token
        record = json.loads(record_file.read_text())
        assert record["prefect"]["address"] == f"http://127.0.0.1:{port}/api"
        assert "Ray: head started at " + record["ray"]["address"] in started.stdout
        processes = [psutil.Process(record[name]["pid"]) for name in ("ray", "prefect")]
        assert all(map(is_alive, processes))

        again = mixforge("up", "--prefect-port", str(port), env=user_env)  # nothing new: both are running
        assert again.returncode == 0, again.stderr[-2000:]
        assert "Ray: head running at" in again.stdout and "Prefect: server running at" in again.stdout
        assert json.loads(record_file.read_text())["ray"]["pid"] == record["ray"]["pid"]

        # a curate run with neither RAY_ADDRESS nor PREFECT_API_URL set reports to that server, on that head
        config = small_config(tmp_path, sorted(sample_corpus.glob("*.parquet"))[0])
        run = mixforge("curate", str(config), "--no-progress", "--out", str(tmp_path / "run"), env=user_env)
        assert run.returncode == 0, run.stderr[-3000:]
        flow_runs = httpx.post(f"{record['prefect']['address']}/flow_runs/filter", json={}, timeout=10).json()
        assert [flow_run["state_type"] for flow_run in flow_runs] == ["COMPLETED"]
        head_env = {**user_env, **services.environment({"ray": services.Service(**record["ray"])})}
        assert any(" curate " in entrypoint for entrypoint in ray_jobs(record["ray"]["address"], head_env))

        # the head was started in another environment: a command's variables that it lacks reach the workers
        probe = ("import os; from mixforge.services import use_running; use_running(); from flows.engine import "
                 "fan_out; read = lambda name: os.environ.get(name); print(os.environ['MIXFORGE_FORWARD_VARIABLES']); "
                 "print(sorted({value for _, value in fan_out(read, [('MIXFORGE_TEST_PROBE',)] * 2)}))")
        seen = subprocess.run([sys.executable, "-c", probe], env={**user_env, "MIXFORGE_TEST_PROBE": "this command"},
                              capture_output=True, text=True, timeout=120)
        assert seen.stdout.strip().splitlines()[-2:] == ["MIXFORGE_TEST_PROBE", "['this command']"], \
            seen.stderr[-2000:]
    finally:
        stopped = mixforge("down", env=user_env)
    assert stopped.returncode == 0, stopped.stderr[-2000:]
    assert "Ray: stopped" in stopped.stdout and "Prefect: stopped" in stopped.stdout
    assert not any(map(is_alive, processes))
    assert not Path(record["ray"]["temp_dir"]).exists() and not record_file.exists()
    assert "nothing recorded is running" in mixforge("down", env=user_env).stdout


def test_a_stale_record_is_ignored_and_the_users_variables_win(tmp_path, monkeypatch):
    """A record whose processes died (or whose pid now belongs to another process) points nowhere; a RAY_ADDRESS
    the user set keeps Ray's variables theirs while the recorded Prefect server is still used."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    other = psutil.Process()  # alive, but not the process recorded: another start time
    record = {"ray": {"address": "127.0.0.1:1", "pid": gone.pid, "started": 0.0, "token": "t"},
              "prefect": {"address": "http://127.0.0.1:9/api", "pid": other.pid, "started": other.create_time() - 100}}
    path = tmp_path / "services.json"
    path.write_text(json.dumps(record))
    monkeypatch.setenv(services.RECORD_ENV, str(path))
    assert services.running() == {}

    record["prefect"]["started"] = other.create_time()  # the same process: alive
    record["ray"] |= {"pid": other.pid, "started": other.create_time()}
    path.write_text(json.dumps(record))
    assert set(services.running()) == {"ray", "prefect"}
    monkeypatch.setenv("RAY_ADDRESS", "head:6379")
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.setattr(services, "applied", set())
    services.use_running()
    assert os.environ["RAY_ADDRESS"] == "head:6379" and "RAY_AUTH_TOKEN" not in os.environ
    assert os.environ["PREFECT_API_URL"] == "http://127.0.0.1:9/api"
    assert services.applied == {"PREFECT_API_URL"}
    assert services.FORWARD_ENV == engine.FORWARD_ENV  # one name, written twice to keep the CLI's start light


def ray_heads_of_up() -> set[str]:
    """The session directories of `mixforge up`'s Ray heads, and every process that names one."""
    found = {str(path) for path in Path("/tmp").glob("mixforge-ray-*")}
    for process in psutil.process_iter(["cmdline"]):
        found.update(part for part in process.info["cmdline"] or [] if "/tmp/mixforge-ray-" in part)
    return found


def test_up_refuses_a_prefect_port_taken_by_something_else_in_one_line(user_env):
    before = ray_heads_of_up()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = mixforge("up", "--cpus", "1", "--prefect-port", str(port), env=user_env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: port {port} on 127.0.0.1 is taken by something that is not a Prefect server: "
        "choose another with --prefect-port"]
    assert not Path(user_env["MIXFORGE_SERVICES"]).exists()
    assert ray_heads_of_up() <= before  # the Ray head it had started is stopped, its files removed
