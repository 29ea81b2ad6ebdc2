"""PreSelect: predictive strength against hand-computed values, the byte n-gram loss family, and a constructed
case with known truth on real text, where the classifier must rank the one source the benchmark tracks on top."""

from __future__ import annotations

import numpy as np
import pytest
from scoring_inputs import sample_docs

from scoring.byte_ngram import ByteNgramLM
from scoring.fasttext_classifier import PRESELECT
from scoring.losses import loss_matrix
from scoring.preselect import (
    PreSelect,
    concordant_pairs,
    max_concordant_pairs,
    spearman_strength,
    training_examples,
)

# three models with benchmark scores 1 < 2 < 3; losses per document (columns), lower is better
SCORES = [1.0, 2.0, 3.0]
LOSSES = np.array([
    # doc0: perfect  doc1: reversed  doc2: tie  doc3: NaN  doc4: one swap
    [3.0, 1.0, 2.0, np.nan, 3.0],
    [2.0, 2.0, 2.0, 1.0, 1.0],
    [1.0, 3.0, 1.0, 0.5, 2.0],
])


def test_concordant_pairs_by_hand():
    # doc2: (0,1) tied on loss -> 0; (0,2) 2 > 1 -> 1; (1,2) 2 > 1 -> 1.  doc3: pairs with the NaN count 0, (1,2) 1.
    # doc4: (0,1) 3 > 1 -> 1; (0,2) 3 > 2 -> 1; (1,2) 1 < 2 -> 0.
    assert concordant_pairs(LOSSES, SCORES).tolist() == [3, 0, 2, 1, 2]
    assert max_concordant_pairs(SCORES) == 3
    assert max_concordant_pairs([1.0, 1.0, 3.0]) == 2  # the tied pair can never count
    # pairs tied on score count for nothing: with scores (1, 1, 3) doc0 gets (0,2) and (1,2) only
    assert concordant_pairs(LOSSES, [1.0, 1.0, 3.0]).tolist()[:2] == [2, 0]


def test_six_models_give_fifteen_pairs():
    scores = [70.1, 72.0, 74.3, 75.0, 77.9, 80.2]
    losses = np.array([[1.2 - 0.1 * m, 0.5 + 0.1 * m] for m in range(6)])  # doc0 improves with score, doc1 worsens
    assert max_concordant_pairs(scores) == 15
    assert concordant_pairs(losses, scores).tolist() == [15, 0]


def test_spearman_by_hand():
    rho = spearman_strength(LOSSES[:, :3], SCORES)
    # doc2: score ranks (1, 2, 3), -loss ranks (1.5, 1.5, 3): rho = 1.5 / sqrt(2 * 1.5)
    assert rho.tolist() == pytest.approx([1.0, -1.0, 1.5 / np.sqrt(3.0)])
    assert spearman_strength(np.ones((3, 1)), SCORES).tolist() == [0.0]  # constant losses: undefined -> 0


def test_training_examples_top_and_bottom():
    strength = np.array([3, 0, 2, 3, 1, 0, 3, 2], dtype=float)
    positives, negatives = training_examples(strength, top_value=3)
    assert sorted(positives.tolist()) == [0, 3, 6]
    assert len(negatives) == 3 and set(negatives.tolist()) >= {1, 5} and strength[negatives].max() == 1
    positives, negatives = training_examples(strength, n_positive=2)
    assert set(positives.tolist()) <= {0, 3, 6} and sorted(negatives.tolist()) == [1, 5]
    positives, negatives = training_examples(np.full(6, 3.0))  # all tied: at most half each, disjoint
    assert len(positives) == 3 and not set(positives) & set(negatives)


def test_byte_ngram_is_a_distribution_and_round_trips(tmp_path, sample_corpus):
    docs = sample_docs(sample_corpus)
    python = docs.text[docs.origin == "python-doc"].tolist()
    fortunes = docs.text[docs.origin == "fortunes"].tolist()
    model = ByteNgramLM(order=4, max_bytes=2048).fit(python[:60])
    # after a context seen in training and after an unseen one, the 256 possible next bytes share probability 1
    for context in (python[0][:40].encode(), b"\x00\xff zq"):
        candidates = np.frombuffer(b"".join(context + bytes([b]) for b in range(256)), dtype=np.uint8)
        starts = np.arange(257, dtype=np.int64) * (len(context) + 1)
        last = model.byte_bits(candidates, starts)[starts[1:] - 1]
        assert np.sum(2.0 ** -last) == pytest.approx(1.0, abs=1e-9)
    in_domain, out_domain = model.bits_per_byte(python[60:100]), model.bits_per_byte(fortunes[:40])
    assert np.mean(in_domain) < np.mean(out_domain) - 1.0
    assert np.isnan(model.bits_per_byte(["", "x"])[0])
    loaded = ByteNgramLM.load(model.save(tmp_path / "lm.npz"))
    assert np.array_equal(loaded.bits_per_byte(fortunes[:20]), model.bits_per_byte(fortunes[:20]))


@pytest.fixture(scope="module")
def python_skill_case(sample_corpus):
    """A family whose benchmark tracks skill on python-doc, on the sample corpus's English documents.

    Ten byte 4-gram LMs, each trained on 400 kB, differ only in the share of python-doc text (0-50%, the rest from
    the other sources); the benchmark is measured, not assumed: minus the bits per byte on held-out python-doc.
    English only: with other languages in the pool, adding English text hurts them most and the classifier learns
    "English" rather than "python-doc" (measured). Four disjoint parts: family training, benchmark, PreSelect
    pool, evaluation.
    """
    docs = sample_docs(sample_corpus)
    docs = docs[docs.lang == "en"].reset_index(drop=True)
    part = np.arange(len(docs)) % 4
    python = (docs.origin == "python-doc").to_numpy()

    def take(texts, n_bytes):
        out, size = [], 0
        for text in texts:
            if size >= n_bytes:
                break
            out.append(text.encode()[:2048].decode("utf-8", "ignore"))
            size += len(out[-1].encode())
        return out

    train_python = docs.text[(part == 0) & python].tolist()
    train_other = docs.text[(part == 0) & ~python].tolist()
    shares = [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5]
    family = [ByteNgramLM(order=4, max_bytes=2048, name=f"python-{share}").fit(
        take(train_python, share * 400_000) + take(train_other, (1 - share) * 400_000)) for share in shares]
    benchmark = -loss_matrix(family, docs.text[(part == 1) & python].tolist()).mean(axis=1)
    pool, held_out = docs[part == 2].reset_index(drop=True), docs[part == 3].reset_index(drop=True)
    return family, benchmark, pool, held_out, loss_matrix(family, pool.text.tolist())


def test_preselect_ranks_the_tracked_source_on_top(python_skill_case):
    family, benchmark, pool, held_out, losses = python_skill_case
    assert np.all(np.diff(benchmark) > 0)  # more python text, better on held-out python: the truth holds
    # Small-data settings: the paper's lr 0.1 / 3 epochs assume 10^5+ documents; on ~130 here fastText stays in
    # its starting plateau (all probabilities within 1e-3 of 0.5, measured), so the test trains longer.
    preselect = PreSelect(lr=0.5, epoch=10, bucket=200_000, threads=1, seed=0).fit(pool.text.tolist(), losses,
                                                                                   benchmark)
    fit = preselect.fit_
    assert fit.max_strength == 45  # 10 models, 45 pairs
    by_origin = {origin: fit.strength[(pool.origin == origin).to_numpy()].mean() for origin in pool.origin.unique()}
    assert max(by_origin, key=by_origin.get) == "python-doc" and by_origin["python-doc"] > 40
    positives = pool.origin.to_numpy()[fit.positives]
    assert (positives == "python-doc").mean() >= 0.9
    assert "python-doc" not in set(pool.origin.to_numpy()[fit.negatives])

    scores = preselect.predict_proba(held_out.text.tolist())
    is_python = (held_out.origin == "python-doc").to_numpy()
    k = int(is_python.sum())
    precision = is_python[np.argsort(-scores, kind="stable")[:k]].mean()
    # Chance is python-doc's share of the held-out English documents (~14%). Measured: 0.70-0.81 over seeds
    # (0.49 with the paper's lr/epochs); the misses are PostgreSQL docs, on which python text also helps (their
    # strength is next highest). The bar is 3.5x chance.
    assert is_python.mean() < 0.2 and precision >= 0.5


def test_preselect_defaults_are_the_papers():
    assert PreSelect().fasttext | {"seed": 0} == {**PRESELECT, "seed": 0}
    assert PRESELECT == {"lr": 0.1, "dim": 100, "epoch": 3, "word_ngrams": 2}
