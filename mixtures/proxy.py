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

Learning-rate schedules (`ProxyConfig.schedule`): `cosine` (mixture proxies: warm-up, cosine to 10%),
`constant` (warm-up, then flat: the stable phase of a WSD schedule, for a base that is annealed later) and
`anneal` (linear decay to zero). `anneal` continues a checkpoint, a mixforge proxy or a local Hugging Face
causal LM directory, on new data with that last schedule: Ultra-FineWeb's verification (mixtures/verify.py).

Checkpoint (`save_checkpoint` / `load_checkpoint`; a `torch.save` dict that loads with weights_only=True):
  format "mixforge-proxy-1", tokenizer (quicktok name or tokenizer.json path), kept_ids (int64 tensor) and
  source_vocab_size (the CompactVocab), shape (TinyLM's vocab_size, d_model, n_layers, n_heads, seq_len),
  state_dict; optionally training (schedule, learning_rate, weight_decay, batch_size, tokens, steps) and
  optimizer (AdamW's state_dict, kept by a base so its anneal continues the optimizer without a warm-up).
"""

from __future__ import annotations

import math
import shlex
import subprocess
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mixtures.io import MixtureFileError, join_runs, read_metrics
from storage.token_shards import TokenShard

VOCAB_FILE = "vocab.npy"
CHECKPOINT_FORMAT = "mixforge-proxy-1"
SCHEDULES = ("cosine", "constant", "anneal")
COSINE_FLOOR = 0.1  # the cosine schedule ends at this fraction of the peak learning rate
HF_CONFIG = "config.json"  # a directory holding one is a Hugging Face model


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


class FullVocab:
    """The identity mapping, for a model that reads its tokenizer's own ids (a Hugging Face model)."""

    def __init__(self, size: int):
        self.size = size

    def encode(self, tokens: np.ndarray) -> np.ndarray:
        return np.asarray(tokens, dtype=np.int64)


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
    schedule: str = "cosine"  # one of SCHEDULES

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


@dataclass
class LoadedModel:
    """A trained model ready to continue: `model(ids)` gives logits; `vocab` maps tokenizer ids to its ids."""

    model: Any
    vocab: CompactVocab | FullVocab
    tokenizer: str
    seq_len: int
    kind: str  # "proxy" (mixforge) or "hf" (a Hugging Face causal LM)
    training: dict = field(default_factory=dict)
    optimizer: dict | None = None


def lr_factor(schedule: str, step: int, steps: int, warmup: int) -> float:
    """Learning rate of update `step` (0-based) of `steps`, as a fraction of the peak; `warmup` >= 1 updates."""
    ramp = min((step + 1) / warmup, 1.0)
    if schedule == "cosine":
        return ramp * (COSINE_FLOOR + (1 - COSINE_FLOOR) * 0.5 * (1 + math.cos(math.pi * min(step / steps, 1.0))))
    if schedule == "constant":
        return ramp
    if schedule == "anneal":  # the last update runs at 1/steps of the peak, then the rate is zero
        return ramp * max(steps - step, 0) / steps
    raise ValueError(f"unknown learning-rate schedule {schedule!r}; one of {', '.join(SCHEDULES)}")


def _windows(stream: np.ndarray, starts: np.ndarray, length: int):
    import torch

    index = starts[:, None] + np.arange(length + 1)[None, :]
    return torch.from_numpy(stream[index])


def _device(config: ProxyConfig) -> str:
    import torch

    return ("cuda" if torch.cuda.is_available() else "cpu") if config.device == "auto" else config.device


def _threaded(config: ProxyConfig, work):
    """Run `work()` on `config.threads` torch threads, restoring the caller's setting after."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        return work()
    finally:
        torch.set_num_threads(threads)


def train_proxy(run: str, train_shard: str | Path, targets: dict[str, str | Path], vocab: str | Path,
                config: ProxyConfig | None = None, checkpoint: str | Path | None = None,
                keep_optimizer: bool = False) -> ProxyResult:
    """Train one proxy on `train_shard`; loss on each target shard (nats/token, bits/byte). With `checkpoint`,
    the trained model is saved there (`save_checkpoint`), so others can score text with it (scoring.proxy_lm);
    `keep_optimizer` also saves AdamW's state, for a base that `anneal` continues."""
    config = config or ProxyConfig()
    return _threaded(config, lambda: _train(run, train_shard, targets, vocab, config, checkpoint, keep_optimizer))


def anneal(run: str, checkpoint: str | Path, train_shard: str | Path, targets: dict[str, str | Path],
           config: ProxyConfig | None = None) -> ProxyResult:
    """Continue `checkpoint` (a mixforge proxy file or a Hugging Face model directory) on `train_shard` with
    the learning rate decaying linearly from `config.learning_rate` to zero, then score the targets.

    A base saved with its optimizer state continues it without a warm-up; otherwise (a Hugging Face model)
    a fresh AdamW warms up over `warmup_fraction` of the steps. Windows are at most the model's context."""
    config = config or ProxyConfig()
    return _threaded(config, lambda: _anneal(run, checkpoint, train_shard, targets, config))


def save_checkpoint(model, compact: CompactVocab, config: ProxyConfig, tokenizer: str, path: str | Path, *,
                    optimizer=None, training: dict | None = None) -> Path:
    """A self-contained proxy file: the TinyLM's shape and weights, its compact vocabulary and source tokenizer
    (and, when given, how it was trained and the optimizer's state)."""
    import torch

    path = Path(path)
    tmp = path.with_name(f".tmp-{path.name}")
    saved = {"format": CHECKPOINT_FORMAT, "tokenizer": tokenizer, "kept_ids": torch.from_numpy(compact.kept_ids),
             "source_vocab_size": len(compact.lookup),
             "shape": {"vocab_size": compact.size, "d_model": config.d_model, "n_layers": config.n_layers,
                       "n_heads": config.n_heads, "seq_len": config.seq_len},
             "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    if training is not None:
        saved["training"] = training
    if optimizer is not None:
        saved["optimizer"] = optimizer.state_dict()
    torch.save(saved, tmp)
    tmp.replace(path)
    return path


def load_checkpoint(path: str | Path, device: str = "cpu") -> LoadedModel:
    """A mixforge proxy file, or a local Hugging Face causal LM directory (with its tokenizer.json)."""
    import torch

    from mixtures.tinylm import TinyLM, load_causal_lm

    path = Path(path)
    if path.is_dir():
        if not (path / HF_CONFIG).is_file():
            raise ValueError(f"{path}: a directory but not a Hugging Face model (no {HF_CONFIG})")
        tokenizer = path / "tokenizer.json"
        if not tokenizer.is_file():
            raise ValueError(f"{path}: no tokenizer.json (a fast tokenizer is needed to tokenize the blends)")
        model, context = load_causal_lm(path)
        return LoadedModel(model.to(device), FullVocab(model.vocab_size), str(tokenizer), context, "hf")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint there")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(saved, dict) or saved.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a mixforge proxy checkpoint ({CHECKPOINT_FORMAT})")
    model = TinyLM(**saved["shape"])
    model.load_state_dict(saved["state_dict"])
    vocab = CompactVocab(saved["kept_ids"].numpy(), int(saved["source_vocab_size"]))
    return LoadedModel(model.to(device), vocab, saved["tokenizer"], int(saved["shape"]["seq_len"]), "proxy",
                       saved.get("training", {}), saved.get("optimizer"))


def describe_checkpoint(path: str | Path) -> dict:
    """kind, tokenizer, seq_len and recorded training of a checkpoint, without building its model."""
    import json

    import torch

    path = Path(path)
    if path.is_dir():
        from mixtures.tinylm import CONTEXT_KEYS, DEFAULT_CONTEXT

        if not (path / HF_CONFIG).is_file() or not (path / "tokenizer.json").is_file():
            raise ValueError(f"{path}: not a Hugging Face model directory with {HF_CONFIG} and tokenizer.json")
        settings = json.loads((path / HF_CONFIG).read_text())
        context = next((settings[k] for k in CONTEXT_KEYS if isinstance(settings.get(k), int)), DEFAULT_CONTEXT)
        return {"kind": "hf", "tokenizer": str(path / "tokenizer.json"), "seq_len": context, "training": {}}
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint there (a mixforge proxy file or a Hugging Face directory)")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(saved, dict) or saved.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a mixforge proxy checkpoint ({CHECKPOINT_FORMAT})")
    return {"kind": "proxy", "tokenizer": saved["tokenizer"], "seq_len": int(saved["shape"]["seq_len"]),
            "training": saved.get("training", {})}


def _optimizer(model, config: ProxyConfig):
    import torch

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and not n.endswith("position")]
    rest = [p for n, p in model.named_parameters() if p.dim() < 2 or n.endswith("position")]
    return torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=config.learning_rate, betas=(0.9, 0.95))


def _fit(model, stream: np.ndarray, config: ProxyConfig, device: str, rng: np.random.Generator,
         optimizer_state: dict | None = None) -> tuple[Any, int, float]:
    """Train `model` on random windows of `stream` under `config.schedule`; (optimizer, steps, recent loss)."""
    import torch
    from torch.nn import functional as F

    optimizer = _optimizer(model, config)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
        for group in optimizer.param_groups:  # the saved rates are the base's: this phase sets its own
            group["lr"] = group["initial_lr"] = config.learning_rate
    per_step = config.batch_size * config.seq_len
    steps = max(1, math.ceil((config.train_tokens or len(stream)) / per_step))
    warmup = 1 if optimizer_state is not None else max(1, int(steps * config.warmup_fraction))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(config.schedule, s, steps, warmup))
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
    return optimizer, steps, float(np.mean(recent))


def _stream(train_shard: str | Path, vocab, config: ProxyConfig) -> tuple[TokenShard, np.ndarray]:
    shard = TokenShard.open(train_shard)
    stream = vocab.encode(shard.tokens)
    if len(stream) <= config.seq_len + 1:
        raise ValueError(f"{train_shard}: {len(stream)} tokens, too few for sequences of {config.seq_len}")
    return shard, stream


def _train(run: str, train_shard: str | Path, targets: dict[str, str | Path], vocab: str | Path,
           config: ProxyConfig, checkpoint: str | Path | None = None, keep_optimizer: bool = False) -> ProxyResult:
    import torch

    from mixtures.tinylm import TinyLM

    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    device = _device(config)
    compact = CompactVocab.load(vocab)
    shard, stream = _stream(train_shard, compact, config)
    model = TinyLM(compact.size, config.d_model, config.n_layers, config.n_heads, config.seq_len).to(device)
    started = time.perf_counter()
    optimizer, steps, train_loss = _fit(model, stream, config, device, rng)
    seconds = time.perf_counter() - started
    result = _scored(run, model, compact, targets, config, device, train_loss, steps, seconds)
    if checkpoint is not None:
        training = {"schedule": config.schedule, "learning_rate": config.learning_rate,
                    "weight_decay": config.weight_decay, "batch_size": config.batch_size,
                    "tokens": result.train_tokens, "steps": steps}
        save_checkpoint(model, compact, config, shard.header["tokenizer"], checkpoint,
                        optimizer=optimizer if keep_optimizer else None, training=training)
    return result


def _anneal(run: str, checkpoint: str | Path, train_shard: str | Path, targets: dict[str, str | Path],
            config: ProxyConfig) -> ProxyResult:
    import torch

    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    device = _device(config)
    loaded = load_checkpoint(checkpoint, device)
    config = replace(config, schedule="anneal", seq_len=min(config.seq_len, loaded.seq_len))
    shard, stream = _stream(train_shard, loaded.vocab, config)
    if shard.header["tokenizer"] != loaded.tokenizer:
        raise ValueError(f"{train_shard} was tokenized with {shard.header['tokenizer']}, the model reads "
                         f"{loaded.tokenizer}")
    started = time.perf_counter()
    _, steps, train_loss = _fit(loaded.model, stream, config, device, rng, loaded.optimizer)
    seconds = time.perf_counter() - started
    return _scored(run, loaded.model, loaded.vocab, targets, config, device, train_loss, steps, seconds)


def _scored(run: str, model, vocab, targets: dict[str, str | Path], config: ProxyConfig, device: str,
            train_loss: float, steps: int, seconds: float) -> ProxyResult:
    losses, bpb = {}, {}
    for name, path in targets.items():
        losses[name], bpb[name] = evaluate(model, TokenShard.open(path), vocab, config, device)
    return ProxyResult(run, losses, bpb, train_loss, steps * config.batch_size * config.seq_len,
                       sum(p.numel() for p in model.parameters()), seconds, device)


def evaluate(model, shard: TokenShard, vocab, config: ProxyConfig, device: str = "cpu") -> tuple[float, float]:
    """Mean next-token loss over non-overlapping windows (up to `eval_tokens`), and bits per byte."""
    import torch
    from torch.nn import functional as F

    stream = vocab.encode(shard.tokens[: config.eval_tokens + 1])
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
