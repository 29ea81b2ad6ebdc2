"""A real multi-node Ray cluster on loopback for tests: `ray start --head` plus `ray start --address`,
each a separate process tree, torn down by stopping exactly the processes the fixture started."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
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
    address: str
    env: dict[str, str]
    nodes: list[subprocess.Popen]
    gcs_port: int

    def worker_processes(self, name_part: str) -> list[psutil.Process]:
        """Ray worker processes of this cluster whose process title contains `name_part`."""
        found = []
        for node in self.nodes:
            for child in psutil.Process(node.pid).children(recursive=True):
                try:
                    if name_part in " ".join(child.cmdline()) or name_part in child.name():
                        found.append(child)
                except psutil.NoSuchProcess:
                    continue
        return found


def _start_node(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([RAY, "start", "--block", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


@contextmanager
def loopback_cluster(nodes: int = 2, cpus_per_node: int = 1) -> Iterator[LoopbackCluster]:
    port = free_port()
    temp_dir = tempfile.mkdtemp(prefix="mfray-", dir="/tmp")
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16),
           "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    common = ["--node-ip-address", "127.0.0.1", "--num-cpus", str(cpus_per_node),
              "--object-store-memory", str(300 * 2**20)]
    started = [_start_node(["--head", "--port", str(port), "--include-dashboard=false",
                            "--ray-client-server-port", str(free_port()), "--temp-dir", temp_dir, *common], env)]
    address = f"127.0.0.1:{port}"
    try:
        _wait_for_nodes(address, env, 1)
        for _ in range(nodes - 1):
            started.append(_start_node(["--address", address, *common], env))
        _wait_for_nodes(address, env, nodes)
        yield LoopbackCluster(address=address, env=env, nodes=started, gcs_port=port)
    finally:
        for node in reversed(started):
            _stop(node)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _wait_for_nodes(address: str, env: dict[str, str], expected: int, timeout: float = 90) -> None:
    probe = (f"import ray; ray.init(address='{address}', log_to_driver=False); "
             "print(sum(1 for n in ray.nodes() if n['Alive']))")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True,
                                timeout=60)
        if result.returncode == 0 and result.stdout.strip().splitlines()[-1:] == [str(expected)]:
            return
        time.sleep(2)
    raise TimeoutError(f"Ray cluster at {address} did not reach {expected} live nodes in {timeout:.0f} s")


def _stop(node: subprocess.Popen) -> None:
    """Stop a `ray start --block` node and everything it started."""
    try:
        tree = [node.pid, *[p.pid for p in psutil.Process(node.pid).children(recursive=True)]]
    except psutil.NoSuchProcess:
        return
    node.send_signal(signal.SIGTERM)
    try:
        node.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pass
    for pid in tree:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            continue
