"""spaCy's internals that text_stats.WordTokenizer relies on to tokenize chunk by chunk as datatrove does.

These reach into spaCy's tokenizer (its special-case matcher, lexeme attribute getters, memory zones), not
its public API, so they are guarded: `SpecialCaseBridges.applies` holds only on the spaCy release these
were proven on (SPACY_PROVEN: the datatrove parity tests pass on it); on another one WordTokenizer
tokenizes text by text with datatrove's own tokenizer, exact but slower, and says so once.
"""

from __future__ import annotations

import functools
import itertools
import sys
import warnings

import numpy as np

SPACY_PROVEN = "3.8"  # major.minor of the spaCy these internals were proven against (3.8.18)
IS_ALPHA = "IS_ALPHA"  # the one token spaCy fails on (see own_pipeline)


def load_word_tokenizer(language: str):
    """datatrove's word tokenizer for `language`, with spaCy imported first without torch (import_spacy)."""
    from datatrove.utils.word_tokenizers import load_word_tokenizer as datatrove_word_tokenizer

    import_spacy()
    return datatrove_word_tokenizer(language)


def import_spacy():
    """spaCy, imported without torch where torch is not loaded yet: thinc, spaCy's machine-learning library,
    imports torch when it is installed (1.5 s of 2.4 s, in every cold Ray worker) only to offer torch layers
    that a rule-based tokenizer never uses. Torch is hidden for the import alone (thinc then records that it
    has no torch); a later `import torch` in the process works as usual."""
    if "spacy" in sys.modules or "torch" in sys.modules:
        import spacy

        return spacy
    sys.modules["torch"] = None  # type: ignore[assignment]  # `import torch` raises ImportError meanwhile
    try:
        import spacy
    finally:
        del sys.modules["torch"]
    return spacy


@functools.cache
def spacy_is_proven() -> bool:
    """Whether the installed spaCy is the release these internals were proven on (else warn once)."""
    import spacy

    proven = ".".join(spacy.__version__.split(".")[:2]) == SPACY_PROVEN
    if not proven:
        warnings.warn(f"spaCy {spacy.__version__} is not {SPACY_PROVEN}.x, which mixforge's chunkwise word "
                      "tokenizer was proven against: tokenizing text by text instead (same words, slower)",
                      stacklevel=2)
    return proven


def own_pipeline(datatrove_tokenizer) -> tuple:
    """A spaCy pipeline set up as datatrove's tokenizer for the language (None if that is not spaCy),
    and the Token.is_punct function. It is not datatrove's own object, so our memory zones and
    lexemes leave datatrove's state alone (see IS_ALPHA)."""
    from datatrove.utils.word_tokenizers import SpaCyTokenizer, WhitespaceTokenizer
    from spacy.attrs import IS_PUNCT, IS_SPACE
    from spacy.lang.lex_attrs import is_punct

    if type(datatrove_tokenizer) is SpaCyTokenizer:
        nlp = SpaCyTokenizer(datatrove_tokenizer.language, datatrove_tokenizer.config).tokenizer
    elif type(datatrove_tokenizer) is WhitespaceTokenizer:
        nlp = SpaCyTokenizer("xx").tokenizer
    else:
        return None, is_punct
    getters = nlp.vocab.lex_attr_getters
    # Token boundaries never depend on lexeme attributes; computing only IS_SPACE (which we read from
    # the Doc) makes spaCy's lexeme creation, most of its cost on new text, several times cheaper.
    nlp.vocab.lex_attr_getters = {IS_SPACE: getters[IS_SPACE]}
    # spaCy fails when it makes an "IS_ALPHA" token inside a memory zone, except the first time (and
    # datatrove then tokenizes the text without "IS_ALPHA"); a permanent lexeme keeps our calls from
    # failing, and `text_stats.WordTokenizer.split` applies datatrove's fallback to every such text.
    nlp.vocab[IS_ALPHA]
    return nlp, getters[IS_PUNCT]


def default_sentence_punct() -> list[str]:
    from spacy.pipeline import Sentencizer

    return Sentencizer.default_punct_chars


def tokenize_chunks(tokenizer, chunks: list[str]) -> tuple[list[str], np.ndarray]:
    """Non-space tokens of many chunks in one spaCy call: (texts, bounds per chunk).

    Newlines keep the chunks apart as whitespace does in a text. Call inside a memory zone.
    """
    joined = "\n".join(chunks)
    starts = np.cumsum([0] + [len(chunk) + 1 for chunk in chunks[:-1]])
    return tokens_of(tokenizer(joined), joined, starts)


def tokens_of(doc, joined: str, starts: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Non-space tokens of a spaCy Doc: (texts, bounds of each part starting at `starts`)."""
    from spacy.attrs import IDX, IS_SPACE, LENGTH

    table = doc.to_array([IDX, LENGTH, IS_SPACE]).astype(np.int64)
    table = table[table[:, 2] == 0]
    texts = [joined[start:start + length] for start, length in table[:, :2].tolist()]
    counts = np.bincount(np.searchsorted(starts, table[:, 0], side="right") - 1, minlength=len(starts))
    return texts, np.concatenate(([0], np.cumsum(counts)))


class SpecialCaseBridges:
    """Whether a spaCy special-case match spans two chunks of a text and changes its tokens.

    After its affix rules, spaCy's tokenizer matches the special cases that contain affixes (":p",
    "p.", "'s"...) as patterns over the tokens of the whole text, so a match can span a whitespace;
    it changes no tokens itself (no rule has a space) but it blocks the matches it overlaps. Where
    no pattern spans a chunk boundary over a match inside a chunk, tokenizing chunk by chunk gives
    exactly the text's tokens; elsewhere the text is tokenized whole. An affix-only twin of the
    tokenizer (its matcher left empty) gives the tokens the patterns are matched against.
    """

    def __init__(self, tokenizer) -> None:
        from spacy.attrs import ORTH
        from spacy.tokenizer import Tokenizer

        rule_free = Tokenizer(tokenizer.vocab, {}, tokenizer.prefix_search, tokenizer.suffix_search,
                              tokenizer.infix_finditer, tokenizer.token_match, tokenizer.url_match)
        self.patterns: dict[tuple[str, str], list[tuple[tuple[str, ...], int]]] = {}
        # What a match inside a chunk leaves: the special case's tokens, indexed by the first.
        self.merged: dict[str, list[tuple[str, ...]]] = {}
        for string, pieces in (tokenizer.rules or {}).items():
            if " " in string or tokenizer.find_prefix(string) or tokenizer.find_suffix(string) \
                    or tokenizer.find_infix(string):
                with tokenizer.vocab.memory_zone():
                    pattern = tuple(token.text for token in rule_free(string))
                for cut in range(1, len(pattern)):
                    self.patterns.setdefault(pattern[cut - 1:cut + 1], []).append((pattern, cut))
                orths = tuple(piece[ORTH] for piece in pieces)
                if orths != pattern:
                    self.merged.setdefault(orths[0], []).append(orths)
        self.reach = max((len(pattern) for entries in self.patterns.values() for pattern, _ in entries), default=1)
        # Pattern tokens numbered from 1 (0: none) and which (left, right) neighbours occur in a pattern.
        self.pattern_tokens = {token for pair in self.patterns for token in pair}
        self.lefts = {left: kind for kind, left in enumerate(sorted({left for left, _ in self.patterns}), 1)}
        self.rights = {right: kind for kind, right in enumerate(sorted({right for _, right in self.patterns}), 1)}
        self.pairs = np.zeros((len(self.lefts) + 1, len(self.rights) + 1), dtype=bool)
        for left, right in self.patterns:
            self.pairs[self.lefts[left], self.rights[right]] = True
        # Special cases load while the affix rules are muted, so none of them enters the matcher.
        rules = [_Muted(tokenizer.prefix_search, None), _Muted(tokenizer.suffix_search, None),
                 _Muted(tokenizer.infix_finditer, ())]
        self.affix_tokenizer = Tokenizer(tokenizer.vocab, tokenizer.rules, *rules, tokenizer.token_match,
                                         tokenizer.url_match)
        for rule in rules:
            rule.muted = False

    @staticmethod
    def applies(tokenizer) -> bool:
        """Only spaCy's own rule-based tokenizer, with the default matcher heuristics, of the proven spaCy
        release works chunk by chunk."""
        from spacy.tokenizer import Tokenizer

        return type(tokenizer) is Tokenizer and tokenizer.faster_heuristics and spacy_is_proven()

    def edges(self, chunks: list[str], tokens: list[list[str]]) -> tuple[list[tuple], list[tuple]]:
        """First and last `reach` tokens before matching of each chunk (given its final `tokens`), as
        (text, covered by a pattern inside the chunk)."""
        # Tokens before and after matching differ only where a match merged some.
        merged = [i for i, chunk_tokens in enumerate(tokens) if self._may_be_merged(chunk_tokens)]
        if merged:
            tokens = list(tokens)
            with self.affix_tokenizer.vocab.memory_zone():
                texts, bounds = tokenize_chunks(self.affix_tokenizer, [chunks[i] for i in merged])
            for i, (first, end) in zip(merged, itertools.pairwise(bounds.tolist()), strict=True):
                tokens[i] = texts[first:end]
        heads, tails = [], []
        for chunk_tokens in tokens:
            head, tail = chunk_tokens[:self.reach], chunk_tokens[-self.reach:]
            if self.pattern_tokens.isdisjoint(head) and self.pattern_tokens.isdisjoint(tail):
                heads.append(_BARRIER)  # most chunks: no pattern reaches into them
                tails.append(_BARRIER)
                continue
            marked = tuple(zip(chunk_tokens, self._matched(chunk_tokens), strict=True))
            heads.append(marked[:self.reach])
            tails.append(marked[-self.reach:])
        return heads, tails

    def _may_be_merged(self, tokens: list[str]) -> bool:
        """Do the tokens hold a special case's tokens, which a match may have merged them into?"""
        for i, token in enumerate(tokens):
            for orths in self.merged.get(token, ()):
                if tuple(tokens[i:i + len(orths)]) == orths:
                    return True
        return False

    def _matched(self, tokens: list[str]) -> list[bool]:
        covered = [False] * len(tokens)
        for i in range(len(tokens) - 1):
            for pattern, cut in self.patterns.get((tokens[i], tokens[i + 1]), ()):
                start = i + 1 - cut
                if start >= 0 and tuple(tokens[start:start + len(pattern)]) == pattern:
                    covered[start:start + len(pattern)] = [True] * len(pattern)
        return covered

    def crossing(self, left: tuple, right: tuple) -> bool | None:
        """Across the boundary between edge tokens `left` and `right`: None if no pattern occurs, else
        whether one covers a match inside a chunk (and so changes the tokens)."""
        left_tokens, right_tokens = tuple(token for token, _ in left), tuple(token for token, _ in right)
        found = None
        for pattern, cut in self.patterns.get((left_tokens[-1], right_tokens[0]), ()):
            rest = len(pattern) - cut
            if left_tokens[-cut:] == pattern[:cut] and right_tokens[:rest] == pattern[cut:]:
                found = found or any(covered for _, covered in left[-cut:] + right[:rest])
        return found


# The edge of a chunk without pattern tokens: a token no pattern has, so no match crosses it.
_BARRIER = (("", False),)


class _Muted:
    """An affix rule that can be switched off while special cases are loaded."""

    def __init__(self, rule, empty) -> None:
        self.rule, self.empty, self.muted = rule, empty, True

    def __call__(self, string: str):
        return self.empty if self.muted else self.rule(string)
