"""Real documents for the scoring tests and benchmark: the sample corpus's Debian documentation and fortunes.

Each document keeps its `origin` (python-doc, postgresql-doc, debian-handbook, debian-reference, fortunes)
and `lang`, which the tests use as the truth. A run directory with one upstream stage can be made from
them, for the operators and flows that read shards.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pandas as pd
import pyarrow as pa

from storage.schema import DOCUMENT_SCHEMA, document_id
from storage.shards import write_table_atomic

DOC_FILES = ("python-doc.jsonl.gz", "postgresql-doc.parquet", "fortunes.jsonl.gz", "debian-handbook.parquet",
             "debian-reference.jsonl.zst")


@functools.cache
def sample_docs(corpus: Path) -> pd.DataFrame:
    """Every document of the sample corpus's docs/ (text, url, origin, domain, lang), shuffled with a fixed seed."""
    frames = []
    for name in DOC_FILES:
        path = corpus / "docs" / name
        frames.append(pd.read_parquet(path) if name.endswith(".parquet") else pd.read_json(path, lines=True))
    docs = pd.concat(frames, ignore_index=True)[["text", "url", "origin", "domain", "lang"]]
    return docs.sample(frac=1.0, random_state=0).reset_index(drop=True)


def write_run(docs: pd.DataFrame, out: Path, stage: str = "tokenize", n_shards: int = 2,
              with_tokens: bool = True) -> list[str]:
    """Write `docs` as a run's `shards/<stage>` (document schema + n_chars/n_tokens); return the shard paths."""
    paths = []
    for rank in range(n_shards):
        part = docs.iloc[rank::n_shards]
        source = f"sample/{rank}"
        columns = {
            "id": [document_id(source, i) for i in range(len(part))],
            "text": part["text"].tolist(),
            "url": part["url"].tolist(),
            "source": [f"{origin}.jsonl" for origin in part["origin"]],
            "offset": list(range(len(part))),
            "metadata": [json.dumps({"origin": o, "lang": lang}) for o, lang in zip(part["origin"], part["lang"],
                                                                                  strict=True)],
        }
        table = pa.table(columns, schema=DOCUMENT_SCHEMA)
        table = table.append_column("n_chars", pa.array(part["text"].str.len().tolist(), pa.int64()))
        if with_tokens:  # a fixed ratio stands in for a tokenizer: ~4 characters per token
            table = table.append_column("n_tokens", pa.array((part["text"].str.len() // 4 + 1).tolist(), pa.int64()))
        path = out / "shards" / stage / f"part-{rank:05d}-0000.parquet"
        write_table_atomic(table, path)
        paths.append(str(path))
    return paths


def train_tokenizer(texts: list[str], folder: Path, vocab_size: int = 512):
    """A byte-level BPE tokenizer trained here on `texts`, saved as a Hugging Face tokenizer in `folder`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(texts, trainer)
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<|endoftext|>",
                                      eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    wrapped.save_pretrained(folder)
    return wrapped


def train_causal_lm(texts: list[str], tokenizer, folder: Path, arch: str = "gpt2", width: int = 32, layers: int = 2,
                    steps: int = 200, seq_len: int = 64, batch_size: int = 8, context: int = 2048, seed: int = 0):
    """A small causal LM built from a config (GPT-2 or Llama), trained `steps` steps on `texts`, saved in `folder`:
    a real transformers model that stands in for a downloaded family member."""
    import numpy as np
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    vocab = len(tokenizer)
    if arch == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_embd=width, n_layer=layers, n_head=2,
                                           n_positions=context, bos_token_id=tokenizer.bos_token_id,
                                           eos_token_id=tokenizer.eos_token_id))
    else:
        model = LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=width, intermediate_size=2 * width,
                                             num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=2,
                                             max_position_embeddings=context, bos_token_id=tokenizer.bos_token_id,
                                             eos_token_id=tokenizer.eos_token_id))
    ids = [tokenizer.bos_token_id]
    for text in texts:
        ids += tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]
    stream = torch.tensor(ids)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(seed)
    model.train()
    for _ in range(steps):
        starts = rng.integers(0, len(stream) - seq_len - 1, size=batch_size)
        batch = torch.stack([stream[s:s + seq_len] for s in starts])
        loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
