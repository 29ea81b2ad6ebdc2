"""Scheduled curation: a deployment of `curate` with a cron schedule, served by this process.

`flow.serve` registers the deployment with the Prefect server (PREFECT_API_URL) and executes its runs, each
in a subprocess, until stopped; stopping pauses the schedule. Each run reads the config file afresh. Give
`out` a {date} so that each day's run writes its own directory (a retry of that run resumes it); without
one every run shares a directory, and once it is complete later runs have nothing left to do.
"""

from __future__ import annotations

from pathlib import Path

from flows.config import load_config
from flows.curate import curate


class NoPrefectServer(RuntimeError):
    """Schedules need a Prefect server; the ephemeral one that runs flows without a server has no scheduler."""


def deployment_parameters(config_path: str | Path, out: str, ray_address: str | None = None) -> dict:
    """The curate parameters of every scheduled run: absolute paths, since runs start in other processes."""
    config_path = Path(config_path).resolve()
    load_config(config_path)  # a bad config fails now, not at the first scheduled run
    parameters = {"config": str(config_path), "out": str(Path(out).resolve()), "progress": False}
    if ray_address:
        parameters["ray_address"] = ray_address
    return parameters


def serve_curate(config_path: str | Path, out: str, *, cron: str, name: str = "curate", timezone: str | None = None,
                 ray_address: str | None = None) -> None:
    """Create (or update) the deployment `curate/<name>` on `cron` and execute its runs until interrupted."""
    from prefect.schedules import Cron
    from prefect.settings import PREFECT_API_URL
    from prefect.types.entrypoint import EntrypointType

    if not PREFECT_API_URL.value():
        raise NoPrefectServer("no Prefect server to schedule on: start one (`prefect server start`) and set "
                              "PREFECT_API_URL (e.g. http://127.0.0.1:4200/api)")
    curate.serve(
        name=name,
        schedules=[Cron(cron, timezone=timezone)],
        parameters=deployment_parameters(config_path, out, ray_address),
        description=f"mixforge curate {Path(config_path).name} into {out}",
        tags=["mixforge", "curate"],
        entrypoint_type=EntrypointType.MODULE_PATH,  # importable from anywhere: the package is installed
    )
