"""The batch-wise text statistics equal datatrove's per-document ones: whitespace, lines, repeated
elements, spaCy words (chunk cache and special cases bridging chunks), sentence counts and n-grams."""

from __future__ import annotations

import random
import sys

import numpy as np
import pyarrow as pa
import pytest
from datatrove.pipeline.filters.gopher_repetition_filter import (
    find_all_duplicate,
    find_duplicates,
    find_top_duplicate,
    get_n_grams,
)
from datatrove.utils.text import split_into_sentences, split_into_words
from filter_inputs import per_origin, sample_documents

from operators.c4_quality import C4Quality
from operators.gopher_repetition import _NGrams
from operators.text_stats import WordTokenizer, duplicate_stats, split_lines, split_whitespace, word_tokenizer

TRICKY = [
    "",
    " ",
    "\n",
    "a\r\nb\rc\x0bd\x0ce\x1cf\x1dg\x1eh\x85i\u2028j\u2029k\n",
    "trailing newline\n\n",
    "tabs\tand\x1funit separators\u3000ideographic space",
    "try: p.Parse(some_xml_document) except: pass",  # ":p" spans two chunks and blocks "p."
    "\n   x = 1; try: p.Parse(doc) :p. (o: and a b. then ):\n",  # the same after leading whitespace
    "fmt = input('Enter (%d-date %f-format): ')",  # "):" inside a chunk, ":'" across
    "I'm happy :) really :-) and (: or ): ok :p :P xD <3 :'(",
    "It's the U.S. vs. e.g. Mr. Smith at 10a.m. and 3p.m. don't can't won't y'all 'cause",
    "See https://example.com/a.b?c=d, www.test.org, and user@mail.com; 10km 5.5% $3.50 #tag @user",
    "(╯°□°）╯︵┻━┻ ¯\\_(ツ)_/¯ ಠ_ಠ ^_^ (>_<) -_- °C. °F.",
    "Ellipsis... and … and .... and ?! and \"quoted.\" 'single.'",
    "Hi.  There  two spaces.\tTab. Last",
    "Ünïcödé wörds, Straße; 日本語のテキスト。 中文句子。 Русский текст. العربية.",
    "IS_ALPHA IS_ALPHA.IS_ALPHA x",
    "a:p p. a: p.q :p. (:p) x:-) :-)x",
]


def test_arrow_whitespace_is_pythons():
    """Arrow's whitespace kernels use exactly str.isspace's characters; split_whitespace is str.split()."""
    import pyarrow.compute as pc

    text = "".join(f"a{chr(code)}" for code in range(sys.maxunicode + 1) if not 0xD800 <= code <= 0xDFFF)
    spaces = "".join(chr(code) for code in range(0x3001) if chr(code).isspace())
    assert len(spaces) == 29
    texts = [text, "", " ", spaces, " a ", f"{spaces}x y{spaces}", "a  b\n", "\u200bzero\u200bwidth"]
    values, offsets = split_whitespace(pa.array(texts, pa.large_string()))
    values = values.to_pylist()
    assert [values[offsets[i]:offsets[i + 1]] for i in range(len(texts))] == [t.split() for t in texts]
    assert pc.utf8_trim_whitespace(pa.array([spaces + "x" + spaces])).to_pylist() == ["x"]


def test_split_lines_is_str_splitlines():
    texts = TRICKY + ["\r\n\r\n", "\n\n\nx", "x\r", "x\r\n", "\x1c", "only"]
    values, offsets = split_lines(pa.array(texts, pa.large_string()))
    values = values.to_pylist()
    assert [values[offsets[i]:offsets[i + 1]] for i in range(len(texts))] == [text.splitlines() for text in texts]


def test_duplicate_stats_are_find_duplicates():
    rng = random.Random(3)
    lists = [[rng.choice(["a", "bb", "ccc", "", "a b"]) for _ in range(rng.randrange(0, 12))] for _ in range(200)]
    offsets = np.concatenate(([0], np.cumsum([len(items) for items in lists])))
    counts, chars = duplicate_stats(pa.array([x for items in lists for x in items]), offsets)
    assert list(zip(counts.tolist(), chars.tolist(), strict=True)) == [find_duplicates(items) for items in lists]


@pytest.fixture(scope="module")
def code_heavy(sample_corpus) -> list[str]:
    """Python and PostgreSQL manual pages plus a few of every other origin: where special cases
    (emoticons, abbreviations) bridge chunks most often."""
    docs = sample_documents(sample_corpus)
    texts = per_origin(docs, 6, 60_000).column("text").to_pylist()
    import pyarrow.compute as pc

    python = docs.filter(pc.equal(docs.column("origin"), "python-doc")).sort_by("id").slice(0, 40)
    return TRICKY + texts + python.column("text").to_pylist()


def test_words_are_datatrove_words(code_heavy):
    # datatrove keeps an "IS_ALPHA" token the first time a process meets one, and drops it later
    # (spaCy fails re-creating it); we follow the later behaviour, so let datatrove meet one first.
    split_into_words("IS_ALPHA once", "en")
    tokenizer = WordTokenizer("en")
    batch = pa.array(code_heavy, pa.large_string())
    chunkwise = tokenizer.split(batch, whole_if_bridged=False)
    words = tokenizer.split(batch)
    assert chunkwise.bridged[:len(TRICKY)].sum() >= 2  # the bridging texts above are caught...
    assert chunkwise.bridged.sum() < len(code_heavy) // 4  # ...and few others
    for i, text in enumerate(code_heavy):
        ours = [words.tokens[t] for t in words.ids[words.offsets[i]:words.offsets[i + 1]]]
        assert ours == split_into_words(text, "en"), text[:80]
    # Regions re-tokenized whole: the chunkwise words differ exactly where datatrove's do.
    differs = [i for i in range(len(code_heavy)) if (chunkwise.ids[chunkwise.offsets[i]:chunkwise.offsets[i + 1]]
               .tolist() != words.ids[words.offsets[i]:words.offsets[i + 1]].tolist())]
    assert differs and set(differs) <= set(np.flatnonzero(chunkwise.bridged))


def test_words_in_other_languages():
    texts = ["Der schnelle braune Fuchs, z.B. springt über den Hund.", "L'homme d'affaires n'est pas là, c.-à-d. ici.",
             "¿Dónde está el Sr. García? ¡Aquí!", "Mi piace l'uva, p.es. quella nera."]
    for language in ("de", "fr", "es", "it"):
        words = word_tokenizer(language).split(pa.array(texts, pa.large_string()))
        for i, text in enumerate(texts):
            assert [words.tokens[t] for t in words.ids[words.offsets[i]:words.offsets[i + 1]]] == \
                split_into_words(text, language)


def test_sentence_counts_are_datatrove_sentences(code_heavy):
    lines = [line.strip() for text in code_heavy[:60] for line in text.splitlines()] + [
        "Hi.  There. Yes!", "Wait... what? Yes!!", "A. B. C.", "\"Quoted.\" he said. Then left.", " leading. space",
        "trailing.  ", "tab.\tafter", "x .y. z", "U.S. is big. Yes.", "end?\u3000next", "",
    ]
    counts = C4Quality()._sentences(pa.array(lines, pa.large_string()), np.ones(len(lines), dtype=bool))
    assert counts.tolist() == [len(split_into_sentences(line, "en")) for line in lines]
    assert counts.max() > 3


def test_ngram_counts_are_datatrove_counts():
    """Top and repeated n-gram characters on texts from a tiny vocabulary (many repeats), including
    words that join into the same string in different ways (ab+c = a+bc)."""
    rng = random.Random(7)
    vocabulary = ["a", "b", "ab", "ba", "bc", "c", "abc", "the", "of", "x", ".", ","]
    texts = [" ".join(rng.choice(vocabulary) for _ in range(rng.randrange(0, 60))) for _ in range(300)]
    texts += ["a bc a b c ab c a bc d " * 3, "x x x x x x x x x x x x", "one"]
    tokenizer = word_tokenizer("en")
    words = tokenizer.split(pa.array(texts, pa.large_string()))
    ngrams = _NGrams(words, tokenizer)
    split = [split_into_words(text, "en") for text in texts]
    for n in range(1, 11):
        if n > 1:
            ngrams.grow()
        top, has_ngrams = ngrams.most_frequent_chars()
        repeated = ngrams.repeated_chars()
        for i, text_words in enumerate(split):
            grams = get_n_grams(text_words, n)
            assert has_ngrams[i] == bool(grams)
            assert top[i] == (find_top_duplicate(grams) if grams else 0), (n, texts[i])
            assert repeated[i] == find_all_duplicate(text_words, n), (n, texts[i])
