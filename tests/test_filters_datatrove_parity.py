"""The heuristic filters drop exactly the documents datatrove 0.10.1's filters of the same rules drop,
for the same reasons, and C4 leaves the same text: compared document by document on the sample corpus.

datatrove takes 4-150 ms per document here (spaCy on every document, every C4 line), so the comparison
uses a deterministic subset covering every origin: per origin the documents with the lowest ids up to
500k characters (3,403 documents, 3.3 M characters: all 3,000 fortunes and all 62 htmldate pages, 33-82
of each other origin), with datatrove in this process. `benchmarks/filters.py --full` compares on the
whole corpus.
"""

from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pytest
from filter_inputs import DATATROVE_FILTERS, datatrove_decisions, per_origin, sample_documents

from operators.c4_quality import C4Quality
from operators.fineweb_quality import FineWebQuality
from operators.gopher_quality import GopherQuality
from operators.gopher_repetition import GopherRepetition

PER_ORIGIN = 3000
CHARS_PER_ORIGIN = 500_000
BATCH_ROWS = 128  # several batches, so the word cache is reused across them
OPERATORS = {
    "gopher_quality": GopherQuality,
    "gopher_repetition": GopherRepetition,
    "fineweb_quality": FineWebQuality,
    "c4_quality": C4Quality,
}


def _run(operator, documents: pa.Table) -> pa.Table:
    return pa.concat_tables(operator(documents.slice(start, BATCH_ROWS))
                            for start in range(0, documents.num_rows, BATCH_ROWS))


@pytest.fixture(scope="module")
def documents(sample_corpus) -> pa.Table:
    return per_origin(sample_documents(sample_corpus), PER_ORIGIN, CHARS_PER_ORIGIN).combine_chunks()


@pytest.fixture(scope="module")
def reference(documents) -> dict[str, list]:
    """datatrove's decisions, computed in this process: a spawned pool's workers were killed mid-suite
    (BrokenProcessPool after the browser and Ray tests), and one process costs only seconds more here."""
    return datatrove_decisions(documents.column("text").to_pylist())


@pytest.mark.parametrize("name", list(DATATROVE_FILTERS))
def test_same_drops_and_reasons_as_datatrove(name, documents, reference):
    out = _run(OPERATORS[name](), documents)
    assert out.column("id").to_pylist() == documents.column("id").to_pylist()
    ours = out.column("drop_reason").to_pylist()
    theirs = reference[name]
    origins = set(documents.column("origin").to_pylist())
    print(f"{name}: {len(ours)} documents of {len(origins)} origins; datatrove drops {dict(Counter(theirs))}")
    different = [(doc_id, mine, ref) for doc_id, mine, ref in zip(documents.column("id").to_pylist(), ours, theirs,
                                                                    strict=True) if mine != ref]
    assert different == []
    assert 0 < sum(reason is not None for reason in theirs) < len(theirs)  # the comparison has both outcomes
    if name == "c4_quality":
        kept = [i for i, reason in enumerate(theirs) if reason is None]
        texts = out.column("text").to_pylist()
        assert [texts[i] for i in kept] == [reference["c4_text"][i] for i in kept]
        assert sum(texts[i] != documents.column("text")[i].as_py() for i in kept) > len(kept) // 4  # C4 edits text


# Every parameter moved off its default at least once (checks turned off too), on a smaller subset
# (datatrove in-process).
OPTION_SETS = [
    {
        "gopher_quality": dict(min_doc_words=20, max_doc_words=2000, min_avg_word_length=4, max_avg_word_length=8,
                               max_symbol_word_ratio=0.05, max_bullet_lines_ratio=0.5, max_ellipsis_lines_ratio=0.1,
                               max_non_alpha_words_ratio=0.9, min_stop_words=4,
                               stop_words=["the", "a", "der", "die", "und", "le", "de", "of"]),
        "gopher_repetition": dict(dup_line_frac=0.2, dup_para_frac=None, dup_line_char_frac=0.1,
                                  dup_para_char_frac=0.1, top_n_grams=((1, 0.05), (3, 0.1)),
                                  dup_n_grams=((4, 0.1), (7, 0.05), (12, 0.03))),
        "fineweb_quality": dict(line_punct_thr=0.3, line_punct_exclude_zero=True,
                                stop_chars=(".", "!", "?", "»", "."), short_line_thr=0.5, short_line_length=60,
                                char_duplicates_ratio=0.05, new_line_ratio=0.1),
        "c4_quality": dict(split_paragraph=False, remove_citations=False, filter_no_terminal_punct=False,
                           min_num_sentences=3, min_words_per_line=5, max_word_length=30, filter_lorem_ipsum=False,
                           filter_javascript=False, filter_curly_bracket=False, filter_policy=False),
    },
    {
        "gopher_quality": dict(min_doc_words=None, max_doc_words=None, min_avg_word_length=None,
                               max_avg_word_length=None, max_symbol_word_ratio=None, max_bullet_lines_ratio=0.2,
                               max_ellipsis_lines_ratio=None, max_non_alpha_words_ratio=None, min_stop_words=1),
        "gopher_repetition": dict(dup_line_frac=None, dup_para_frac=0.1, dup_line_char_frac=None,
                                  dup_para_char_frac=None, top_n_grams=(), dup_n_grams=((2, 0.3), (3, 0.2))),
        "fineweb_quality": dict(line_punct_thr=0.1, stop_chars=("...", ":", "ly", "e."), short_line_thr=0.4,
                                short_line_length=20, char_duplicates_ratio=0.5, new_line_ratio=1.0),
        "c4_quality": dict(min_num_sentences=2, min_words_per_line=1, max_word_length=-1, filter_lorem_ipsum=True,
                           filter_javascript=False, filter_curly_bracket=True, filter_policy=False),
    },
]


@pytest.mark.parametrize("options", OPTION_SETS, ids=["off-default", "checks-off"])
def test_same_decisions_with_other_parameters(documents, options):
    subset = per_origin(documents, 8, 60_000)
    texts = subset.column("text").to_pylist()
    reference = datatrove_decisions(texts, options)
    for name, kwargs in options.items():
        out = _run(OPERATORS[name](**kwargs), subset)
        assert out.column("drop_reason").to_pylist() == reference[name], name
        print(f"{name} {kwargs}: {len(texts)} documents, drops {dict(Counter(reference[name]))}")
        assert len(set(reference[name])) > 1  # not all one decision
        if name == "c4_quality":
            kept = [i for i, reason in enumerate(reference[name]) if reason is None]
            cleaned = out.column("text").to_pylist()
            assert kept and [cleaned[i] for i in kept] == [reference["c4_text"][i] for i in kept]
