"""The run manifest: what a run read, its config, package versions, and counts per stage.

`<out>/manifest.json` is rewritten atomically after each stage, so any shard can be traced to the
inputs (with checksums) and the config that produced it, even for a run that was interrupted.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
import uuid
from datetime import UTC, datetime
from pathlib import Path

import fsspec
from pydantic import BaseModel, ConfigDict, Field

from storage.shards import write_json_atomic

MANIFEST_NAME = "manifest.json"
TRACKED_PACKAGES = ("mixforge", "ray", "prefect", "datatrove", "pyarrow", "duckdb", "fasttext-numpy2-wheel",
                    "scikit-learn", "lightgbm", "torch", "quicktok-v1", "model2vec", "trafilatura")


class InputFile(BaseModel):
    path: str
    size: int
    sha256: str


class StageRecord(BaseModel):
    """One stage's outcome. `counts` is the merged StageStats of its operators (docs, chars, tokens,
    drops by reason, quarantined); `operators` keeps each operator's own."""

    name: str
    status: str = "running"  # running | complete
    units: int = 0
    units_done: int = 0
    counts: dict = Field(default_factory=dict)
    operators: dict[str, dict] = Field(default_factory=dict)
    seconds: float = 0.0
    started: str | None = None
    finished: str | None = None


class Manifest(BaseModel):
    model_config = ConfigDict(validate_assignment=True)

    run_id: str = Field(default_factory=lambda: uuid.uuid4().hex[:12])
    created: str = Field(default_factory=lambda: now())
    updated: str = Field(default_factory=lambda: now())
    command: str = ""
    config: dict = Field(default_factory=dict)
    versions: dict[str, str] = Field(default_factory=dict)
    inputs: list[InputFile] = Field(default_factory=list)
    stages: dict[str, StageRecord] = Field(default_factory=dict)
    final_stage: str | None = None

    def stage(self, name: str) -> StageRecord:
        if name not in self.stages:
            self.stages[name] = StageRecord(name=name, started=now())
        return self.stages[name]


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def describe_input(path: str) -> InputFile:
    """Size and sha256 of an input file (local path or fsspec URL), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    size = 0
    with fsspec.open(path, "rb", compression=None) as handle:
        while block := handle.read(2**20):
            digest.update(block)
            size += len(block)
    return InputFile(path=path, size=size, sha256=digest.hexdigest())


def load_manifest(out_dir: str | Path) -> Manifest | None:
    path = Path(out_dir) / MANIFEST_NAME
    if not path.exists():
        return None
    return Manifest.model_validate_json(path.read_text())


def save_manifest(manifest: Manifest, out_dir: str | Path) -> None:
    manifest.updated = now()
    write_json_atomic(manifest.model_dump(mode="json"), Path(out_dir) / MANIFEST_NAME)


def describe(manifest: Manifest) -> str:
    """The run in plain words, for `mixforge manifest DIR`."""
    lines = [f"Run {manifest.run_id}: {manifest.command or 'mixforge'}, started {manifest.created}, "
             f"last updated {manifest.updated}."]
    total = sum(f.size for f in manifest.inputs)
    lines.append(f"Read {len(manifest.inputs)} input file(s), {total / 2**20:,.1f} MiB in all.")
    for record in manifest.stages.values():
        c = record.counts
        state = "complete" if record.status == "complete" else \
            f"INCOMPLETE ({record.units_done}/{record.units} units done)"
        line = (f"- {record.name} ({state}, {record.seconds:,.1f} s): {c.get('docs_in', 0):,} documents in, "
                f"{c.get('docs_out', 0):,} kept")
        dropped = c.get("dropped", {})
        if dropped:
            reasons = ", ".join(f"{n:,} {reason}" for reason, n in sorted(dropped.items(), key=lambda kv: -kv[1]))
            line += f", {sum(dropped.values()):,} dropped ({reasons})"
        if c.get("quarantined"):
            line += f", {c['quarantined']:,} quarantined"
        skipped = c.get("skipped", {})
        if skipped:  # archive records that are no documents (requests, revisits, non-HTML...)
            reasons = ", ".join(f"{n:,} {reason}" for reason, n in sorted(skipped.items(), key=lambda kv: -kv[1]))
            line += f"; {sum(skipped.values()):,} records skipped ({reasons})"
        if c.get("duplicate_ids"):
            line += f"; {c['duplicate_ids']:,} repeated input ids replaced (the input's kept in metadata)"
        if c.get("tokens_out"):
            line += f"; {c['tokens_out']:,} tokens kept"
        lines.append(line + ".")
    if manifest.final_stage:
        lines.append(f"The `docs` view reads stage '{manifest.final_stage}'.")
    versions = ", ".join(f"{k} {v}" for k, v in manifest.versions.items())
    if versions:
        lines.append(f"Versions: {versions}.")
    return "\n".join(lines)
