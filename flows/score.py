"""The `score` and `select` flows: score a run's documents with trained scorers, then keep a subset by score.

`score` runs the configured scorers (fastText classifiers: PreSelect's or DCLM-style, each writing its
own column; a DataMan student rater: `dataman_<criterion>`, `dataman_overall`, `domain`) over the
documents of a stage, on Ray, into stage `score`. `select` reads the scores of every document (only the
columns it needs), decides once for the whole corpus which documents to keep and how often (top
fraction, threshold, or DataMan's per-domain token budgets), and writes stage `select`: the kept documents
with `repeats`, the others in dropped/ with drop_reason `not_selected`. Both are recorded in the
manifest, post score histograms / the selection as Prefect artifacts, and resume at shard granularity
(a changed config or input restarts the stage).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field, model_validator

from flows.engine import ShardWorker, StagedChain, fingerprint, init_ray, record_stage, run_stage, start_stage
from operators.base import Operator
from operators.keep_selected import KeepSelected
from scoring.apply_fasttext import ScoreFastText
from scoring.apply_students import ScoreStudents
from scoring.dataman import CRITERIA, column_name
from scoring.selection import Mode, domain_budgets, top_fraction
from storage.manifest import Manifest, describe, load_manifest, package_versions, save_manifest
from storage.shards import stage_files, write_table_atomic

SCORE, SELECT = "score", "select"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FastTextScorer(_Section):
    """A binary fastText classifier (`mixforge score train-preselect` / `train-classifier`) and its column."""

    model: str = Field(description="classifier file (.bin)")
    column: str = Field("preselect", description="column for P(positive): preselect, or e.g. dclm_score")
    max_chars: int | None = Field(20_000, gt=0, description="text cut before scoring")


class StudentScorer(_Section):
    """A DataMan student rater (`mixforge score train-students`)."""

    model: str = Field(description="student rater folder (students.npz and student.json)")


class ScoreConfig(_Section):
    """What the `score` flow runs (`score:` section of the run config)."""

    input_stage: str | None = Field(None, description="document stage to score (default: the run's final stage)")
    fasttext: list[FastTextScorer] = Field(default_factory=list)
    students: StudentScorer | None = None
    histogram_bins: int = Field(10, ge=2, description="bins of the score histograms posted as artifacts")

    @model_validator(mode="after")
    def _has_a_scorer(self) -> ScoreConfig:
        if not self.fasttext and self.students is None:
            raise ValueError("configure at least one scorer: fasttext (a list) or students")
        return self

    def columns(self) -> list[str]:
        """The columns the configured scorers write."""
        columns = [s.column for s in self.fasttext]
        if self.students:
            columns += [column_name(key) for key in CRITERIA] + ["domain"]
        return columns

    def operators(self) -> list[Operator]:
        scorers: list[Operator] = [ScoreFastText(s.model, s.column, s.max_chars) for s in self.fasttext]
        if self.students:
            scorers.append(ScoreStudents(self.students.model))
        return scorers


class SelectConfig(_Section):
    """What the `select` flow keeps (`select:` section of the run config)."""

    input_stage: str = Field(SCORE, description="scored document stage to select from")
    column: str = Field("preselect", description="score column to rank by (higher is better)")
    method: Literal["top_fraction", "threshold", "domain_budgets"] = "top_fraction"
    fraction: float = Field(0.1, gt=0, le=1, description="top_fraction: share of the corpus to keep (PreSelect: 0.1)")
    by: Literal["tokens", "chars"] = Field("tokens", description="what fractions and budgets count")
    threshold: float | None = Field(None, description="threshold: keep documents scoring at least this")
    budget: int | None = Field(None, gt=0, description="domain_budgets: tokens (or chars) to select")
    mode: Mode = Field("multi_domain", description="domain_budgets: multi_domain (DataMan's recipe), original or "
                                                   "equal")
    margin: float = Field(0.1, ge=0, description="domain_budgets: DataMan's candidate margin")
    min_score: float | None = Field(5.0, description="domain_budgets: only documents scoring at least this (DataMan "
                                                     "keeps Overall Score 5, a rater's whole score; students' "
                                                     "fractional scores may want e.g. 4.5; null: every document)")
    domain_column: str = "domain"
    source_column: str = Field("source", description="multi_domain: the column naming each document's source")
    seed: int = 0

    @model_validator(mode="after")
    def _method_settings(self) -> SelectConfig:
        if self.method == "threshold" and self.threshold is None:
            raise ValueError("method threshold needs `threshold`")
        if self.method == "domain_budgets" and self.budget is None:
            raise ValueError("method domain_budgets needs `budget`")
        return self


def open_run(out_dir: Path) -> Manifest:
    manifest = load_manifest(out_dir)
    if manifest is None:
        raise FileNotFoundError(f"no run at {out_dir} (manifest.json missing): curate or ingest into it first")
    return manifest


def stage_units(out_dir: Path, stage: str) -> list[str]:
    units = [str(p) for p in stage_files(out_dir, "shards", stage)]
    if not units:
        raise ValueError(f"stage '{stage}' of {out_dir} has no document shards")
    return units


def query_documents(out_dir: Path, sql: str) -> tuple[list[str], list[str]]:
    """(ids, texts) from read-only SQL over the run's views that returns `id` and `text` columns."""
    from storage.catalog import open_catalog, query

    table = query(open_catalog(out_dir), sql)
    missing = {"id", "text"} - set(table.column_names)
    if missing:
        raise ValueError(f"the query must return id and text columns; it lacks {', '.join(sorted(missing))}")
    return table.column("id").to_pylist(), [t or "" for t in table.column("text").to_pylist()]


def texts_by_id(out_dir: Path, stage: str, ids: list[str]) -> list[str]:
    """The texts of these documents of a stage, in the order of `ids` (KeyError naming one that is missing)."""
    wanted = pa.array(sorted(set(ids)), pa.string())
    found: dict[str, str] = {}
    for path in stage_files(out_dir, "shards", stage):
        table = pq.read_table(path, columns=["id", "text"])
        table = table.filter(pc.is_in(table.column("id"), value_set=wanted))
        found.update(zip(table.column("id").to_pylist(), table.column("text").to_pylist(), strict=True))
    missing = next((i for i in ids if i not in found), None)
    if missing is not None:
        raise KeyError(f"document {missing} is not in stage '{stage}' of {out_dir}")
    return [found[i] or "" for i in ids]


def input_print(units: list[str]) -> list[tuple[str, int, int]]:
    return [(Path(u).name, Path(u).stat().st_size, Path(u).stat().st_mtime_ns) for u in units]


@task(name="score-documents", cache_policy=NO_CACHE)
def score_stage(units: list[str], out_dir: Path, config: ScoreConfig, progress: bool,
                restart: bool = False) -> list[dict]:
    models = [s.model for s in config.fasttext] + ([config.students.model] if config.students else [])
    # a model retrained into the same file changes the scores too: its size and time are in the print
    parts = {"inputs": input_print(units), "config": config.model_dump(), "models": input_print(models)}
    start_stage(out_dir, SCORE, parts, [out_dir / "shards" / SCORE, out_dir / "dropped" / SCORE], restart=restart)
    return run_stage(SCORE, units, out_dir, functools.partial(_score_worker, config), progress=progress)


def _score_worker(config: ScoreConfig) -> ShardWorker:
    operators = config.operators()  # runs inside the Ray worker: models load once per process
    return ShardWorker(lambda rank: StagedChain([(SCORE, operators)]))


@flow(name="score", log_prints=True)
def score(out: str, config: ScoreConfig, ray_address: str | None = None, progress: bool = True,
          restart: bool = False) -> dict:
    """Score the documents of a run into stage `score`; post the score histograms as an artifact. A stage scored
    with other models or settings is refused unless `restart`."""
    out_dir = Path(out).resolve()
    manifest = open_run(out_dir)
    final = manifest.final_stage if manifest.final_stage not in (SCORE, SELECT) else None
    stage = config.input_stage or manifest.config.get(SCORE, {}).get("input_stage") or final
    if not stage:
        raise ValueError("cannot tell which document stage to score: set score.input_stage")
    units = stage_units(out_dir, stage)
    manifest.config[SCORE] = {**config.model_dump(), "input_stage": stage}
    manifest.versions = package_versions()
    save_manifest(manifest, out_dir)
    init_ray(ray_address)
    records = score_stage(units, out_dir, config, progress, restart)
    record_stage(manifest, SCORE, units, records)
    manifest.final_stage = SCORE
    save_manifest(manifest, out_dir)
    columns = config.columns()
    report = histograms_markdown(out_dir, columns, config.histogram_bins)
    create_markdown_artifact(markdown=report + f"\n```\n{describe(manifest)}\n```", key="score-histograms",
                             description=f"score run {manifest.run_id}")
    print(report)
    return {"documents": manifest.stages[SCORE].counts.get("docs_out", 0), "columns": columns}


def histograms_markdown(out_dir: Path, columns: list[str], bins: int) -> str:
    """One Markdown table per score column: counts per bin with a bar; the domain as counts per domain."""
    table = pa.concat_tables([pq.read_table(p, columns=columns) for p in stage_files(out_dir, "shards", SCORE)],
                             promote_options="permissive")
    parts = [f"# Scores of {table.num_rows:,} documents", ""]
    for name in columns:
        values = table.column(name)
        parts += [f"## {name}", ""]
        if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
            counts = pc.value_counts(values.combine_chunks()).to_pylist()
            counts.sort(key=lambda c: -c["counts"])
            top = max(c["counts"] for c in counts) if counts else 1
            parts += ["| value | documents | |", "|---|--:|---|"]
            parts += [f"| {c['values']} | {c['counts']:,} | {'█' * round(20 * c['counts'] / top)} |" for c in counts]
        else:
            numbers = values.to_numpy(zero_copy_only=False).astype(np.float64)
            numbers = numbers[np.isfinite(numbers)]
            if numbers.size == 0:
                parts += ["(no values)", ""]
                continue
            counts, edges = np.histogram(numbers, bins=bins)
            top = max(counts.max(), 1)
            parts += [f"mean {numbers.mean():.3f}, median {np.median(numbers):.3f}", "",
                      "| from | to | documents | |", "|--:|--:|--:|---|"]
            parts += [f"| {lo:.3f} | {hi:.3f} | {n:,} | {'█' * round(20 * n / top)} |"
                      for lo, hi, n in zip(edges[:-1], edges[1:], counts, strict=True)]
        parts.append("")
    return "\n".join(parts)


def selection_counts(table: pa.Table, config: SelectConfig, weights: np.ndarray) -> np.ndarray:
    """How many times each row is selected, by the configured method."""
    scores = table.column(config.column).to_numpy(zero_copy_only=False).astype(np.float64)
    if config.method == "top_fraction":
        return top_fraction(scores, weights, config.fraction).astype(np.int64)
    if config.method == "threshold":
        return (np.nan_to_num(scores, nan=-np.inf) >= config.threshold).astype(np.int64)
    domains = np.asarray(table.column(config.domain_column).to_pylist(), dtype=object)
    sources = (np.asarray(table.column(config.source_column).to_pylist(), dtype=object)
               if config.mode == "multi_domain" else None)
    return domain_budgets(scores, weights, domains, config.budget, config.mode, sources=sources,
                          margin=config.margin, min_score=config.min_score, seed=config.seed)


@task(name="choose-documents", cache_policy=NO_CACHE)
def choose_stage(units: list[str], out_dir: Path, config: SelectConfig) -> dict:
    """Decide over the whole corpus; write each unit's choices to `_select/part-<rank>.parquet` (id, repeats,
    chosen rows only) and return the totals."""
    names = pq.read_schema(units[0]).names
    weight = "n_tokens" if config.by == "tokens" else "n_chars"
    if weight not in names and config.by == "tokens":
        raise ValueError(f"stage '{config.input_stage}' has no n_tokens (tokenize the run first) - or select by chars")
    wanted = ["id", config.column] + ([weight] if weight in names else ["text"])
    if config.method == "domain_budgets":
        wanted += [config.domain_column] + ([config.source_column] if config.mode == "multi_domain" else [])
    missing = [c for c in wanted if c not in names]
    if missing:
        raise ValueError(f"stage '{config.input_stage}' lacks column(s) {', '.join(missing)}: score the run first")
    parts = [pq.read_table(unit, columns=list(dict.fromkeys(wanted))) for unit in units]
    table = pa.concat_tables(parts, promote_options="permissive")
    weights = (table.column(weight) if weight in names else pc.utf8_length(table.column("text"))
               ).to_numpy(zero_copy_only=False).astype(np.int64)
    counts = selection_counts(table, config, weights)
    ends = np.cumsum([part.num_rows for part in parts])
    for rank, (part, unit_counts) in enumerate(zip(parts, np.split(counts, ends[:-1]), strict=True)):
        chosen = unit_counts > 0
        write_table_atomic(pa.table({"id": part.column("id").filter(pa.array(chosen)),
                                     "repeats": pa.array(unit_counts[chosen], pa.int32())}),
                           selection_path(out_dir, rank))
    chosen = counts > 0
    totals = {"documents": int(len(counts)), "selected": int(chosen.sum()), "upsampled": int((counts > 1).sum()),
              config.by: int(weights.sum()), f"selected_{config.by}": int((weights * counts).sum())}
    if config.method == "domain_budgets":
        domains = np.asarray(table.column(config.domain_column).to_pylist(), dtype=object)
        totals["by_domain"] = {str(d): {"documents": int((domains == d).sum()),
                                        "selected": int(chosen[domains == d].sum()),
                                        f"selected_{config.by}": int((weights * counts)[domains == d].sum())}
                               for d in sorted(set(domains), key=str)}
    return totals


def selection_path(out_dir: Path, rank: int) -> Path:
    return Path(out_dir) / "_select" / f"part-{rank:05d}.parquet"


@task(name="select-documents", cache_policy=NO_CACHE)
def select_stage(units: list[str], out_dir: Path, print_: str, progress: bool) -> list[dict]:
    # a selection asked for anew replaces the last one (the one policy, with restart: same print keeps it)
    start_stage(out_dir, SELECT, print_, [out_dir / "shards" / SELECT, out_dir / "dropped" / SELECT], restart=True)
    return run_stage(SELECT, units, out_dir, functools.partial(_keep_worker, out_dir), progress=progress,
                     keep_dropped_text=False)


def _keep_worker(out_dir: Path) -> ShardWorker:
    return ShardWorker(lambda rank: StagedChain([(SELECT, [KeepSelected(pq.read_table(selection_path(out_dir,
                                                                                                  rank)))])]))


@flow(name="select", log_prints=True)
def select(out: str, config: SelectConfig, ray_address: str | None = None, progress: bool = True) -> dict:
    """Keep the configured subset of a scored run in stage `select`; post what was kept as an artifact."""
    out_dir = Path(out).resolve()
    manifest = open_run(out_dir)
    units = stage_units(out_dir, config.input_stage)
    manifest.config[SELECT] = config.model_dump()
    manifest.versions = package_versions()
    save_manifest(manifest, out_dir)
    totals = choose_stage(units, out_dir, config)
    init_ray(ray_address)
    print_ = fingerprint(input_print(units), config.model_dump())
    records = select_stage(units, out_dir, print_, progress)
    record_stage(manifest, SELECT, units, records)
    manifest.config[SELECT]["result"] = totals
    manifest.final_stage = SELECT
    save_manifest(manifest, out_dir)
    report = selection_markdown(config, totals)
    create_markdown_artifact(markdown=report, key="select-summary", description=f"select run {manifest.run_id}")
    print(report)
    return totals


def selection_markdown(config: SelectConfig, totals: dict) -> str:
    unit = config.by
    share = totals[f"selected_{unit}"] / totals[unit] if totals[unit] else 0.0
    lines = [f"# Selection by `{config.column}` ({config.method})", "",
             f"{totals['selected']:,} of {totals['documents']:,} documents, {totals[f'selected_{unit}']:,} of "
             f"{totals[unit]:,} {unit} ({share:.1%}), {totals['upsampled']:,} upsampled.", ""]
    if "by_domain" in totals:
        lines += [f"| domain | documents | selected | selected {unit} |", "|---|--:|--:|--:|"]
        lines += [f"| {d} | {v['documents']:,} | {v['selected']:,} | {v[f'selected_{unit}']:,} |"
                  for d, v in totals["by_domain"].items()]
    return "\n".join(lines) + "\n"
