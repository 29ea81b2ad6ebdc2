"""DEMO TEACHER (`--teacher demo`): an offline heuristic stand-in for DataMan's LLM, NOT DataMan.

Its ratings come from measurable text statistics, so a pipeline can be tried end to end without an LLM
(train students, try selections); every annotation it writes carries the annotator name
`demo-teacher:heuristics-v2 (not DataMan)`. Ratings meant to be trusted come from DataMan's prompt through
an LLM (scoring.dataman_llm, scoring.dataman_hf). An LLM judges meaning; these proxies measure surface
properties that tend to go with each criterion, each mapped onto 1-5 by fixed ranges (set when these
heuristics were first written, by looking at the sample corpus; the domain keyword lists that were fitted
to it are gone):

- domain: zero-shot, the domain whose one-line gloss (a dictionary-style description of the domain name,
  not words taken from any corpus) is most similar to the document (model2vec embeddings of
  operators/embed.py, or TF-IDF cosine with `tfidf`); "Other" when nothing is similar enough
- accuracy: few error-like tokens (SHOUTED words, elongations like "soooo", "!!"/"??")
- coherence: word overlap between consecutive 50-word windows
- language consistency: share of characters in paragraphs whose language (fastText lid.176 through
  operators/langid.py) is the document's main language
- semantic density: zlib compression ratio (repetitive, templated text compresses well)
- knowledge novelty: share of informative tokens (numbers, mid-sentence capitalised terms, long words)
- topic focus: share of content-word occurrences taken by the ten most frequent content words
- creativity: moving-average type-token ratio over 50-word windows (lexical variety)
- professionalism: mean word length and technical tokens (identifiers, dotted names, units)
- style consistency: low variation of paragraph length and sentence length across paragraphs
- grammatical diversity: variety of punctuation and of sentence lengths
- structural standardisation: share of lines that are well formed (ending in punctuation, headings,
  list items), no overlong lines, no control characters
- originality: few duplicated lines and duplicated word 5-grams (Gopher's repetition statistics)
- sensitivity: density of words from a generic list of violent, sexual, drug and slur terms (5 = none)
- overall: the mean of the thirteen, at most 3 for fragments under 50 words
"""

from __future__ import annotations

import re
import zlib
from collections import Counter
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pyarrow as pa

from operators.langid import LanguageID
from scoring.dataman import CRITERIA, DOMAINS, Rating, annotation_table

Similarity = Literal["embeddings", "tfidf"]

# One dictionary-style gloss per DataMan domain (what the word means, not what any corpus contains).
DOMAIN_DESCRIPTIONS: dict[str, str] = {
    "Medicine": "medicine: the science and practice of diagnosing, treating and preventing disease; health, "
                "patients, doctors, hospitals, drugs",
    "Finance": "finance: the management of money; banking, investment, markets, loans, taxes, accounting",
    "Law": "law: the system of rules enforced by courts; legislation, contracts, rights, lawyers, judges, licences",
    "Education": "education: teaching and learning; schools, universities, students, teachers, courses, lessons",
    "Technology": "technology: the application of science and engineering; computers, software, hardware, "
                  "networks, devices, systems",
    "Entertainment": "entertainment: activities that amuse people; films, music, games, humour, jokes, shows",
    "Mathematics": "mathematics: the science of numbers, quantity and space; algebra, geometry, proofs, equations",
    "Coding": "coding: writing computer programs; source code, programming languages, functions, variables, "
              "syntax",
    "Government": "government: the governing of a state; politics, elections, public administration, policy",
    "Culture": "culture: the arts, customs and ideas of a society; history, literature, philosophy, religion",
    "Transportation": "transportation: moving people and goods; vehicles, roads, railways, flights, traffic",
    "Retail E-commerce": "retail and e-commerce: selling goods to customers; shops, products, prices, online "
                         "orders",
    "Telecommunication": "telecommunication: communication over distance; telephones, mobile networks, signals",
    "Agriculture": "agriculture: farming; crops, soil, harvests, livestock, food production",
    "Other": "",
}
# Below this cosine to the nearest description, a document's domain is "Other".
MIN_DOMAIN_SIMILARITY = {"embeddings": 0.2, "tfidf": 0.02}

SENSITIVE_WORDS = frozenset("""
kill killed killing murder murdered rape raped porn porno pornography sex sexual nude naked cocaine heroin meth
drug drugs gun guns bomb bombs terrorist terrorism suicide nazi racist slut whore fuck fucking fucked shit bitch
bastard cunt dick cock pussy genocide torture abuse abused weapon weapons blood violent violence hate
""".split())

WORD = re.compile(r"\w+", re.UNICODE)
SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+")
TERMINAL = tuple(".!?:;。！？\"')]»")
LIST_ITEM = re.compile(r"^\s*([-*•+]|\d+[.)]|[a-z][.)])\s+")
TECHNICAL = re.compile(r"^(?:[A-Za-z_]+[._][\w.]+|\w*\d\w*|[A-Z]{2,}\w*)$")


def _scale(value: float, worst: float, best: float) -> float:
    """value mapped linearly onto 1..5, worst -> 1 and best -> 5 (either may be the larger)."""
    position = (value - worst) / (best - worst)
    return 1.0 + 4.0 * min(1.0, max(0.0, position))


def _windows(words: list[str], size: int = 50) -> list[list[str]]:
    return [words[i:i + size] for i in range(0, len(words), size)]


DEMO_PROMPT_VERSION = "demo-heuristics-v2"


class OfflineTeacher:
    """The demo teacher: rate(texts) -> Ratings, annotate(ids, texts) -> annotation table, labelled as a demo."""

    annotator = "demo-teacher:heuristics-v2 (not DataMan)"

    def __init__(self, similarity: Similarity = "embeddings", embedding_model: str | None = None,
                 max_chars: int = 20_000) -> None:
        self.similarity = similarity
        self.embedding_model = embedding_model
        self.max_chars = max_chars
        self.langid = LanguageID()  # lid.176, loaded on first use
        self._domains = None

    def annotate(self, ids: Sequence[str], texts: Sequence[str]) -> pa.Table:
        return annotation_table(list(ids), self.rate(texts), self.annotator, DEMO_PROMPT_VERSION)

    def rate(self, texts: Sequence[str]) -> list[Rating]:
        texts = [(text or "")[: self.max_chars] for text in texts]
        domains = self.domains(texts)
        return [Rating(scores=self.criteria(text), domain=domain) for text, domain in zip(texts, domains, strict=True)]

    # -- domain ---------------------------------------------------------------------------------
    def domains(self, texts: Sequence[str]) -> list[str]:
        """Zero-shot domain: the most similar description, or Other below the similarity floor."""
        names = [name for name in DOMAINS if DOMAIN_DESCRIPTIONS[name]]
        similarity = self._similarity([t[:4000] for t in texts], [f"{n}: {DOMAIN_DESCRIPTIONS[n]}" for n in names])
        best = similarity.argmax(axis=1)
        floor = MIN_DOMAIN_SIMILARITY[self.similarity]
        return [names[b] if similarity[i, b] >= floor else "Other" for i, b in enumerate(best)]

    def _similarity(self, texts: list[str], descriptions: list[str]) -> np.ndarray:
        if self.similarity == "embeddings":
            from operators.embed import load_encoder

            if self._domains is None:
                encoder = load_encoder("model2vec", self.embedding_model)
                self._domains = (encoder, encoder.encode(descriptions))
            encoder, described = self._domains
            return encoder.encode(texts) @ described.T
        from sklearn.feature_extraction.text import TfidfVectorizer

        if self._domains is None:
            vectorizer = TfidfVectorizer(sublinear_tf=True, stop_words="english").fit(descriptions)
            self._domains = (vectorizer, vectorizer.transform(descriptions))
        vectorizer, described = self._domains
        return (vectorizer.transform(texts) @ described.T).toarray()

    # -- criteria -------------------------------------------------------------------------------
    def criteria(self, text: str) -> dict[str, int]:
        words = WORD.findall(text)
        lower = [w.lower() for w in words]
        content = [w for w in lower if len(w) > 3 and not w.isdigit()]
        sentences = [s for s in SENTENCE_END.split(text) if WORD.search(s)]
        sentence_lengths = np.array([len(WORD.findall(s)) for s in sentences] or [0])
        paragraphs = [p for p in re.split(r"\n\s*\n", text) if p.strip()]
        lines = [line for line in text.splitlines() if line.strip()]
        n_words = max(len(words), 1)

        errors = sum(1 for w in words if len(w) >= 4 and w.isupper() and w.isalpha())
        errors += len(re.findall(r"(\w)\1\1", text)) + len(re.findall(r"[!?]{2,}", text))
        windows = [set(w) for w in _windows(content)]
        overlaps = [len(a & b) / max(1, len(a | b)) for a, b in zip(windows, windows[1:], strict=False)]
        informative = sum(1 for w in words if w.isdigit() or len(w) >= 9)
        informative += sum(1 for s in sentences for w in WORD.findall(s)[1:] if w[:1].isupper())
        top_share = sum(n for _, n in Counter(content).most_common(10)) / max(1, len(content))
        ttr = [len(set(w)) / len(w) for w in _windows(lower) if len(w) >= 20] or [len(set(lower)) / n_words]
        technical = sum(1 for token in text.split() if TECHNICAL.match(token.strip(",;:()[]\"'")))
        paragraph_lengths = np.array([len(WORD.findall(p)) for p in paragraphs] or [0])
        paragraph_cv = paragraph_lengths.std() / max(1.0, paragraph_lengths.mean())
        sentence_cv = sentence_lengths.std() / max(1.0, sentence_lengths.mean())
        punctuation = len(set(re.findall(r"[,;:()\"'\-?!]", text)))
        well_formed = sum(1 for line in lines if line.rstrip().endswith(TERMINAL) or LIST_ITEM.match(line)
                          or (len(line.split()) <= 8 and not line.rstrip().endswith(",")))
        overlong = sum(1 for line in lines if len(line) > 1000)
        control = len(re.findall(r"[\x00-\x08\x0b\x0e-\x1f]", text))
        line_counts = Counter(line.strip() for line in lines)
        duplicated_lines = sum(len(line) * (n - 1) for line, n in line_counts.items() if n > 1)
        grams = Counter(zip(*(lower[i:] for i in range(5)), strict=False))
        duplicated_grams = sum(n - 1 for n in grams.values() if n > 1) / max(1, sum(grams.values()))
        sensitive = sum(1 for w in lower if w in SENSITIVE_WORDS) * 1000 / n_words
        raw = text.encode("utf-8")

        scores = {
            "accuracy": _scale(errors / n_words, 0.08, 0.0),
            "coherence": _scale(float(np.mean(overlaps)), 0.02, 0.15) if overlaps else 3.0,
            "language_consistency": _scale(self._main_language_share(paragraphs), 0.5, 0.98),
            "semantic_density": _scale(len(zlib.compress(raw, 6)) / max(1, len(raw)), 0.15, 0.42),
            "knowledge_novelty": _scale(informative / n_words, 0.03, 0.25),
            "topic_focus": _scale(top_share, 0.08, 0.35),
            "creativity": _scale(float(np.mean(ttr)), 0.55, 0.85),
            "professionalism": (_scale(float(np.mean([len(w) for w in words] or [0])), 3.8, 6.0)
                                + _scale(technical / n_words, 0.0, 0.08)) / 2,
            "style_consistency": (_scale(paragraph_cv, 2.0, 0.4) + _scale(sentence_cv, 1.5, 0.4)) / 2,
            "grammatical_diversity": (_scale(punctuation, 1, 8) + _scale(sentence_cv, 0.1, 0.7)) / 2,
            "structural_standardization": _scale(well_formed / max(1, len(lines)), 0.3, 0.95)
            - (1.0 if overlong or control else 0.0),
            "originality": _scale(duplicated_lines / max(1, len(text)) + duplicated_grams, 0.5, 0.0),
            "sensitivity": _scale(sensitive, 10.0, 0.0),
        }
        overall = float(np.mean(list(scores.values())))
        if len(words) < 50:
            overall = min(overall, 3.0)
        scores["overall"] = overall
        return {key: int(np.clip(round(scores[key]), 1, 5)) for key in CRITERIA}

    def _main_language_share(self, paragraphs: list[str]) -> float:
        """Share of characters in paragraphs (>= 20 characters) written in the document's main language."""
        sized = [(" ".join(p.split()), len(p)) for p in paragraphs if len(p.strip()) >= 20]
        if len(sized) < 2:
            return 1.0
        languages, _ = self.langid.predict(pa.array([p for p, _ in sized], pa.large_string()))
        by_language: Counter = Counter()
        for (_, size), language in zip(sized, languages.to_pylist(), strict=True):
            by_language[language] += size
        return by_language.most_common(1)[0][1] / sum(by_language.values())
