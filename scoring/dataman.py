"""DataMan (Peng et al. 2025, pengr/DataMan): 14 quality criteria and 15 domains, the rating prompt, and
robust parsing of what an annotator answers.

DataMan rates every document 1-5 on thirteen criteria plus an Overall Score and names one of fifteen
application domains; its `all_rating` request lists the criteria as `[n]Name:_/5` lines under the text
and a `Domain:_` line. Our prompt keeps that request and adds what a general instruction-tuned model
needs that DataMan's fine-tuned rater did not: a definition of each criterion, the domain list, and
the exact answer format. Documents are cut as DataMan cuts them: the head and the tail, joined by "...".

Annotations, from an LLM or the offline teacher, are Arrow tables in one schema (`ANNOTATION_SCHEMA`),
keyed by document id, prompt version and annotator.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

import pyarrow as pa

# criterion key (column `dataman_<key>`) -> DataMan's name, in DataMan's order
CRITERIA: dict[str, str] = {
    "accuracy": "Accuracy",
    "coherence": "Coherence",
    "language_consistency": "Language Consistency",
    "semantic_density": "Semantic Density",
    "knowledge_novelty": "Knowledge Novelty",
    "topic_focus": "Topic Focus",
    "creativity": "Creativity",
    "professionalism": "Professionalism",
    "style_consistency": "Style Consistency",
    "grammatical_diversity": "Grammatical Diversity",
    "structural_standardization": "Structural Standardization",
    "originality": "Originality",
    "sensitivity": "Sensitivity",
    "overall": "Overall Score",
}
DOMAINS: tuple[str, ...] = ("Medicine", "Finance", "Law", "Education", "Technology", "Entertainment", "Mathematics",
                            "Coding", "Government", "Culture", "Transportation", "Retail E-commerce",
                            "Telecommunication", "Agriculture", "Other")
DOMAIN_LETTERS = dict(zip("ABCDEFGHIJKLMNO", DOMAINS, strict=True))

DEFINITIONS: dict[str, str] = {
    "accuracy": "free of factual errors, misspellings and grammatical mistakes",
    "coherence": "ideas follow logically from one another; the text reads as one connected whole",
    "language_consistency": "written in one language throughout, without unexplained switching",
    "semantic_density": "much information per word; little filler, repetition or boilerplate",
    "knowledge_novelty": "offers knowledge or insight beyond the commonplace",
    "topic_focus": "stays on one clear topic",
    "creativity": "original, imaginative expression",
    "professionalism": "shows domain expertise and uses its terminology correctly",
    "style_consistency": "one tone, register and format throughout",
    "grammatical_diversity": "varied sentence structures and lengths",
    "structural_standardization": "well organised: standard paragraphs, headings, lists and formatting",
    "originality": "not copied, templated, auto-generated or spam-like",
    "sensitivity": "free of sensitive content (violence, sexual content, hate, personal data): 5 means none",
    "overall": "overall value of the text as pre-training data for a language model",
}

SYSTEM_PROMPT = (
    "You rate documents as pre-training data for language models. Score the text from 1 (worst) to 5 (best) on "
    "each criterion, using whole numbers:\n"
    + "\n".join(f"- {CRITERIA[key]}: {DEFINITIONS[key]}" for key in CRITERIA)
    + "\nThen give its domain, one of: " + " ".join(f"[{letter}]{name}" for letter, name in DOMAIN_LETTERS.items())
    + ".\nAnswer with exactly the 15 lines of the template, filled in, and nothing else."
)
# DataMan's all_rating request: the text, then a Domain line and one `[n]Name:_/5` line per criterion.
REQUEST_TEMPLATE = ("Please score the text on fourteen evaluation criteria and specify its domain:\nText: {text}\n"
                    "Domain:_\n" + "\n".join(f"[{n}]{name}:_/5" for n, name in enumerate(CRITERIA.values(), 1)))
PROMPT_VERSION = "dataman-" + hashlib.sha256((SYSTEM_PROMPT + REQUEST_TEMPLATE).encode()).hexdigest()[:10]

ANNOTATION_SCHEMA = pa.schema(
    [pa.field("id", pa.string(), nullable=False), pa.field("prompt_version", pa.string(), nullable=False),
     pa.field("annotator", pa.string(), nullable=False), pa.field("domain", pa.string())]
    + [pa.field(key, pa.int8()) for key in CRITERIA]
    + [pa.field("raw", pa.string())]
)


def column_name(criterion: str) -> str:
    """The document column of a criterion: `dataman_<criterion>` (`dataman_overall` for the Overall Score)."""
    return f"dataman_{criterion}"


def cut_text(text: str, max_chars: int) -> str:
    """DataMan's truncation: a long text keeps its first and last max_chars/2 characters around '...'."""
    if len(text) <= max_chars:
        return text
    half = max_chars // 2
    return f"{text[:half]}\n...\n{text[-half:]}"


def build_messages(text: str, max_chars: int = 8000) -> list[dict[str, str]]:
    """The chat messages for one document (OpenAI chat-completions format)."""
    return [{"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": REQUEST_TEMPLATE.format(text=cut_text(text, max_chars))}]


@dataclass(frozen=True)
class Rating:
    """One document's ratings: every criterion 1-5 and one of the 15 domains."""

    scores: dict[str, int]
    domain: str


class ParseError(ValueError):
    """An answer that does not hold all 14 scores (1-5) and a known domain; the message says what is missing."""


def _normal(name: str) -> str:
    return re.sub(r"[^a-z]", "", name.lower())


_CRITERION_BY_NAME = {_normal(name): key for key, name in CRITERIA.items()} | {
    _normal(key): key for key in CRITERIA} | {"overall": "overall", "overallquality": "overall"}
_DOMAIN_BY_NAME = {_normal(name): name for name in DOMAINS} | {
    "retail": "Retail E-commerce", "ecommerce": "Retail E-commerce", "retailecommerce": "Retail E-commerce",
    "telecom": "Telecommunication", "telecommunications": "Telecommunication", "programming": "Coding",
    "code": "Coding", "math": "Mathematics", "medical": "Medicine", "health": "Medicine", "legal": "Law",
    "others": "Other"}
_BULLET = r"^\s*(?:[-*•+]\s+)?"
_NAME_SCORE = re.compile(_BULLET + r"(?:\[\s*\d+\s*\]|\d+[.)])?\s*([A-Za-z][A-Za-z _\-]*?)\s*[:=：\-]\s*"
                         r"(-?\d+(?:\.\d+)?)\s*(?:/\s*(\d+))?")
_DOMAIN_LINE = re.compile(_BULLET + r"(?:\[\s*\d+\s*\])?\s*(?:application[ _]?)?domain(?:[ _]?type)?"
                          r"\s*[:=：\-]\s*(.+)$", re.IGNORECASE)
_BARE_NUMBER = re.compile(r"^\s*(?:\[\s*\d+\s*\])?\s*(\d(?:\.\d+)?)\s*(?:/\s*5)?\s*$")


def _domain(value: str) -> str | None:
    value = value.strip().strip("*_`\"'.").strip()
    letter = re.fullmatch(r"\[?([A-Oa-o])\]?(?:\s*[\].:)]?\s*(.*))?", value)
    if letter and (not letter.group(2) or _normal(letter.group(2)) in _DOMAIN_BY_NAME):
        return DOMAIN_LETTERS[letter.group(1).upper()]
    bracketed = re.match(r"\[([A-Oa-o])\]", value)
    if bracketed:
        return DOMAIN_LETTERS[bracketed.group(1).upper()]
    return _DOMAIN_BY_NAME.get(_normal(value))


def _score(value: float, scale: str | None, name: str) -> int:
    if scale is not None and int(scale) != 5:
        raise ParseError(f"{name} scored out of {scale}, not 5")
    if not 1 <= value <= 5:
        raise ParseError(f"{name} score {value:g} is outside 1-5")
    return int(round(value))


def _from_json(answer: str) -> tuple[dict[str, int], str | None] | None:
    match = re.search(r"\{.*\}", answer, re.DOTALL)
    if not match:
        return None
    try:
        data = json.loads(match.group(0))
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    scores: dict[str, int] = {}
    domain = None
    for name, value in data.items():
        key = _normal(str(name))
        if key in ("domain", "applicationdomain", "domaintype"):
            domain = _domain(str(value))
        elif key in _CRITERION_BY_NAME and isinstance(value, int | float | str):
            try:
                scores[_CRITERION_BY_NAME[key]] = _score(float(value), None, str(name))
            except ValueError as error:
                raise ParseError(str(error)) from None
    return scores, domain


def parse_rating(answer: str) -> Rating:
    """The rating in an annotator's answer: DataMan's template filled in (`[1]Accuracy: 4/5`), `Name: 4` lines,
    a JSON object, or DataMan's own output (the domain, then 14 bare scores, one a line); markdown is ignored."""
    text = re.sub(r"```(?:json)?|\*\*|__|`", "", answer or "")
    parsed = _from_json(text)
    scores, domain = parsed if parsed else ({}, None)
    bare: list[int] = []
    first_line = None
    for line in text.splitlines():
        if not line.strip():
            continue
        first_line = first_line if first_line is not None else line
        if match := _DOMAIN_LINE.match(line):
            domain = domain or _domain(match.group(1))
        elif match := _NAME_SCORE.match(line):
            key = _CRITERION_BY_NAME.get(_normal(match.group(1)))
            if key is not None and key not in scores:
                scores[key] = _score(float(match.group(2)), match.group(3), CRITERIA[key])
        elif match := _BARE_NUMBER.match(line):
            bare.append(_score(float(match.group(1)), None, "score"))
    if not scores and len(bare) == len(CRITERIA):  # DataMan's fine-tuned output: domain line, then the scores
        scores = dict(zip(CRITERIA, bare, strict=True))
        domain = domain or (_domain(first_line) if first_line else None)
    missing = [CRITERIA[key] for key in CRITERIA if key not in scores]
    if missing:
        raise ParseError(f"no score for {', '.join(missing)}")
    if domain is None:
        raise ParseError("no recognisable domain")
    return Rating(scores={key: scores[key] for key in CRITERIA}, domain=domain)


def annotation_table(ids: list[str], ratings: list[Rating], annotator: str, prompt_version: str = PROMPT_VERSION,
                     raw: list[str | None] | None = None) -> pa.Table:
    """Ratings as rows of ANNOTATION_SCHEMA."""
    columns = {"id": ids, "prompt_version": [prompt_version] * len(ids), "annotator": [annotator] * len(ids),
               "domain": [r.domain for r in ratings]}
    columns |= {key: [r.scores[key] for r in ratings] for key in CRITERIA}
    columns["raw"] = raw if raw is not None else [None] * len(ids)
    return pa.table(columns, schema=ANNOTATION_SCHEMA)
