"""The curate and ingest flows' passes as they run inside the Ray workers, kept apart from the flow modules.

A Ray task's callable is unpickled in the worker by importing the module that defines it; the flow modules
import Prefect, 1.2 s of every cold worker's start for nothing a worker runs. This module imports operators,
storage, flows.config and flows.engine only (tests/test_engine.py checks that Prefect stays out).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from flows.config import RunConfig
from flows.engine import ShardWorker, StagedChain
from operators.base import Operator, StageStats, split_dropped
from operators.dup_clusters import DedupResult
from operators.reader import plan_units, reader_for, split_unit
from operators.tokenize import Tokenize
from storage.shards import ShardWriter

READ, FILTER, TOKENIZE = "ingest", "filter", "tokenize"
RECOUNT = "tokenize_edited"  # the filter stage's last step: token counts of the (possibly edited) texts kept
WARM_UP_TEXT = "A short English paragraph, run once through every filter of the first pass to load its models.\n" * 4


class ReadWorker:
    """Reads one unit (an input file or a part of one) into the unit's shards: good documents, drops
    (empty text) and quarantine; or, with `then` (the curate flow's fused pass), hands the documents on to
    the next stages' operators, and writes only the read stage's drops and quarantine (its documents too
    with `then.copies`)."""

    def __init__(self, reader_options: dict | None = None, then: StagedChain | None = None):
        self.reader_options = reader_options or {}
        self.then = then

    def __call__(self, rank: int, path: str, writer: ShardWriter) -> dict[str, StageStats]:
        reader = reader_for(split_unit(path)[0], **self.reader_options)
        if self.then:
            self.then.reset()
        own = writer.for_stage(READ)
        for batch in reader(path):
            kept, dropped = split_dropped(batch.documents)
            own.write(kept if self.then is None or self.then.copies else None, dropped, batch.quarantine)
            if self.then:
                self.then.write(kept, writer)
        return {reader.name: reader.stats, **(self.then.stats() if self.then else {})}


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


def filter_operators_configured(config: RunConfig) -> bool:
    return config.tokenize.count_before_filters or config.langid.enabled or bool(config.filters.enabled())


def read_filter_worker(config: RunConfig, reader_options: dict) -> ReadWorker:
    """The first pass: read a unit and run the filter stage's operators on its documents as they are read
    (built inside the Ray worker: models load once per process)."""
    then = StagedChain([(FILTER, filter_operators(config))], copies=config.keep_stage_copies)
    return ReadWorker(reader_options, then if filter_operators_configured(config) else None)


def warm_up(config: RunConfig) -> None:
    """Load in this worker process what the curate passes load on their first documents (spaCy and its English
    pipeline, language ID's model, the token encoding), before the run needs them: flows.engine.start_services
    runs it on every worker while Prefect's server and then the flow start. Every operator sees the text,
    dropped or not."""
    batch = pa.table({"id": ["warm-up"], "text": pa.array([WARM_UP_TEXT], pa.large_string())})
    for operator in filter_operators(config):
        operator.process(batch)
    Tokenize(encoding=config.tokenize.encoding, threads=1)


def warm_up_workers(config: RunConfig, files: list[str]) -> int | None:
    """How many workers the first pass can keep busy: its units, as the flow will plan them from `files` (the
    expanded inputs the CLI checked; None when they cannot be planned now: a hint, so any failure is left to
    the flow, which reports it)."""
    try:
        return len(plan_units(files, config.inputs.unit_bytes))
    except Exception:
        return None


class FinalWorker(ShardWorker):
    """The last pass over one filter shard: the dedup marks found for it (exact, then MinHash) and token
    counting, each stage's drops to its own folder, the survivors to `shards/tokenize`; with a token folder,
    also the unit's token shard `part-RRRRR`."""

    def __init__(self, dedups: list[DedupResult], encoding: str, token_dir: str | None, copies: bool):
        self.tokenizer = Tokenize(encoding=encoding, threads=1)  # one CPU per task, as Ray accounts it
        self.token_dir = token_dir
        super().__init__(lambda rank: StagedChain([*[(dedup.name, [dedup.marker(rank)]) for dedup in dedups],
                                                   (TOKENIZE, [self.tokenizer])], copies=copies))

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

