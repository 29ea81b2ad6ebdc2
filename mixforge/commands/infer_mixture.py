"""`mixforge infer-mixture`: what mixture of categories was a BPE tokenizer trained on?

The attack of Hayase et al. 2024 (mixtures/tokenizer_attack): the ordered merge list plus a sample of each
category gives each category's byte share of the tokenizer's training data. Categories are files or globs
(`--category NAME=PATH`), a run's documents grouped by a column (`--run RUN --by COLUMN`), or both.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from mixforge.options import fail

FORMATS = ("table", "json")


def register(app: typer.Typer) -> None:
    app.command("infer-mixture")(infer_mixture_command)


def infer_mixture_command(
    tokenizer: str = typer.Option(..., "--tokenizer", "-t", help="A HF tokenizer.json, a tiktoken rank file or a "
                                                                  "quicktok encoding (o200k_base, cl100k_base, "
                                                                  "llama3, qwen3)."),
    category: list[str] = typer.Option(None, "--category", "-c", help="NAME=PATH: a file, folder or glob of "
                                                                       "text/JSONL/Parquet; repeat per category."),
    run: Path = typer.Option(None, "--run", help="A run directory whose documents, grouped by --by, are categories."),
    by: str = typer.Option(None, "--by", help="Column of --run's documents (lang, cluster, super_cluster, "
                                             "metadata.origin ...)."),
    stage: str = typer.Option(None, help="Stage of --run whose documents count (default: the final one)."),
    sample_bytes: int = typer.Option(None, "--sample-bytes", min=1, help="UTF-8 bytes sampled per category "
                                                                         "(default 8 MiB; the paper: 1 GB)."),
    merges: int = typer.Option(None, "--merges", min=1, help="Use the first N merges only (default: all)."),
    first_merge: int = typer.Option(0, "--first-merge", min=0, help="Constrain merges from this one on (e.g. "
                                                                    "100000 for Llama 3's extension of cl100k)."),
    pattern: str = typer.Option(None, help="Pre-tokenization of a rank file: a regex or an encoding name "
                                           "(default: cl100k_base's)."),
    fmt: str = typer.Option("table", "--format", "-f", help="table or json."),
    output: Path = typer.Option(None, "--output", "-o", help="Also write the json here; under <run>/"
                                                             "tokenizer-mixtures/ the dashboard shows it."),
) -> None:
    """Infer each category's share of a BPE tokenizer's training data from its merge list."""
    from mixtures.domains import DomainError
    from mixtures.tokenizer_attack import DEFAULT_SAMPLE_BYTES, SampleError, TokenizerError, infer_mixture, load_merges
    from mixtures.tokenizer_attack.samples import parse_category, sample_files, sample_run

    if fmt not in FORMATS:
        fail(f"--format must be one of {', '.join(FORMATS)}, not '{fmt}'")
    if (run is None) != (by is None):
        fail("--run and --by go together: a run directory and the column that groups its documents")
    if not category and run is None:
        fail("give categories: --category NAME=PATH (repeat), or --run RUN --by COLUMN")
    size = sample_bytes or DEFAULT_SAMPLE_BYTES
    try:
        bpe = load_merges(tokenizer, pattern=pattern)  # first: a wrong tokenizer is told before any sampling
        samples = sample_run(run, by, size, stage=stage) if run is not None else {}
        for spec in category or []:
            name, path = parse_category(spec)
            if name in samples:
                raise SampleError(f"category '{name}' is given twice")
            samples[name] = sample_files(path, size)
        estimate = infer_mixture(bpe, samples, n_merges=merges, first_merge=first_merge)
    except (TokenizerError, SampleError, DomainError, ValueError) as error:
        fail(" ".join(str(error).split()))
    report = json.dumps(estimate.to_dict(), indent=2)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(report)
    if fmt == "json":
        typer.echo(report)
        return
    typer.echo(f"{'category':24s} {'share':>8s} {'sample bytes':>14s}")
    for name, share in sorted(estimate.proportions.items(), key=lambda item: -item[1]):
        typer.echo(f"{name:24s} {share:8.4f} {estimate.sample_bytes[name]:14,d}")
    typer.echo(f"{estimate.tokenizer}: merges {estimate.first_merge}..{estimate.n_merges - 1} "
               f"({estimate.constrained_merges:,} seen in the samples), slack {estimate.slack:.4g}, "
               f"{estimate.constraints:,} constraints in {estimate.rounds} rounds"
               f"{'' if estimate.converged else ' (not converged)'}")
