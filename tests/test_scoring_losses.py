"""Loss models behind PreSelect: real transformers causal LMs built here from small configs (GPT-2 and Llama, three
sizes, trained a few hundred steps on different shares of python-doc), the project's own proxies as a mixture
experiment saves them, the window scheme of PreSelect's bpc/main.py, the Parquet loss cache and Ray actors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from scoring_inputs import sample_docs, train_causal_lm, train_tokenizer, write_run
from typer.testing import CliRunner

from mixforge.cli import app
from scoring.family import FamilyError, FamilyMember, experiment_family, load_family
from scoring.hf_lm import HFCausalLM
from scoring.loss_runner import LossCache, family_losses
from scoring.losses import plan_windows
from scoring.preselect import fit_family
from storage.manifest import Manifest, save_manifest
from storage.shards import stage_files

PYTHON_SHARES = (0.0, 0.4, 0.8)  # of each model's training documents; the rest are the other English sources
SIZES = (("gpt2", 32, 1), ("gpt2", 48, 2), ("llama", 64, 2))


@pytest.fixture(scope="module")
def english(sample_corpus):
    """English documents cut to 3,000 characters, in four disjoint parts: training, benchmark, pool, held out."""
    docs = sample_docs(sample_corpus)
    docs = docs[docs.lang == "en"].reset_index(drop=True)
    docs["text"] = docs.text.str.slice(0, 3000)
    part = np.arange(len(docs)) % 4
    return docs, part, (docs.origin == "python-doc").to_numpy()


def training_texts(english, share: float, n: int = 120) -> list[str]:
    docs, part, python = english
    return (docs.text[(part == 0) & python].tolist()[: int(n * share)]
            + docs.text[(part == 0) & ~python].tolist()[: int(n * (1 - share))])


@pytest.fixture(scope="module")
def hf_family(english, tmp_path_factory):
    """Three transformers models (GPT-2 32/48 wide, Llama 64) saved as Hugging Face directories, with a shared
    byte-level BPE tokenizer; more python-doc in training for the larger ones."""
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("hf-family")
    docs, part, _ = english
    tokenizer = train_tokenizer(docs.text[part == 0].tolist()[:300], folder / "tokenizer")
    return [train_causal_lm(training_texts(english, share), tokenizer, folder / f"{arch}-{width}", arch=arch,
                            width=width, layers=layers, steps=250, seed=i)
            for i, ((arch, width, layers), share) in enumerate(zip(SIZES, PYTHON_SHARES, strict=True))]


def reference_losses(path, texts: list[str], window: int, stride: int) -> list[float]:
    """PreSelect's loop (llm-compression-intelligence packed_dataset.py + main.py), one document at a time."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    totals = []
    for text in texts:
        data = torch.tensor([tokenizer.bos_token_id] + tokenizer(text)["input_ids"])
        total, begin, prev_end = 0.0, 0, 0
        while True:
            end = min(begin + window + 1, len(data))
            target_len = end - prev_end
            ids = data[begin:end]
            mask = torch.ones(len(ids), dtype=torch.bool)
            mask[:-target_len] = False
            with torch.no_grad():
                logits = model(ids[None, :-1]).logits[0]
            total += torch.nn.functional.cross_entropy(logits, ids[1:], reduction="none")[mask[1:]].sum().item()
            prev_end, begin = end, begin + stride
            if end >= len(data):
                break
        totals.append(total)
    return totals


def test_windows_score_every_token_once():
    spans = plan_windows(5000)
    assert spans[0] == (0, 1901, 1) and spans[1] == (512, 2413, 1901)
    scored = np.concatenate([np.arange(first, end) for _, end, first in spans])
    assert np.array_equal(scored, np.arange(1, 5000))
    assert all(end - begin <= 1901 for begin, end, _ in spans)
    assert plan_windows(1) == [] and plan_windows(2) == [(0, 2, 1)]
    with pytest.raises(ValueError):
        plan_windows(10, window=4, stride=5)


def test_hf_losses_equal_a_plain_transformers_loop(hf_family, english):
    docs = english[0]
    texts = docs.text[docs.text.str.len() > 2000].tolist()[:6] + ["x", ""]
    for path in hf_family[::2]:  # a GPT-2 and a Llama
        model = HFCausalLM(path, window=64, stride=16)
        losses = model.losses(texts)
        reference = reference_losses(path, texts[:-1], 64, 16)
        assert np.allclose(losses.loss[:-1], reference, rtol=1e-5, atol=1e-4)
        assert losses.n_tokens[0] > 300  # long documents: many windows each
        assert np.isnan(losses.bits_per_byte()[-1]) and losses.n_tokens[-1] == 0
    # the default windows (1,900 / 512) against the same loop: the documents fit one window here
    default = HFCausalLM(hf_family[1]).losses(texts[:3])
    assert np.allclose(default.loss, reference_losses(hf_family[1], texts[:3], 1900, 512), rtol=1e-5, atol=1e-4)


def test_loss_cache_scores_only_new_documents(hf_family, english, tmp_path):
    docs = english[0]
    ids, texts = [str(i) for i in docs.index[:30]], docs.text.tolist()[:30]
    models = [HFCausalLM(path) for path in hf_family[:2]]
    first, scored = family_losses(models, ids[:20], texts[:20], cache=tmp_path / "cache")
    assert scored == {models[0].name: 20, models[1].name: 20}
    again, scored = family_losses(models, ids, texts, cache=tmp_path / "cache")
    assert scored == {models[0].name: 10, models[1].name: 10}
    assert np.array_equal(again[:, :20], first)
    fresh, _ = family_losses(models, ids, texts)
    assert np.allclose(again, fresh)
    assert len(LossCache(tmp_path / "cache").read(models[0].key, ids)) == 30


def test_ray_actors_give_the_same_losses(hf_family, english, ray_local):
    docs = english[0]
    ids, texts = [str(i) for i in docs.index[:12]], docs.text.tolist()[:12]
    models = [HFCausalLM(hf_family[0])]
    local, _ = family_losses(models, ids, texts, use_ray=False)
    remote, _ = family_losses(models, ids, texts, use_ray=True, batch_docs=5)
    assert np.allclose(local, remote)


def test_preselect_on_a_transformers_family(hf_family, english, tmp_path):
    docs, part, python = english
    members = [FamilyMember(path=str(path), score=0.0) for path in hf_family]
    bench = docs[(part == 1) & python]
    measured, _ = family_losses([m.load() for m in members], [str(i) for i in bench.index], bench.text.tolist())
    benchmark = -np.nanmean(measured, axis=1)
    assert np.all(np.diff(benchmark) > 0)  # more python-doc, better on held-out python-doc: the truth holds
    family = tmp_path / "family.yaml"
    family.write_text("models:\n" + "".join(f"  - {{path: {p}, score: {s}}}\n" for p, s in zip(
        hf_family, benchmark, strict=True)))
    members = load_family(family)
    assert [m.resolved_kind() for m in members] == ["hf"] * 3
    pool, held_out = docs[part == 2].iloc[:300], docs[part == 3]
    fitted, losses, _ = fit_family(members, [str(i) for i in pool.index], pool.text.tolist(), lr=0.5, epoch=10,
                                   bucket=200_000, threads=1)
    fit = fitted.fit_
    assert fit.max_strength == 3 and losses.shape == (3, len(pool))
    by_origin = {o: fit.strength[(pool.origin == o).to_numpy()].mean() for o in pool.origin.unique()}
    assert max(by_origin, key=by_origin.get) == "python-doc" and by_origin["python-doc"] > 2.5
    assert "python-doc" not in set(pool.origin.to_numpy()[fit.negatives])
    scores = fitted.predict_proba(held_out.text.tolist())
    is_python = (held_out.origin == "python-doc").to_numpy()
    precision = is_python[np.argsort(-scores, kind="stable")[: is_python.sum()]].mean()
    assert precision >= 2 * is_python.mean()  # measured 0.40 against chance 0.14


@pytest.fixture(scope="module")
def experiment(english, tmp_path_factory):
    """A mixture experiment's layout as mixtures/experiment.py leaves it: three proxies trained by
    mixtures.proxy.train_proxy on 0/40/80% python-doc, their checkpoints, metrics.csv with the measured
    python-doc target bits per byte."""
    import quicktok

    from mixtures.io import write_metrics
    from mixtures.proxy import CompactVocab, ProxyConfig, train_proxy
    from storage.token_shards import write_token_shard

    out = tmp_path_factory.mktemp("experiment")
    docs, part, python = english
    encoding = quicktok.get_encoding("o200k_base")

    def shard(prefix, texts):
        tokens, offsets = encoding.encode_batch(texts, 1)
        parts = [np.append(tokens[a:b], encoding.eot_token) for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
        return write_token_shard(prefix, np.concatenate(parts).astype(np.int64),
                                 np.concatenate([[0], np.cumsum([len(p) for p in parts])]), tokenizer="o200k_base",
                                 vocab_size=encoding.n_vocab, eos_id=encoding.eot_token,
                                 n_bytes=sum(len(t.encode()) for t in texts))

    target = shard(out / "targets" / "python", docs.text[(part == 1) & python].tolist()[:60])
    runs = {f"r{i}": shard(out / "runs" / f"r{i}" / "shard", training_texts(english, share))
            for i, share in enumerate(PYTHON_SHARES)}
    CompactVocab.build([*runs.values(), target], 2048).save(out / "vocab.npy")
    config = ProxyConfig(d_model=32, n_layers=1, n_heads=2, seq_len=64, train_tokens=80_000, eval_tokens=8192)
    rows = [train_proxy(run, out / "runs" / run / "shard", {"python": out / "targets" / "python"}, out / "vocab.npy",
                        config, checkpoint=out / "runs" / run / "proxy.pt").row() for run in runs]
    write_metrics(pd.DataFrame(rows).set_index("run"), out / "metrics.csv")
    return out


def test_experiment_proxies_are_the_family(experiment, english, tmp_path):
    members = experiment_family(experiment)
    assert [m.name for m in members] == ["r0", "r1", "r2"] and all(m.kind == "proxy" for m in members)
    assert np.all(np.diff([m.score for m in members]) > 0)  # minus the measured bits per byte
    with pytest.raises(FamilyError, match="no column"):
        experiment_family(experiment, metric="accuracy")
    docs, part, _ = english
    pool = docs[part == 2].iloc[:160].copy()
    pool["text"] = pool.text.str.slice(0, 1500)
    run = tmp_path / "run"
    write_run(pool, run, n_shards=1)
    manifest = Manifest(command="test")
    manifest.final_stage = "tokenize"
    save_manifest(manifest, run)
    result = CliRunner().invoke(app, [
        "score", "preselect", str(run), "--family", str(experiment), "--positive-fraction", "0.2", "--lr", "0.5",
        "--epoch", "10", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "family of 3" in result.output and "480 computed" in result.output
    labels = pd.read_parquet(run / "scorers" / "preselect_strength.parquet")
    table = pq.read_table(stage_files(run, "shards", "tokenize"), columns=["id", "metadata"]).to_pandas()
    origin = table.set_index("id").metadata.str.extract(r'"origin": "([^"]+)"')[0]
    positives = origin[labels.id[labels.label == "positive"]]
    # the proxies that saw more python-doc measured better on it: python-doc documents are the positives
    assert len(positives) == 32 and (positives == "python-doc").mean() >= 0.6 > 2 * (origin == "python-doc").mean()
    assert "python-doc" not in set(origin[labels.id[labels.label == "negative"]])
    kept = pq.read_table(stage_files(run, "shards", "select"), columns=["text", "preselect"])
    dropped = pq.read_table(stage_files(run, "dropped", "select"), columns=["preselect"])
    chars = sum(map(len, kept.column("text").to_pylist()))
    assert 0.1 <= chars / pool.text.str.len().sum() < 0.15  # the top 10% by characters
    assert min(kept.column("preselect").to_pylist()) >= max(dropped.column("preselect").to_pylist())
    rerun = CliRunner().invoke(app, [
        "score", "preselect", str(run), "--family", str(experiment), "--positive-fraction", "0.2", "--lr", "0.5",
        "--epoch", "10", "--no-progress"])
    assert rerun.exit_code == 0 and "0 computed, 480 from the cache" in rerun.output, rerun.output


def test_bad_family_is_one_line(tmp_path):
    (tmp_path / "docs.jsonl").write_text('{"text": "a document"}\n')
    (tmp_path / "x.npz").write_bytes(b"")
    (tmp_path / "family.yaml").write_text("models:\n  - {path: x.npz, score: 1}\n  - {path: x.npz}\n")
    result = CliRunner().invoke(app, [
        "score", "train-preselect", "--family", str(tmp_path / "family.yaml"), "--texts", str(tmp_path / "docs.jsonl"),
        "--out", str(tmp_path / "p.bin")])
    assert result.exit_code == 2 and result.output.count("error:") == 1, result.output
    assert "models[1]: score: Field required" in result.output
