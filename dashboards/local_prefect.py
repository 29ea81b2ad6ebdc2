"""The Prefect server `mixforge ui` brings when none is configured, and the `mixture_experiment` deployment it
serves for the dashboard's lifetime, so the RegMix page's Launch button runs a real experiment.

Without PREFECT_API_URL, `local_prefect` reuses a Prefect server already answering on 127.0.0.1:<port> or
starts one there (`prefect server start --host 127.0.0.1`), then starts `python -m dashboards.local_prefect
RUN` which serves `mixture_experiment` as the deployment `ui-<run name>` (defaults: the run's own experiment
settings, so one click reruns it), and stops what it started when the dashboard stops. Both processes get
SIGTERM if the `mixforge ui` process dies without cleaning up (Linux), so no server outlives it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

EXPERIMENT_FLOW = "mixture_experiment"


def deployment_name(run_dir: Path) -> str:
    return f"ui-{Path(run_dir).resolve().name}"


def deployment_defaults(run_dir: Path) -> dict:
    """The served deployment's parameters: an experiment config on this run with the settings of the run's
    own mixture experiment (the pipeline's `mixture:` section and the targets it found), so the launch form
    starts from what worked on this run."""
    from storage.manifest import load_manifest

    manifest = load_manifest(run_dir)
    recorded = manifest.config if manifest else {}
    section = dict((recorded.get("pipeline") or {}).get("mixture") or {})  # the pipeline's `mixture:` section
    targets = (recorded.get("mixture") or {}).get("targets") or section.pop("targets", [])  # found, or given
    config = {**section, "corpus": {**section.get("corpus", {}), "run_dir": str(Path(run_dir).resolve())}}
    return {"config": {**config, "targets": targets} if targets else config}


def serve(run_dir: Path) -> None:
    """Serve `mixture_experiment` for this run until stopped (each launched run executes in a subprocess)."""
    from prefect.types.entrypoint import EntrypointType

    from flows.mixture_experiment import mixture_experiment

    mixture_experiment.serve(name=deployment_name(run_dir), parameters=deployment_defaults(run_dir),
                             description=f"mixture experiments on {Path(run_dir).resolve()}, from mixforge ui",
                             tags=["mixforge", "ui"], entrypoint_type=EntrypointType.MODULE_PATH)


def deployment_ready(api: str, name: str) -> bool:
    import httpx

    try:
        found = httpx.post(f"{api}/deployments/filter", json={"deployments": {"name": {"any_": [name]}}}, timeout=5)
        return found.status_code == 200 and any(d.get("name") == name for d in found.json())
    except (httpx.HTTPError, ValueError):
        return False


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the parent dies (Linux), so a killed `mixforge ui` leaves no server."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _serve_process(run_dir: Path, log: Path, env: dict[str, str]) -> subprocess.Popen:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "dashboards.local_prefect", str(Path(run_dir).resolve())],
                                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                preexec_fn=_die_with_parent)


@contextmanager
def local_prefect(run_dir: Path, port: int, log_dir: Path, echo: Callable[[str], None]) -> Iterator[str]:
    """A Prefect server on 127.0.0.1:`port` (reused if one answers there) serving `mixture_experiment` for
    `run_dir`; yields its API URL and stops, on exit, what it started (ServiceError: what did not start)."""
    from mixforge.services import api_healthy, prefect_api, prefect_server, stop, wait_until

    api = prefect_api(port)
    env = {**os.environ, "PREFECT_API_URL": api, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    log_dir.mkdir(parents=True, exist_ok=True)
    started: list[subprocess.Popen] = []
    try:
        if api_healthy(api):
            echo(f"Prefect: reusing the server at {api}")
        else:
            echo(f"Prefect: starting a local server at {api} (log: {log_dir / 'prefect-server.log'}) ...")
            started.extend(filter(None, [prefect_server(port, log_dir / "prefect-server.log", env, _die_with_parent)]))
        name = deployment_name(run_dir)
        started.append(_serve_process(run_dir, log_dir / "serve.log", env))
        wait_until(lambda: deployment_ready(api, name), started[-1], f"serving {EXPERIMENT_FLOW}/{name}",
                   log_dir / "serve.log")
        echo(f"Prefect: serving {EXPERIMENT_FLOW}/{name} (UI: {api.removesuffix('/api')}; log: "
             f"{log_dir / 'serve.log'})")
        yield api
    finally:
        for process in reversed(started):
            stop(process, grace=20)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: python -m dashboards.local_prefect RUN_DIR (got {json.dumps(sys.argv[1:])})")
    serve(Path(sys.argv[1]))
