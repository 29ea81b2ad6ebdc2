"""The chunkwise word tokenizer leans on spaCy internals proven on one spaCy release; on another it falls
back to datatrove's own tokenizer, text by text: the same words, with one warning naming the release.

Run in a fresh interpreter: spaCy and datatrove keep process-wide state (see text_stats' IS_ALPHA) that the
datatrove parity tests of test_filters_text_stats depend on."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = r"""
import json, warnings
import pyarrow as pa
from operators import spacy_tokens
from operators.text_stats import WordTokenizer

TEXTS = ["Hello world: it's a test, isn't it? :p", "U.S.A. e.g. 3.5% (see p. 4)", "x"]

def words(tokenizer):
    split = tokenizer.split(pa.array(TEXTS))
    ids, offsets = split.ids.tolist(), split.offsets.tolist()
    return [[tokenizer.tokens[i] for i in ids[a:b]] for a, b in zip(offsets, offsets[1:])]

proven = WordTokenizer("en")
spacy_tokens.SPACY_PROVEN = "0.0"
spacy_tokens.spacy_is_proven.cache_clear()
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    fallback = WordTokenizer("en")
print(json.dumps({"chunkwise": [proven.chunkwise, fallback.chunkwise], "warnings": [str(w.message) for w in caught],
                  "words": [words(proven), words(fallback)],
                  "datatrove": [fallback._datatrove.word_tokenize(text) for text in TEXTS]}))
"""


def test_another_spacy_release_tokenizes_text_by_text():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["chunkwise"] == [True, False]
    assert len(result["warnings"]) == 1 and "is not 0.0.x" in result["warnings"][0]
    assert result["words"][0] == result["words"][1] == result["datatrove"]
