"""The engine's resume policy and units smaller than files.

One policy for every flow: a rerun into a run directory made from other inputs (or config, or code) is refused
with one line naming what differs, and `--restart` redoes it. Units: a big JSONL (cut at lines), a WARC (cut
where records start) and a Parquet file (by row groups) read as parts by several workers give exactly what
reading them whole gives: the same documents, ids, offsets, quarantine rows and counts.
"""

from __future__ import annotations

import functools
import gzip
import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from flows.config import RunConfig
from flows.engine import run_stage
from flows.ingest import ingest
from flows.passes import warm_up_workers
from mixforge.cli import app
from operators.base import StageStats
from operators.reader import plan_units
from storage.manifest import load_manifest
from storage.shards import RunMismatch, ShardWriter, keep_or_restart, stage_files


def read_stage(run: Path, kind: str) -> pa.Table:
    tables = [pq.read_table(path) for path in stage_files(run, kind, "ingest")]
    table = pa.concat_tables(tables, promote_options="permissive") if tables else pa.table({"id": []})
    return table.sort_by([(c, "ascending") for c in ("id", "source", "offset") if c in table.column_names])


def test_ingest_of_other_inputs_into_a_run_is_refused_until_restart(ray_local, tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("".join(json.dumps({"text": f"document a{i}"}) + "\n" for i in range(3)))
    b.write_text("".join(json.dumps({"text": f"document b{i}"}) + "\n" for i in range(4)))
    run = tmp_path / "r"
    runner = CliRunner()
    first = runner.invoke(app, ["ingest", str(a), "--out", str(run)])
    assert first.exit_code == 0, first.output
    refused = runner.invoke(app, ["ingest", str(b), "--out", str(run)])
    assert refused.exit_code == 2, refused.output
    lines = [line for line in refused.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "other inputs (was a.jsonl; now b.jsonl)" in lines[0]
    assert "--restart" in lines[0]
    assert sorted(read_stage(run, "shards").column("text").to_pylist()) == [f"document a{i}" for i in range(3)]

    again = runner.invoke(app, ["ingest", str(a), "--out", str(run)])  # the same inputs resume, redo nothing
    assert again.exit_code == 0, again.output
    restarted = runner.invoke(app, ["ingest", str(b), "--out", str(run), "--restart"])
    assert restarted.exit_code == 0, restarted.output
    assert sorted(read_stage(run, "shards").column("text").to_pylist()) == [f"document b{i}" for i in range(4)]
    assert [f.path for f in load_manifest(run).inputs] == [str(b)]


def test_the_refusal_names_the_changed_setting(tmp_path):
    keep_or_restart(tmp_path, "filter", {"config": {"filters": {"gopher": {"min_words": 50}}}, "code": "x"}, [])
    with pytest.raises(RunMismatch, match=r"another config \(filters.gopher.min_words\)") as refused:
        keep_or_restart(tmp_path, "filter", {"config": {"filters": {"gopher": {"min_words": 10}}}, "code": "x"}, [])
    assert "\n" not in str(refused.value)
    with pytest.raises(RunMismatch, match="another code"):
        keep_or_restart(tmp_path, "filter", {"config": {"filters": {"gopher": {"min_words": 50}}}, "code": "y"}, [])


@pytest.fixture(scope="module")
def big_inputs(sample_corpus, tmp_path_factory) -> list[str]:
    """One plain JSONL of 9 MB (the Python docs, a bad line in the middle), the sample WARC (per-record gzip),
    and a Parquet file of many row groups."""
    folder = tmp_path_factory.mktemp("big")
    lines = gzip.decompress((sample_corpus / "docs" / "python-doc.jsonl.gz").read_bytes()).splitlines(keepends=True)
    lines.insert(len(lines) // 2, b"{not json\n")
    (folder / "python.jsonl").write_bytes(b"".join(lines))
    shutil.copy(sample_corpus / "web" / "sample.warc.gz", folder / "sample.warc.gz")
    table = pq.read_table(sample_corpus / "docs" / "debian-handbook.parquet")
    pq.write_table(table, folder / "handbook.parquet", row_group_size=200)
    return [str(folder / name) for name in ("python.jsonl", "sample.warc.gz", "handbook.parquet")]


def test_big_files_split_across_workers_equal_the_unsplit_run(big_inputs, ray_local, tmp_path):
    whole, split = tmp_path / "whole", tmp_path / "split"
    ingest(inputs=big_inputs, out=str(whole), progress=False)
    ingest(inputs=big_inputs, out=str(split), unit_bytes=300_000, progress=False)
    units = [json.loads(p.read_text())["input"] for p in sorted((split / "_progress" / "ingest").glob("0*.json"))]
    for path in big_inputs:  # every file was cut into several parts
        assert sum(unit.startswith(f"{path}#part=") for unit in units) >= 3, path
    assert len(list((whole / "_progress" / "ingest").glob("0*.json"))) == len(big_inputs)
    for kind in ("shards", "dropped", "quarantine"):
        ours, theirs = read_stage(split, kind), read_stage(whole, kind)
        assert ours.num_rows == theirs.num_rows and ours.equals(theirs), kind
    assert read_stage(whole, "quarantine").num_rows == 1  # the bad line, at its offset in the file
    counts = [load_manifest(run).stages["ingest"].counts for run in (whole, split)]
    assert [{k: v for k, v in c.items() if k != "seconds"} for c in counts][0] == \
        [{k: v for k, v in c.items() if k != "seconds"} for c in counts][1]



def test_the_warm_up_is_sized_to_the_first_passs_units(big_inputs, monkeypatch):
    """start_services warms as many workers as the first pass has units, planned from the files the CLI
    expanded: parts of big files count, and inputs that cannot be planned now (a transient error while their
    parts are cut) leave the count to the cluster (the flow plans again and reports them)."""
    import flows.passes
    from operators.reader import TransientInputError

    def count(files: list[str], unit_bytes: int) -> int | None:
        return warm_up_workers(RunConfig.model_validate({"inputs": {"paths": files, "unit_bytes": unit_bytes}}), files)

    assert count(big_inputs[2:], 1 << 30) == 1
    assert count(big_inputs[:1], 300_000) == len(plan_units(big_inputs[:1], 300_000)) >= 3

    def unreachable(files: list[str], unit_bytes: int) -> list[str]:
        raise TransientInputError(f"{files[0]}: cannot plan its units: connection reset; rerun to retry")

    monkeypatch.setattr(flows.passes, "plan_units", unreachable)
    assert count(big_inputs[:1], 300_000) is None


def test_a_stage_builds_its_worker_once_per_process_not_per_unit(ray_local, tmp_path):
    """Units run as Ray tasks on warm worker processes: a model-loading worker is built once per process."""
    builds = tmp_path / "builds"
    builds.mkdir()

    class CountedWorker:  # defined here, so Ray's workers get it by value
        """Leaves a file named by its process and its own id when built: how often the stage built it."""

        def __init__(self, builds: Path):
            (builds / f"{os.getpid()}-{id(self)}").touch()

        def __call__(self, rank: int, path: str, writer: ShardWriter) -> dict[str, StageStats]:
            writer.write(pa.table({"id": [f"{rank}"], "text": [path]}))
            return {"count": StageStats(docs_in=1, docs_out=1)}

    units = [f"unit-{i}" for i in range(12)]
    records = run_stage("count", units, tmp_path / "run", functools.partial(CountedWorker, builds), progress=False)
    assert [r["input"] for r in records] == units
    pids = {name.name.split("-")[0] for name in builds.iterdir()}
    assert len(list(builds.iterdir())) == len(pids) <= 2  # ray_local has 2 CPUs: at most 2 processes
    texts = pq.read_table(stage_files(tmp_path / "run", "shards", "count")).column("text").to_pylist()
    assert sorted(texts) == sorted(units)


def test_a_cold_worker_builds_the_curate_pass_without_prefect_or_torch(tmp_path):
    """What a Ray worker unpickles for the first pass imports neither Prefect (the flow modules' 1.2 s) nor
    torch (spaCy's thinc probes it: 1.5 s), yet its word tokenizer splits as datatrove's does."""
    import subprocess
    import sys

    from ray import cloudpickle

    from flows.config import Inputs, RunConfig
    from flows.passes import read_filter_worker

    make_worker = functools.partial(read_filter_worker, RunConfig(inputs=Inputs(paths=[str(tmp_path)])), {})
    (tmp_path / "worker.pkl").write_bytes(cloudpickle.dumps(make_worker))
    code = ("import pickle, sys\n"
            f"worker = pickle.loads(open({str(tmp_path / 'worker.pkl')!r}, 'rb').read())()\n"
            "from operators.spacy_tokens import load_word_tokenizer\n"
            "print(load_word_tokenizer('en').word_tokenize(\"Hello, world! It's 3.5km, e.g. U.S.\"))\n"
            "print(sorted(name for name in ('prefect', 'torch') if name in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          cwd=Path(__file__).parents[1])
    words, loaded = done.stdout.strip().splitlines()
    from datatrove.utils.word_tokenizers import load_word_tokenizer

    assert words == str(load_word_tokenizer("en").word_tokenize("Hello, world! It's 3.5km, e.g. U.S."))
    assert loaded == "[]"


def test_a_fresh_cli_process_runs_its_flow_on_the_server_it_started_and_stops_it(tmp_path):
    """start_services in a process that has not imported Prefect: the flow runs against the temporary server
    started as a subprocess (Prefect's own server modules never load here), and the server is gone at exit;
    the warm-up ran on as many workers as warm_workers() said, not on every CPU."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from flows.engine import start_services\n"
            "def mark(folder):\n"
            "    import pathlib, uuid\n"
            "    pathlib.Path(folder, uuid.uuid4().hex).touch()\n"
            f"with start_services(num_cpus=2, warm_up=mark, warm_up_args=({str(tmp_path)!r},),\n"
            "                    warm_workers=lambda: 1):\n"
            "    from prefect import flow, get_client\n"
            "    from prefect.settings import PREFECT_API_URL\n"
            "    answer, url = flow(name='answer')(lambda: 42)(), PREFECT_API_URL.value()\n"
            "    with get_client(sync_client=True) as client:\n"
            "        runs = [run.name for run in client.read_flows()]\n"
            "from flows.engine import TemporaryPrefectServer\n"
            "import gc\n"
            "server = next(o for o in gc.get_objects() if isinstance(o, TemporaryPrefectServer))\n"
            "print(answer, url == server.api_url, 'answer' in runs,\n"
            "      'prefect.server.api.server' in sys.modules, server.process.pid)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "RAY_ADDRESS")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300,
                          cwd=Path(__file__).parents[1])
    assert done.returncode == 0, done.stderr
    answer, ours, recorded, server_modules, pid = done.stdout.split()
    assert (answer, ours, recorded, server_modules) == ("42", "True", "True", "False")
    assert len(list(tmp_path.iterdir())) == 1  # one warm-up call, of the two CPUs
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid), 0)


def test_a_stage_waits_for_the_warm_up_and_runs_on_the_warm_worker(tmp_path):
    """A stage started while start_services' warm-up still runs waits for it, so its one unit goes to the
    worker that warmed up rather than to a cold one that would load the same models again; with
    PREFECT_API_URL set no temporary Prefect server is started (the flow reports to that one)."""
    import subprocess
    import sys

    code = ("import gc, json, os, time\n"
            "from flows.engine import ShardWorker, TemporaryPrefectServer, run_stage, start_services\n"
            "from operators.base import StageStats\n"
            "def warm(folder):\n"
            "    import os, pathlib, time\n"
            "    time.sleep(3)\n"
            "    pathlib.Path(folder, 'warm').write_text(f'{os.getpid()} {time.time()}')\n"
            "class Unit:\n"
            "    def __call__(self, rank, path, writer):\n"
            "        import os, pathlib, time\n"
            "        pathlib.Path(path).write_text(f'{os.getpid()} {time.time()}')\n"
            "        return {'unit': StageStats(docs_in=1, docs_out=1)}\n"
            f"folder = {str(tmp_path)!r}\n"
            "with start_services(num_cpus=2, warm_up=warm, warm_up_args=(folder,), warm_workers=lambda: 1):\n"
            "    run_stage('unit', [os.path.join(folder, 'unit')], os.path.join(folder, 'run'), Unit, progress=False)\n"
            "print(any(isinstance(o, TemporaryPrefectServer) for o in gc.get_objects()))\n")
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, "PREFECT_API_URL": "http://127.0.0.1:9/api"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300,
                          cwd=Path(__file__).parents[1])
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False"]
    warm_pid, warm_end = (tmp_path / "warm").read_text().split()
    unit_pid, unit_start = (tmp_path / "unit").read_text().split()
    assert unit_pid == warm_pid
    assert float(unit_start) >= float(warm_end)
