"""Tokenize: n_tokens equal to each encoder's own single-text encoding on real multilingual documents, with
quicktok encodings and a local tokenizer.json; token shards read back (memory-mapped) to the same ids."""

from __future__ import annotations

from pathlib import Path

import lxml.html
import numpy as np
import pyarrow as pa
import pytest
from dedup_inputs import python_doc_sections

from operators.token_shards import read_token_shard
from operators.tokenize import Tokenize

HANDBOOK = Path("/usr/share/doc/debian-handbook/html")
LANGUAGES = ("ja-JP", "ru-RU", "ar-MA", "zh-CN", "el-GR", "de-DE", "vi-VN")


@pytest.fixture(scope="module")
def documents() -> pa.Table:
    """Python doc sections plus Debian handbook pages in seven scripts, and edge cases: a literal
    special-token string, empty text, a null."""
    texts = python_doc_sections()[:300]
    for language in LANGUAGES:
        for page in sorted((HANDBOOK / language).glob("*.html"))[:6]:
            texts.append(lxml.html.fromstring(page.read_bytes()).text_content())
    texts += ["text with <|endoftext|> and <|endofprompt|> inside", "", None]
    return pa.table({"id": [f"doc-{i:04d}" for i in range(len(texts))], "text": pa.array(texts, pa.large_string())})


@pytest.fixture(scope="module")
def bpe_json(documents, tmp_path_factory) -> Path:
    """A byte-level BPE (4k vocab, <|endoftext|> special) trained here on the documents, saved as tokenizer.json."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=4000, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator([t for t in documents["text"].to_pylist() if t], trainer)
    path = tmp_path_factory.mktemp("bpe") / "tokenizer.json"
    tokenizer.save(str(path))
    return path


@pytest.mark.parametrize("encoding", ["o200k_base", "cl100k_base"])
def test_n_tokens_equal_quicktok_single_encode(documents, encoding):
    import quicktok

    encoder = quicktok.get_encoding(encoding)
    operator = Tokenize(encoding, threads=2)
    out = operator(documents)
    expected = [len(encoder.encode_ordinary(text or "")) for text in documents["text"].to_pylist()]
    assert out["n_tokens"].to_pylist() == expected
    assert operator.stats.tokens_out == sum(expected) > 300_000
    # A special-token string inside a document is text, not the special id.
    assert expected[-3] > 5 and encoder.eot_token not in encoder.encode_ordinary(documents["text"][-3].as_py())


def test_n_tokens_equal_tokenizers_on_a_local_tokenizer_json(documents, bpe_json):
    from tokenizers import Tokenizer

    reference = Tokenizer.from_file(str(bpe_json))
    assert len(reference.encode("<|endoftext|>").ids) == 1
    reference.encode_special_tokens = True  # as Tokenize does: documents are plain text
    out = Tokenize(str(bpe_json))(documents)
    texts = documents["text"].to_pylist()
    expected = [len(reference.encode(text or "", add_special_tokens=False).ids) for text in texts]
    assert out["n_tokens"].to_pylist() == expected
    # the special token is spelled out in the text, yet encoded as plain text
    assert reference.token_to_id("<|endoftext|>") not in \
        Tokenize(str(bpe_json)).encoder.encode_batch([texts[-3]])[0].tolist()


@pytest.mark.parametrize("encoding", ["o200k_base", "bpe"])
def test_token_shards_roundtrip(documents, bpe_json, tmp_path, encoding):
    encoding = str(bpe_json) if encoding == "bpe" else encoding
    operator = Tokenize(encoding, threads=2)
    reasons = pa.array(["too_short" if i % 10 == 3 else None for i in range(documents.num_rows)], pa.string())
    batch = documents.append_column("drop_reason", reasons)
    operator.sink = operator.shard_writer(tmp_path, "part-00000")
    halves = [operator(batch.slice(0, 150)), operator(batch.slice(150))]
    header = operator.sink.close()
    out = pa.concat_tables(halves)

    shard = read_token_shard(tmp_path, "part-00000")
    live = [i for i in range(documents.num_rows) if i % 10 != 3]
    assert isinstance(shard.tokens, np.memmap) and shard.tokens.dtype == np.uint32
    assert shard.ids["id"].to_pylist() == [documents["id"][i].as_py() for i in live]
    assert shard.ids["n_tokens"].to_pylist() == [out["n_tokens"][i].as_py() for i in live]
    eos = operator.encoder.eos_id
    assert header["eos_id"] == eos is not None
    texts = documents["text"].to_pylist()
    for k, i in enumerate(live):
        expected = operator.encoder.encode_batch([texts[i] or ""])[0].tolist() + [eos]
        assert shard.document(k).tolist() == expected
    assert len(shard.tokens) == shard.offsets[-1] == header["tokens"] == sum(shard.ids["n_tokens"].to_pylist()) + \
        len(live)
    # dropped rows are counted but not written
    assert out["n_tokens"][3].as_py() > 0


def test_no_eos_policy_concatenates_documents(documents, tmp_path):
    operator = Tokenize("o200k_base", eos=False)
    operator.sink = operator.shard_writer(tmp_path, "plain")
    out = operator(documents.slice(0, 20))
    operator.sink.close()
    shard = read_token_shard(tmp_path, "plain")
    assert shard.header["eos_id"] is None
    assert np.diff(shard.offsets).tolist() == out["n_tokens"].to_pylist()
