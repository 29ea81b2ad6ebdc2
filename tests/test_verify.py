"""Ultra-FineWeb verification on the sample corpus, with a known answer: the target is held-out Python
documentation, the base proxy never saw Python docs (it is trained on PostgreSQL docs and fortunes), and
annealing on python-doc documents must verify better than annealing on fortunes and than the base-only anneal,
on both seeds. A fastText classifier seeded from the verdicts must rank held-out Python docs above fortunes.

Real parts throughout: the `mixforge verify` CLI running the Prefect flow, the anneals as Ray tasks, DuckDB
queries over the run, tiny proxies (~0.24M parameters) and fastText; a Hugging Face GPT-2 built from a config
stands in for a downloaded checkpoint.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import yaml
from prefect.artifacts import Artifact
from streamlit.testing.v1 import AppTest
from test_mixtures_experiment import corpus_run  # noqa: F401 - the three-source run, as a fixture
from typer.testing import CliRunner

from mixforge.cli import app
from mixtures.proxy import ProxyConfig, evaluate, load_checkpoint, lr_factor
from mixtures.verify import BASE, VerifyConfig, split_query
from storage.catalog import open_catalog
from storage.token_shards import TokenShard

PYTHON = "SELECT * FROM docs WHERE source = 'sample/python-doc'"
FORTUNES = "SELECT * FROM docs WHERE metadata->>'$.origin' = 'fortunes'"
HOLDOUT = 0.2
SEEDS = [0, 1]
ANNEAL_TOKENS = 20_000


def verify_config(run_dir, out, **overrides) -> dict:
    config = {
        "run_dir": str(run_dir), "out": str(out), "holdout_fraction": HOLDOUT,
        "base": {"sql": "SELECT * FROM docs WHERE source <> 'sample/python-doc'", "train_tokens": 60_000,
                 "vocab_size": 2048,
                 "proxy": {"d_model": 64, "n_layers": 2, "n_heads": 2, "seq_len": 64, "batch_size": 8}},
        "candidates": [{"name": "python-doc", "source": "sample/python-doc"}, {"name": "fortunes", "sql": FORTUNES}],
        "targets": [{"name": "python-doc", "sql": PYTHON}],
        "anneal": {"budget_tokens": ANNEAL_TOKENS, "eval_tokens": 4096, "seeds": SEEDS},
    }
    return {**config, **overrides}


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.fixture(scope="module")
def verified(corpus_run, ray_local):  # noqa: F811 - the imported fixture
    """One verification through the CLI: a base trained once, 2 candidates + the base-only anneal x 2 seeds."""
    path = corpus_run / "verify.yaml"
    path.write_text(yaml.safe_dump(verify_config(corpus_run, corpus_run / "verify")))
    result = invoke("verify", str(path))
    assert result.exit_code == 0, result.output
    return path, corpus_run / "verify", result.output


def test_known_answer_python_docs_verify_better_than_fortunes_and_the_base(verified, corpus_run):  # noqa: F811
    _, out, output = verified
    summary = pd.read_parquet(out / "summary.parquet").set_index("candidate")
    results = pd.read_parquet(out / "results.parquet")
    assert summary["rank"].to_dict() == {"python-doc": 1, "fortunes": 2}
    assert summary.loc["python-doc", "verdict"] == "better" and summary.loc["python-doc", "worst_seed"] > 0
    assert summary.loc["python-doc", "n_seeds"] == 2 and summary.loc["python-doc", "spread"] > 0
    losses = results.pivot_table(index="seed", columns="candidate", values="loss")
    assert sorted(losses.columns) == sorted([BASE, "python-doc", "fortunes"]) and list(losses.index) == SEEDS
    assert (losses["python-doc"] < losses[BASE]).all() and (losses["python-doc"] < losses["fortunes"]).all()
    per_seed = results[results["candidate"] == "python-doc"].set_index("seed")
    assert np.allclose(per_seed["delta_loss"], losses[BASE] - losses["python-doc"])
    assert summary.loc["python-doc", "score"] == pytest.approx(per_seed["delta_loss"].mean())
    assert any(line.split()[:2] == ["1", "python-doc"] for line in output.splitlines() if line.strip())
    artifact = Artifact.get("verification")  # the flow's table artifact, ranked
    assert str(out) in artifact.description
    assert [row["candidate"] for row in json.loads(artifact.data)] == ["python-doc", "fortunes"]
    # annealing on Python docs taught the base, which never saw one, about them
    base = json.loads((out / "base" / "result.json").read_text())
    assert losses["python-doc"].max() < base["metrics"]["python-doc_val_loss"] - 0.05
    assert base["data"][BASE]["tokens"] == 60_000
    # each blend is 30% candidate and 70% base, and never holds a held-out document
    blend = json.loads((out / "runs" / "python-doc" / "seed-0" / "manifest.json").read_text())
    assert blend["parts"]["python-doc"]["tokens"] == round(0.3 * ANNEAL_TOKENS)
    assert blend["parts"][BASE]["tokens"] == ANNEAL_TOKENS - round(0.3 * ANNEAL_TOKENS)
    held = set(TokenShard.open(out / "targets" / "python-doc").ids["id"].to_pylist())
    trained = set(open_catalog(corpus_run).sql(split_query(PYTHON, HOLDOUT, held_out=False)).df()["id"])
    assert held and trained and held.isdisjoint(trained)
    assert not list((out / "runs").glob("*/*/blend.tokens.u32"))  # the blends' tokens are removed after use


def test_base_checkpoint_keeps_its_optimizer_and_loads_for_scoring(verified):
    from scoring.proxy_lm import ProxyLM

    _, out, _ = verified
    loaded = load_checkpoint(out / "base" / "proxy.pt")
    assert loaded.kind == "proxy" and loaded.training["schedule"] == "constant" and loaded.optimizer is not None
    assert loaded.training["tokens"] >= 60_000 and loaded.tokenizer == "o200k_base"
    losses = ProxyLM(out / "base" / "proxy.pt").losses(["import os\nprint(os.getcwd())", "Fortune favours the bold."])
    assert np.isfinite(np.asarray(losses.loss)).all()


def test_rerun_resumes_per_candidate(verified):
    path, out, _ = verified
    results = sorted((out / "runs").glob("*/seed-*/result.json"))
    assert len(results) == 3 * len(SEEDS)
    redo = out / "runs" / "fortunes" / "seed-1" / "result.json"
    before = {p: p.stat().st_mtime_ns for p in results if p != redo}
    base = (out / "base" / "proxy.pt").stat().st_mtime_ns
    old = json.loads(redo.read_text())
    redo.unlink()
    result = invoke("verify", str(path))
    assert result.exit_code == 0, result.output
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert (out / "base" / "proxy.pt").stat().st_mtime_ns == base
    assert json.loads(redo.read_text())["losses"] == pytest.approx(old["losses"], rel=1e-4)  # seeded: the same anneal


def test_classifier_seeded_from_the_verdicts_ranks_held_out_python_docs_above_fortunes(verified, corpus_run,  # noqa: F811
                                                                                          tmp_path):
    from scoring.fasttext_classifier import FastTextClassifier, metadata_path

    _, out, _ = verified
    model = tmp_path / "verified.bin"
    result = invoke("score", "train-classifier", "--seeds-from", str(out), "--out", str(model), "--epoch", "20")
    assert result.exit_code == 0, result.output
    metadata = json.loads(metadata_path(model).read_text())
    assert metadata["seeds"]["verification"] == str(out.resolve())
    assert [p["candidate"] for p in metadata["seeds"]["positives"]] == ["python-doc"]
    assert [n["candidate"] for n in metadata["seeds"]["negatives"]] == ["fortunes"]
    con = open_catalog(corpus_run)
    python, fortunes = (con.sql(split_query(sql, HOLDOUT, held_out=True)).df()["text"].tolist()
                        for sql in (PYTHON, FORTUNES))
    assert metadata["n_positive"] == len(con.sql(split_query(PYTHON, HOLDOUT, held_out=False)).df())
    classifier = FastTextClassifier.load(model)
    p_python, p_fortunes = classifier.predict_proba(python), classifier.predict_proba(fortunes)
    auc = (p_python[:, None] > p_fortunes[None, :]).mean()
    assert auc > 0.95, auc
    both = invoke("score", "train-classifier", "--seeds-from", str(out), "-p", "x", "--out", str(model))
    assert both.exit_code == 2 and "not both" in both.output


def test_dashboard_page_ranks_the_candidates(verified, corpus_run):  # noqa: F811
    def script(run: str) -> None:
        from pathlib import Path

        from dashboards.verify import render

        render(Path(run))

    page = AppTest.from_function(script, args=(str(corpus_run),), default_timeout=120).run()
    assert not page.exception, [e.value for e in page.exception]
    assert page.selectbox(key="verify_folder").value == "verify"
    table = page.dataframe[0].value
    assert table["candidate"].tolist() == ["python-doc", "fortunes"] and table["rank"].tolist() == [1, 2]
    assert {"score", "spread", "verdict", "delta_python-doc"} <= set(table.columns)


def test_bad_configs_are_one_line_with_the_line(corpus_run, tmp_path):  # noqa: F811
    def run_with(config: dict) -> str:
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        result = invoke("verify", str(path))
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output
        return result.output

    good = verify_config(corpus_run, tmp_path / "out")
    output = run_with({**good, "anneal": {**good["anneal"], "fractoin": 0.5}})
    assert "bad.yaml:" in output and "anneal.fractoin: unknown key; allowed: budget_tokens, fraction" in output
    output = run_with({**good, "candidates": [{"name": "x", "cluster": 3, "source": "a"}]})
    assert "give exactly one of sql, cluster, super_cluster, source, stage (got cluster, source)" in output
    output = run_with({**good, "candidates": [{"name": "x", "sql": "SELECT * FROM nowhere"}]})
    assert "error: candidate x:" in output and "nowhere" in output
    output = run_with({**good, "candidates": [{"name": "x", "cluster": 3}]})  # the run has no cluster column
    assert "error: candidate x:" in output
    output = run_with({**good, "base": {"checkpoint": str(tmp_path / "missing.pt")}})
    assert "missing.pt: no checkpoint there" in output
    assert not (tmp_path / "out").exists()  # nothing trained, nothing written


def test_learning_rate_decays_to_zero():
    steps = 50
    anneal_rates = [lr_factor("anneal", s, steps, warmup=1) for s in range(steps)]
    assert anneal_rates[0] == 1.0 and anneal_rates[-1] == pytest.approx(1 / steps)
    assert np.all(np.diff(anneal_rates) < 0) and lr_factor("anneal", steps, steps, warmup=1) == 0.0
    assert [lr_factor("constant", s, steps, warmup=5) for s in (0, 4, 49)] == [0.2, 1.0, 1.0]
    assert lr_factor("cosine", 49, 50, 1) == pytest.approx(0.1, abs=1e-3)
    with pytest.raises(ValueError, match="unknown learning-rate schedule"):
        lr_factor("wsd", 0, 10, 1)


def test_verification_from_a_hugging_face_checkpoint(corpus_run, tmp_path):  # noqa: F811
    """A GPT-2 built from a config, with a BPE tokenizer trained here, as the given base: blends and targets are
    tokenized with its tokenizer.json, the anneals start a fresh AdamW, and Python docs still verify better."""
    from scoring_inputs import train_tokenizer
    from transformers import GPT2Config, GPT2LMHeadModel

    from mixtures.verify import anneal_candidate, check_inputs, prepare_targets

    texts = open_catalog(corpus_run).sql("SELECT text FROM docs ORDER BY id").df()["text"].tolist()
    folder = tmp_path / "gpt2"
    tokenizer = train_tokenizer(texts, folder, vocab_size=1024)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=128,
                               eos_token_id=tokenizer.eos_token_id)).save_pretrained(folder)
    loaded = load_checkpoint(folder)
    assert loaded.kind == "hf" and loaded.seq_len == 128 and loaded.optimizer is None
    config = VerifyConfig.model_validate(verify_config(
        corpus_run, tmp_path / "v", base={"checkpoint": str(folder), "sql": "SELECT * FROM docs WHERE source <> "
                                                                            "'sample/python-doc'"},
        anneal={"budget_tokens": 24_000, "eval_tokens": 2048, "seeds": [0], "learning_rate": 3e-3, "seq_len": 64}))
    check_inputs(config)
    prepare_targets(config)
    target = TokenShard.open(config.folder / "targets" / "python-doc")
    assert target.header["tokenizer"] == str(folder / "tokenizer.json")
    before, _ = evaluate(loaded.model, target, loaded.vocab, ProxyConfig(seq_len=64, eval_tokens=2048))
    assert before == pytest.approx(math.log(len(tokenizer)), abs=0.5)  # an untrained model: near uniform
    as_json = config.model_dump_json(exclude_unset=True)
    base, python = (anneal_candidate(as_json, name, 0)["losses"]["python-doc"] for name in (BASE, "python-doc"))
    assert python < base < before, (before, base, python)
    with pytest.raises(ValueError, match="not a Hugging Face model"):
        load_checkpoint(tmp_path)


def test_candidates_of_every_kind_are_queries_over_the_run():
    from mixtures.verify import Candidate

    kinds = {"cluster": 7, "super_cluster": 2, "source": "s3://b/it's.jsonl", "stage": "select", "sql": "SELECT 1;"}
    queries = {kind: Candidate(name="c", **{kind: value}).select() for kind, value in kinds.items()}
    assert queries == {"cluster": "SELECT * FROM docs WHERE cluster = 7",
                       "super_cluster": "SELECT * FROM docs WHERE super_cluster = 2",
                       "source": "SELECT * FROM docs WHERE source = 's3://b/it''s.jsonl'",
                       "stage": "SELECT * FROM stage_select", "sql": "SELECT 1"}
    with pytest.raises(ValueError, match="not a stage name"):
        Candidate(name="c", stage="select; DROP")
    with pytest.raises(ValueError, match="names a folder"):
        Candidate(name="../up", cluster=1)
