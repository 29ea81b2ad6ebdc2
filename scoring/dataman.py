"""DataMan (Peng et al. 2025, pengr/DataMan): its 14 criteria and 15 domains, its prompts verbatim, its
truncation and its rules for accepting an annotator's answer.

Two prompts, as DataMan uses them:
- `RATER`: the request of `data_tools/dataman_annotate.py` (all_rating, English) under the system prompt
  "You are a helpful assistant.", for DataMan's fine-tuned raters (the released Qwen2 models), which answer
  with the domain letter and the 14 scores, one a line.
- `TEACHER`: the request of `sft/prepare_data.py` (GPT_REQUEST_TEMPLATE, English) with its criteria
  definitions and instructions, under its system prompt, temperature 0 and up to 4,096 tokens: for an
  instruction-tuned LLM acting as DataMan's teacher (GPT-4o in the paper).

Truncation (`truncate`, after `dataman_annotate.py`): DataMan's regular filtering (quoted ellipses at the
start, markdown image links), then a text over 20,000 characters keeps its first and last 10,000; with the
rater's tokenizer, more than 1,894 tokens keep the first and last 947 around a "..." token.

Parsing follows `process_gpt_response` for the teacher: an answer with N/A is rejected, the scores are the
`[n]Name: x/5` matches (exactly 14, or 28 when the two halves repeat each other), rounded as DataMan rounds
(under 3 down, else up), and exactly one domain letter; anything else is rejected. The rater's answer is
read as `dataman_annotate.py` reads it (its first 15 lines: the domain, then the 14 scores), and rejected
unless they are one known domain and 14 whole scores in 1-5.

Annotations are Arrow tables in one schema (`ANNOTATION_SCHEMA`) keyed by document id, prompt version and
annotator.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from typing import Literal

import pyarrow as pa

Template = Literal["rater", "teacher"]

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

# dataman_annotate.py, REQUEST_TEMPLATES["en"]["all_rating"], and the system prompt of its inference worker
RATER_SYSTEM = "You are a helpful assistant."
RATER_REQUEST = """Please score the text on fourteen evaluation criteria and specify its domain:
Text: {text}
Domain:_
[1]Accuracy:_/5
[2]Coherence:_/5
[3]Language Consistency:_/5
[4]Semantic Density:_/5
[5]Knowledge Novelty:_/5
[6]Topic Focus:_/5
[7]Creativity:_/5
[8]Professionalism:_/5
[9]Style Consistency:_/5
[10]Grammatical Diversity:_/5
[11]Structural Standardization:_/5
[12]Originality:_/5
[13]Sensitivity:_/5
[14]Overall Score:_/5"""

# sft/prepare_data.py, REQUEST_CONFIG["en"]["GPT_REQUEST_TEMPLATE"] and create_transformed_data's 'gpt' request
TEACHER_SYSTEM = ("You are an expert to evaluate the text quality with high accuracy and confidence. Don't hesitate "
                  "to use the full range of the score scale, including extreme scores if the text warrants it.")
TEACHER_REQUEST = """Please carefully read and analyze the following text, score it based on fourteen evaluation criteria and their respective scoring definitions. 
Additionally, select the most appropriate category from the fifteen domain types that best matches the content of the text. Let's think step by step.
Text: {text}
Domain Types: [A]Medicine [B]Finance [C]Law [D]Education [E]Technology [F]Entertainment [G]Mathematics [H]Coding [I]Government [J]Culture [K]Transportation [L]Retail E-commerce [M]Telecommunication [N]Agriculture [O]Other
Evaluation Criteria:
[1]Textual Accuracy: The higher the score, the fewer grammar, referential, and spelling errors the text contains, and the more accurate its expression. _/5
[2]Semantic Coherence: The higher the score, the more fluent the content is expressed, and the stronger its logical coherence. _/5
[3]Language Consistency: The higher the score, the more consistent the use of language in the text, with less mixing of languages. _/5
[4]Ratio of Valid Semantic Content: The higher the score, the greater the proportion of valid information in the text, with less irrelevant or redundant information. _/5
[5]Novelty of Knowledge: The higher the score, the more novel and cutting-edge the knowledge provided by the text, with more insightful views on the industry or topic. _/5
[6]Topic Focus: The higher the score, the more the text content focuses on the topic, with less deviation from the main theme. _/5
[7]Creative Expression Ratio: The higher the score, the more creative elements are shown in the text's expression. _/5
[8]Professionalism: The higher the score, the more professional terminology appears in the text, with more accurate use of terms and more professional domain-specific expression. _/5
[9]Style Consistency: The higher the score, the more consistent the style of the text, with proper and appropriate style transitions. _/5
[10]Richness of Grammatical Structures: The higher the score, the more varied and correct the grammatical structures used in the text, showing a richer language expression ability. _/5
[11]Standardization of Structure: The higher the score, the clearer the structure followed by the text and the more standardized its format. _/5
[12]Non-repetitiveness of Content: The higher the score, the fewer repetitions and similar content in the text. _/5
[13]Appropriateness of Sensitive Content: The higher the score, the more appropriately sensitive topics are handled in the text, with less inappropriate content. _/5
[14]Overall Score: The higher the score, the better the comprehensive evaluation of the text, with superior performance in all aspects."""  # noqa: E501, W291 (verbatim, trailing space included)
TEACHER_SAMPLING = {"temperature": 0.0, "max_tokens": 4096}
RATER_MAX_TOKENS = 48  # 15 short lines

PROMPTS: dict[str, tuple[str, str]] = {"rater": (RATER_SYSTEM, RATER_REQUEST), "teacher": (TEACHER_SYSTEM,
                                                                                           TEACHER_REQUEST)}
PROMPT_VERSIONS = {name: f"dataman-{name}-" + hashlib.sha256("\n".join(p).encode()).hexdigest()[:10]
                   for name, p in PROMPTS.items()}

# dataman_annotate.py: quoted ellipses opening the text, markdown image links
ELLIPSIS_PATTERN = re.compile(r'^["“”]…+["“”]|^["“”]\.\.\.+["“”]')
LINK_PATTERN = re.compile(r"!\[\]\([\/]?[^\)]+\)\n")
MAX_CHARS = 20_000  # --char_truncate_max_length, en
MAX_TOKENS = 1894  # --truncate_max_length, en

# prepare_data.py (gpt-4o): scores, domain letters, N/A
SCORE_PATTERN = re.compile(r"(?:\[[1-9][0-4]?\]|\b[1-9][0-4]?\.|\b[1-9][0-4]?\)).*(?:\*+|\s+|\(+)(\d+(\.\d+)?)/5")
CATEGORY_PATTERN = re.compile(r"\[\s*([A-Z])\s*\]|(?<=\s)([A-Z])(?=\])(?!\]\])|\bDomain Type:\**\s*\**([A-Z])\s*"
                              r"(?=[\(\)\*\-])")
NA_PATTERN = re.compile(r"(?:\*\s|:\s)N/A")

ANNOTATION_SCHEMA = pa.schema(
    [pa.field("id", pa.string(), nullable=False), pa.field("prompt_version", pa.string(), nullable=False),
     pa.field("annotator", pa.string(), nullable=False), pa.field("domain", pa.string())]
    + [pa.field(key, pa.int8()) for key in CRITERIA]
    + [pa.field("raw", pa.string())]
)


def column_name(criterion: str) -> str:
    """The document column of a criterion: `dataman_<criterion>` (`dataman_overall` for the Overall Score)."""
    return f"dataman_{criterion}"


def truncate(text: str, tokenizer=None, max_chars: int = MAX_CHARS, max_tokens: int = MAX_TOKENS) -> str:
    """The text as DataMan sends it: filtered, head and tail of at most max_chars characters, and with a
    tokenizer at most max_tokens tokens, head and tail joined by a "..." token."""
    text = LINK_PATTERN.sub("", ELLIPSIS_PATTERN.sub("", text or ""))
    if len(text) > max_chars:
        half = max_chars // 2
        text = text[:half] + text[-half:]
    if tokenizer is None:
        return text
    tokens = tokenizer.tokenize(text)
    if len(tokens) > max_tokens:
        half = max_tokens // 2
        tokens = tokens[:half] + ["..."] + tokens[-half:]
    return tokenizer.convert_tokens_to_string(tokens).strip()


def build_messages(text: str, template: Template = "teacher", tokenizer=None,
                   max_chars: int = MAX_CHARS) -> list[dict[str, str]]:
    """The chat messages for one document (OpenAI chat-completions format)."""
    system, request = PROMPTS[template]
    return [{"role": "system", "content": system},
            {"role": "user", "content": request.format(text=truncate(text, tokenizer, max_chars))}]


@dataclass(frozen=True)
class Rating:
    """One document's ratings: every criterion 1-5 and one of the 15 domains."""

    scores: dict[str, int]
    domain: str


class ParseError(ValueError):
    """An answer DataMan would reject; the message says why."""


def _round(value: str) -> int:
    """DataMan's rounding (prepare_qwen_request): below 3 down, else up."""
    number = float(value)
    return math.floor(number) if number < 3 else math.ceil(number)


def parse_teacher(answer: str) -> Rating:
    """The rating in a teacher's answer, by prepare_data.py's rules (process_gpt_response)."""
    answer = answer or ""
    if NA_PATTERN.search(answer):
        raise ParseError("the answer holds N/A")
    scores = [match[0] for match in SCORE_PATTERN.findall(answer)]
    if len(scores) == 28 and scores[:14] == scores[14:]:
        scores = scores[:14]
    if len(scores) != 14:
        raise ParseError(f"{len(scores)} scores, not 14")
    values = [_round(score) for score in scores]
    if not all(1 <= v <= 5 for v in values):
        raise ParseError(f"a score outside 1-5: {values}")
    letters = {next(filter(None, match)) for match in CATEGORY_PATTERN.findall(answer)}
    letters &= set(DOMAIN_LETTERS)
    if len(letters) != 1:
        raise ParseError(f"{len(letters)} domains ({', '.join(sorted(letters)) or 'none'}), not one")
    return Rating(scores=dict(zip(CRITERIA, values, strict=True)), domain=DOMAIN_LETTERS[letters.pop()])


def _rater_domain(line: str) -> str | None:
    value = line.strip().strip("[]").strip()
    if value.upper() in DOMAIN_LETTERS and len(value) == 1:
        return DOMAIN_LETTERS[value.upper()]
    return next((name for name in DOMAINS if name.lower() == value.lower()), None)


def parse_rater(answer: str) -> Rating:
    """The rating in a fine-tuned rater's answer: the domain line, then 14 whole scores, one a line (as
    dataman_annotate.py, which zips the first 15 lines with the names: what follows is ignored)."""
    lines = [line.strip() for line in (answer or "").strip().split("\n") if line.strip()][:15]
    if len(lines) != 15:
        raise ParseError(f"{len(lines)} lines, not a domain and 14 scores")
    domain = _rater_domain(lines[0])
    if domain is None:
        raise ParseError(f"unknown domain {lines[0]!r}")
    if not all(re.fullmatch(r"[1-5]", line) for line in lines[1:]):
        raise ParseError(f"scores must be whole numbers 1-5: {lines[1:]}")
    return Rating(scores=dict(zip(CRITERIA, map(int, lines[1:]), strict=True)), domain=domain)


PARSERS = {"rater": parse_rater, "teacher": parse_teacher}


def annotation_table(ids: list[str], ratings: list[Rating], annotator: str, prompt_version: str,
                     raw: list[str | None] | None = None) -> pa.Table:
    """Ratings as rows of ANNOTATION_SCHEMA."""
    columns = {"id": ids, "prompt_version": [prompt_version] * len(ids), "annotator": [annotator] * len(ids),
               "domain": [r.domain for r in ratings]}
    columns |= {key: [r.scores[key] for r in ratings] for key in CRITERIA}
    columns["raw"] = raw if raw is not None else [None] * len(ids)
    return pa.table(columns, schema=ANNOTATION_SCHEMA)
