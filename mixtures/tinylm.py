"""The proxy model: a GPT-style decoder (learned positions, pre-LayerNorm blocks, tied output head), and a
Hugging Face causal LM behind the same call (`model(ids) -> logits`), so one training loop anneals either.

Kept apart from mixtures/proxy.py so that importing the experiment code does not import torch.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F


class Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.qkv, self.proj = nn.Linear(d_model, 3 * d_model), nn.Linear(d_model, d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.n_heads, d // self.n_heads).unbind(2)
        attended = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                  is_causal=True)
        x = x + self.proj(attended.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.ln2(x))


class TinyLM(nn.Module):
    def __init__(self, vocab_size: int, d_model: int, n_layers: int, n_heads: int, seq_len: int):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not divisible by n_heads {n_heads}")
        self.embed = nn.Embedding(vocab_size, d_model)
        self.position = nn.Parameter(torch.zeros(seq_len, d_model))
        self.blocks = nn.ModuleList(Block(d_model, n_heads) for _ in range(n_layers))
        self.ln = nn.LayerNorm(d_model)
        nn.init.normal_(self.embed.weight, std=0.02)
        nn.init.normal_(self.position, std=0.01)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Next-token logits for every position of `ids` (batch, time)."""
        x = self.embed(ids) + self.position[: ids.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.ln(x) @ self.embed.weight.T


# config.json keys that bound a Hugging Face model's context, in the order tried
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "n_ctx", "seq_length")
DEFAULT_CONTEXT = 2048  # for a model whose config names none of them


class CausalLMLogits(nn.Module):
    """A Hugging Face causal LM seen as TinyLM is: forward(ids) -> next-token logits."""

    def __init__(self, lm: nn.Module):
        super().__init__()
        self.lm = lm
        self.vocab_size = int(lm.config.vocab_size)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lm(input_ids=ids).logits


def load_causal_lm(path: str | Path) -> tuple[CausalLMLogits, int]:
    """A local Hugging Face causal LM directory (float32, never the network) and its context length."""
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32, local_files_only=True)
    context = next((getattr(lm.config, k) for k in CONTEXT_KEYS if isinstance(getattr(lm.config, k, None), int)),
                   DEFAULT_CONTEXT)
    return CausalLMLogits(lm), int(context)
