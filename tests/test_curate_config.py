"""The run config: documented defaults that load back unchanged, and errors that name the key (no Ray here)."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pytest
import yaml
from typer.testing import CliRunner

from flows.config import ConfigError, Inputs, RunConfig, default_yaml, load_config, parse_config
from mixforge.cli import app

BAD = """\
inputs:
  paths: [corpus/]
langid:
  foo: 1
  min_score: high
filters:
  gopher_quality:
    min_doc_words: fifty
  gopher_repetition:
    top_n_grams: [[2, x]]
dedup:
  minhash: {n_grams: 2.5}
tokenize:
  encodin: cl100k_base
colour: blue
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source="run.yaml")
    assert str(caught.value) == "\n".join(caught.value.problems)
    return caught.value.problems


def test_default_config_round_trips_through_init_config():
    printed = CliRunner().invoke(app, ["init-config"])
    assert printed.exit_code == 0, printed.output
    assert parse_config(printed.output) == RunConfig(inputs=Inputs(paths=["data/sample/web", "data/sample/docs"]))
    with_inputs = CliRunner().invoke(app, ["init-config", "s3://bucket/crawl/*.warc.gz", "more.jsonl"])
    assert parse_config(with_inputs.output).inputs.paths == ["s3://bucket/crawl/*.warc.gz", "more.jsonl"]


def test_every_key_of_the_default_config_is_documented():
    lines = default_yaml().splitlines()
    keys = [i for i, line in enumerate(lines) if re.match(r"^\s*\w+:", line)]
    assert len(keys) > 40  # every section, every operator parameter
    undocumented = [lines[i] for i in keys if not lines[i - 1].lstrip().startswith("# ")]
    assert undocumented == []
    # and every key the model has appears in the text
    dumped = RunConfig(inputs=Inputs(paths=["x"])).model_dump()
    assert yaml.safe_load(default_yaml()).keys() == dumped.keys()
    assert yaml.safe_load(default_yaml())["filters"].keys() == dumped["filters"].keys()


def test_each_problem_is_one_line_naming_the_key_and_its_line():
    assert problems(BAD) == [
        "run.yaml:4: langid.foo: unknown key; allowed: enabled, languages, min_score, model_path",
        "run.yaml:5: langid.min_score: Input should be a valid number, unable to parse string as a number "
        "(got 'high')",
        "run.yaml:8: filters.gopher_quality.min_doc_words: Input should be a valid integer, unable to parse "
        "string as an integer (got 'fifty')",
        "run.yaml:10: filters.gopher_repetition.top_n_grams[0][1]: Input should be a valid number, unable to "
        "parse string as a number (got 'x')",
        "run.yaml:12: dedup.minhash.n_grams: Input should be a valid integer, got a number with a fractional "
        "part (got 2.5)",
        "run.yaml:14: tokenize.encodin: unknown key; allowed: encoding, write_token_shards, count_before_filters",
        "run.yaml:15: colour: unknown key; allowed: inputs, ray, langid, filters, dedup, tokenize, "
            "keep_stage_copies",
    ]


def test_missing_inputs_bad_yaml_and_bad_values():
    assert problems("langid: {min_score: 0.5}\n") == ["run.yaml: inputs: required key is missing"]
    assert problems("inputs: {}\n") == ["run.yaml:1: inputs.paths: required key is missing"]
    assert problems("inputs: {paths: [a]}\nray: {num_cpus: 0}\n") == [
        "run.yaml:2: ray.num_cpus: Input should be greater than 0 (got 0)"]
    assert problems("inputs: [a\n")[0].startswith("run.yaml:2: not valid YAML:")
    assert problems("- a\n- b\n") == ["run.yaml: expected a mapping of sections (inputs, ray, langid, filters, "
                                      "dedup, tokenize, keep_stage_copies)"]


def test_sections_build_their_operators_with_the_configured_parameters(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("inputs: {paths: [a]}\nfilters:\n  gopher_quality: {min_doc_words: 3, max_doc_words: 8}\n"
                    "  c4_quality: {enabled: false}\n")
    config = load_config(path)
    assert [type(s).__name__ for s in config.filters.enabled()] == [
        "GopherQualitySection", "GopherRepetitionSection", "FineWebQualitySection"]
    gopher = config.filters.gopher_quality.build()
    words = ["alpha beta", "the scholars and the students wrote", "the quick brown fox jumps over the lazy dog"]
    batch = pa.table({"id": ["a", "b", "c"], "text": words})
    assert gopher(batch).column("drop_reason").to_pylist() == ["gopher_short_doc", None, "gopher_long_doc"]


def test_cli_reports_config_problems_and_exits_2(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(BAD)
    result = CliRunner().invoke(app, ["curate", str(path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert f"error: {path}:4: langid.foo: unknown key; allowed: enabled, languages, min_score, model_path" \
        in result.output
    assert not (tmp_path / "run").exists()
    missing = CliRunner().invoke(app, ["curate", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "run")])
    assert missing.exit_code == 2 and "no such config file" in missing.output


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parent.parent / "configs").glob("curate-*.yaml")),
                         ids=lambda p: p.name)
def test_example_configs_load(path):
    config = load_config(path)
    assert config.inputs.paths and config.model_dump() != RunConfig(inputs=config.inputs).model_dump()
