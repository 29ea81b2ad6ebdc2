"""The `ingest` flow: read inputs (WARC, WET, JSONL, Parquet; local or fsspec) into document shards."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from flows.engine import init_ray, record_stage, run_stage
from operators.base import StageStats, split_dropped
from operators.reader import expand_inputs, reader_for
from storage.manifest import Manifest, describe, describe_input, load_manifest, package_versions, save_manifest
from storage.shards import ShardWriter

STAGE = "ingest"


class ReadWorker:
    """Reads one input file into the unit's shards: good documents, drops (empty text) and quarantine."""

    def __init__(self, reader_options: dict | None = None):
        self.reader_options = reader_options or {}

    def __call__(self, rank: int, path: str, writer: ShardWriter) -> dict[str, StageStats]:
        reader = reader_for(path, **self.reader_options)
        for batch in reader(path):
            kept, dropped = split_dropped(batch.documents)
            writer.write(kept, dropped, batch.quarantine)
        return {reader.name: reader.stats}


@task(name="describe-inputs")
def describe_inputs(files: list[str]) -> list[dict]:
    return [describe_input(path).model_dump() for path in files]


@task(name="read", retries=2, retry_delay_seconds=5)
def read_stage(files: list[str], out: str, reader_options: dict, progress: bool) -> list[dict]:
    return run_stage(STAGE, files, out, lambda: ReadWorker(reader_options), progress=progress)


@flow(name="ingest", log_prints=True)
def ingest(inputs: list[str], out: str, ray_address: str | None = None, text_key: str = "text",
           id_key: str | None = "id",
           max_doc_bytes: int = 8 * 2**20, progress: bool = True) -> dict:
    """Read every input into `<out>/shards/ingest`, quarantining what cannot be read; write the manifest."""
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = expand_inputs(inputs)
    manifest = load_manifest(out_dir) or Manifest(command="ingest")
    manifest.config = {"ingest": {"inputs": inputs, "text_key": text_key, "id_key": id_key,
                                  "max_doc_bytes": max_doc_bytes}}
    manifest.versions = package_versions()
    manifest.inputs = describe_inputs(files)
    save_manifest(manifest, out_dir)

    init_ray(ray_address)
    records = read_stage(files, str(out_dir), {"text_key": text_key, "id_key": id_key,
                                                     "max_doc_bytes": max_doc_bytes}, progress)
    record_stage(manifest, STAGE, files, records)
    manifest.final_stage = STAGE
    save_manifest(manifest, out_dir)
    summary = describe(manifest)
    create_markdown_artifact(markdown=f"```\n{summary}\n```", key="ingest-summary", description="ingest run")
    print(summary)
    return manifest.stages[STAGE].counts
