"""`mixforge run`, `mixforge ingest` and `mixforge manifest`: make a run, and say what it did."""

from __future__ import annotations

import functools
from pathlib import Path

import typer

from mixforge.options import Progress, RayAddress, Restart, RunDir, fail, print_summary


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    app.command("ingest")(ingest)
    app.command("manifest")(manifest)


def run(
    out: RunDir,
    config: Path = typer.Argument(..., help="Pipeline config (YAML): curation sections plus optional cluster, "
                                            "score, select and mixture sections."),
    ray_address: RayAddress = None,
    progress: Progress = True,
) -> None:
    """Run the whole pipeline from one config: curate, then cluster, score, select, mixture experiment."""
    from flows.config import ConfigError, load_config
    from flows.engine import RunMismatch, start_services
    from flows.passes import warm_up, warm_up_workers
    from flows.pipeline import PipelineConfig, pipeline
    from operators.reader import expand_inputs

    try:
        pipeline_config = load_config(config, PipelineConfig)
        files = expand_inputs(pipeline_config.inputs.paths)  # before the flow: one line, not Prefect's traceback
        warm_workers = functools.partial(warm_up_workers, pipeline_config, files)
        with start_services(ray_address or pipeline_config.ray.address, pipeline_config.ray.num_cpus, warm_up,
                            (pipeline_config,), warm_workers=warm_workers):
            pipeline(config=pipeline_config, out=out, ray_address=ray_address, progress=progress)
    except (ConfigError, RunMismatch, FileNotFoundError) as error:  # what the user can fix: bad config or paths
        fail(error)
    print_summary(out)
    typer.echo(f"\nLook at it: mixforge manifest {out}   |   mixforge sql {out}   |   mixforge ui {out}")


def ingest(
    out: RunDir,
    inputs: list[str] = typer.Argument(..., help="Files, directories, globs or fsspec URLs (s3://, gs://, ...)."),
    ray_address: RayAddress = None,
    text_key: str = typer.Option("text", help="Field holding the text in JSONL/Parquet inputs."),
    id_key: str = typer.Option("id", help="Field holding each document's own id in JSONL/Parquet inputs (kept as "
                                           "its id; documents without one get a generated id)."),
    max_doc_mb: float = typer.Option(8.0, help="Quarantine documents larger than this (MiB)."),
    unit_mb: float = typer.Option(64.0, help="Target size of a unit of work (MiB): larger inputs are split."),
    restart: Restart = False,
) -> None:
    """Read inputs into Parquet shards (`<out>/shards/ingest`), quarantine what cannot be read."""
    from flows.engine import start_services
    from operators.reader import expand_inputs

    expand_inputs(list(inputs))  # a missing input or unknown format is one line before the flow starts
    with start_services(ray_address):
        from flows.ingest import ingest as ingest_flow  # Prefect's import, after its server's start

        ingest_flow(inputs=list(inputs), out=str(out), ray_address=ray_address, text_key=text_key, id_key=id_key,
                    max_doc_bytes=int(max_doc_mb * 2**20), unit_bytes=int(unit_mb * 2**20), restart=restart)
    print_summary(out)
    typer.echo(f"\nQuery it: mixforge sql {out} \"SELECT count(*) FROM docs\"")


def manifest(run_dir: Path = typer.Argument(..., help="A run directory.")) -> None:
    """Print what a run did, in plain words: inputs, stages, counts, drops and quarantine."""
    from storage.manifest import describe, load_manifest

    loaded = load_manifest(run_dir)
    if loaded is None:
        typer.echo(f"error: no manifest.json in {run_dir}", err=True)
        raise typer.Exit(2)
    typer.echo(describe(loaded))
