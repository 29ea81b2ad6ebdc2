"""`mixforge ui`: the Streamlit dashboard over one run directory.

With PREFECT_API_URL set, the RegMix page launches experiments on that server (deployments of
`mixture_experiment` made there). Without it, the command brings its own: a local Prefect server on
127.0.0.1 (reused if one already answers on --prefect-port, as `mixforge up`'s does) serving
`mixture_experiment` for this run, for as long as the dashboard runs (dashboards/local_prefect.py).
"""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import sys
import tempfile
from contextlib import nullcontext
from pathlib import Path
from urllib.parse import urlparse

import typer

from mixforge import services

LOOPBACK_NAMES = ("localhost",)


def register(app: typer.Typer) -> None:
    app.command("ui")(ui)


def ui(
    run_dir: Path = typer.Argument(..., help="The run directory to show."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0 for every interface)."),
    port: int = typer.Option(8501, help="Port to listen on."),
    token: str = typer.Option(None, envvar="MIXFORGE_UI_TOKEN", show_envvar=True,
                              help="Ask visitors for this token (or ?token=... in the address) before showing "
                                   "anything."),
    prefect_port: int = typer.Option(services.DEFAULT_PREFECT_PORT,
                                     help="Without PREFECT_API_URL: port of the local Prefect server the "
                                          "dashboard starts (or reuses) on 127.0.0.1."),
) -> None:
    """Open the dashboard: runs, SQL console, clusters, scores and RegMix, for RUN_DIR."""
    import dashboards
    from dashboards.access import TOKEN_ENV
    from dashboards.run import RUN_DIR_ENV

    if not run_dir.is_dir():
        typer.echo(f"error: no run directory at {run_dir}", err=True)
        raise typer.Exit(2)
    if not is_loopback(host) and not token:
        typer.echo(f"warning: listening on {host} without --token: anyone who can reach port {port} can read "
                   "this run.", err=True)
    env = {**os.environ, RUN_DIR_ENV: str(run_dir.resolve())}
    env.pop(TOKEN_ENV, None)
    if token:
        env[TOKEN_ENV] = token
    from prefect.settings import PREFECT_API_URL

    from dashboards.local_prefect import local_prefect

    app_path = Path(dashboards.__file__).with_name("app.py")
    command = [sys.executable, "-m", "streamlit", "run", str(app_path), "--server.address", host,
               "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false",
               "--server.fileWatcherType", "none", "--client.toolbarMode", "viewer"]
    shown = "localhost" if is_loopback(host) else host
    # SIGTERM as Ctrl-C, so that the local Prefect server and the serving process stop with the dashboard
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    api = PREFECT_API_URL.value()
    if "PREFECT_API_URL" in services.applied:  # `mixforge up`'s server: serve the experiments on it
        prefect_port, api = urlparse(api).port or prefect_port, None
    prefect = nullcontext(api) if api else local_prefect(run_dir, prefect_port,
                                                         Path(tempfile.mkdtemp(prefix="mixforge-ui-")), typer.echo)
    try:
        with prefect as api:
            env["PREFECT_API_URL"] = api
            typer.echo(f"mixforge ui: http://{shown}:{port}/" + ("?token=<your token>" if token else ""))
            sys.stdout.flush()
            streamlit = subprocess.Popen(command, env=env)
            try:
                streamlit.wait()
            finally:
                if streamlit.poll() is None:
                    streamlit.terminate()
                    streamlit.wait()
    except services.ServiceError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        pass


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
