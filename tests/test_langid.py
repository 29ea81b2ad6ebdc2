"""Language ID with lid.176: accurate on the sample corpus's real multilingual documents, and keeping
exactly the documents datatrove's LanguageFilter keeps with the same model, languages and threshold."""

from __future__ import annotations

import pickle
from collections import Counter

import numpy as np
import pyarrow as pa
import pytest
from filter_inputs import per_origin, sample_documents

from operators.langid import LanguageID

# lid.176 labels Norwegian Bokmål with the macrolanguage code.
SAME_LANGUAGE = {"nb": "no"}


@pytest.fixture(scope="module")
def docs(sample_corpus) -> pa.Table:
    """Every origin (up to 1.2 M characters each): 2,241 documents in 23 languages."""
    return per_origin(sample_documents(sample_corpus), 1500, 1_200_000)


def test_accuracy_against_the_true_language(docs):
    out = LanguageID()(docs)
    predicted = out.column("lang").to_pylist()
    truth = [SAME_LANGUAGE.get(lang, lang) for lang in docs.column("lang").to_pylist()]
    origins = docs.column("origin").to_pylist()
    right, total = Counter(), Counter()
    for origin, guess, lang in zip(origins, predicted, truth, strict=True):
        total[origin] += 1
        right[origin] += guess == lang
    accuracy = sum(right.values()) / len(truth)
    print(f"lid.176 accuracy {accuracy:.4f} on {len(truth)} documents, {len(set(truth))} languages; per origin",
          {origin: round(right[origin] / total[origin], 4) for origin in sorted(total)})
    assert len(set(truth)) >= 20
    assert accuracy >= 0.95
    assert all(right[origin] / total[origin] >= 0.9 for origin in total)
    assert out.schema.field("lang_score").type == pa.float32()
    assert 0 <= min(out.column("lang_score").to_pylist()) and max(out.column("lang_score").to_pylist()) <= 1.0001


@pytest.mark.parametrize("languages, threshold", [(None, 0.65), (["en", "de"], 0.65), (["fr", "es", "it"], 0.9),
                                                  (["en"], 0.2)])
def test_same_documents_kept_as_datatrove_language_filter(docs, languages, threshold):
    """datatrove's LanguageFilter with the same lid.176 model file (it would download the .bin).

    Under 0.5 a listed language that is not the top one can pass: that case runs on all documents.
    """
    from datatrove.data import Document
    from datatrove.pipeline.filters import LanguageFilter

    subset = docs if threshold < 0.5 else per_origin(docs, 40, 100_000)
    ours = LanguageID(languages=languages, min_score=threshold)
    theirs = LanguageFilter(languages=languages, language_threshold=threshold)
    theirs.model._model = ours.model
    out = ours(subset)
    documents = [Document(text=text, id=str(i)) for i, text in enumerate(subset.column("text").to_pylist())]
    kept = [bool(theirs.filter(document)) for document in documents]
    assert [reason is None for reason in out.column("drop_reason").to_pylist()] == kept
    assert out.column("lang").to_pylist() == [document.metadata["language"] for document in documents]
    scores = np.array([document.metadata["language_score"] for document in documents], dtype=np.float32)
    assert np.array_equal(out.column("lang_score").to_numpy(), scores)
    reasons = Counter(out.column("drop_reason").to_pylist())
    print(f"languages={languages} min_score={threshold}: {len(kept)} documents, {dict(reasons)}")
    assert 0 < sum(kept) < len(kept)
    assert set(reasons) <= {None, "lang_low_score", "lang_not_allowed"}
    if languages:
        assert reasons["lang_not_allowed"] > 0
    if threshold < 0.5:
        kept_langs = [lang for lang, ok in zip(out.column("lang").to_pylist(), kept, strict=True) if ok]
        assert any(lang not in languages for lang in kept_langs)


def test_model_loads_once_and_not_into_pickles(docs):
    operator = LanguageID(languages=["de"])
    operator(docs.slice(0, 5))
    model = operator.model
    operator(docs.slice(5, 5))
    assert operator.model is model
    copy = pickle.loads(pickle.dumps(operator))
    assert copy._model is None and copy.languages == ["de"]
    assert copy(docs.slice(0, 20)).column("lang").equals(operator(docs.slice(0, 20)).column("lang"))
