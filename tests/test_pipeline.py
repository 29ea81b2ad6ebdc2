"""The `pipeline` flow from one config: curate, then cluster, stage by stage, resumable."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from flows.config import ConfigError, load_config
from flows.pipeline import PipelineConfig, pipeline
from storage.catalog import open_catalog, query
from storage.manifest import load_manifest


def write_config(folder: Path, sample_corpus: Path, **sections) -> Path:
    config = {
        "inputs": {"paths": [str(sample_corpus / "docs" / name) for name in
                             ("python-doc.jsonl.gz", "postgresql-doc.parquet", "debian-reference.jsonl.zst")]},
        "tokenize": {"write_token_shards": False},
        "cluster": {"n_clusters": 8, "projection_points": 200},
        **sections,
    }
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def pipeline_run(sample_corpus, ray_local, tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("pipeline")
    config = write_config(folder, sample_corpus)
    pipeline(config=str(config), out=str(folder / "run"), progress=False)
    return config, folder / "run"


def test_stages_chain_and_every_document_is_accounted_for(pipeline_run):
    _, run = pipeline_run
    manifest = load_manifest(run)
    stages = manifest.stages
    assert all(record.status == "complete" for record in stages.values())
    assert manifest.final_stage == "cluster"
    chain = ["ingest", "filter", "exact_dedup", "minhash_dedup", "tokenize"]
    for before, after in zip(chain, chain[1:], strict=False):
        assert stages[after].counts["docs_in"] == stages[before].counts["docs_out"], (before, after)
    for name in chain:
        counts = stages[name].counts
        assert counts["docs_in"] == counts["docs_out"] + sum(counts["dropped"].values()) + counts["quarantined"]
    con = open_catalog(run)
    kept = query(con, "SELECT count(*) AS n, count(cluster) AS clustered, count(DISTINCT super_cluster) AS supers "
                      "FROM docs").to_pylist()[0]
    assert kept["n"] == kept["clustered"] == stages["cluster"].counts["docs_in"] > 100
    assert 2 <= kept["supers"] <= 8
    assert query(con, "SELECT count(*) AS n FROM clusters").column("n")[0].as_py() == 8
    assert "pipeline" in manifest.config and manifest.command == "pipeline"


def test_rerun_resumes_and_redoes_nothing(pipeline_run):
    """Unit outputs (shards, drops, embeddings) are not rewritten; the cluster table comes out the same."""
    config, run = pipeline_run
    units = ("shards", "dropped", "embeddings")
    before = {p: p.stat().st_mtime_ns for kind in units for p in sorted((run / kind).rglob("*.parquet"))}
    table = pq.read_table(run / "clusters" / "clusters.parquet")
    pipeline(config=str(config), out=str(run), progress=False)
    after = {p: p.stat().st_mtime_ns for kind in units for p in sorted((run / kind).rglob("*.parquet"))}
    assert before == after and len(before) > 10
    assert pq.read_table(run / "clusters" / "clusters.parquet").equals(table)


def test_bad_sections_are_named(tmp_path, sample_corpus):
    config = write_config(tmp_path, sample_corpus, mixture={"by": "metadata.origin", "targets": [], "epochs": 3})
    with pytest.raises(ConfigError) as error:
        load_config(config, PipelineConfig)
    message = str(error.value)
    assert "mixture.targets" in message and "mixture.epochs" in message
