"""A real multi-node Ray cluster and a Prefect API on loopback, for the multi-node tests and the pipeline
benchmark: `ray start --head` plus `ray start --address`, each node a separate process tree, torn down by
stopping exactly the processes started here.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

RAY = str(Path(shutil.which("ray") or Path(sys.executable).with_name("ray")))


def free_port() -> int:
    """A free TCP port outside Ray's default worker port range (10002-19999)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if not 10002 <= port <= 19999:
            return port


@dataclass
class LoopbackCluster:
    """A running cluster: connect drivers with `address` and `env` (it carries the cluster's auth token)."""

    address: str
    env: dict[str, str]
    nodes: list[subprocess.Popen]

    @property
    def auth_env(self) -> dict[str, str]:
        """The variables a driver needs to join (the cluster's token), to add to its environment."""
        return {key: self.env[key] for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}

    def worker_processes(self, name_part: str) -> dict[int, list[psutil.Process]]:
        """Node index -> that node's Ray worker processes whose command line or title contains `name_part`
        (Ray titles an actor's process after its class, e.g. `ray::MapWorker(MapBatches(_UnitRunner))`)."""
        found: dict[int, list[psutil.Process]] = {}
        for index, node in enumerate(self.nodes):
            try:
                children = psutil.Process(node.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                continue
            for child in children:
                try:
                    if name_part in " ".join(child.cmdline()) or name_part in child.name():
                        found.setdefault(index, []).append(child)
                except psutil.Error:
                    continue
        return found


@contextmanager
def loopback_cluster(nodes: int = 2, cpus_per_node: int = 1,
                     object_store_bytes: int = 300 * 2**20) -> Iterator[LoopbackCluster]:
    """Start a head node and `nodes - 1` workers on 127.0.0.1, wait until all are alive, stop them on exit."""
    port = free_port()
    temp_dir = tempfile.mkdtemp(prefix="mfray-", dir="/tmp")
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16),
           "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    common = ["--node-ip-address", "127.0.0.1", "--num-cpus", str(cpus_per_node),
              "--object-store-memory", str(object_store_bytes)]
    started = [start_node(["--head", "--port", str(port), "--include-dashboard=false",
                            "--ray-client-server-port", str(free_port()), "--temp-dir", temp_dir, *common], env)]
    address = f"127.0.0.1:{port}"
    try:
        wait_for_nodes(address, env, 1)
        started.extend(start_node(["--address", address, *common], env) for _ in range(nodes - 1))
        if nodes > 1:
            wait_for_nodes(address, env, nodes)
        yield LoopbackCluster(address=address, env=env, nodes=started)
    finally:
        stop_trees([node.pid for node in started])
        for node in started:
            node.wait()
        shutil.rmtree(temp_dir, ignore_errors=True)


def prefect_api_url() -> str:
    """The Prefect API this process reports to: the configured one, else Prefect's temporary local server
    (started here if no flow has started it yet). Give it to `mixforge` subprocesses as PREFECT_API_URL,
    so they do not each start their own server (15-25 s)."""
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if url:
        return url
    server = SubprocessASGIServer()
    server.start()  # a no-op when a flow run of this process started it
    return server.api_url


def start_node(args: list[str], env: dict[str, str], log: Path | None = None) -> subprocess.Popen:
    """`ray start --block ARGS` in its own session (so it outlives a parent that exits), its output to `log`."""
    with open(log or os.devnull, "ab") as out:
        return subprocess.Popen([RAY, "start", "--block", *args], env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def wait_for_nodes(address: str, env: dict[str, str], expected: int, timeout: float = 90,
                   head: subprocess.Popen | None = None) -> None:
    """Wait until the cluster at `address` has `expected` live nodes; TimeoutError when time runs out or the
    `head` process ends first."""
    probe = (f"import ray; ray.init(address='{address}', log_to_driver=False); "
             "print(sum(1 for n in ray.nodes() if n['Alive']))")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if head is not None and head.poll() is not None:
            raise TimeoutError(f"the Ray head at {address} exited with status {head.returncode}")
        result = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True,
                                timeout=60)
        if result.returncode == 0 and result.stdout.strip().splitlines()[-1:] == [str(expected)]:
            return
        time.sleep(1)
    raise TimeoutError(f"Ray cluster at {address} did not reach {expected} live nodes in {timeout:.0f} s")


def stop_trees(pids: list[int], grace: float = 2) -> None:
    """Stop these processes and everything they started (only these, unlike `ray stop`): SIGTERM to each,
    SIGKILL to whatever of their trees is left after `grace` seconds. (Ray's graceful shutdown of a node that
    ran Ray Data takes well over 10 s here; a throwaway cluster need not wait for it.)"""
    trees = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            root = psutil.Process(pid)
            trees.extend([root, *root.children(recursive=True)])
            root.terminate()
    deadline = time.monotonic() + grace
    while any(map(is_alive, trees)) and time.monotonic() < deadline:
        time.sleep(0.2)
    for process in filter(is_alive, trees):
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()


def is_alive(process: psutil.Process) -> bool:
    """Running, and not a zombie (orphans' zombies wait for a reaper that a container may not have)."""
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
