"""`mixforge ingest` and `mixforge manifest`: make a run, and say what it did."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest)
    app.command("manifest")(manifest)


def ingest(
    inputs: list[str] = typer.Argument(..., help="Files, directories, globs or fsspec URLs (s3://, gs://, ...)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory to write shards and manifest into."),
    ray_address: str = typer.Option(None, "--ray-address", envvar="RAY_ADDRESS",
                                     help="Ray cluster to run on (default: an embedded local Ray)."),
    text_key: str = typer.Option("text", help="Field holding the text in JSONL/Parquet inputs."),
    max_doc_mb: float = typer.Option(8.0, help="Quarantine documents larger than this (MiB)."),
) -> None:
    """Read inputs into Parquet shards (`<out>/shards/ingest`), quarantine what cannot be read."""
    from flows.ingest import ingest as ingest_flow

    ingest_flow(inputs=list(inputs), out=str(out), ray_address=ray_address, text_key=text_key,
                max_doc_bytes=int(max_doc_mb * 2**20))
    typer.echo(f"\nQuery it: mixforge sql {out} \"SELECT count(*) FROM docs\"")


def manifest(run_dir: Path = typer.Argument(..., help="A run directory.")) -> None:
    """Print what a run did, in plain words: inputs, stages, counts, drops and quarantine."""
    from storage.manifest import describe, load_manifest

    loaded = load_manifest(run_dir)
    if loaded is None:
        typer.echo(f"error: no manifest.json in {run_dir}", err=True)
        raise typer.Exit(2)
    typer.echo(describe(loaded))
