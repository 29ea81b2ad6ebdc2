"""Proxy models: a small decoder-only transformer trained on a materialized mixture, scored on target sets.

Vocabulary: token shards hold o200k ids (200k entries: a 64-d embedding of that alone would be
13M parameters, far beyond a 1M-parameter proxy). Proxies therefore use a `CompactVocab`: the ids
seen in the experiment's text, most frequent first, capped (default 4096), everything rarer mapped
to one UNK id. It is built once per experiment and shared by every proxy, so their losses are
comparable. A byte-level vocabulary (256) would need no UNK but makes sequences ~4x longer for the
same text, which a CPU budget cannot afford. The price of the cap: UNK was 12-17% of tokens on
~200k tokens of Debian documentation at 4096 (9% at 8192, for twice the embedding); a proxy's loss
is therefore not comparable with a model using the full vocabulary, only with other proxies.
Losses are nats per (compact) token; bits/byte divides the summed loss by the UTF-8 bytes of the
evaluated text (the shard's bytes per token times the tokens scored).

`train_proxy` trains and scores one proxy on `threads` CPU threads (1: proxies run one per core as
Ray tasks, see mixtures/experiment.py), on CUDA when there is a GPU. `run_external_trainer` hands a
whole round to a user's command instead.
"""

from __future__ import annotations

import math
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mixtures.io import MixtureFileError, join_runs, read_metrics
from storage.token_shards import TokenShard

VOCAB_FILE = "vocab.npy"
CHECKPOINT_FORMAT = "mixforge-proxy-1"


class CompactVocab:
    """Tokenizer ids -> dense ids 0..size-1 by frequency; id size-1 is UNK for everything else."""

    def __init__(self, kept_ids: np.ndarray, source_vocab_size: int):
        self.kept_ids = np.asarray(kept_ids, dtype=np.int64)
        self.size = len(self.kept_ids) + 1
        self.unk = self.size - 1
        self.lookup = np.full(source_vocab_size, self.unk, dtype=np.int64)
        self.lookup[self.kept_ids] = np.arange(len(self.kept_ids))

    @classmethod
    def build(cls, shards: list[TokenShard], size: int = 4096) -> CompactVocab:
        source = max(s.header["vocab_size"] for s in shards)
        counts = np.zeros(source, dtype=np.int64)
        for shard in shards:
            counts += np.bincount(shard.tokens, minlength=source)[:source]
        seen = np.flatnonzero(counts)
        ranked = seen[np.argsort(-counts[seen], kind="stable")][: size - 1]
        return cls(ranked, source)

    def encode(self, tokens: np.ndarray) -> np.ndarray:
        return self.lookup[np.asarray(tokens, dtype=np.int64)]

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        np.save(path, np.concatenate([[len(self.lookup)], self.kept_ids]))
        return path

    @classmethod
    def load(cls, path: str | Path) -> CompactVocab:
        stored = np.load(path)
        return cls(stored[1:], int(stored[0]))


@dataclass
class ProxyConfig:
    """Model and training settings; the defaults are a ~1M-parameter model (vocab 4096, d 96, 4 layers)."""

    d_model: int = 96
    n_layers: int = 4
    n_heads: int = 4
    seq_len: int = 128
    batch_size: int = 8
    learning_rate: float = 3e-3
    warmup_fraction: float = 0.05
    weight_decay: float = 0.1
    train_tokens: int | None = None  # None: one pass over the training shard
    eval_tokens: int = 32_768  # per target set
    seed: int = 0
    device: str = "auto"  # auto: cuda when available
    threads: int = 1  # CPU threads: proxies run one per core, and torch's threads spin-wait when cores are busy

    def n_params(self, vocab_size: int) -> int:
        d = self.d_model
        return vocab_size * d + self.seq_len * d + self.n_layers * (12 * d * d + 13 * d) + 2 * d


@dataclass
class ProxyResult:
    run: str
    losses: dict[str, float]  # target -> nats per token
    bits_per_byte: dict[str, float]
    train_loss: float
    train_tokens: int
    params: int
    seconds: float
    device: str
    extra: dict = field(default_factory=dict)

    @property
    def tokens_per_second(self) -> float:
        return self.train_tokens / self.seconds if self.seconds else 0.0

    def row(self) -> dict:
        row = {"run": self.run}
        for target in self.losses:
            row[f"{target}_val_loss"] = self.losses[target]
            row[f"{target}_val_bpb"] = self.bits_per_byte[target]
        row |= {"train_loss": self.train_loss, "train_tokens": self.train_tokens, "params": self.params,
                "seconds": round(self.seconds, 3), "tokens_per_second": round(self.tokens_per_second, 1)}
        return row


def _windows(stream: np.ndarray, starts: np.ndarray, length: int):
    import torch

    index = starts[:, None] + np.arange(length + 1)[None, :]
    return torch.from_numpy(stream[index])


def train_proxy(run: str, train_shard: str | Path, targets: dict[str, str | Path], vocab: str | Path,
                config: ProxyConfig | None = None, checkpoint: str | Path | None = None) -> ProxyResult:
    """Train one proxy on `train_shard`; loss on each target shard (nats/token, bits/byte). With `checkpoint`,
    the trained model is saved there (`save_checkpoint`), so others can score text with it (scoring.proxy_lm)."""
    import torch

    config = config or ProxyConfig()
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        return _train(run, train_shard, targets, vocab, config, checkpoint)
    finally:
        torch.set_num_threads(threads)


def save_checkpoint(model, compact: CompactVocab, config: ProxyConfig, tokenizer: str, path: str | Path) -> Path:
    """A self-contained proxy file: the TinyLM's shape and weights, its compact vocabulary and source tokenizer."""
    import torch

    path = Path(path)
    tmp = path.with_name(f".tmp-{path.name}")
    torch.save({"format": CHECKPOINT_FORMAT, "tokenizer": tokenizer, "kept_ids": compact.kept_ids,
                "source_vocab_size": len(compact.lookup),
                "shape": {"vocab_size": compact.size, "d_model": config.d_model, "n_layers": config.n_layers,
                          "n_heads": config.n_heads, "seq_len": config.seq_len},
                "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}, tmp)
    tmp.replace(path)
    return path


def _train(run: str, train_shard: str | Path, targets: dict[str, str | Path], vocab: str | Path,
           config: ProxyConfig, checkpoint: str | Path | None = None) -> ProxyResult:
    import torch
    from torch.nn import functional as F

    from mixtures.tinylm import TinyLM

    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if config.device == "auto" else config.device
    compact = CompactVocab.load(vocab)
    shard = TokenShard.open(train_shard)
    stream = compact.encode(shard.tokens)
    if len(stream) <= config.seq_len + 1:
        raise ValueError(f"{train_shard}: {len(stream)} tokens, too few for sequences of {config.seq_len}")
    model = TinyLM(compact.size, config.d_model, config.n_layers, config.n_heads, config.seq_len).to(device)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and n != "position"]
    rest = [p for n, p in model.named_parameters() if p.dim() < 2 or n == "position"]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                   {"params": rest, "weight_decay": 0.0}], lr=config.learning_rate,
                                  betas=(0.9, 0.95))
    per_step = config.batch_size * config.seq_len
    steps = max(1, math.ceil((config.train_tokens or len(stream)) / per_step))
    warmup = max(1, int(steps * config.warmup_fraction))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min((s + 1) / warmup, 1.0) * (
        0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s / steps, 1.0)))))
    started = time.perf_counter()
    model.train()
    recent = []
    for _ in range(steps):
        starts = rng.integers(0, len(stream) - config.seq_len - 1, size=config.batch_size)
        batch = _windows(stream, starts, config.seq_len).to(device)
        loss = F.cross_entropy(model(batch[:, :-1]).flatten(0, 1), batch[:, 1:].flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        recent = (recent + [loss.item()])[-20:]
    seconds = time.perf_counter() - started
    losses, bpb = {}, {}
    for name, path in targets.items():
        losses[name], bpb[name] = _evaluate(model, TokenShard.open(path), compact, config, device)
    if checkpoint is not None:
        save_checkpoint(model, compact, config, shard.header["tokenizer"], checkpoint)
    return ProxyResult(run, losses, bpb, float(np.mean(recent)), steps * per_step,
                       sum(p.numel() for p in model.parameters()), seconds, device)


def _evaluate(model, shard: TokenShard, compact: CompactVocab, config: ProxyConfig, device: str
              ) -> tuple[float, float]:
    """Mean next-token loss over non-overlapping windows (up to `eval_tokens`), and bits per byte."""
    import torch
    from torch.nn import functional as F

    stream = compact.encode(shard.tokens[: config.eval_tokens + 1])
    n_windows = (len(stream) - 1) // config.seq_len
    if n_windows == 0:
        raise ValueError(f"{shard.prefix}: {len(stream)} tokens, too few to evaluate sequences of {config.seq_len}")
    starts = np.arange(n_windows) * config.seq_len
    total = 0.0
    model.eval()
    with torch.no_grad():
        for i in range(0, n_windows, 32):
            batch = _windows(stream, starts[i:i + 32], config.seq_len).to(device)
            logits = model(batch[:, :-1])
            total += F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten(), reduction="sum").item()
    scored = n_windows * config.seq_len
    return total / scored, total / math.log(2) / (scored * _bytes_per_token(shard))


def _bytes_per_token(shard: TokenShard) -> float:
    if shard.header["n_bytes"] is None:
        raise ValueError(f"{shard.prefix}: the shard does not record its text's bytes, so no bits per byte")
    return shard.header["n_bytes"] / max(shard.n_tokens, 1)


def run_external_trainer(command: str, ratios: str | Path, out: str | Path, *, timeout: float | None = None
                         ) -> pd.DataFrame:
    """Run a user's trainer for a whole round: `command` with {ratios} and {out} filled in must write
    metrics.csv (`run` + metric columns) at {out} for every run of {ratios}."""
    if "{ratios}" not in command or "{out}" not in command:
        raise ValueError("the trainer command must contain the placeholders {ratios} and {out}")
    argv = [part.format(ratios=str(ratios), out=str(out)) for part in shlex.split(command)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"trainer command exited with {done.returncode}: {tail[0]}")
    if not Path(out).exists():
        raise MixtureFileError(f"the trainer command wrote no metrics at {out}")
    from mixtures.io import read_mixtures

    _, metrics = join_runs(read_mixtures(ratios), read_metrics(out), mixtures_name=str(ratios),
                           metrics_name=str(out))
    return metrics
