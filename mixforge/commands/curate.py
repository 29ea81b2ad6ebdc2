"""`mixforge curate`, `mixforge init-config` and `mixforge deploy`: run, configure and schedule curation."""

from __future__ import annotations

import functools
from pathlib import Path

import typer

from mixforge.options import Progress, RayAddress, Restart, RunDir, fail, print_summary


def register(app: typer.Typer) -> None:
    app.command("curate")(curate)
    app.command("init-config")(init_config)
    app.command("deploy")(deploy)


def curate(
    out: RunDir,
    config: Path = typer.Argument(..., help="Run config (YAML); `mixforge init-config` prints a documented one."),
    ray_address: RayAddress = None,
    progress: Progress = True,
    restart: Restart = False,
) -> None:
    """Read, language-ID, filter, dedup and tokenize the config's inputs into `<out>/shards/tokenize`."""
    from flows.config import ConfigError, load_config
    from flows.engine import RunMismatch, start_services
    from flows.passes import warm_up, warm_up_workers
    from operators.reader import expand_inputs

    try:
        run_config = load_config(config)
        files = expand_inputs(run_config.inputs.paths)  # before the flow: one line, not Prefect's traceback
        with start_services(ray_address or run_config.ray.address, run_config.ray.num_cpus, warm_up, (run_config,),
                            warm_workers=functools.partial(warm_up_workers, run_config, files)):
            from flows.curate import curate as curate_flow  # Prefect's import, after its server's start

            curate_flow(config=run_config, out=out, ray_address=ray_address, progress=progress, restart=restart)
    except (ConfigError, RunMismatch, FileNotFoundError) as error:  # what the user can fix: bad config or paths
        fail(error)
    print_summary(out)
    typer.echo(f"\nQuery it: mixforge sql {out} \"SELECT drop_reason, count(*) FROM dropped GROUP BY 1\"")


def init_config(
    inputs: list[str] = typer.Argument(None, help="Input paths to put in the config (default: data/sample)."),
) -> None:
    """Print the default run config, every key documented; redirect it to a file and edit."""
    from flows.config import default_yaml

    typer.echo(default_yaml(list(inputs) if inputs else None), nl=False)


def deploy(
    config: Path = typer.Argument(..., help="Run config (YAML) each scheduled run reads afresh."),
    out: str = typer.Option(..., "--out", "-o", help="Run directory per run; may contain {date} and {time}."),
    cron: str = typer.Option("0 3 * * *", help="When to run (cron, in --timezone)."),
    name: str = typer.Option("curate", help="Deployment name (the deployment is curate/NAME)."),
    timezone: str = typer.Option(None, help="Time zone of the cron schedule (default UTC)."),
    ray_address: RayAddress = None,
) -> None:
    """Create a deployment of `curate` on a cron schedule and execute its runs here until interrupted.

    Needs a Prefect server: PREFECT_API_URL (e.g. `prefect server start`, then
    PREFECT_API_URL=http://127.0.0.1:4200/api).
    """
    from flows.config import ConfigError
    from flows.deploy import NoPrefectServer, serve_curate

    try:
        serve_curate(config, out, name=name, cron=cron, timezone=timezone, ray_address=ray_address)
    except (ConfigError, NoPrefectServer) as error:
        fail(error)
