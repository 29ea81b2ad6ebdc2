"""`mixforge ui`: the Streamlit dashboard over one run directory."""

from __future__ import annotations

import ipaddress
import os
import sys
from pathlib import Path

import typer

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
    shown = "localhost" if is_loopback(host) else host
    typer.echo(f"mixforge ui: http://{shown}:{port}/" + ("?token=<your token>" if token else ""))
    app_path = Path(dashboards.__file__).with_name("app.py")
    command = [sys.executable, "-m", "streamlit", "run", str(app_path), "--server.address", host,
               "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false",
               "--server.fileWatcherType", "none", "--client.toolbarMode", "viewer"]
    sys.stdout.flush()
    os.execve(sys.executable, command, env)  # Streamlit takes over this process (and its signals)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
