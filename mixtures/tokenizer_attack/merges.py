"""A BPE tokenizer as the attack sees it: its ordered merge list and its own pre-tokenization.

Three sources: a Hugging Face tokenizer.json (model.type BPE; merges and vocab as written, its own
normalizer and pre_tokenizer), a tiktoken-style rank file (`<base64 token> <rank>` per line) with a
pre-tokenization regex, or a quicktok encoding name (o200k_base, cl100k_base, llama3, qwen3), whose
ranks quicktok exposes token by token. For rank-based tokenizers the merge that made token r is
recovered as the reference does for GPT-4o / GPT-3.5 / Llama 3 (their tokenizer.json files were
converted from ranks this way): BPE-encode the token's bytes with only the ranks below r; the two
parts left are the merge.

Symbols are integer ids: a merge is (left id, right id) -> merged id, and every pre-token ("word") is
turned into its initial symbols once. Pre-tokenization is the tokenizer's own: for tokenizer.json the
HF pre_tokenizer, except that the common Split(regex) + ByteLevel shapes run through the `regex`
module (4x faster here) after checking on the first texts that both give the same words; for rank
files and quicktok names the tiktoken regex of the encoding, on UTF-8 bytes.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# tiktoken's pre-tokenization patterns (openai/tiktoken tiktoken_ext/openai_public.py, Llama 3's
# tokenizer.json, Qwen2's tokenizer.json); cl100k's possessive form splits exactly as this one.
CL100K_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
                  r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")
O200K_PATTERN = "|".join([
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""", r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""", r"""\s*[\r\n]+""", r"""\s+(?!\S)""", r"""\s+"""])
QWEN_PATTERN = CL100K_PATTERN.replace(r"\p{N}{1,3}", r"\p{N}")
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
PATTERNS = {"o200k_base": O200K_PATTERN, "cl100k_base": CL100K_PATTERN, "llama3": CL100K_PATTERN,
            "qwen3": QWEN_PATTERN, "gpt2": GPT2_PATTERN}
QUICKTOK_ENCODINGS = ("o200k_base", "cl100k_base", "llama3", "qwen3")
CHECK_TEXTS = 20  # texts on which the fast pre-tokenizer must agree with the HF one


class TokenizerError(ValueError):
    """The tokenizer cannot be read or is not a BPE tokenizer; the message says which and why."""


def byte_level_alphabet() -> dict[int, str]:
    """GPT-2's byte -> printable character table (the ByteLevel pre-tokenizer's alphabet)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + i) for i, b in enumerate(extra)}}


@dataclass
class BPEMerges:
    """Ordered merges (`left[t]`, `right[t]` -> `merged[t]`) and how text becomes initial symbols."""

    name: str
    left: np.ndarray
    right: np.ndarray
    merged: np.ndarray
    pattern: str | None = None  # regex pre-tokenization (words are text; symbols are its UTF-8 bytes)
    byte_ids: np.ndarray | None = None  # byte -> symbol id, with `pattern`
    hf_tokenizer: object | None = None  # HF pre-tokenization (words are its strings; symbols its chars)
    char_ids: dict[str, int] = field(default_factory=dict)
    skipped_tokens: int = 0  # rank-file tokens no pair of lower ranks produces (never merged)

    def __len__(self) -> int:
        return len(self.merged)

    @property
    def n_ids(self) -> int:
        """An upper bound of the symbol ids in use (unknown characters get ids from here on)."""
        return int(max(self.merged.max(initial=0), max(self.char_ids.values(), default=0), 255)) + 1

    def words(self, texts: Iterable[str]) -> Counter:
        """Pre-token frequencies of `texts` (pre-tokens as strings of this tokenizer's pre-tokenization)."""
        counts: Counter = Counter()
        if self.pattern is not None:
            import regex

            split = regex.compile(self.pattern).findall
            for text in texts:
                counts.update(split(text))
            return counts
        fast = _fast_split(self.hf_tokenizer)
        checked = 0
        for text in texts:
            if fast is not None and checked >= CHECK_TEXTS:
                counts.update(fast(text))
                continue
            words = self._hf_words(text)
            if fast is not None:
                checked += 1
                if fast(text) != words:
                    fast = None  # the regex route differs from the tokenizer's own here: use the latter
            counts.update(words)
        return counts

    def _hf_words(self, text: str) -> list[str]:
        tokenizer = self.hf_tokenizer
        if tokenizer.normalizer is not None:
            text = tokenizer.normalizer.normalize_str(text)
        if tokenizer.pre_tokenizer is None:
            return [text] if text else []
        return [word for word, _ in tokenizer.pre_tokenizer.pre_tokenize_str(text)]

    def symbols(self, words: list[str]) -> list[list[int]]:
        """Each word's initial symbol ids; characters outside the alphabet get fresh ids (never merged)."""
        if self.pattern is not None:
            table = self.byte_ids.tolist()
            return [[table[b] for b in word.encode("utf-8")] for word in words]
        ids = self.char_ids
        unknown: dict[str, int] = {}
        fresh = self.n_ids
        out = []
        for word in words:
            row = []
            for char in word:
                sid = ids.get(char)
                if sid is None:
                    sid = unknown.setdefault(char, fresh + len(unknown))
                row.append(sid)
            out.append(row)
        return out


def _fast_split(tokenizer) -> object | None:
    """A `regex` splitter equal to the HF pre-tokenizer for its common shapes, or None."""
    import regex

    spec = json.loads(tokenizer.to_str())
    if spec.get("normalizer") is not None:
        return None
    pre = spec.get("pre_tokenizer") or {}
    nodes = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    kinds = [node.get("type") for node in nodes]
    if kinds == ["ByteLevel"] and nodes[0].get("use_regex", True) and not nodes[0].get("add_prefix_space"):
        pattern = GPT2_PATTERN
    elif (kinds == ["Split", "ByteLevel"] and "Regex" in nodes[0].get("pattern", {})
          and not nodes[1].get("use_regex", True) and not nodes[1].get("add_prefix_space")
          and (nodes[0].get("behavior"), nodes[0].get("invert")) in (("Isolated", False), ("Removed", True))):
        pattern = nodes[0]["pattern"]["Regex"]
    else:
        return None
    try:
        findall = regex.compile(pattern).findall
    except regex.error:
        return None
    table = str.maketrans({chr(b): c for b, c in byte_level_alphabet().items()})

    def split(text: str) -> list[str]:  # bytes as latin-1 characters, then the byte-level alphabet
        return [word.encode("utf-8").decode("latin-1").translate(table) for word in findall(text)]

    return split


def load_merges(tokenizer: str | Path, *, pattern: str | None = None) -> BPEMerges:
    """Merges of a tokenizer.json, a rank file (with `pattern`: a regex or an encoding name), or a
    quicktok encoding name."""
    text = str(tokenizer)
    path = Path(text)
    if path.is_file():
        if path.suffix == ".json":
            return _from_tokenizer_json(path)
        return _from_rank_file(path, pattern)
    if text in QUICKTOK_ENCODINGS:
        return _from_quicktok(text)
    raise TokenizerError(f"no tokenizer '{text}': give a tokenizer.json, a tiktoken rank file or one of "
                         f"{', '.join(QUICKTOK_ENCODINGS)}")


def _from_tokenizer_json(path: Path) -> BPEMerges:
    from tokenizers import Tokenizer

    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
        hf = Tokenizer.from_file(str(path))
    except (OSError, ValueError, Exception) as error:  # the Rust side raises plain Exception
        raise TokenizerError(f"{path}: not a readable tokenizer.json ({str(error).splitlines()[0][:120]})") from None
    model = spec.get("model") or {}
    if model.get("type") != "BPE":
        raise TokenizerError(f"{path}: model type {model.get('type')!r}, but the attack needs a BPE tokenizer")
    if model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
        raise TokenizerError(f"{path}: BPE with subword prefixes/suffixes is not supported")
    vocab: dict[str, int] = model.get("vocab") or {}
    fresh = max(vocab.values(), default=-1) + 1
    left, right, merged = [], [], []
    for item in model.get("merges") or []:
        a, b = item.split(" ", 1) if isinstance(item, str) else item
        for part in (a, b, a + b):
            if part not in vocab:  # a merge whose pieces the vocab lacks: give them ids of their own
                vocab[part] = fresh
                fresh += 1
        left.append(vocab[a])
        right.append(vocab[b])
        merged.append(vocab[a + b])
    if not merged:
        raise TokenizerError(f"{path}: no merges in model.merges")
    chars = {token: tid for token, tid in vocab.items() if len(token) == 1}
    return BPEMerges(path.name, np.array(left, np.int64), np.array(right, np.int64), np.array(merged, np.int64),
                     hf_tokenizer=hf, char_ids=chars)


def merges_from_ranks(ranks: dict[bytes, int], name: str, pattern: str) -> BPEMerges:
    """Recover the merge list from tiktoken-style ranks: token r is BPE of its bytes with ranks < r."""
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise TokenizerError(f"{name}: ranks lack single bytes ({len(missing)} of 256, e.g. {missing[0]})")
    left, right, merged = [], [], []
    skipped = 0
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        if len(token) < 2:
            continue
        parts = _bpe(ranks, token, rank)
        if len(parts) != 2:
            skipped += 1
            continue
        left.append(ranks[parts[0]])
        right.append(ranks[parts[1]])
        merged.append(rank)
    byte_ids = np.array([ranks[bytes([b])] for b in range(256)], np.int64)
    return BPEMerges(name, np.array(left, np.int64), np.array(right, np.int64), np.array(merged, np.int64),
                     pattern=pattern, byte_ids=byte_ids, skipped_tokens=skipped)


def _bpe(ranks: dict[bytes, int], token: bytes, max_rank: int) -> list[bytes]:
    parts = [token[i:i + 1] for i in range(len(token))]
    while len(parts) > 2:
        best, where = max_rank, -1
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and rank < best:
                best, where = rank, i
        if where < 0:
            break
        parts[where:where + 2] = [parts[where] + parts[where + 1]]
    return parts


def _from_rank_file(path: Path, pattern: str | None) -> BPEMerges:
    ranks: dict[bytes, int] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise TokenizerError(f"{path}: cannot read ({error})") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
        except ValueError:  # binascii.Error is one too
            raise TokenizerError(f"{path}:{number}: not a tiktoken rank line ('<base64 token> <rank>')") from None
    return merges_from_ranks(ranks, path.name, PATTERNS.get(pattern or "cl100k_base", pattern))


def _from_quicktok(name: str) -> BPEMerges:
    import quicktok

    encoding = quicktok.get_encoding(name)
    ranks: dict[bytes, int] = {}
    for token_id in range(encoding.n_vocab):
        try:
            token = encoding.decode_single_token_bytes(token_id)
        except (KeyError, ValueError, RuntimeError):  # ids between the ranks and the specials
            continue
        if encoding.is_special_token(token_id):
            continue
        ranks.setdefault(token, token_id)
    return merges_from_ranks(ranks, name, PATTERNS[name])
