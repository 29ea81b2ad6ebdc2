"""The `curate` flow on the sample corpus: counts that add up, the funnel artifact, token shards, and resume.

One in-process run is the reference. The kill test runs `mixforge curate` in a subprocess, SIGKILLs it (with
its Ray) once some filter units have completed, reruns it, and compares every output file with the reference:
a resumed run must equal an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from flows.curate import curate
from flows.engine import RunMismatch
from mixforge.local_cluster import prefect_api_url
from storage.manifest import load_manifest
from storage.shards import KINDS
from storage.token_shards import TokenShard, list_token_shards

STAGES = ["ingest", "filter", "exact_dedup", "minhash_dedup", "tokenize"]
MIXFORGE = str(Path(sys.executable).parent / "mixforge")
SAMPLE_FILES = ["docs/fortunes.jsonl.gz", "web/sample.warc.wet.gz"]
PLANTED = 15  # exact and near copies each


@pytest.fixture(scope="module")
def config_file(sample_corpus, tmp_path_factory) -> Path:
    """Two sample corpus files (fortunes in seven languages, web pages in three) and planted duplicates of real
    web pages that pass the filters: PLANTED copies with trailing space (exact duplicates after normalisation)
    and PLANTED with one word in 50 replaced (near duplicates)."""
    from flows.config import Inputs, RunConfig
    from flows.passes import filter_operators
    from operators.base import OperatorChain
    from operators.reader import reader_for

    folder = tmp_path_factory.mktemp("inputs")
    wet = str(sample_corpus / "web" / "sample.warc.wet.gz")
    pages = [t for batch in reader_for(wet)(wet) for t in batch.documents.column("text").to_pylist()]
    copies = [page + "  \n" for page in pages]
    edited = [" ".join("zebra" if i % 50 == 7 else w for i, w in enumerate(page.split(" "))) for page in pages]
    texts = pages + copies + edited
    chain = OperatorChain(filter_operators(RunConfig(inputs=Inputs(paths=[wet]))))
    kept, _ = chain(pa.table({"id": [str(i) for i in range(len(texts))], "text": texts}))
    survivors = {int(i) for i in kept.column("id").to_pylist()}
    n = len(pages)
    exact = [i for i in range(n) if {i, n + i} <= survivors][:PLANTED]
    near = [i for i in range(n) if {i, 2 * n + i} <= survivors and i not in exact][:PLANTED]
    assert len(exact) == len(near) == PLANTED
    planted = [copies[i] for i in exact] + [edited[i] for i in near]
    (folder / "planted.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in planted))
    path = folder / "curate.yaml"
    inputs = [str(sample_corpus / name) for name in SAMPLE_FILES] + [str(folder / "planted.jsonl")]
    config = {"inputs": {"paths": inputs, "unit_bytes": 100_000},  # the WET file is read in 5 parts
              "ray": {"num_cpus": 2},
              "tokenize": {"write_token_shards": True}}
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def reference(config_file, ray_local, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference")
    curate(str(config_file), str(out), progress=False)
    return out


def read_ids(out: Path, kind: str, stage: str) -> list[str]:
    return [i for path in sorted((out / kind / stage).glob("*.parquet")) for i in pq.read_table(path, columns=["id"])
            .column("id").to_pylist()]


def view_ids(out: Path, view: str) -> list[str]:
    """The ids a run's DuckDB view holds (the stages run fused write no copy of their survivors)."""
    from storage.catalog import open_catalog

    return [i for (i,) in open_catalog(out).execute(f"SELECT id FROM {view}").fetchall()]


def test_counts_add_up_stage_by_stage(reference, sample_corpus):
    manifest = load_manifest(reference)
    assert list(manifest.stages) == STAGES and manifest.final_stage == "tokenize"
    files = json.loads((sample_corpus / "MANIFEST.json").read_text())["files"]
    records = sum(files[name]["documents"] for name in SAMPLE_FILES) + 2 * PLANTED
    assert manifest.stages["ingest"].counts["docs_in"] == records
    previous_out, previous_tokens = records, None
    for stage in STAGES:
        counts = manifest.stages[stage].counts
        assert manifest.stages[stage].status == "complete"
        assert counts["docs_in"] == previous_out, stage
        assert previous_tokens is None or counts["tokens_in"] == previous_tokens, stage
        assert counts["docs_in"] == counts["docs_out"] + sum(counts["dropped"].values()) + counts["quarantined"]
        assert len(view_ids(reference, f"stage_{stage}")) == counts["docs_out"], stage
        assert len(read_ids(reference, "dropped", stage)) == sum(counts["dropped"].values())
        previous_out, previous_tokens = counts["docs_out"], counts["tokens_out"] or None
    dropped = manifest.stages["filter"].counts["dropped"]
    assert sum(dropped.values()) > 0 and len(dropped) >= 3  # language, quality and repetition reasons
    # every planted exact copy goes; MinHash finds near copies with probability ~0.9 each (Jaccard ~0.8)
    assert manifest.stages["exact_dedup"].counts["dropped"]["exact_duplicate"] >= PLANTED
    assert manifest.stages["minhash_dedup"].counts["dropped"]["minhash_duplicate"] >= PLANTED * 3 // 4
    assert manifest.stages["filter"].counts["tokens_in"] > manifest.stages["filter"].counts["tokens_out"] > 0


def single_process_run(config_file: Path) -> tuple[pa.Table, dict[str, str], dict[str, tuple[int, int]]]:
    """The flow's steps with none of the engine: every input read whole, then the operators one after the
    other on all documents at once in this process (in-batch exact and MinHash dedup). Returns the final
    documents, every drop's reason by id, and each stage's (docs in, docs out)."""
    from flows.config import load_config
    from flows.passes import filter_operators
    from operators.base import OperatorChain, split_dropped
    from operators.exact_dedup import ExactDedup
    from operators.minhash_dedup import MinHashDedup
    from operators.reader import expand_inputs, reader_for
    from operators.tokenize import Tokenize

    config = load_config(str(config_file))
    options = {"text_key": config.inputs.text_key, "id_key": config.inputs.id_key}
    read, drops, funnel = [], {}, {}
    for path in expand_inputs(config.inputs.paths):
        for batch in reader_for(path, **options)(path):
            kept, dropped = split_dropped(batch.documents)
            read.append(kept)
            drops.update(zip(dropped.column("id").to_pylist(), dropped.column("drop_reason").to_pylist(), strict=True))
    batch = pa.concat_tables(read, promote_options="permissive")
    funnel["ingest"] = (batch.num_rows + len(drops), batch.num_rows)
    stages = [("filter", filter_operators(config)), ("exact_dedup", [ExactDedup()]),
              ("minhash_dedup", [MinHashDedup(config.dedup.minhash.build())]),
              ("tokenize", [Tokenize(encoding=config.tokenize.encoding)])]
    for stage, operators in stages:
        docs_in = batch.num_rows
        batch, dropped = OperatorChain(operators)(batch)
        drops.update(zip(dropped.column("id").to_pylist(), dropped.column("drop_reason").to_pylist(), strict=True))
        funnel[stage] = (docs_in, batch.num_rows)
    return batch, drops, funnel


def test_output_equals_the_operators_run_one_after_the_other_in_one_process(reference, config_file):
    """The fused passes, units smaller than files and Ray change nothing: ids, texts, drop reasons, dup
    clusters and counts are those of the plain chain."""
    final, drops, funnel = single_process_run(config_file)
    columns = ["id", "text", "dup_cluster", "n_tokens", "lang"]
    ours = pq.read_table(reference / "shards" / "tokenize", columns=columns).sort_by("id")
    assert ours.equals(final.select(columns).cast(ours.schema).sort_by("id"))
    dropped = {i: r for path in sorted((reference / "dropped").rglob("*.parquet"))
               for i, r in zip(*pq.read_table(path, columns=["id", "drop_reason"]).columns, strict=True)}
    assert {i.as_py(): r.as_py() for i, r in dropped.items()} == drops
    manifest = load_manifest(reference)
    assert {s: (r.counts["docs_in"], r.counts["docs_out"]) for s, r in manifest.stages.items()} == funnel


def test_stage_copies_equal_the_views_of_the_fused_run(reference, config_file, tmp_path):
    """keep_stage_copies writes every stage's survivors; the fused run's stage_<name> views (made from the
    written stages and the drops) hold the same documents."""
    from storage.catalog import open_catalog

    config = yaml.safe_load(config_file.read_text())
    config["keep_stage_copies"] = True
    path = tmp_path / "copies.yaml"
    path.write_text(yaml.safe_dump(config))
    copies = tmp_path / "copies"
    curate(str(path), str(copies), progress=False)
    fused = open_catalog(reference)
    for stage in STAGES:
        assert (copies / "shards" / stage).is_dir()
        assert sorted(read_ids(copies, "shards", stage)) == sorted(view_ids(reference, f"stage_{stage}")), stage
        texts = f"SELECT id, text FROM stage_{stage} ORDER BY id"
        if stage != "ingest":  # a view before the filters shows the texts as C4 left them
            assert fused.execute(texts).fetchall() == open_catalog(copies).execute(texts).fetchall(), stage
    for kind in ("shards/tokenize", "dropped"):
        theirs = sorted(p.relative_to(copies) for p in (copies / kind).rglob("*.parquet"))
        assert theirs == sorted(p.relative_to(reference) for p in (reference / kind).rglob("*.parquet"))
        for relative in theirs:
            assert pq.read_table(copies / relative).equals(pq.read_table(reference / relative)), relative


def test_token_counts_are_those_of_the_final_texts(reference):
    import quicktok

    encoding = quicktok.get_encoding("o200k_base")
    final = pq.read_table(reference / "shards" / "tokenize", columns=["text", "n_tokens"])
    assert [len(encoding.encode(text)) for text in final.column("text").to_pylist()] == \
        final.column("n_tokens").to_pylist()


def test_every_document_is_kept_or_dropped_exactly_once(reference):
    read = view_ids(reference, "stage_ingest")
    final = read_ids(reference, "shards", "tokenize")
    dropped = [i for stage in STAGES[1:] for i in read_ids(reference, "dropped", stage)]
    assert len(set(final)) == len(final) and len(set(read)) == len(read)
    assert sorted(final + dropped) == sorted(read)
    # dedup keeps one document per cluster, and the kept one is in the output
    table = pq.read_table(reference / "shards" / "tokenize", columns=["id", "dup_cluster"])
    clustered = table.filter(table.column("dup_cluster").is_valid())
    assert set(clustered.column("dup_cluster").to_pylist()) <= set(final)


def test_funnel_artifact_shows_docs_and_tokens_per_stage_and_reason(reference):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["curate-funnel"])))
    manifest = load_manifest(reference)
    funnel = next(a for a in artifacts if manifest.run_id in a.description).data
    for stage, record in manifest.stages.items():
        c = record.counts
        assert f"| {stage} | {c['docs_in']:,} | {c['docs_out']:,} |" in funnel
        for reason, n in c["dropped"].items():
            assert f"| {stage} | {reason} | {n:,} |" in funnel
    tokens = manifest.stages["tokenize"].counts["tokens_out"]
    assert f"{tokens:,} |" in funnel


def test_token_shards_hold_the_final_documents(reference):
    """The stage's token shards (opened by the reader the mixtures use) hold the final documents' o200k ids."""
    import quicktok

    final = pq.read_table(reference / "shards" / "tokenize", columns=["id", "text", "n_tokens"])
    shards = [TokenShard.open(prefix) for prefix in list_token_shards(reference / "tokens")]
    assert [s.prefix.name for s in shards] == [f"part-{rank:05d}" for rank in range(len(shards))]
    assert [i for s in shards for i in s.ids["id"].to_pylist()] == final.column("id").to_pylist()
    assert sum(s.n_docs for s in shards) == final.num_rows
    assert sum(s.n_tokens for s in shards) == sum(final.column("n_tokens").to_pylist()) + final.num_rows  # + EOS
    encoder = quicktok.get_encoding("o200k_base")
    expected = [encoder.encode_ordinary(text) + [encoder.eot_token] for text in final.column("text").to_pylist()]
    assert [s.document(i).tolist() for s in shards for i in range(s.n_docs)] == expected
    offsets = np.fromfile(reference / "tokens" / "part-00000.offsets.i64", dtype="<i8")  # no header: raw int64
    assert np.array_equal(offsets, shards[0].offsets) and offsets[0] == 0 and np.all(np.diff(offsets) > 0)


def test_rerun_skips_what_completed_and_refuses_another_config(reference, config_file, tmp_path):
    records = {p: p.read_text() for p in (reference / "_progress").rglob("*.json")}
    before = load_manifest(reference)
    curate(str(config_file), str(reference), progress=False)
    assert {p: p.read_text() for p in (reference / "_progress").rglob("*.json")} == records
    after = load_manifest(reference)
    assert {s: r.counts for s, r in after.stages.items()} == {s: r.counts for s, r in before.stages.items()}
    other = yaml.safe_load(config_file.read_text())
    other["filters"] = {"gopher_quality": {"min_doc_words": 10}}
    changed = tmp_path / "other.yaml"
    changed.write_text(yaml.safe_dump(other))
    with pytest.raises(RunMismatch, match="another config"):
        curate(str(changed), str(reference), progress=False)


def subprocess_env() -> dict[str, str]:
    """The flow's subprocesses report to this session's Prefect server (no second one to start)."""
    return {**os.environ, "PREFECT_API_URL": prefect_api_url(), "TQDM_DISABLE": "1"}


def session_processes(session: int) -> list[int]:
    found = []
    for pid in psutil.pids():
        with contextlib.suppress(OSError):
            if os.getsid(pid) == session:
                found.append(pid)
    return found


def test_killed_run_resumes_to_output_identical_to_an_uninterrupted_run(reference, config_file, tmp_path):
    out = tmp_path / "killed"
    command = [MIXFORGE, "curate", str(config_file), "--out", str(out), "--no-progress"]
    with open(tmp_path / "killed.log", "wb") as log:
        process = subprocess.Popen(command, env=subprocess_env(), stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        deadline = time.monotonic() + 180
        while not list((out / "_progress" / "filter").glob("0*.json")):
            assert process.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no filter unit completed in 180 s"
            time.sleep(0.05)
        os.killpg(process.pid, signal.SIGKILL)  # the flow and its Ray (Ray workers exit with their raylet)
        process.wait(timeout=30)
    deadline = time.monotonic() + 30
    while survivors := session_processes(process.pid):
        assert time.monotonic() < deadline, f"processes of the killed run still alive: {survivors}"
        time.sleep(0.5)
    done_before = {p.name: p.read_text() for p in (out / "_progress" / "filter").glob("0*.json")}
    assert load_manifest(out).final_stage is None  # killed mid-run

    resumed = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    for name, record in done_before.items():  # completed units were skipped, not redone
        assert (out / "_progress" / "filter" / name).read_text() == record

    for kind in (*KINDS, "tokens"):
        mine = sorted(p.relative_to(out) for p in (out / kind).rglob("*") if p.is_file())
        theirs = sorted(p.relative_to(reference) for p in (reference / kind).rglob("*") if p.is_file())
        assert mine == theirs, kind
        for relative in mine:
            if relative.suffix == ".parquet":
                assert pq.read_table(out / relative).equals(pq.read_table(reference / relative)), relative
            else:
                assert (out / relative).read_bytes() == (reference / relative).read_bytes(), relative
    final = read_ids(out, "shards", "tokenize")
    assert len(final) == len(set(final)) == load_manifest(reference).stages["tokenize"].counts["docs_out"]
    ours, ref = load_manifest(out), load_manifest(reference)
    for stage in STAGES:
        assert ({k: v for k, v in ours.stages[stage].counts.items() if k != "seconds"}
                == {k: v for k, v in ref.stages[stage].counts.items() if k != "seconds"}), stage
