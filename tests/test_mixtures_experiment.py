"""Mixture experiments on real text: domains from shards, materialized token shards, proxy training,
and a RegMix experiment end to end (8 proxies of ~0.85M parameters on Ray) plus the Prefect flow.

The corpus is three sources of the sample corpus (Python docs, PostgreSQL docs, English fortunes),
written as document shards with the source as `metadata.origin`.
"""

from __future__ import annotations

import json
import math
import sys

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import yaml
from typer.testing import CliRunner

from flows.config import ConfigError, parse_config
from mixforge.cli import app
from mixtures.config import ExperimentConfig
from mixtures.domains import CorpusDomains, DomainError
from mixtures.io import read_metrics, read_mixtures
from mixtures.materialize import materialize, split_budget
from mixtures.proxy import CompactVocab, ProxyConfig, train_proxy
from storage.schema import DOCUMENT_SCHEMA, document_id
from storage.shards import write_table_atomic
from storage.token_shards import TokenShard, list_token_shards, write_token_shard

# (file, documents, characters kept per document): about 60-100k o200k tokens per source
SOURCES = {"python-doc": ("python-doc.jsonl.gz", 100, 4000),
           "postgresql-doc": ("postgresql-doc.parquet", 150, 2500),
           "fortunes": ("fortunes.jsonl.gz", 1500, 4000)}


@pytest.fixture(scope="module")
def corpus_run(sample_corpus, tmp_path_factory):
    """A run directory with one shard of ~1,750 real documents in three domains."""
    run = tmp_path_factory.mktemp("mixture-corpus")
    con = duckdb.connect()
    parts = []
    for name, limit, chars in SOURCES.values():
        path = str(sample_corpus / "docs" / name).replace("'", "''")
        parts.append(con.sql(f"SELECT left(text, {chars}) AS text, url, origin, domain, lang FROM '{path}' "
                             f"WHERE lang = 'en' ORDER BY url LIMIT {limit}").to_arrow_table())
    docs = pa.concat_tables(parts)
    source = [f"sample/{o}" for o in docs.column("origin").to_pylist()]
    table = pa.table({
        "id": [document_id(s, i) for i, s in enumerate(source)],
        "text": docs.column("text").cast(pa.large_string()), "url": docs.column("url"), "source": source,
        "offset": pa.array(range(docs.num_rows), pa.int64()),
        "metadata": [json.dumps({"origin": o, "domain": d}) for o, d in
                     zip(docs.column("origin").to_pylist(), docs.column("domain").to_pylist(), strict=True)],
    }, schema=DOCUMENT_SCHEMA).append_column("lang", docs.column("lang"))
    write_table_atomic(table, run / "shards" / "ingest" / "part-00000-0000.parquet")
    return run


# -- domains --------------------------------------------------------------------------------------
def test_domains_from_a_metadata_field(corpus_run):
    corpus = CorpusDomains(corpus_run, "metadata.origin")
    counts = corpus.token_counts()
    assert counts.docs.to_dict() == {"python-doc": 100, "postgresql-doc": 150, "fortunes": 1500}
    assert counts.token_source == "length(text) / 4 (no n_tokens column)"
    chars = duckdb.sql(f"SELECT sum(length(text)) FROM '{corpus_run}/shards/ingest/*.parquet'").fetchall()[0][0]
    assert abs(counts.tokens.sum() - chars / 4) < len(SOURCES) * 1500  # ceil per document
    assert counts.table()["share"].sum() == pytest.approx(1.0)
    by_field = CorpusDomains(corpus_run, "metadata.domain").token_counts()
    assert set(by_field.tokens.index) <= {"programming", "humor", "technology", "databases", "literature"}


def test_domains_from_a_column_use_n_tokens_when_present(tmp_path):
    table = pa.table({"id": ["a", "b", "c"], "text": ["x" * 40, "y" * 400, "z" * 4], "lang": ["en", "de", "en"],
                      "n_tokens": [10, 95, None], "n_chars": [40, 400, 4]})
    write_table_atomic(table, tmp_path / "shards" / "tokenize" / "part-00000-0000.parquet")
    counts = CorpusDomains(tmp_path, "lang").token_counts()
    assert counts.token_source == "n_tokens"
    assert counts.tokens.to_dict() == {"de": 95, "en": 11}  # the missing n_tokens falls back to n_chars / 4
    with pytest.raises(DomainError, match="no column 'cluster' in .*columns: id, text, lang, n_tokens, n_chars"):
        CorpusDomains(tmp_path, "cluster")
    with pytest.raises(DomainError, match="no documents for stage 'embed'; stages: tokenize"):
        CorpusDomains(tmp_path, "lang", stage="embed")


def test_held_out_split_is_disjoint_and_stable(corpus_run):
    corpus = CorpusDomains(corpus_run, "metadata.origin", valid_fraction=0.1)
    train, valid = corpus.token_counts("train"), corpus.token_counts("valid")
    total = CorpusDomains(corpus_run, "metadata.origin").token_counts()
    assert (train.docs + valid.docs).to_dict() == total.docs.to_dict()
    assert 0.05 < valid.docs.sum() / total.docs.sum() < 0.15
    held = set(corpus.documents("fortunes", "valid")["id"])
    assert held.isdisjoint(corpus.documents("fortunes", "train")["id"])
    assert held == set(CorpusDomains(corpus_run, "metadata.origin", valid_fraction=0.1)
                       .documents("fortunes", "valid")["id"])


# -- materialize ----------------------------------------------------------------------------------
def test_split_budget_sums_exactly():
    assert split_budget({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3, "d": 0.0}, 100) == {"a": 34, "b": 33, "c": 33}
    with pytest.raises(ValueError, match="no domain with a positive weight"):
        split_budget({"a": 0.0}, 10)


def test_materialize_meets_the_budget_with_the_mixture(corpus_run, tmp_path):
    import quicktok

    corpus = CorpusDomains(corpus_run, "metadata.origin", valid_fraction=0.1)
    weights = {"python-doc": 0.5, "postgresql-doc": 0.3, "fortunes": 0.2}
    manifest = materialize(corpus, weights, 60_000, tmp_path / "mix", seed=3)
    shard = TokenShard.open(tmp_path / "mix")
    assert manifest["n_tokens"] == len(shard.tokens) == 60_000 and manifest["shortfall"] == 0
    for domain, weight in weights.items():
        assert manifest["domains"][domain]["tokens"] == round(weight * 60_000)
        assert not manifest["domains"][domain]["capped"]
    assert shard.offsets[0] == 0 and shard.offsets[-1] == 60_000 and len(shard.offsets) == manifest["n_docs"] + 1
    encoder = quicktok.get_encoding("o200k_base")
    # every document ends in end-of-text (the last of each domain is cut to fit before it); ids name them
    assert manifest["eos_id"] == encoder.eot_token and (shard.tokens[shard.offsets[1:] - 1] == encoder.eot_token).all()
    ids = shard.ids["id"].to_pylist()
    assert len(ids) == manifest["n_docs"] and shard.ids["n_tokens"].to_numpy().tolist() == \
        (np.diff(shard.offsets) - 1).tolist()
    text = encoder.decode_bytes(shard.document(0)[:-1].tolist()).decode()
    assert text == corpus.texts(ids[:1])[0]
    assert ids[0] in set(corpus.documents("python-doc", "train")["id"])
    assert ids[0] not in set(corpus.documents("python-doc", "valid")["id"])
    assert manifest["n_bytes"] == sum(r["bytes"] for r in manifest["domains"].values())
    assert 3.0 < manifest["n_bytes"] / manifest["n_tokens"] < 5.5
    again = materialize(corpus, weights, 60_000, tmp_path / "again", seed=3)
    assert np.array_equal(TokenShard.open(tmp_path / "again").tokens, shard.tokens)
    assert again["domains"] == manifest["domains"]


def test_repetition_cap_limits_epochs(corpus_run, tmp_path):
    corpus = CorpusDomains(corpus_run, "metadata.origin", valid_fraction=0.1)
    fortunes = materialize(corpus, {"fortunes": 1.0}, 10**7, tmp_path / "all", max_epochs=1)
    one_pass = fortunes["domains"]["fortunes"]["tokens"]
    assert fortunes["domains"]["fortunes"]["epochs"] == 1.0 and fortunes["domains"]["fortunes"]["capped"]
    budget = 3 * one_pass
    manifest = materialize(corpus, {"fortunes": 0.9, "python-doc": 0.1}, budget, tmp_path / "capped",
                           max_epochs=2.0)
    report = manifest["domains"]["fortunes"]
    assert report["target_tokens"] == round(0.9 * budget)
    assert report["tokens"] == 2 * one_pass and report["epochs"] == 2.0 and report["capped"]
    assert report["docs"] == 2 * report["unique_docs"]
    assert manifest["shortfall"] == report["target_tokens"] - report["tokens"]
    assert manifest["realised_weights"]["fortunes"] < 0.9
    with pytest.raises(ValueError, match="domains not in .*: wikipedia"):
        materialize(corpus, {"wikipedia": 1.0}, 100, tmp_path / "none")


# -- proxies ---------------------------------------------------------------------------------------
def test_proxy_learns_more_than_unigram_statistics(tmp_path):
    """A Markov stream (each token has 3 likely successors): a trained proxy must beat the unigram entropy."""
    rng = np.random.default_rng(0)
    ids = rng.choice(190_000, size=64, replace=False)
    successors = rng.integers(0, 64, size=(64, 3))
    state, stream = 0, np.empty(40_000, dtype=np.uint32)
    for i in range(len(stream)):
        state = successors[state, rng.integers(0, 3)] if rng.random() < 0.95 else rng.integers(0, 64)
        stream[i] = ids[state]
    train = write_token_shard(tmp_path / "train", stream[:32_000], [0, 32_000], n_bytes=4 * 32_000,
                              tokenizer="markov", vocab_size=200_019)
    valid = write_token_shard(tmp_path / "valid", stream[32_000:], [0, 8_000], n_bytes=4 * 8_000,
                              tokenizer="markov", vocab_size=200_019)
    vocab = CompactVocab.build([train, valid], size=128)
    assert vocab.size == 65 and (vocab.encode(stream) != vocab.unk).all()
    vocab.save(tmp_path / "vocab.npy")
    counts = np.bincount(vocab.encode(valid.tokens), minlength=vocab.size) / len(valid.tokens)
    unigram = -(counts[counts > 0] * np.log(counts[counts > 0])).sum()
    config = ProxyConfig(d_model=32, n_layers=1, n_heads=2, seq_len=32, batch_size=16, learning_rate=1e-2,
                         eval_tokens=4096)
    result = train_proxy("markov", tmp_path / "train", {"valid": tmp_path / "valid"}, tmp_path / "vocab.npy",
                         config)
    assert result.train_tokens >= 32_000 and result.params == config.n_params(vocab.size)
    assert result.losses["valid"] < unigram - 1.0  # unigram ~4.1 nats, the chain ~1.3
    assert result.bits_per_byte["valid"] == pytest.approx(result.losses["valid"] / math.log(2) / 4)


# -- config ----------------------------------------------------------------------------------------
def experiment_config(corpus_run, out) -> dict:
    return {
        "out": str(out), "corpus": {"run_dir": str(corpus_run), "by": "metadata.origin", "valid_fraction": 0.1},
        "targets": ["python-doc"], "rounds": [8],
        "materialize": {"budget_tokens": 25_000, "vocab_size": 4096, "vocab_sample_tokens": 200_000},
        "proxy": {"seq_len": 64, "batch_size": 8, "eval_tokens": 4096},
        "regression": {"model": "linear", "n_samples": 20_000, "top_k": 64},
        "export": {"budget_tokens": 20_000},
    }


def test_config_errors_name_the_key(corpus_run, tmp_path):
    data = experiment_config(corpus_run, tmp_path)
    data["materialize"]["budget_tokens"] = 0
    data["proxy"]["d_modle"] = 64
    with pytest.raises(ConfigError) as error:
        parse_config(yaml.safe_dump(data), source="exp.yaml", model=ExperimentConfig)
    lines = str(error.value).splitlines()
    assert "exp.yaml:8: materialize.budget_tokens: Input should be greater than 0 (got 0)" in lines
    assert "exp.yaml:14: proxy.d_modle: unknown key; allowed: d_model, n_layers, n_heads, seq_len, batch_size, " \
           "learning_rate, eval_tokens, seed, num_gpus" in lines
    with pytest.raises(ConfigError, match="method regmix runs one round"):
        parse_config(yaml.safe_dump({**experiment_config(corpus_run, tmp_path), "rounds": [8, 4]}),
                     model=ExperimentConfig)
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({**experiment_config(corpus_run, tmp_path), "targts": ["x"]}))
    result = CliRunner().invoke(app, ["regmix", "run", str(tmp_path / "bad.yaml")])
    assert result.exit_code == 2 and "targts: unknown key; allowed: out, corpus, targets" in result.output


# -- end to end ------------------------------------------------------------------------------------
def test_regmix_experiment_end_to_end(corpus_run, tmp_path, ray_local):
    """8 proxies trained on Ray on mixtures of three real sources; the target is held-out Python docs."""
    out = tmp_path / "experiment"
    (tmp_path / "experiment.yaml").write_text(yaml.safe_dump(experiment_config(corpus_run, out)))
    result = CliRunner().invoke(app, ["regmix", "run", str(tmp_path / "experiment.yaml")])
    assert result.exit_code == 0, result.output
    ratios, metrics = read_mixtures(out / "ratios.csv"), read_metrics(out / "metrics.csv")
    assert len(ratios) == 8 and list(metrics.index) == list(ratios.index)
    assert set(ratios.columns) == {"python-doc", "postgresql-doc", "fortunes"}
    assert metrics["params"].between(800_000, 1_200_000).all()
    assert (metrics["train_tokens"] >= 25_000).all()
    # the measured signal: more Python docs in training, lower loss on held-out Python docs
    assert ratios["python-doc"].corr(metrics["python-doc_val_loss"], method="spearman") < -0.7
    best = yaml.safe_load((out / "best_mixture.yaml").read_text())
    assert max(best["weights"], key=best["weights"].get) == "python-doc"
    assert best["targets"] == ["python-doc_val_loss"]
    summary = json.loads((out / "experiment.json").read_text())
    assert set(summary["domain_tokens"]) == set(ratios.columns)
    assert summary["report"]["targets"]["python-doc_val_loss"]["n_runs"] == 8
    shard = TokenShard.open(out / "best")
    assert shard.n_tokens == 20_000 and list_token_shards(out) == [out / "best"]
    assert shard.header["realised_weights"]["python-doc"] == pytest.approx(best["weights"]["python-doc"], abs=1e-3)
    run_files = sorted(p.name for p in (out / "runs" / ratios.index[0]).iterdir())
    assert run_files == ["manifest.json", "proxy.pt", "result.json"]
    assert sorted(p.name for p in (out / "fit").iterdir()) == ["fit.json", "model-000.joblib", "report.json"]


FAKE_TRAINER = """
import sys
import pandas as pd
ratios = pd.read_csv(sys.argv[1]).set_index("run")
loss = 5.0 - 2.0 * ratios["fortunes"] + 0.5 * ratios["python-doc"] ** 2
pd.DataFrame({"fortunes_val_loss": loss}).to_csv(sys.argv[2])
"""


def test_flow_runs_climb_rounds_with_an_external_trainer(corpus_run, tmp_path):
    from flows.mixture_experiment import mixture_experiment

    (tmp_path / "trainer.py").write_text(FAKE_TRAINER)
    summary = mixture_experiment(config=ExperimentConfig(
        corpus={"run_dir": corpus_run, "by": "metadata.origin"}, targets=["fortunes"], out=tmp_path / "climb",
        method="climb", rounds=[12, 6], regression={"model": "linear", "n_samples": 5_000, "top_k": 16},
        trainer_command=f"{sys.executable} {tmp_path / 'trainer.py'} {{ratios}} {{out}}"))
    assert [len(r) for r in summary["rounds"]] == [12, 6]
    assert max(summary["best"], key=summary["best"].get) == "fortunes"
    metrics = pd.read_csv(tmp_path / "climb" / "metrics.csv")
    assert len(metrics) == 18 and metrics["run"].str.startswith(("r0-", "r1-")).all()
    second = metrics[metrics["run"].str.startswith("r1-")]["fortunes_val_loss"].mean()
    first = metrics[metrics["run"].str.startswith("r0-")]["fortunes_val_loss"].mean()
    assert second < first  # round 2 was proposed from the predictor's best


def test_too_few_proxies_to_score_the_fit_are_refused_before_training(corpus_run, tmp_path):
    with pytest.raises(ConfigError, match="3 proxies in all are too few"):
        parse_config(yaml.safe_dump({**experiment_config(corpus_run, tmp_path), "rounds": [3]}), model=ExperimentConfig)
