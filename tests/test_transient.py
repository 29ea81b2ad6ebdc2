"""Transient failures (network, throttling, credentials) are retried and, if they persist, fail the unit
so that a rerun retries it; they are never quarantined. Against moto's S3 server answering some requests
with S3's own error replies."""

from __future__ import annotations

import errno
import json
import zlib
from dataclasses import dataclass

import fsspec
import orjson
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
from reader_inputs import jsonl_records, write_jsonl

from flows.engine import UnitsFailed, run_stage
from flows.passes import ReadWorker
from operators.read_jsonl import JsonlReader
from operators.reader import TransientInputError, is_transient
from storage.catalog import open_catalog, query
from storage.shards import completed_units, stage_files


def _client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       "GetObject")


def test_classification():
    def chained(outer: Exception, cause: Exception) -> Exception:
        outer.__cause__ = cause
        return outer

    transient = [TimeoutError("read timed out"), ConnectionResetError(errno.ECONNRESET, "reset by peer"),
                 EndpointConnectionError(endpoint_url="http://s3"), ReadTimeoutError(endpoint_url="http://s3"),
                 _client_error("SlowDown", 503), _client_error("ExpiredToken", 400),
                 PermissionError("Access Denied"), chained(OSError("s3fs wrapped"), _client_error("Throttling", 400))]
    content = [UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), zlib.error("invalid block type"),
               EOFError("Compressed file ended before the end-of-stream marker was reached"),
               ValueError("not JSON"), _client_error("NoSuchKey", 404), OSError(errno.EIO, "bad gzip")]
    try:
        orjson.loads(b"{nope")
    except orjson.JSONDecodeError as error:
        content.append(error)
    assert [is_transient(e) for e in transient] == [True] * len(transient)
    assert [is_transient(e) for e in content] == [False] * len(content)


@dataclass
class Fault:
    """S3's error reply to GET requests for keys under `prefix`: `times` times (None: always)."""

    prefix: str
    code: str
    status: int
    times: int | None = None
    hits: int = 0


class FaultyS3:
    """WSGI middleware in front of moto: answers matching requests with an S3 error document."""

    def __init__(self, app):
        self.app = app
        self.faults: list[Fault] = []

    def __call__(self, environ, start_response):
        for fault in self.faults:
            if environ["REQUEST_METHOD"] == "GET" and environ["PATH_INFO"].startswith(fault.prefix) \
                    and (fault.times is None or fault.hits < fault.times):
                fault.hits += 1
                body = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{fault.code}</Code>'
                        f"<Message>injected by the test</Message></Error>").encode()
                start_response(f"{fault.status} Error", [("Content-Type", "application/xml"),
                                                         ("Content-Length", str(len(body)))])
                return [body]
        return self.app(environ, start_response)


@pytest.fixture
def faulty_s3(s3_server):
    server = s3_server._server
    faulty = FaultyS3(server.app)
    server.app = faulty
    yield faulty
    server.app = faulty.app


@pytest.fixture(scope="module")
def corpus(s3_server, tmp_path_factory) -> dict[str, list[dict]]:
    """Three JSONL files on S3, and their records."""
    folder = tmp_path_factory.mktemp("transient")
    fs = fsspec.filesystem("s3")
    fs.mkdir("transient")
    files = {}
    for i, name in enumerate(("a.jsonl", "b.jsonl.gz", "c.jsonl")):
        records = jsonl_records(30)[i * 10:(i + 1) * 10]
        write_jsonl(folder / name, records)
        fs.put(str(folder / name), f"transient/raw/{name}")
        files[f"s3://transient/raw/{name}"] = records
    return files


def test_reader_retries_expired_token_then_reads_everything(faulty_s3, corpus):
    url = "s3://transient/raw/a.jsonl"
    faulty_s3.faults.append(Fault("/transient/raw/a.jsonl", "ExpiredToken", 400, times=2))
    reader = JsonlReader(retry_delay=0.05)
    batches = list(reader(url))
    assert faulty_s3.faults[0].hits == 2
    assert sum(b.quarantine.num_rows for b in batches) == 0
    assert [t for b in batches for t in b.documents.column("text").to_pylist()] == [r["text"] for r in corpus[url]]


def test_reader_gives_up_without_quarantining(faulty_s3, corpus):
    faulty_s3.faults.append(Fault("/transient/raw/a.jsonl", "AccessDenied", 403))
    reader = JsonlReader(retries=2, retry_delay=0.05)
    with pytest.raises(TransientInputError, match="PermissionError.*still failing after 2 retries"):
        list(reader("s3://transient/raw/a.jsonl"))
    assert faulty_s3.faults[0].hits == 3 and reader.stats.quarantined == 0


def test_stage_recovers_from_throttling(faulty_s3, corpus, ray_local, tmp_path):
    """A few failed requests (throttling) on every file: the run completes with nothing quarantined."""
    for name in ("a.jsonl", "b.jsonl.gz", "c.jsonl"):
        faulty_s3.faults.append(Fault(f"/transient/raw/{name}", "SlowDown", 503, times=2))
    files = sorted(corpus)
    records = run_stage("ingest", files, tmp_path, lambda: ReadWorker(), progress=False)
    assert sum(f.hits for f in faulty_s3.faults) == 6
    assert len(records) == 3 and not stage_files(tmp_path, "quarantine", "ingest")
    assert texts(tmp_path) == sorted(r["text"] for f in files for r in corpus[f])


def test_denied_unit_fails_and_a_rerun_completes(faulty_s3, corpus, ray_local, tmp_path):
    """Access denied on one file, every time: the others are done, it is not (no quarantine row for it);
    once access is restored, a rerun reads only it and the run equals an undisturbed one."""
    denied = "s3://transient/raw/b.jsonl.gz"
    faulty_s3.faults.append(Fault("/transient/raw/b.jsonl.gz", "AccessDenied", 403))
    files = sorted(corpus)
    with pytest.raises(UnitsFailed) as failure:
        run_stage("ingest", files, tmp_path, lambda: ReadWorker({"retries": 1, "retry_delay": 0.05}), progress=False)
    assert list(failure.value.failed) == [denied] and "1 of 3 units failed" in str(failure.value)
    assert "AccessDenied" in str(failure.value) or "Access Denied" in str(failure.value) or \
        "PermissionError" in str(failure.value)
    assert sorted(completed_units(tmp_path, "ingest")) == [0, 2]
    assert not stage_files(tmp_path, "quarantine", "ingest")
    done_before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "_progress" / "ingest").glob("0*.json")}

    faulty_s3.faults.clear()  # access restored
    records = run_stage("ingest", files, tmp_path, lambda: ReadWorker(), progress=False)
    assert [r["input"] for r in records] == files
    assert {p: (tmp_path / "_progress" / "ingest" / p).stat().st_mtime_ns for p in done_before} == done_before
    assert texts(tmp_path) == sorted(r["text"] for f in files for r in corpus[f])
    assert json.loads((tmp_path / "_progress" / "ingest" / "00001.json").read_text())["input"] == denied


def texts(run) -> list[str]:
    con = open_catalog(run)
    return [r["text"] for r in query(con, "SELECT text FROM read_parquet('"
                                          f"{run}/shards/ingest/*.parquet') ORDER BY text").to_pylist()]


def test_cli_reports_denied_access_in_one_line_and_a_rerun_completes(faulty_s3, corpus, ray_local, tmp_path):
    """`mixforge ingest` from S3 with access denied: one error line naming the file and what to do, exit
    status 1, no traceback and nothing recorded as read; once access is back the same command completes."""
    from typer.testing import CliRunner

    from mixforge.cli import app

    faulty_s3.faults.append(Fault("/transient/raw/c.jsonl", "AccessDenied", 403))
    command = ["ingest", "s3://transient/raw/*.jsonl*", "-o", str(tmp_path / "run")]
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    lines = result.output.strip().splitlines()
    assert lines and all(line.startswith("error: ") for line in lines), result.output
    assert "PermissionError" in result.output and "rerun the same command" in result.output
    assert not stage_files(tmp_path / "run", "quarantine", "ingest")
    faulty_s3.faults.clear()
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 0, result.output
    assert "30 documents in, 30 kept" in result.output
