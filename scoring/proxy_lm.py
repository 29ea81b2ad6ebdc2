"""A mixture experiment's proxy (mixtures/tinylm.py, saved by mixtures.proxy.save_checkpoint) as a PreSelect
loss model: the closed loop, in which the proxies trained for RegMix also label PreSelect's positives.

Text is tokenized as the proxy was trained: the experiment's tokenizer (a quicktok encoding), mapped into the
proxy's compact vocabulary (rare ids become its UNK), each document preceded by the end-of-text token that
separated documents in training, so its first token is scored. Proxies have learned positions up to their
`seq_len`, shorter than PreSelect's 1,900 tokens: the window is `seq_len` and the stride keeps PreSelect's
ratio (512 / 1,900 of the window), so every token is still scored once with most of a window as context.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from scoring.losses import CPU_BATCH_TOKENS, STRIDE, WINDOW, DocumentLosses, resolve_device, utf8_bytes, windowed_losses


class ProxyLM:
    """losses(texts) under a proxy checkpoint (`proxy.pt` of a mixture experiment's run)."""

    def __init__(self, path: str | Path, name: str | None = None, device: str = "auto",
                 batch_tokens: int | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no proxy checkpoint there")
        stat = self.path.stat()
        self.name = name or self.path.parent.name
        self.device = device
        self.batch_tokens = batch_tokens
        self.key = f"proxy:{self.path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
        self._model = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_model": None}

    def _load(self) -> None:
        import torch

        from mixtures.proxy import CHECKPOINT_FORMAT, CompactVocab
        from mixtures.tinylm import TinyLM
        from operators.tokenize import load_encoder

        saved = torch.load(self.path, map_location="cpu", weights_only=True)
        if saved.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{self.path} is not a mixforge proxy checkpoint ({CHECKPOINT_FORMAT})")
        self.device_ = resolve_device(self.device)
        self._model = TinyLM(**saved["shape"])
        self._model.load_state_dict(saved["state_dict"])
        self._model.to(self.device_).eval()
        self.compact_ = CompactVocab(saved["kept_ids"].numpy(), int(saved["source_vocab_size"]))
        self.encoder_ = load_encoder(saved["tokenizer"], threads=1)
        self.window_ = int(saved["shape"]["seq_len"])
        self.stride_ = max(1, round(self.window_ * STRIDE / WINDOW))
        self.batch_tokens_ = self.batch_tokens or (65_536 if self.device_.startswith("cuda") else CPU_BATCH_TOKENS)

    def losses(self, texts: Sequence[str]) -> DocumentLosses:
        if self._model is None:
            self._load()
        tokens, offsets = self.encoder_.encode_batch([t or "" for t in texts])
        ids = self.compact_.encode(np.asarray(tokens, dtype=np.int64))
        eos = self.encoder_.eos_id
        start = self.compact_.encode(np.array([] if eos is None else [eos]))
        sequences = [np.concatenate([start, ids[a:b]]) for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
        loss, scored = windowed_losses(self._model, sequences, self.window_, self.stride_, self.batch_tokens_,
                                       self.device_)
        return DocumentLosses(loss, scored, utf8_bytes(texts))
