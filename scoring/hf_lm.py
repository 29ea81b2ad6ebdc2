"""Any Hugging Face causal LM as a PreSelect loss model: a local directory always, a hub name where the network
allows it (`AutoModelForCausalLM` and its own tokenizer).

Losses follow scoring.losses: whole documents, windows of 1,900 tokens moved by 512 (PreSelect's bpc/main.py),
shortened to the model's context where that is smaller. The model loads once, on first use, so an instance can
travel to a Ray actor and load there (on its GPU when the actor has one; bfloat16 on GPU as the reference,
float32 on CPU).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from scoring.losses import CPU_BATCH_TOKENS, STRIDE, WINDOW, DocumentLosses, resolve_device, utf8_bytes, windowed_losses

# config.json keys that bound a model's context
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "n_ctx", "seq_length")


def directory_print(path: Path) -> str:
    """A short hash of a model directory's files (names, sizes, times): a retrained model gets a new key."""
    files = sorted(p for p in path.rglob("*") if p.is_file())
    described = "|".join(f"{p.relative_to(path)}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)
    return hashlib.sha256(described.encode()).hexdigest()[:12]


class HFCausalLM:
    """losses(texts) under a Hugging Face causal LM (`path`: a local directory, or a hub name)."""

    def __init__(self, path: str | Path, name: str | None = None, device: str = "auto", dtype: str = "auto",
                 window: int = WINDOW, stride: int = STRIDE, batch_tokens: int | None = None,
                 threads: int | None = None) -> None:
        self.path = str(path)
        local = Path(self.path).expanduser()
        self.local = local.is_dir()
        self.name = name or (local.name if self.local else self.path)
        self.device = device
        self.dtype = dtype
        self.window = window
        self.stride = stride
        self.batch_tokens = batch_tokens
        self.threads = threads
        source = f"{local.resolve()}@{directory_print(local)}" if self.local else f"hub:{self.path}"
        self.key = f"hf:{source}:window={window}:stride={stride}"
        self._model = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_model": None, "_tokenizer": None}

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device_ = resolve_device(self.device)
        dtype = {"auto": torch.bfloat16 if self.device_.startswith("cuda") else torch.float32,
                 "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[self.dtype]
        if self.threads:
            torch.set_num_threads(self.threads)
        self._tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=self.local)
        self._tokenizer.model_max_length = 10**12  # whole documents: the windows cut them, not the tokenizer
        self._model = AutoModelForCausalLM.from_pretrained(self.path, dtype=dtype, local_files_only=self.local)
        self._model.to(self.device_).eval()
        context = next((getattr(self._model.config, k) for k in CONTEXT_KEYS
                        if isinstance(getattr(self._model.config, k, None), int)), None)
        self.window_ = min(self.window, context - 1) if context else self.window
        self.stride_ = min(self.stride, self.window_)
        self.batch_tokens_ = self.batch_tokens or (65_536 if self.device_.startswith("cuda") else CPU_BATCH_TOKENS)

    def token_ids(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Each text's ids as the tokenizer encodes it, with BOS first where the tokenizer has one."""
        if self._model is None:
            self._load()
        encoded = self._tokenizer([t or "" for t in texts], add_special_tokens=True)["input_ids"]
        bos = self._tokenizer.bos_token_id
        return [np.asarray(ids if bos is None or ids[:1] == [bos] else [bos, *ids], dtype=np.int64)
                for ids in encoded]

    def losses(self, texts: Sequence[str]) -> DocumentLosses:
        sequences = self.token_ids(texts)
        pad = self._tokenizer.pad_token_id or 0
        loss, tokens = windowed_losses(lambda ids: self._model(input_ids=ids).logits, sequences, self.window_,
                                       self.stride_, self.batch_tokens_, self.device_, pad)
        return DocumentLosses(loss, tokens, utf8_bytes(texts))
