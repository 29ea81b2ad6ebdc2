"""`mixforge verify CONFIG`: judge candidate data by annealing a base proxy on it (Ultra-FineWeb)."""

from __future__ import annotations

from pathlib import Path

import typer

from mixforge.options import RayAddress, fail


def register(app: typer.Typer) -> None:
    app.command("verify")(verify)


def verify(
    config: Path = typer.Argument(..., help="Verification YAML: run_dir, base, candidates, targets, anneal "
                                            "(see mixtures/verify.py)."),
    out: Path = typer.Option(None, "--out", "-o", help="Output folder instead of the config's; rerun with the "
                                                       "same one to resume."),
    ray_address: RayAddress = None,
) -> None:
    """Anneal a base proxy on a blend of each candidate with base data and compare the target losses with the
    base-only anneal; writes summary.parquet (ranked candidates), results.parquet and verification.json."""
    from flows.config import ConfigError
    from flows.verify import load_verify_config
    from flows.verify import verify as verify_flow
    from mixtures.verify import check_inputs

    try:
        settings = load_verify_config(config, out)
        check_inputs(settings)  # before the flow starts: one line, not Prefect's traceback
    except (ConfigError, ValueError, FileNotFoundError) as error:
        fail(error)
    record = verify_flow(str(config), out=None if out is None else str(out), ray_address=ray_address)
    typer.echo(f"\n{'rank':>4}  {'candidate':<24} {'score':>9} {'spread':>8}  verdict")
    for row in record["summary"]:
        typer.echo(f"{row['rank']:>4}  {row['candidate']:<24} {row['score']:>+9.4f} {row['spread']:>8.4f}  "
                   f"{row['verdict']}")
    typer.echo(f"\nscore: mean change of the target loss against the base-only anneal (nats/token, positive = "
               f"better), over {len(settings.anneal.seeds)} seeds; written to {settings.folder}")
    typer.echo(f"Seeds for a classifier: mixforge score train-classifier --seeds-from {settings.folder} -o model.bin")
