"""A healthy run is quiet: progress bars and the summary, no warnings or error-looking lines from Ray,
Ray Data, Prefect or the models (`mixforge --verbose` shows them). Run as a user runs it: the installed
CLI in a fresh process, without the test session's own logging settings."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from reader_inputs import jsonl_records, write_jsonl

NOISE = re.compile(r"WARNING|ERROR|Traceback|UNEXPECTED|^\[[^\]]* [IEW] \d+ \d+\]|\| (INFO|WARNING) +\|", re.M)


def test_a_healthy_ingest_prints_progress_and_summary_only(tmp_path: Path):
    write_jsonl(tmp_path / "docs.jsonl", jsonl_records(20))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_LOGGING", "PREFECT_SERVER_ANALYTICS", "TQDM_", "RAY_BACKEND", "RAY_DATA_LOG",
                                "TRANSFORMERS_VERBOSITY", "MIXFORGE_VERBOSE", "RAY_ADDRESS"))}
    result = subprocess.run([sys.executable, "-m", "mixforge.cli", "ingest", str(tmp_path / "docs.jsonl"),
                             "-o", str(tmp_path / "run")], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "- ingest (complete" in result.stdout and "20 documents in, 20 kept" in result.stdout, result.stdout
    assert "ingest: 100%" in result.stderr, result.stderr  # the progress bar stays
    assert not NOISE.findall(result.stderr), result.stderr
