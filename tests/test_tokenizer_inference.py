"""Data mixture inference from BPE merge lists (mixtures/tokenizer_attack), controlled as in Hayase et al.
2024 §4: BPE tokenizers trained here (HF tokenizers) on known byte mixtures of 5 categories, then inferred
from samples the tokenizer never saw.

Languages: the Debian Administrator's Handbook in en, de, ru, ja, plus Python source from this machine's
standard library; the category samples are held-out documents. Origins: the Python and PostgreSQL manuals,
the handbook and fortunes, plus the same code; their documents are few and long (a manual page has its own
vocabulary), so the held-out unit is the paragraph: the samples are paragraphs the tokenizer never saw,
from the same documents as its training paragraphs.
"""

from __future__ import annotations

import json
import random
import sysconfig
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pytest
from streamlit.testing.v1 import AppTest
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from typer.testing import CliRunner

from mixforge.cli import app
from mixtures.tokenizer_attack import RUN_MIXTURES, SampleError, TokenizerError, infer_mixture
from storage.shards import write_table_atomic

MIX = (0.08, 0.35, 0.25, 0.20, 0.12)  # byte shares of the training data, categories in order
TRAIN_BYTES = 1_500_000
HELD_OUT_BYTES = 300_000
VOCAB = 2000
MAX_MAE = 0.02


def stdlib_code() -> list[str]:
    """Python source files of the standard library, in a fixed order."""
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("**/*.py"))
    return [f.read_text(encoding="utf-8", errors="replace") for f in files]


def corpus_texts(sample_corpus: Path, file: str, where: str = "true") -> list[str]:
    path = str(sample_corpus / "docs" / file)
    source = f"read_json('{path}')" if ".jsonl" in file else f"'{path}'"
    return [row[0] for row in duckdb.sql(f"SELECT text FROM {source} WHERE {where} ORDER BY url").fetchall()]


def split_mixture(categories: dict[str, list[str]]) -> tuple[list[str], dict[str, float], dict[str, list]]:
    """Training texts in MIX byte shares of the categories, the true shares, and held-out samples."""
    train, sizes, held = [], {}, {}
    for (name, texts), share in zip(categories.items(), MIX, strict=True):
        texts = list(texts)
        random.Random(1).shuffle(texts)
        size = i = 0
        while size < share * TRAIN_BYTES:
            train.append(texts[i])
            size += len(texts[i].encode("utf-8"))
            i += 1
        sizes[name] = size
        held[name], taken = [], 0
        for text in texts[i:]:
            if taken >= HELD_OUT_BYTES:
                break
            held[name].append(text)
            taken += len(text.encode("utf-8"))
    return train, {name: size / sum(sizes.values()) for name, size in sizes.items()}, held


def known_mixture(categories: dict[str, list[str]], out: Path) -> tuple[Path, dict[str, float], dict[str, list]]:
    """A BPE tokenizer trained on MIX of the categories' texts, the true byte shares, and held-out samples."""
    train, truth, held = split_mixture(categories)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.train_from_iterator(train, trainers.BpeTrainer(
        vocab_size=VOCAB, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    path = out / "tokenizer.json"
    tokenizer.save(str(path))
    return path, truth, held


def extended_tokenizer(base_texts: list[str], categories: dict[str, list[str]], out: Path,
                       base_vocab: int = 3000, extension: int = 2000) -> tuple[Path, int, dict, dict]:
    """A base BPE tokenizer trained on `base_texts`, extended (as Llama 3 extends cl100k_base) by BPE continued
    on MIX of the categories: the extension's words start as base tokens, one private-use character each.
    Returns the tokenizer, its number of base merges, the extension's true shares and held-out samples."""
    base = Tokenizer(models.BPE())
    base.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    base.train_from_iterator(base_texts, trainers.BpeTrainer(
        vocab_size=base_vocab, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    train, truth, held = split_mixture(categories)
    words = []
    for encoding in base.encode_batch(train):
        groups: dict[int, str] = {}
        for tid, word in zip(encoding.ids, encoding.word_ids, strict=True):
            groups[word] = groups.get(word, "") + chr(0xE000 + tid)
        words.append(" ".join(groups.values()))
    alphabet = sorted({c for w in words for c in w} - {" "})
    more = Tokenizer(models.BPE())
    more.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    more.train_from_iterator(words, trainers.BpeTrainer(vocab_size=len(alphabet) + extension,
                                                        initial_alphabet=alphabet, show_progress=False))
    spec = json.loads(base.to_str())
    vocab, merges = spec["model"]["vocab"], spec["model"]["merges"]
    token = {tid: text for text, tid in vocab.items()}
    n_base = len(merges)
    for merge in json.loads(more.to_str())["model"]["merges"]:
        a, b = ("".join(token[ord(c) - 0xE000] for c in part) for part in merge)
        vocab.setdefault(a + b, len(vocab))
        merges.append([a, b])
    path = out / "extended.json"
    path.write_text(json.dumps(spec))
    return path, n_base, truth, held


def mae(estimate: dict[str, float], truth: dict[str, float]) -> float:
    return sum(abs(estimate[name] - share) for name, share in truth.items()) / len(truth)


@pytest.fixture(scope="module")
def languages(sample_corpus, tmp_path_factory):
    handbook = {lang: corpus_texts(sample_corpus, "debian-handbook.parquet", f"lang = '{lang}'")
                for lang in ("en", "de", "ru", "ja")}
    return known_mixture({"code": stdlib_code(), **handbook}, tmp_path_factory.mktemp("languages"))


def test_languages_and_code_recovered_from_held_out_documents(languages):
    tokenizer, truth, held = languages
    estimate = infer_mixture(tokenizer, held)
    assert estimate.converged and estimate.n_merges == len(json.loads(tokenizer.read_text())["model"]["merges"])
    assert set(estimate.proportions) == set(truth)
    assert mae(estimate.proportions, truth) <= MAX_MAE, (estimate.proportions, truth)
    # chance level: the uniform mixture is far off, so the bound above is the method's doing
    assert mae({name: 1 / len(truth) for name in truth}, truth) > 3 * MAX_MAE


def test_origins_and_code_recovered_from_held_out_paragraphs(sample_corpus, tmp_path):
    origins = {"code": stdlib_code(), "python-doc": corpus_texts(sample_corpus, "python-doc.jsonl.gz"),
               "postgresql-doc": corpus_texts(sample_corpus, "postgresql-doc.parquet"),
               "debian-handbook": corpus_texts(sample_corpus, "debian-handbook.parquet"),
               "fortunes": corpus_texts(sample_corpus, "fortunes.jsonl.gz")}
    paragraphs = {name: [p for text in texts for p in text.split("\n\n") if p.strip()]
                  for name, texts in origins.items()}
    tokenizer, truth, held = known_mixture(paragraphs, tmp_path)
    estimate = infer_mixture(tokenizer, held)
    assert mae(estimate.proportions, truth) <= MAX_MAE, (estimate.proportions, truth)


def test_extension_mixture_recovered_after_the_base_merges(sample_corpus, tmp_path):
    """Llama 3's case: constraints from the first extension merge on. The base (English and code) leaves the
    English sample 0.095 pairs per byte and the Russian one 0.79; with counts normalised by bytes the LP leaned
    to the cheap English/code corner (MAE 0.093: en 0.50, code 0.16), normalised by the pairs left it gives
    0.014."""
    handbook = {lang: corpus_texts(sample_corpus, "debian-handbook.parquet", f"lang = '{lang}'")
                for lang in ("en", "de", "ru", "ja")}
    code = stdlib_code()
    base_texts = handbook["en"][:200] + code[:200]
    tokenizer, n_base, truth, held = extended_tokenizer(base_texts, {"code": code, **handbook}, tmp_path)
    estimate = infer_mixture(tokenizer, held, first_merge=n_base)
    assert estimate.converged and estimate.first_merge == n_base
    assert mae(estimate.proportions, truth) <= MAX_MAE, (estimate.proportions, truth)


def held_out_run(held: dict[str, list[str]], out: Path) -> Path:
    """A run directory whose documents are the held-out samples, with their category as `lang`."""
    rows = [(name, text) for name, texts in held.items() for text in texts]
    table = pa.table({"id": [f"doc-{i:05d}" for i in range(len(rows))], "text": [text for _, text in rows],
                      "lang": [name for name, _ in rows]})
    write_table_atomic(table, out / "shards" / "ingest" / "part-00000-0000.parquet")
    return out


@pytest.fixture(scope="module")
def language_run(languages, tmp_path_factory):
    """The held-out language samples as a run (category in `lang`), English cut to a fifth: the run's token
    shares are then far from the tokenizer's mixture."""
    _, _, held = languages
    docs = {name: texts[:len(texts) // 5] if name == "en" else texts for name, texts in held.items() if name != "code"}
    return held_out_run(docs, tmp_path_factory.mktemp("language-run"))


def test_cli_categories_from_a_run_and_files(languages, language_run, tmp_path):
    tokenizer, truth, held = languages
    code = tmp_path / "code"
    code.mkdir()
    for i, text in enumerate(held["code"]):
        (code / f"m{i}.py").write_text(text, encoding="utf-8")
    args = ["infer-mixture", "--tokenizer", str(tokenizer), "--run", str(language_run), "--by", "lang",
            "--category", f"code={code}/*.py", "--merges", "600"]
    saved = language_run / RUN_MIXTURES / "languages.json"
    result = CliRunner().invoke(app, [*args, "--format", "json", "--output", str(saved)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert json.loads(saved.read_text()) == report
    assert set(report["proportions"]) == set(truth) and list(report["proportions"])[-1] == "code"  # run's, then files'
    assert sum(report["proportions"].values()) == pytest.approx(1.0)
    assert report["slack"] >= 0 and report["converged"] and report["n_merges"] == 600
    assert report["sample_bytes"]["code"] == sum(len(t.encode("utf-8")) for t in held["code"])
    # the same samples through the API give the same mixture
    run_samples = {name: texts[:len(texts) // 5] if name == "en" else texts for name, texts in held.items()}
    direct = infer_mixture(tokenizer, {name: run_samples[name] for name in report["proportions"]}, n_merges=600)
    assert mae(report["proportions"], direct.proportions) < 1e-6
    table = CliRunner().invoke(app, [*args, "--sample-bytes", "50000"])
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["category", "share", "sample", "bytes"] and len(lines) == 7
    assert all(50_000 <= int(line.split()[2].replace(",", "")) < 150_000 for line in lines[1:6])


def test_dashboard_shows_the_saved_mixture_as_bars(languages, language_run, tmp_path):
    def script(run: str) -> None:
        from pathlib import Path

        from dashboards import tokenizer_mixture

        tokenizer_mixture.render(Path(run))

    empty = AppTest.from_function(script, args=(str(tmp_path),), default_timeout=60).run()
    assert not empty.exception and "No inferred mixture in this run yet" in empty.info[0].value
    saved = tmp_path / RUN_MIXTURES / "languages.json"
    result = CliRunner().invoke(app, ["infer-mixture", "-t", str(languages[0]), "--run", str(language_run),
                                      "--by", "lang", "--merges", "300", "--output", str(saved)])
    assert result.exit_code == 0, result.output
    page = AppTest.from_function(script, args=(str(tmp_path),), default_timeout=60).run()
    assert not page.exception, [e.value for e in page.exception]
    report = json.loads(saved.read_text())
    bars = json.loads(page.get("plotly_chart")[0].proto.spec)["data"][0]
    assert bars["x"] == sorted(report["proportions"], key=lambda name: -report["proportions"][name])
    assert bars["y"] == pytest.approx(sorted(report["proportions"].values(), reverse=True))


def test_regmix_prior_from_tokenizer(languages, language_run, tmp_path):
    tokenizer, truth, _ = languages
    means = {}
    for label, extra in (("tokens", []), ("tokenizer", ["--prior-from-tokenizer", str(tokenizer)])):
        out = tmp_path / f"{label}.csv"
        result = CliRunner().invoke(app, ["regmix", "sample", "--domains-from", str(language_run), "--by", "lang",
                                          "-n", "500", "--out", str(out), *extra])
        assert result.exit_code == 0, result.output
        means[label] = pd.read_csv(out, index_col=0).mean()
    prior = pd.Series(json.loads(result.stderr.split("prior from ")[1].split(": ", 1)[1].splitlines()[0]))
    langs = list(prior.index)
    target = pd.Series({name: truth[name] for name in langs}) / sum(truth[name] for name in langs)
    assert abs(prior - target).mean() <= MAX_MAE  # the languages' shares among themselves
    # the draws centre on the inferred prior, not on the run's token shares (English a fifth of its part)
    assert abs(means["tokenizer"][langs] - prior).mean() < 0.5 * abs(means["tokens"][langs] - prior).mean()


def test_one_line_errors(languages, tmp_path):
    tokenizer, _, held = languages
    (tmp_path / "empty.txt").write_text("")
    runner = CliRunner()
    for args, message in (
            (["-t", "gpt5_base", "-c", f"a={tmp_path}/empty.txt"], "error: no tokenizer 'gpt5_base': give a "
                                                                    "tokenizer.json, a tiktoken rank file or one of"),
            (["-t", str(tokenizer), "-c", f"a={tmp_path}/empty.txt", "-c", f"b={tokenizer}"],
             f"error: '{tmp_path}/empty.txt' holds no text"),
            (["-t", str(tokenizer), "-c", f"a={tmp_path}/no-*.txt"], f"error: no files match '{tmp_path}/no-*.txt'"),
            (["-t", str(tokenizer), "--by", "lang"], "error: --run and --by go together")):
        result = runner.invoke(app, ["infer-mixture", *args])
        assert result.exit_code == 2, result.output
        assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith(message), result.stderr
    with pytest.raises(SampleError, match="category 'ja' has no text"):
        infer_mixture(tokenizer, {"en": held["en"], "ja": []})
    with pytest.raises(TokenizerError, match="model type 'WordLevel', but the attack needs a BPE tokenizer"):
        word_level = tmp_path / "wordlevel.json"
        Tokenizer(models.WordLevel({"a": 0}, unk_token="a")).save(str(word_level))
        infer_mixture(word_level, held)
