"""The `ingest` flow: read inputs (WARC, WET, JSONL, Parquet; local or fsspec) into document shards.

Inputs are cut into units of about `unit_bytes` (operators.reader.plan_units: JSONL at line boundaries,
Parquet by row groups, WARC at record boundaries), so one big file is read by every worker and a killed run
resumes per part. The stage's fingerprint (its inputs with sizes and checksums, the reader options, the
readers' code) decides whether completed units are kept: reading other inputs into the same run directory
is refused with one line naming what differs, unless `restart`.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from flows.engine import code_version, init_ray, record_stage, run_stage, start_stage
from flows.passes import READ as STAGE
from flows.passes import ReadWorker
from operators.reader import expand_inputs, plan_units
from storage.manifest import Manifest, describe, describe_input, load_manifest, package_versions, save_manifest
from storage.shards import stage_files, write_json_atomic
from storage.unique_ids import make_ids_unique

UNIT_BYTES = 64 * 2**20
READ_CODE = ("operators.base", "operators.reader", "operators.read_jsonl", "operators.read_parquet",
             "operators.read_warc", "storage.schema", "flows.passes")


@task(name="describe-inputs")
def describe_inputs(files: list[str]) -> list[dict]:
    return [describe_input(path).model_dump() for path in files]


def plan_read(out_dir: Path, files: list[str], inputs: list[dict], reader_options: dict, unit_bytes: int,
              restart: bool) -> tuple[list[str], dict]:
    """The read stage's units and fingerprint, checked against what the run directory holds."""
    units = plan_units(files, unit_bytes)
    parts = {"inputs": inputs, "config": {**reader_options, "unit_bytes": unit_bytes},
             "code": code_version(*READ_CODE), "units": units}
    start_stage(out_dir, STAGE, parts, [], restart)
    return units, parts


@task(name="read", retries=2, retry_delay_seconds=5)
def read_stage(units: list[str], out: str, reader_options: dict, progress: bool) -> list[dict]:
    """The units' completion records; once every unit is done, ids are made unique across units too
    (storage.unique_ids) and the repeats replaced count in the reader's `duplicate_ids`."""
    records = run_stage(STAGE, units, out, functools.partial(ReadWorker, reader_options), progress=progress)
    return unique_ids_once(out, STAGE, records, len(units), [[("shards", STAGE), ("dropped", STAGE)]], reader_options)


def unique_ids_once(out: str, stage: str, records: list[dict], n_units: int,
                    file_sets: list[list[tuple[str, str]]], reader_options: dict) -> list[dict]:
    """Once every unit of the pass that read the inputs (`stage`'s records) is done, make ids unique across
    units (storage.unique_ids) in each set of (kind, stage) folders that holds every document once (the read
    stage's shards and drops; a fused pass's read drops and filter shards and drops; a set per stage copy)
    and count the repeats replaced in the reader's `duplicate_ids`. A ledger makes the pass run once."""
    if len(records) < n_units or not records:
        return records
    ledger = Path(out) / "_progress" / stage / "repeated_ids.json"  # not a unit record: no digits
    if ledger.exists():  # the pass ran once every unit was done; a restart removes the ledger with them
        replaced = json.loads(ledger.read_text())["replaced"]
    else:
        for folders in file_sets:  # every set decides the same replacements: repeats lie in different units
            files = [f for kind, name in folders for f in stage_files(out, kind, name)]
            replaced = make_ids_unique(files, reader_options.get("id_key") or "id")
        write_json_atomic({"replaced": replaced}, ledger)
    if replaced:
        first = copy.deepcopy(records[0])
        reader_stats = next(iter(first["operators"].values()))
        reader_stats["duplicate_ids"] = reader_stats.get("duplicate_ids", 0) + replaced
        records = [first, *records[1:]]
    return records


@flow(name="ingest", log_prints=True)
def ingest(inputs: list[str], out: str, ray_address: str | None = None, text_key: str = "text",
           id_key: str | None = "id",
           max_doc_bytes: int = 8 * 2**20, unit_bytes: int = UNIT_BYTES, progress: bool = True,
           restart: bool = False) -> dict:
    """Read every input into `<out>/shards/ingest`, quarantining what cannot be read; write the manifest."""
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = expand_inputs(inputs)
    described = describe_inputs(files)
    options = {"text_key": text_key, "id_key": id_key, "max_doc_bytes": max_doc_bytes}
    units, _ = plan_read(out_dir, files, described, options, unit_bytes, restart)
    manifest = load_manifest(out_dir) or Manifest(command="ingest")
    manifest.config = {"ingest": {"inputs": inputs, **options, "unit_bytes": unit_bytes}}
    manifest.versions = package_versions()
    manifest.inputs = described
    save_manifest(manifest, out_dir)

    init_ray(ray_address)
    records = read_stage(units, str(out_dir), options, progress)
    record_stage(manifest, STAGE, units, records)
    manifest.final_stage = STAGE
    save_manifest(manifest, out_dir)
    summary = describe(manifest)
    create_markdown_artifact(markdown=f"```\n{summary}\n```", key="ingest-summary", description="ingest run")
    print(summary)
    return manifest.stages[STAGE].counts
