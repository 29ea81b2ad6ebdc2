"""The `curate` flow: read -> language ID + heuristic filters -> exact dedup -> MinHash dedup -> tokenize.

Each stage is a Prefect task (with retries) that runs one Ray task per unit through flows.engine; every unit of a stage
(a part of an input file, then an upstream shard) writes its shards atomically and then its completion
record, and the dedup drivers keep their own unit logs. So rerunning a killed run with the same config and
`out` skips what completed and ends with output identical to an uninterrupted run; Prefect's result cache
plays no part (NO_CACHE). Each stage's fingerprint (flows.engine: upstream stage's, its config sections,
its operators' code) is checked before it runs: a rerun with another config or other inputs stops with
RunMismatch naming what differs, unless `restart`. Exact dedup writes its own stage so that MinHash compares
only documents that survived it (a cluster's kept document is then always live).
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from flows.config import RunConfig, load_config
from flows.engine import code_version, fan_out, fingerprint, init_ray, record_stage, run_stage, start_stage
from flows.ingest import STAGE as READ
from flows.ingest import describe_inputs, plan_read, read_stage
from operators.base import Operator, OperatorChain, StageStats
from operators.dup_clusters import DedupResult
from operators.exact_dedup import exact_dedup
from operators.minhash_dedup import minhash_dedup
from operators.reader import expand_inputs
from operators.tokenize import Tokenize
from storage.manifest import Manifest, describe, load_manifest, package_versions, save_manifest
from storage.shards import ShardWriter, stage_files

FILTER, EXACT, MINHASH, TOKENIZE = "filter", "exact_dedup", "minhash_dedup", "tokenize"
BATCH_ROWS = 4096
FILTER_CODE = ("operators.base", "operators.langid", "operators.text_stats", "operators.gopher_quality",
               "operators.gopher_repetition", "operators.c4_quality", "operators.fineweb_quality",
               "operators.tokenize", "flows.config")
DEDUP_CODE = ("operators.base", "operators.dup_clusters", "operators.exact_dedup", "operators.minhash_dedup")
TOKENIZE_CODE = ("operators.base", "operators.tokenize", "storage.token_shards")
RECOUNT = "tokenize_edited"  # the filter stage's last step: token counts of the (possibly edited) texts kept
TOKEN_SHARDS = "tokens"  # <out>/tokens/part-RRRRR.{tokens.u32,offsets.i64,ids.parquet,json}: storage/token_shards.py


class ChainWorker:
    """One upstream shard through an operator chain: kept rows to the stage's shards, drops to `dropped/`."""

    def __init__(self, operators_for: Callable[[int], list[Operator]]):
        self.operators_for = operators_for

    def __call__(self, rank: int, path: str, writer: ShardWriter) -> dict[str, StageStats]:
        operators = self.operators_for(rank)
        for operator in operators:  # operators built once per process serve many units; count each unit apart
            operator.stats = StageStats()
        chain = OperatorChain(operators)
        for batch in pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS):
            kept, dropped = chain(pa.Table.from_batches([batch]))
            writer.write(kept, dropped)
        return chain.stats()


def filter_operators(config: RunConfig) -> list[Operator]:
    """Language ID, then the enabled filters in the config's order; with token counting, a counter first (so
    every drop is counted in tokens) and one last, since filters may edit what they keep (C4 removes lines)."""
    operators: list[Operator] = []
    if config.langid.enabled:
        operators.append(config.langid.build())
    operators.extend(section.build() for section in config.filters.enabled())
    if config.tokenize.count_before_filters:
        recount = Tokenize(encoding=config.tokenize.encoding, threads=1)
        recount.name = RECOUNT
        operators = [Tokenize(encoding=config.tokenize.encoding, threads=1), *operators, recount]
    return operators


def filter_worker(config: RunConfig) -> ChainWorker:
    operators = filter_operators(config)  # runs inside the Ray worker: models load once per process
    return ChainWorker(lambda rank: operators)


def mark_worker(result: DedupResult) -> ChainWorker:
    return ChainWorker(lambda rank: [result.marker(rank)])


class TokenizeWorker(ChainWorker):
    """Counts every document's tokens and, with a token folder, writes the unit's token shard `part-RRRRR`."""

    def __init__(self, encoding: str, token_dir: str | None):
        self.tokenizer = Tokenize(encoding=encoding, threads=1)  # one CPU per task, as Ray accounts it
        super().__init__(lambda rank: [self.tokenizer])
        self.token_dir = token_dir

    def __call__(self, rank: int, path: str, writer: ShardWriter) -> dict[str, StageStats]:
        if self.token_dir is None:
            return super().__call__(rank, path, writer)
        # the writer clears what a killed attempt at this unit left; a failed one leaves nothing
        with self.tokenizer.shard_writer(Path(self.token_dir) / f"part-{rank:05d}") as sink:
            self.tokenizer.sink = sink
            try:
                stats = super().__call__(rank, path, writer)
            finally:
                self.tokenizer.sink = None
            sink.close()
        return stats


def tokenize_worker(config: RunConfig, out: str) -> TokenizeWorker:
    token_dir = str(Path(out) / TOKEN_SHARDS) if config.tokenize.write_token_shards else None
    return TokenizeWorker(config.tokenize.encoding, token_dir)


@task(name="filter", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def filter_stage(units: list[str], out: str, config: RunConfig, progress: bool) -> list[dict]:
    return run_stage(FILTER, units, out, functools.partial(filter_worker, config), progress=progress)


@task(name="exact-dedup", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def exact_dedup_stage(units: list[str], out: str, progress: bool) -> list[dict]:
    result = exact_dedup(units, Path(out) / "_dedup", tasks=fan_out)
    return run_stage(EXACT, units, out, functools.partial(mark_worker, result), progress=progress)


@task(name="minhash-dedup", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def minhash_dedup_stage(units: list[str], out: str, config: RunConfig, progress: bool) -> list[dict]:
    result = minhash_dedup(units, Path(out) / "_dedup", config.dedup.minhash.build(), tasks=fan_out)
    return run_stage(MINHASH, units, out, functools.partial(mark_worker, result), progress=progress)


@task(name="tokenize", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def tokenize_stage(units: list[str], out: str, config: RunConfig, progress: bool) -> list[dict]:
    return run_stage(TOKENIZE, units, out, functools.partial(tokenize_worker, config, out), progress=progress)


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
    units = finish_stage(manifest, out_dir, READ, units, read_stage(units, str(out_dir), options, progress))

    def check(stage: str, code: tuple[str, ...], outputs: tuple[Path, ...] = (), **config: object) -> None:
        """A stage's fingerprint is the upstream stage's (so any change upstream redoes it), its config and
        its operators' code; checked before the stage runs."""
        nonlocal parts
        parts = {"upstream": fingerprint(parts), "config": config, "code": code_version(*code),
                 "units": [str(Path(unit).relative_to(out_dir)) for unit in units]}
        start_stage(out_dir, stage, parts, list(outputs), restart)

    dump = functools.partial(BaseModel.model_dump, mode="json")
    if filter_operators_configured(run_config):
        check(FILTER, FILTER_CODE, langid=dump(run_config.langid), filters=dump(run_config.filters),
              tokenize=dump(run_config.tokenize))
        units = finish_stage(manifest, out_dir, FILTER, units, filter_stage(units, str(out_dir), run_config, progress))
    if run_config.dedup.exact.enabled:
        check(EXACT, DEDUP_CODE, (out_dir / "_dedup" / "exact",))
        units = finish_stage(manifest, out_dir, EXACT, units, exact_dedup_stage(units, str(out_dir), progress))
    if run_config.dedup.minhash.enabled:
        check(MINHASH, DEDUP_CODE, (out_dir / "_dedup" / "minhash",), minhash=dump(run_config.dedup.minhash))
        records = minhash_dedup_stage(units, str(out_dir), run_config, progress)
        units = finish_stage(manifest, out_dir, MINHASH, units, records)
    check(TOKENIZE, TOKENIZE_CODE, (out_dir / TOKEN_SHARDS,), tokenize=dump(run_config.tokenize))
    finish_stage(manifest, out_dir, TOKENIZE, units, tokenize_stage(units, str(out_dir), run_config, progress))

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


def filter_operators_configured(config: RunConfig) -> bool:
    return config.tokenize.count_before_filters or config.langid.enabled or bool(config.filters.enabled())


def open_run(out_dir: Path, config: RunConfig, inputs: list[dict]) -> Manifest:
    """The run's manifest, new or the one an earlier attempt left (its stages decide what is kept)."""
    manifest = load_manifest(out_dir) or Manifest(command="curate")
    manifest.config = config.model_dump(mode="json")
    manifest.versions = package_versions()
    manifest.inputs = inputs
    save_manifest(manifest, out_dir)
    return manifest


def finish_stage(manifest: Manifest, out_dir: Path, stage: str, units: list[str], records: list[dict]) -> list[str]:
    """Fold the stage into the manifest; return its shards, the next stage's units."""
    record_stage(manifest, stage, units, records)
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
