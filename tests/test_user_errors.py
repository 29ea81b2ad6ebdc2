"""User errors at the CLI: one `error:` line naming the problem and the fix, exit status 2, no traceback;
`mixforge --debug` shows the traceback instead."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mixforge.cli import app

runner = CliRunner()


def one_error_line(result) -> str:
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


def test_missing_input_and_unknown_format(tmp_path: Path):
    line = one_error_line(runner.invoke(app, ["ingest", "-o", str(tmp_path / "run"), str(tmp_path / "missing.jsonl")]))
    assert f"input not found: {tmp_path / 'missing.jsonl'}" in line and "check the path" in line
    (tmp_path / "crawl.txt").write_text("not a corpus")
    line = one_error_line(runner.invoke(app, ["ingest", "-o", str(tmp_path / "run"), str(tmp_path / "crawl.txt")]))
    assert "no reader for" in line and ".warc.gz" in line and "rename or convert" in line
    line = one_error_line(runner.invoke(app, ["ingest", "-o", str(tmp_path / "run"), str(tmp_path / "*.parquet")]))
    assert "no input files with a known extension match" in line
    assert not (tmp_path / "run").exists()  # refused before anything ran


def test_bad_config_missing_input_in_config_and_bad_parameter(tmp_path: Path):
    config = tmp_path / "run.yaml"
    config.write_text("inputs:\n  paths: [nowhere/*.jsonl]\n")
    line = one_error_line(runner.invoke(app, ["curate", str(config), "-o", str(tmp_path / "run")]))
    assert "no input files with a known extension match 'nowhere/*.jsonl'" in line
    config.write_text("inputs:\n  paths: [x.jsonl]\nlangid:\n  enabeld: true\n")
    result = runner.invoke(app, ["curate", str(config), "-o", str(tmp_path / "run")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"{config}:4: langid.enabeld: unknown key; allowed: enabled" in result.output
    line = one_error_line(runner.invoke(app, ["sql", str(tmp_path), "SELECT 1", "--max-rows", "many"]))
    assert "'--max-rows'" in line and "see `mixforge sql --help`" in line
    line = one_error_line(runner.invoke(app, ["no-such-command"]))
    assert "No such command" in line


def test_bad_sql(sample_run: Path):
    line = one_error_line(runner.invoke(app, ["sql", str(sample_run), "SELEC count(*) FROM docs"]))
    assert "syntax error" in line.lower()
    line = one_error_line(runner.invoke(app, ["sql", str(sample_run), "SELECT nope FROM docs"]))
    assert "nope" in line


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory) -> Path:
    """A directory the catalog opens: one shard of documents."""
    import pyarrow as pa

    from storage.shards import write_table_atomic

    run = tmp_path_factory.mktemp("run")
    write_table_atomic(pa.table({"id": ["a"], "text": ["x"]}), run / "shards" / "ingest" / "part-00000-0000.parquet")
    (run / "manifest.json").write_text('{"final_stage": "ingest"}')
    return run


def test_debug_shows_the_traceback(tmp_path: Path):
    """The installed entry point, as a user runs it: one line by default, the traceback with --debug."""
    command = [sys.executable, "-m", "mixforge.cli", "ingest", "-o", str(tmp_path / "r"), str(tmp_path / "gone.jsonl")]
    plain = subprocess.run(command, capture_output=True, text=True)
    assert plain.returncode == 2 and plain.stderr.strip().count("\n") == 0 and "Traceback" not in plain.stderr
    debug = subprocess.run([*command[:3], "--debug", *command[3:]], capture_output=True, text=True)
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "InputNotFound" in debug.stderr


@pytest.mark.parametrize("command", [["cluster"], ["score", "run"]])
def test_cluster_and_score_configs_reject_unknown_keys(tmp_path: Path, command: list[str]):
    """A typo at the top level or inside a section is an error with its line and the keys allowed there,
    as in curate's config, instead of a run with the defaults."""
    section = command[0]
    config = tmp_path / "config.yaml"
    config.write_text(f"{section}:\n  {{}}\nembedd:\n  batch_size: 8\n")
    result = runner.invoke(app, [*command, str(config), "-o", str(tmp_path / "run")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    unknown = [line for line in result.output.splitlines() if "embedd" in line]  # (score: {} has no scorer either)
    assert len(unknown) == 1 and unknown[0].startswith(f"error: {config}:3: embedd: unknown key; allowed: inputs, ")
    assert "embed," in unknown[0]
    config.write_text(f"# comment\n{section}:\n  no_such_setting: 3\n")
    line = one_error_line(runner.invoke(app, [*command, str(config), "-o", str(tmp_path / "run")]))
    assert line.startswith(f"error: {config}:3: {section}.no_such_setting: unknown key; allowed: ")
    assert not (tmp_path / "run").exists()
