"""The `curate` flow: read -> language ID + heuristic filters -> exact dedup -> MinHash dedup -> tokenize.

The stages run as two passes over the data, with dedup's global steps between them (flows.engine's fused
passes, StagedChain): the first reads each unit (a part of an input file) and runs language ID and the
filters on its documents as they are read, writing only the filter stage's survivors; exact dedup and then
MinHash dedup find their duplicates on those shards (MinHash among exact dedup's survivors, so a cluster's
kept document is always live); the last pass marks both and counts tokens, writing the final shards. Every
stage's drops go to its own `dropped/<stage>` and its counts to its own manifest entry, as if it had run
alone; `keep_stage_copies` also writes each stage's survivors (`stage_<name>` views are made from the
written stages and the drops otherwise, storage.catalog).

Each pass is a Prefect task (with retries) that runs one Ray task per unit through flows.engine; every unit
writes its shards atomically and then its completion record, and the dedup drivers keep their own unit logs.
So rerunning a killed run with the same config and `out` skips what completed and ends with output
identical to an uninterrupted run; Prefect's result cache plays no part (NO_CACHE). Each stage's
fingerprint (flows.engine: upstream stage's, its config sections, its operators' code) is checked before
it runs: a rerun with another config or other inputs stops with RunMismatch naming what differs, unless
`restart`.
"""

from __future__ import annotations

import functools
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from flows.config import RunConfig, load_config
from flows.engine import (
    code_version,
    fan_out,
    fingerprint,
    init_ray,
    record_stage,
    run_stage,
    split_records,
    start_stage,
)
from flows.ingest import describe_inputs, plan_read, unique_ids_once
from flows.passes import (
    FILTER,
    READ,
    RECOUNT,
    TOKENIZE,
    FinalWorker,
    filter_operators_configured,
    read_filter_worker,
)
from operators.dup_clusters import DedupResult
from operators.exact_dedup import exact_dedup
from operators.minhash_dedup import minhash_dedup
from operators.reader import expand_inputs
from operators.tokenize import Tokenize
from storage.manifest import Manifest, describe, load_manifest, package_versions, save_manifest
from storage.shards import stage_files

EXACT, MINHASH = "exact_dedup", "minhash_dedup"
FILTER_CODE = ("operators.base", "operators.langid", "operators.text_stats", "operators.gopher_quality",
               "operators.gopher_repetition", "operators.c4_quality", "operators.fineweb_quality",
               "operators.tokenize", "flows.config", "flows.passes")
DEDUP_CODE = ("operators.base", "operators.dup_clusters", "operators.exact_dedup", "operators.minhash_dedup")
TOKENIZE_CODE = ("operators.base", "operators.tokenize", "storage.token_shards")
TOKEN_SHARDS = "tokens"  # <out>/tokens/part-RRRRR.{tokens.u32,offsets.i64,ids.parquet,json}: storage/token_shards.py


@task(name="read-and-filter", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def read_filter_pass(units: list[str], out: str, config: RunConfig, reader_options: dict,
                     progress: bool) -> list[dict]:
    """Read and filter in one pass per unit; once all are done, ids unique across units (flows.ingest)."""
    fused = filter_operators_configured(config)
    stage = FILTER if fused else READ
    records = run_stage(stage, units, out, functools.partial(read_filter_worker, config, reader_options),
                        also=(READ,) if fused else (), progress=progress)
    once = [("dropped", READ), ("shards", FILTER), ("dropped", FILTER)] if fused else [("shards", READ),
                                                                                        ("dropped", READ)]
    copies = [[("shards", READ), ("dropped", READ)]] if fused and config.keep_stage_copies else []
    return unique_ids_once(out, stage, records, len(units), [*copies, once], reader_options)


@task(name="exact-dedup", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def exact_dedup_stage(units: list[str], out: str) -> DedupResult:
    return exact_dedup(units, Path(out) / "_dedup", tasks=fan_out)


@task(name="minhash-dedup", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def minhash_dedup_stage(units: list[str], out: str, config: RunConfig, after: DedupResult | None) -> DedupResult:
    """Near duplicates among the documents exact dedup keeps (`after`), found on the same shards."""
    return minhash_dedup(units, Path(out) / "_dedup", config.dedup.minhash.build(), after=after, tasks=fan_out)


@task(name="dedup-and-tokenize", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def final_pass(units: list[str], out: str, config: RunConfig, dedups: list[DedupResult], progress: bool) -> list[dict]:
    token_dir = str(Path(out) / TOKEN_SHARDS) if config.tokenize.write_token_shards else None
    worker = functools.partial(FinalWorker, dedups, config.tokenize.encoding, token_dir, config.keep_stage_copies)
    return run_stage(TOKENIZE, units, out, worker, also=tuple(d.name for d in dedups),
                     progress=progress)


@flow(name="curate", log_prints=True)
def curate(config: RunConfig | str, out: str, ray_address: str | None = None, progress: bool = True,
           restart: bool = False) -> dict:
    """Curate the config's inputs into `<out>/shards/tokenize`, resuming whatever an earlier attempt finished.

    `out` may name the scheduled date ({date}: YYYY-MM-DD, {time}: HHMMSS, UTC), so each scheduled run of a
    deployment writes its own directory and a retry of the same run resumes it. A run directory made from
    other inputs or another config is refused (RunMismatch, before the stage runs) unless `restart`, which
    redoes the stages whose fingerprint changed.
    """
    run_config = config if isinstance(config, RunConfig) else load_config(config)
    files = expand_inputs(run_config.inputs.paths)
    out_dir = Path(scheduled_path(out))
    out_dir.mkdir(parents=True, exist_ok=True)
    inputs = describe_inputs(files)
    manifest = open_run(out_dir, run_config, inputs)
    init_ray(ray_address or run_config.ray.address, run_config.ray.num_cpus)

    section = run_config.inputs
    options = {"text_key": section.text_key, "id_key": section.id_key, "max_doc_bytes": section.max_doc_bytes}
    units, parts = plan_read(out_dir, files, inputs, options, section.unit_bytes, restart)

    def check(stage: str, code: tuple[str, ...], outputs: tuple[Path, ...] = (), **config: object) -> None:
        """A stage's fingerprint is the upstream stage's (so any change upstream redoes it), its config and
        its operators' code; checked before the stage runs."""
        nonlocal parts
        parts = {"upstream": fingerprint(parts), "config": config, "code": code_version(*code),
                 "units": [str(Path(unit).relative_to(out_dir)) if Path(unit).is_relative_to(out_dir) else unit
                           for unit in units]}
        start_stage(out_dir, stage, parts, list(outputs), restart)

    dump = functools.partial(BaseModel.model_dump, mode="json")
    fused = filter_operators_configured(run_config)
    if fused:
        check(FILTER, FILTER_CODE, langid=dump(run_config.langid), filters=dump(run_config.filters),
              tokenize=dump(run_config.tokenize), copies=run_config.keep_stage_copies)
    records = read_filter_pass(units, str(out_dir), run_config, options, progress)
    record_stage(manifest, READ, units, split_records(records, lambda names: names[:1]))  # the reader
    if fused:
        record_stage(manifest, FILTER, units, split_records(records, lambda names: names[1:]))
    units = finish_stage(manifest, out_dir, FILTER if fused else READ, units)

    dedups: list[DedupResult] = []
    if run_config.dedup.exact.enabled:
        check(EXACT, DEDUP_CODE, (out_dir / "_dedup" / "exact",))
        dedups.append(exact_dedup_stage(units, str(out_dir)))
    if run_config.dedup.minhash.enabled:
        check(MINHASH, DEDUP_CODE, (out_dir / "_dedup" / "minhash",), minhash=dump(run_config.dedup.minhash))
        dedups.append(minhash_dedup_stage(units, str(out_dir), run_config, dedups[0] if dedups else None))
    check(TOKENIZE, TOKENIZE_CODE, (out_dir / TOKEN_SHARDS,), tokenize=dump(run_config.tokenize),
          copies=run_config.keep_stage_copies)
    records = final_pass(units, str(out_dir), run_config, dedups, progress)
    for dedup in dedups:
        record_stage(manifest, dedup.name, units,
                     split_records(records, lambda names, name=dedup.name: [name]))
    record_stage(manifest, TOKENIZE, units, split_records(records, lambda names: [Tokenize.name]))
    finish_stage(manifest, out_dir, TOKENIZE, units)

    manifest.final_stage = TOKENIZE
    save_manifest(manifest, out_dir)
    report = funnel_markdown(manifest, out_dir)
    create_markdown_artifact(markdown=report, key="curate-funnel", description=f"curate run {manifest.run_id}")
    print(describe(manifest))
    return {name: record.counts for name, record in manifest.stages.items()}


def scheduled_path(out: str) -> str:
    """`out` with {date} and {time} filled from the flow run's scheduled start (now, outside a flow run)."""
    if "{" not in out:
        return out
    from prefect.runtime import flow_run

    when = (flow_run.scheduled_start_time or datetime.now(UTC)).astimezone(UTC)
    try:
        return out.format(date=when.strftime("%Y-%m-%d"), time=when.strftime("%H%M%S"))
    except (KeyError, IndexError, ValueError):
        raise ValueError(f"--out {out!r}: the only placeholders are {{date}} and {{time}}") from None


def open_run(out_dir: Path, config: RunConfig, inputs: list[dict]) -> Manifest:
    """The run's manifest, new or the one an earlier attempt left (its stages decide what is kept)."""
    manifest = load_manifest(out_dir) or Manifest(command="curate")
    manifest.config = config.model_dump(mode="json")
    manifest.versions = package_versions()
    manifest.inputs = inputs
    save_manifest(manifest, out_dir)
    return manifest


def finish_stage(manifest: Manifest, out_dir: Path, stage: str, units: list[str]) -> list[str]:
    """Save the manifest with the pass's stages folded in; return the pass's shards, the next pass's units."""
    counts = manifest.stages[stage].counts
    counter = manifest.stages[stage].operators.get(Tokenize.name)
    if counter and not counts["tokens_in"]:
        counts["tokens_in"] = counter["tokens_out"]  # the stage counted tokens first: its input in tokens
    save_manifest(manifest, out_dir)
    return [str(path) for path in stage_files(out_dir, "shards", stage)]


def drops_by_reason(out_dir: Path, stage: str) -> dict[str, tuple[int, int]]:
    """reason -> (documents, tokens) of a stage's dropped shards (tokens 0 where they were not counted)."""
    docs: Counter = Counter()
    tokens: Counter = Counter()
    for path in stage_files(out_dir, "dropped", stage):
        columns = [c for c in ("drop_reason", "n_tokens") if c in pq.read_schema(path).names]
        table = pq.read_table(path, columns=columns)
        if "n_tokens" not in columns:
            docs.update(table.column("drop_reason").to_pylist())
            continue
        for row in table.group_by("drop_reason").aggregate([("n_tokens", "sum"), ("n_tokens", "count")]).to_pylist():
            docs[row["drop_reason"]] += row["n_tokens_count"]
            tokens[row["drop_reason"]] += row["n_tokens_sum"] or 0
    return {reason: (docs[reason], tokens[reason]) for reason in docs}


def funnel_markdown(manifest: Manifest, out_dir: Path) -> str:
    """The run's funnel: documents and tokens in and out of each stage and step, and every drop by reason."""
    lines = [f"# curate run `{manifest.run_id}`", "",
             "| stage | docs in | docs out | dropped | quarantined | tokens in | tokens out | seconds |",
             "|---|--:|--:|--:|--:|--:|--:|--:|"]
    for name, record in manifest.stages.items():
        c = record.counts
        lines.append(f"| {name} | {c['docs_in']:,} | {c['docs_out']:,} | {sum(c['dropped'].values()):,} | "
                     f"{c['quarantined']:,} | {_tokens(c['tokens_in'])} | {_tokens(c['tokens_out'])} | "
                     f"{record.seconds:,.1f} |")
    if any(RECOUNT in record.operators for record in manifest.stages.values()):
        lines += ["", f"Tokens are counted as documents enter the filter stage and again as they leave it "
                      f"(`{RECOUNT}`): filters may shorten what they keep (C4 removes lines), so there a stage's "
                      "tokens in - out - dropped is what such edits removed."]
    lines += ["", "## Steps", "", "| stage | step | docs in | docs out | tokens out | docs/s per core |",
              "|---|---|--:|--:|--:|--:|"]
    for name, record in manifest.stages.items():
        for step, s in record.operators.items():
            rate = f"{s['docs_in'] / s['seconds']:,.0f}" if s["seconds"] else "-"
            lines.append(f"| {name} | {step} | {s['docs_in']:,} | {s['docs_out']:,} | {_tokens(s['tokens_out'])} | "
                         f"{rate} |")
    lines += ["", "## Drops by reason", "", "| stage | reason | docs | tokens | share of stage input |",
              "|---|---|--:|--:|--:|"]
    for name, record in manifest.stages.items():
        for reason, (docs, tokens) in sorted(drops_by_reason(out_dir, name).items(), key=lambda kv: -kv[1][0]):
            share = docs / record.counts["docs_in"] if record.counts["docs_in"] else 0.0
            lines.append(f"| {name} | {reason} | {docs:,} | {_tokens(tokens)} | {share:.1%} |")
    return "\n".join(lines) + "\n"


def _tokens(n: int) -> str:
    return f"{n:,}" if n else "-"
