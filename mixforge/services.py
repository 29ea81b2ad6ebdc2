"""The services a workstation keeps up between runs: `mixforge up` starts a Ray head and a Prefect server and
records them, every later `mixforge` command in that environment uses them, `mixforge down` stops them.

Why: an embedded run starts Prefect's temporary server and a whole local Ray for each command, about 9 CPU-s
of a cold `mixforge curate` (2 cores: 14 s for 100 documents embedded, 8.6 s with both services up;
benchmarks/README.md). A scheduled deployment or a real cluster has both up already (PREFECT_API_URL,
RAY_ADDRESS); this gives a workstation the same.

The record (MIXFORGE_SERVICES, default ~/.mixforge/services.json; readable by its owner only, as it holds the
Ray head's token) names each process with its start time, so a record whose processes died, or whose pids
were reused since, is ignored. Variables the user set (RAY_ADDRESS, PREFECT_API_URL) win over the record.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

RECORD_ENV = "MIXFORGE_SERVICES"
DEFAULT_PREFECT_PORT = 4200  # Prefect's own default, where `mixforge ui` looks for a server too
START_TIMEOUT_S = 120  # a Prefect server's first start creates its database: 15-25 s here, more when busy
LABELS = {"ray": "Ray", "prefect": "Prefect"}
# flows.engine.FORWARD_ENV, not imported: the engine's imports would slow every command
FORWARD_ENV = "MIXFORGE_FORWARD_VARIABLES"
# What Ray workers read from their environment: cloud credentials and endpoints, model caches and switches,
# an LLM endpoint's key, mixforge's own switches (--verbose).
WORKER_VARIABLES = ("AWS_", "AZURE_", "GOOGLE_", "HF_", "HUGGINGFACE_", "MIXFORGE_", "OPENAI_", "TRANSFORMERS_",
                    "TOKENIZERS_")
applied: set[str] = set()  # the variables use_running set in this process (the others are the user's)


class ServiceError(RuntimeError):
    """A service did not start; the message says why and where its log is."""


@dataclass
class Service:
    """One running service: where to reach it, and its process when this module started it (`pid` None:
    found running, so not ours to stop)."""

    address: str  # Ray: host:port; Prefect: the API URL
    pid: int | None = None
    started: float | None = None  # the process's start time, which tells a reused pid apart
    log: str | None = None
    token: str | None = None  # Ray's auth token
    temp_dir: str | None = None  # Ray's session files
    cpus: int | None = None  # what the Ray head offers

    def alive(self) -> bool:
        """Running, and the same process: answers (Prefect) or its recorded process lives (Ray)."""
        if self.pid is None:
            return api_healthy(self.address)
        import psutil

        from mixforge.local_cluster import is_alive

        try:
            process = psutil.Process(self.pid)
            return is_alive(process) and abs(process.create_time() - (self.started or 0)) < 1
        except psutil.Error:
            return False


def record_path() -> Path:
    return Path(os.environ.get(RECORD_ENV) or Path.home() / ".mixforge" / "services.json")


def running() -> dict[str, Service]:
    """The recorded services that still run: name ("ray", "prefect") -> Service."""
    try:
        recorded = json.loads(record_path().read_text())
    except (OSError, ValueError):
        return {}
    try:
        services = {name: Service(**fields) for name, fields in recorded.items()}
    except TypeError:  # not a record this version wrote
        return {}
    return {name: service for name, service in services.items() if service.alive()}


def environment(services: dict[str, Service]) -> dict[str, str]:
    """The variables a Ray driver and a Prefect client need to use these services."""
    env = {}
    if "ray" in services:
        env |= {"RAY_ADDRESS": services["ray"].address, "RAY_AUTH_MODE": "token",
                "RAY_AUTH_TOKEN": services["ray"].token or ""}
    if "prefect" in services:
        env["PREFECT_API_URL"] = services["prefect"].address
    return env


def use_running() -> None:
    """Point this process (and what it starts) at the recorded services the user's variables do not override:
    a RAY_ADDRESS the user set keeps Ray's variables theirs, and PREFECT_API_URL Prefect's. The variables the
    head's workers would not share with this process are named in FORWARD_ENV for init_ray to hand on. Costs a
    file read and a process lookup (a health request for a Prefect server found running)."""
    if not record_path().exists():
        return
    services = running()
    for name, variable in (("ray", "RAY_ADDRESS"), ("prefect", "PREFECT_API_URL")):
        if name in services and not os.environ.get(variable):
            for key, value in environment({name: services[name]}).items():
                os.environ[key] = value
                applied.add(key)
    if "RAY_ADDRESS" in applied and (changed := _changed_since(services["ray"])):
        os.environ[FORWARD_ENV] = ",".join(changed)  # flows.engine.init_ray gives them to the workers
        applied.add(FORWARD_ENV)


def _changed_since(head: Service) -> list[str]:
    """The variables the workers read (WORKER_VARIABLES) that this process has and the head's environment
    (that of the `mixforge up` that started it, which its workers inherit) lacks or has with another value."""
    import psutil

    try:
        theirs = psutil.Process(head.pid).environ()
    except psutil.Error:  # not readable: give the workers all of them
        theirs = {}
    return sorted(name for name, value in os.environ.items()
                  if name.startswith(WORKER_VARIABLES) and name != FORWARD_ENV and theirs.get(name) != value)


def up(cpus: int | None, prefect_port: int, echo: Callable[[str], None]) -> dict[str, Service]:
    """Start what is not running yet (the Ray head starts while the Prefect server does), record them, and
    say where each is. A Prefect server already answering on `prefect_port` is used, not started."""
    services = running()
    started = {"ray", "prefect"} - set(services)
    home = record_path().parent
    home.mkdir(parents=True, exist_ok=True)
    head = _spawn_ray_head(cpus, home / "ray-head.log") if "ray" in started else None
    server = None
    try:
        if "prefect" in started:
            api, log = prefect_api(prefect_port), home / "prefect-server.log"
            server = prefect_server(prefect_port, log)
            services["prefect"] = _service_of(server, api, log) if server else Service(address=api)
            if server is None:
                started.discard("prefect")
        if head is not None:
            _wait_for_ray(*head)
            services["ray"] = head[1]
    except BaseException:  # leave nothing running that the record would not name
        if head is not None:
            _stop_service(head[1])
        if server is not None:
            stop(server)
        raise
    _write_record(services)
    for name, service in sorted(services.items(), reverse=True):
        state = "started" if name in started else "running"
        if name == "ray":
            echo(f"Ray: head {state} at {service.address} ({service.cpus} CPUs; log: {service.log})")
        else:
            echo(f"Prefect: server {state} at {service.address} (UI: {service.address.removesuffix('/api')}"
                 + (f"; log: {service.log})" if service.log else ")"))
    return services


def down(echo: Callable[[str], None]) -> None:
    """Stop the recorded services this module started and forget the record (a server found running, not
    started by `up`, is left running)."""
    services = running()
    for name, service in services.items():
        if service.pid is None:
            echo(f"{LABELS[name]}: {service.address} was running before `mixforge up`; left running")
            continue
        _stop_service(service)
        echo(f"{LABELS[name]}: stopped {service.address}")
    if not services:
        echo("nothing recorded is running")
    record_path().unlink(missing_ok=True)


def prefect_api(port: int) -> str:
    return f"http://127.0.0.1:{port}/api"


def prefect_server(port: int, log: Path, env: dict[str, str] | None = None,
                   preexec_fn: Callable[[], None] | None = None) -> subprocess.Popen | None:
    """A Prefect server answering at 127.0.0.1:`port`: None when one answers there already, else the one started
    here, once it answers: `prefect server start` in its own session, its output appended to `log`, with `env`
    (default: this process's) less PREFECT_API_URL, which would name another server."""
    api = prefect_api(port)
    if api_healthy(api):
        return None
    if _port_taken(port):
        raise ServiceError(f"port {port} on 127.0.0.1 is taken by something that is not a Prefect server: choose "
                           "another with --prefect-port")
    env = {key: value for key, value in (env or os.environ).items() if key != "PREFECT_API_URL"}
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        process = subprocess.Popen([str(Path(sys.executable).with_name("prefect")), "server", "start", "--host",
                                    "127.0.0.1", "--port", str(port)], stdout=out, stderr=subprocess.STDOUT,
                                   env=env, start_new_session=True, preexec_fn=preexec_fn)
    try:
        wait_until(lambda: api_healthy(api), process, "the Prefect server", log)
    except BaseException:
        stop(process)
        raise
    return process


def stop(process: subprocess.Popen, grace: float = 5) -> None:
    """Stop a process started here and everything it started; SIGKILL to what is left after `grace` s."""
    from mixforge.local_cluster import stop_trees

    stop_trees([process.pid], grace)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)


def wait_until(ready: Callable[[], bool], process: subprocess.Popen, what: str, log: Path,
               timeout_s: float = START_TIMEOUT_S) -> None:
    """Wait for `ready()`; ServiceError, naming the log, if the process ends or time runs out first."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        if process.poll() is not None:
            raise ServiceError(f"{what} exited with status {process.returncode}; its log: {log}")
        if time.monotonic() > deadline:
            raise ServiceError(f"{what} was not ready after {timeout_s:.0f} s; its log: {log}")
        time.sleep(0.5)


def api_healthy(api: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{api}/health", timeout=2) as reply:
            return reply.status == 200 and json.loads(reply.read()) is True
    except (OSError, ValueError):
        return False


def _port_taken(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _spawn_ray_head(cpus: int | None, log: Path) -> tuple[subprocess.Popen, Service]:
    """`ray start --head` on 127.0.0.1 with token authentication (a fresh token), no dashboard (about 1 CPU-s
    at each start, and nothing here reads it), its session files in a temporary directory of its own."""
    from mixforge.local_cluster import free_port, start_node

    port, token = free_port(), secrets.token_hex(16)
    temp_dir = tempfile.mkdtemp(prefix="mixforge-ray-", dir="/tmp")  # short: Ray's socket paths have a limit
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    cpus = cpus or os.cpu_count() or 1
    process = start_node(["--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus",
                          str(cpus), "--include-dashboard=false", "--ray-client-server-port", str(free_port()),
                          "--temp-dir", temp_dir], env, log)
    service = _service_of(process, f"127.0.0.1:{port}", log)
    service.token, service.temp_dir, service.cpus = token, temp_dir, cpus
    return process, service


def _wait_for_ray(process: subprocess.Popen, service: Service) -> None:
    from mixforge.local_cluster import wait_for_nodes

    env = {**os.environ, **environment({"ray": service})}
    try:
        wait_for_nodes(service.address, env, 1, timeout=START_TIMEOUT_S, head=process)
    except TimeoutError as error:
        raise ServiceError(f"{error}; its log: {service.log}") from None


def _service_of(process: subprocess.Popen, address: str, log: Path) -> Service:
    import psutil

    return Service(address=address, pid=process.pid, started=psutil.Process(process.pid).create_time(), log=str(log))


def _stop_service(service: Service) -> None:
    """Stop a service's process tree and remove its session files (Ray's)."""
    from mixforge.local_cluster import stop_trees

    stop_trees([service.pid], grace=5)
    shutil.rmtree(service.temp_dir or "", ignore_errors=True)


def _write_record(services: dict[str, Service]) -> None:
    path = record_path()
    fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({name: asdict(service) for name, service in services.items()}, out, indent=1)
    os.replace(path.with_suffix(".tmp"), path)
