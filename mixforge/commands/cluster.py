"""`mixforge cluster` (CLIMB clustering of a run) and `mixforge embed-model` (the cached embedder)."""

from __future__ import annotations

from pathlib import Path

import typer

from mixforge.options import RayAddress, Restart, RunDir, load_sections


def register(app: typer.Typer) -> None:
    app.command("cluster")(cluster)
    app.command("embed-model")(embed_model)


def cluster(
    out: RunDir,
    config: Path = typer.Argument(None, help="YAML with `cluster:` and `embed:` sections (both optional; a full "
                                             "run config works too). Omit for the defaults."),
    ray_address: RayAddress = None,
    restart: Restart = False,
) -> None:
    """Embed, k-means, prune and merge a run's documents into clusters and super-clusters (CLIMB)."""
    from flows.cluster import ClusterConfig, EmbedConfig
    from flows.cluster import cluster as cluster_flow

    cluster_config, embed_config = ClusterConfig(), EmbedConfig()
    if config is not None:
        sections = load_sections(config, {"cluster": ClusterConfig, "embed": EmbedConfig})
        cluster_config, embed_config = sections["cluster"], sections["embed"]
    result = cluster_flow(out=str(out), config=cluster_config, embed=embed_config, ray_address=ray_address,
                          restart=restart)
    typer.echo(f"\n{result['documents']:,} documents in {result['clusters']} clusters, "
               f"{result['super_clusters']} super-clusters, {result['pruned_documents']:,} pruned.")
    typer.echo(f"Look: mixforge sql {out} \"SELECT cluster, super_cluster, size, terms FROM clusters\"")
    typer.echo(f"Map: {Path(out) / 'clusters' / 'projection.html'}")


def embed_model(
    build: bool = typer.Option(False, "--build", help="Distil the model now if it is not cached (~2 min)."),
    force: bool = typer.Option(False, "--force", help="Distil again even if cached."),
) -> None:
    """Where the model2vec embedder (distilled from the packaged all-MiniLM-L6-v2) is cached; --build makes it."""
    from operators.embed import build_static_model, static_model_path

    path = static_model_path()
    if build or force:
        path = build_static_model(force=force)
    if not (path / "model.safetensors").exists():
        typer.echo(f"not built yet: {path} (run `mixforge embed-model --build`, ~2 minutes once)")
        raise typer.Exit(1)
    typer.echo(str(path))
