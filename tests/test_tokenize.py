"""Tokenize: n_tokens equal to each encoder's own single-text encoding on real multilingual documents, with
quicktok encodings and a local tokenizer.json; token shards read back (memory-mapped, by the reader the mixtures
use) to the ids of the tokenizer's own library, and a killed shard writer leaves nothing a reader accepts."""

from __future__ import annotations

import re
from pathlib import Path

import lxml.html
import numpy as np
import pyarrow as pa
import pytest
from dedup_inputs import python_doc_sections

from operators.tokenize import Tokenize
from storage.token_shards import IncompleteTokenShard, TokenShard, TokenShardFiles, list_token_shards

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


def reference_ids(encoding: str, texts: list[str | None]) -> list[list[int]]:
    """Each text encoded on its own by the tokenizer's own library, as plain text."""
    if encoding.endswith(".json"):
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(encoding)
        tokenizer.encode_special_tokens = True
        return [tokenizer.encode(text or "", add_special_tokens=False).ids for text in texts]
    import quicktok

    return [quicktok.get_encoding(encoding).encode_ordinary(text or "") for text in texts]


@pytest.mark.parametrize("encoding", ["o200k_base", "bpe"])
def test_token_shards_hold_the_tokenizers_ids_for_the_mixtures_reader(documents, bpe_json, tmp_path, encoding):
    """The stage's shard, opened by the reader the mixtures use, holds each kept document's reference ids + EOS."""
    from mixtures.proxy import CompactVocab

    encoding = str(bpe_json) if encoding == "bpe" else encoding
    operator = Tokenize(encoding, threads=2)
    reasons = pa.array(["too_short" if i % 10 == 3 else None for i in range(documents.num_rows)], pa.string())
    batch = documents.append_column("drop_reason", reasons)
    operator.sink = operator.shard_writer(tmp_path / "part-00000")
    halves = [operator(batch.slice(0, 150)), operator(batch.slice(150))]
    header = operator.sink.close()
    out = pa.concat_tables(halves)

    shard = TokenShard.open(tmp_path / "part-00000")
    assert list_token_shards(tmp_path) == [tmp_path / "part-00000"]
    live = [i for i in range(documents.num_rows) if i % 10 != 3]
    texts = documents["text"].to_pylist()
    eos = operator.encoder.eos_id
    assert shard.header == header and header["eos_id"] == eos is not None and header["tokenizer"] == encoding
    assert isinstance(shard.tokens, np.memmap) and shard.tokens.dtype == np.uint32
    expected = [ids + [eos] for ids in reference_ids(encoding, [texts[i] for i in live])]
    assert [shard.document(k).tolist() for k in range(shard.n_docs)] == expected
    assert np.array_equal(shard.tokens, np.concatenate(expected))
    assert shard.ids["id"].to_pylist() == [documents["id"][i].as_py() for i in live]
    assert shard.ids["n_tokens"].to_pylist() == [out["n_tokens"][i].as_py() for i in live]
    assert header["n_bytes"] == sum(len((texts[i] or "").encode()) for i in live)
    # dropped rows are counted but not written
    assert out["n_tokens"][3].as_py() > 0
    # what the mixtures do with a shard: a compact proxy vocabulary, most frequent id first
    counts = np.bincount(np.concatenate(expected))
    assert CompactVocab.build([shard], size=64).kept_ids[0] == counts.argmax()


KILLED_REWRITE = """
import os, signal, sys
import numpy as np
import storage.token_shards as token_shards

writer = token_shards.TokenShardWriter(sys.argv[1], tokenizer="o200k_base", vocab_size=200_019, eos_id=199_999)
writer.add(np.arange(1000, dtype=np.uint32), [0, 400, 1000], ids=["a", "b"], n_bytes=4000)
if sys.argv[2] == "at-header":  # killed in close: data files renamed into place, the header not yet written
    token_shards.write_json_atomic = lambda *args: os.kill(os.getpid(), signal.SIGKILL)
    writer.close()
writer._tokens.flush()
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("killed", ["while-adding", "at-header"])
def test_a_killed_shard_is_not_taken_as_complete(documents, tmp_path, killed):
    """A writer SIGKILLed while rewriting a complete shard leaves no shard a reader accepts; a rerun replaces it."""
    import subprocess
    import sys

    operator = Tokenize("o200k_base")
    operator.sink = operator.shard_writer(tmp_path / "part-00001")
    operator(documents.slice(0, 40))
    first = operator.sink.close()
    done = subprocess.run([sys.executable, "-c", KILLED_REWRITE, str(tmp_path / "part-00001"), killed],
                          cwd=Path(__file__).parent.parent, capture_output=True, text=True)
    assert done.returncode == -9, done.stderr
    files = TokenShardFiles.of(tmp_path / "part-00001")
    assert not files.header.exists() and list_token_shards(tmp_path) == []
    with pytest.raises(IncompleteTokenShard, match="part-00001"):
        TokenShard.open(tmp_path / "part-00001")
    if killed == "at-header":  # the new data sit under the final names, yet without a header they are no shard
        assert files.tokens.stat().st_size == 4 * 1002 and files.ids.exists()
    else:  # the new ids were only under the writer's temporary name
        (leftover,) = tmp_path.glob(".tmp-*")
        assert re.fullmatch(r"\.tmp-\d+-part-00001\.tokens\.u32", leftover.name) and leftover.stat().st_size == 4 * 1002

    operator.sink = operator.shard_writer(tmp_path / "part-00001")  # the rerun of the unit
    operator(documents.slice(0, 40))
    assert operator.sink.close() == first and list(tmp_path.glob(".tmp-*")) == []
    shard = TokenShard.open(tmp_path / "part-00001")
    assert shard.n_tokens == first["n_tokens"] and len(shard.tokens) == shard.offsets[-1]
    files.tokens.write_bytes(files.tokens.read_bytes()[:-4])  # damaged after the fact: sizes disagree
    with pytest.raises(ValueError, match="damaged shard"):
        TokenShard.open(tmp_path / "part-00001")


def test_no_eos_policy_concatenates_documents(documents, tmp_path):
    operator = Tokenize("o200k_base", eos=False)
    operator.sink = operator.shard_writer(tmp_path / "plain")
    out = operator(documents.slice(0, 20))
    operator.sink.close()
    shard = TokenShard.open(tmp_path / "plain")
    assert shard.header["eos_id"] is None
    assert np.diff(shard.offsets).tolist() == out["n_tokens"].to_pylist()
