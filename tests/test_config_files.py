"""One schema per concept, one way to read a config file.

The mixture experiment has one config model (mixtures/config.py ExperimentConfig) with one set of
defaults, whether it comes from `mixforge regmix run`'s YAML, the `mixture_experiment` flow's parameter,
the pipeline's `mixture:` section or the dashboard's launch form. Every YAML file a command reads as a
config is read by flows.config.load_config: a typo'd key is one `error:` line with its line number and the
keys allowed there, exit status 2, before anything runs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from typer.testing import CliRunner

from flows.config import load_config
from mixforge.cli import app
from mixtures.config import ExperimentConfig

runner = CliRunner()
RUN = "/runs/r1"


def test_every_entry_point_gives_the_same_experiment_defaults(tmp_path: Path):
    """Only the required fields (the corpus and the targets): the same model through each entry point."""
    from flows.mixture_experiment import mixture_experiment
    from flows.pipeline import PipelineConfig

    experiment = tmp_path / "experiment.yaml"
    experiment.write_text(f"corpus: {{run_dir: {RUN}, by: super_cluster}}\ntargets: ['3']\n")
    from_cli = load_config(experiment, model=ExperimentConfig)  # what `mixforge regmix run` reads

    from_flow = mixture_experiment.validate_parameters(
        {"config": {"corpus": {"run_dir": RUN, "by": "super_cluster"}, "targets": ["3"]}})["config"]

    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text("inputs: {paths: [data]}\nmixture:\n  corpus: {by: super_cluster}\n  targets: ['3']\n")
    from_pipeline = load_config(pipeline, PipelineConfig).mixture.for_run(Path(RUN), ["3"])

    assert from_cli == from_flow == from_pipeline == launched_from_the_form({"config.targets": '["3"]'})
    assert from_cli.rounds == [16] and from_cli.materialize.budget_tokens == 100_000
    assert from_cli.out == Path(RUN) / "mixtures" / "regmix-3"


def launched_from_the_form(typed: dict[str, str]) -> ExperimentConfig:
    """The config the dashboard launches when the user types only `typed` into the form of the deployment
    `mixforge ui` serves for a run without an experiment of its own (by: set too, it has no default)."""
    def script() -> None:
        import uuid
        from pathlib import Path

        import streamlit as st
        from prefect.utilities.callables import parameter_schema

        from dashboards.launch import Deployment, parameter_form, parse_parameters
        from dashboards.local_prefect import deployment_defaults
        from flows.mixture_experiment import mixture_experiment

        schema = parameter_schema(mixture_experiment.fn).model_dump()
        defaults = deployment_defaults(Path(st.session_state["run"]))
        deployment = Deployment("mixture_experiment/ui-r1", uuid.UUID(int=0), defaults, schema["properties"],
                                schema["required"], schema["definitions"])
        with st.form("launch"):
            raw = parameter_form(deployment, key="p")
            st.form_submit_button("Launch")
        st.session_state["parameters"] = parse_parameters(deployment, raw)

    form = AppTest.from_function(script, default_timeout=120)
    form.session_state["run"] = RUN
    form.run()
    for key, value in {**typed, "config.corpus.by": "super_cluster"}.items():
        form.text_input(key=f"p_mixture_experiment/ui-r1_{key}").set_value(value)
    form.button[0].click().run()
    assert not form.exception, form.exception
    return ExperimentConfig.model_validate(form.session_state["parameters"]["config"])


VERIFY = """run_dir: {run}
base: {{sql: SELECT * FROM docs, train_tokens: 1000}}
candidates: [{{name: a, source: a.jsonl}}]
targets: [{{name: t, sql: SELECT * FROM docs}}]
anneal: {{budget_tokens: 1000}}
"""
# (command, a config with one typo, its line, the key as the error names it, the start of the allowed keys)
TYPOS = [
    (["run", "{config}", "-o", "{out}"], "inputs: {{paths: [a.jsonl]}}\nmixture:\n  corpus: {{by: domain}}\n"
     "  targets: [a]\n  roundz: [4]\n", 5, "mixture.roundz", "out, corpus, targets, method, rounds, "),
    (["run", "{config}", "-o", "{out}"], "inputs: {{paths: [a.jsonl]}}\nclusterr: {{}}\n", 2, "clusterr",
     "inputs, ray, langid, "),
    (["regmix", "run", "{config}"], "corpus: {{run_dir: {run}, by: domain}}\ntargets: [a]\nroundz: [8]\n", 3,
     "roundz", "out, corpus, targets, "),
    (["regmix", "run", "{config}"], "corpus: {{run_dir: {run}, by: domain}}\ntargets: [a]\nmaterialize:\n"
     "  budget_tokns: 5000\n", 4, "materialize.budget_tokns", "budget_tokens, max_epochs, "),
    (["curate", "{config}", "-o", "{out}"], "inputs: {{paths: [a.jsonl]}}\ndedup:\n  exakt: {{}}\n", 3,
     "dedup.exakt", "exact, minhash"),
    (["cluster", "{config}", "-o", "{out}"], "cluster:\n  n_clusterz: 4\n", 2, "cluster.n_clusterz", ""),
    (["score", "run", "{config}", "-o", "{out}"], "scores: {{}}\n", 1, "scores", "input_stage, "),  # the section
    (["select", "{config}", "-o", "{out}"], "select:\n  colum: dclm_score\n", 2, "select.colum", "input_stage, "),
    (["verify", "{config}"], VERIFY + "holdout_fracion: 0.2\n", 6, "holdout_fracion", "run_dir, out, "),
]


@pytest.mark.parametrize(("command", "text", "line", "key", "allowed"), TYPOS,
                         ids=[f"{' '.join(t[0][:2])}-{t[3]}" for t in TYPOS])
def test_a_typo_in_any_config_file_is_one_line_with_its_line_and_the_allowed_keys(
        tmp_path: Path, command: list[str], text: str, line: int, key: str, allowed: str):
    config = tmp_path / "config.yaml"
    config.write_text(text.format(run=tmp_path / "run"))
    out = tmp_path / "out"
    result = runner.invoke(app, [arg.format(config=config, out=out) for arg in command])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and "Traceback" not in result.output, result.output
    assert lines[0].startswith(f"error: {config}:{line}: {key}: unknown key; allowed: {allowed}"), lines[0]
    assert not out.exists()  # refused before anything ran


@pytest.mark.parametrize("command", sorted({tuple(t[0]) for t in TYPOS}), ids=lambda c: " ".join(c[:2]))
def test_broken_yaml_in_any_config_file_is_one_line_with_its_line(tmp_path: Path, command: tuple[str, ...]):
    config = tmp_path / "config.yaml"
    config.write_text("# a comment\nselect:\n  column: [dclm_score\n")
    result = runner.invoke(app, [arg.format(config=config, out=tmp_path / "out") for arg in command])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and "Traceback" not in result.output, result.output
    assert lines[0].startswith(f"error: {config}:4: not valid YAML: "), lines[0]
