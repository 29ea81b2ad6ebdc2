"""The `train_scorers` flow: train the scorers a run needs from the run itself, for `score` to apply.

- classifier: a DCLM-style fastText quality classifier (Li et al. 2024: wordNgrams 2, lr 0.1, dim 100,
  epoch 5) whose positives and negatives are two read-only SQL queries over the run.
- preselect: PreSelect (Shum et al. 2025) on a family the run produces offline: one byte n-gram LM per
  domain (default: the super-clusters CLIMB found), each trained on its domain's documents, with minus its
  bits per byte on a SQL-defined benchmark set as its benchmark score. Deviation from the paper (six Llama
  models and their published benchmark scores): no such models exist offline, and models that differ in
  what they were trained on rank differently on different documents, which is what predictive strength
  measures. Positives are the top `positive_fraction` by strength (the paper: every pair concordant, which a
  family of domain models reaches on few documents), negatives as many from the bottom. The closed loop
  (a mixture experiment's proxies as the family: `mixforge score preselect --family <experiment>`) is the
  stronger family, but scoring each document with each proxy took ~1 s per proxy on the 2 demo cores, so
  the pipeline trains the family it can afford: n-gram models score a thousand documents in seconds.
- dataman: DataMan ratings from the demo teacher (scoring.dataman_teacher, an approximation without an LLM)
  or an OpenAI-compatible endpoint, distilled into student raters (logistic regressions over one TF-IDF, one
  per criterion and one for the domain: scoring.students) trained on 80% of the ratings; their agreement with
  the teacher on the other 20% is recorded.

Outputs under `<out>/scorers/`: the models (dclm.bin, family/*.npz with family.yaml, preselect.bin,
students/), what they learnt from (preselect_strength.parquet: id, strength, label;
dataman_annotations.parquet: the teacher's ratings), both readable with SQL (`read_parquet`), and one
record `<name>.json` per scorer (settings, fingerprint, counts), written last. A scorer whose settings
and input stage are unchanged is not retrained, so a rerun resumes; one made otherwise is refused
(RunMismatch) unless `restart`, the runs' one resume policy.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import yaml
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field

from flows.engine import RunMismatch, fingerprint
from flows.score import (
    SCORE,
    SELECT,
    FastTextScorer,
    ScoreConfig,
    StudentScorer,
    input_print,
    open_run,
    query_documents,
    stage_units,
)
from scoring.dataman import CRITERIA
from scoring.fasttext_classifier import DCLM, PRESELECT
from scoring.students import DEFAULTS as STUDENT
from scoring.students import StudentRater
from storage.manifest import save_manifest
from storage.shards import write_json_atomic, write_table_atomic

FOLDER = "scorers"
HELD_OUT = 0.2  # share of the teacher's ratings the students do not see: their agreement is measured there


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ClassifierTraining(_Section):
    """A DCLM-style fastText classifier from a SQL-defined positive/negative split of the run."""

    positives: str = Field(description="read-only SQL over the run whose `text` (or first) column holds positives")
    negatives: str = Field(description="read-only SQL over the run whose `text` (or first) column holds negatives")
    column: str = Field("dclm_score", description="score column the classifier writes")
    max_docs: int | None = Field(5_000, gt=0, description="at most this many texts per side")
    epoch: int = Field(DCLM["epoch"], gt=0)
    lr: float = Field(DCLM["lr"], gt=0)
    dim: int = Field(DCLM["dim"], gt=0)
    word_ngrams: int = Field(DCLM["word_ngrams"], gt=0)
    bucket: int = Field(100_000, gt=0, description="hashed word n-gram buckets (fastText's 2M makes an 800 MB "
                                                   "model; 100k: 40 MB)")
    max_chars: int = Field(20_000, gt=0, description="text cut before training and scoring")


class PreSelectTraining(_Section):
    """PreSelect from a family of byte n-gram LMs, one per domain of the run."""

    family: Literal["ngram"] = Field("ngram", description="ngram: one byte n-gram LM per value of `domains`")
    domains: str = Field("super_cluster", description="column whose values each get a model (e.g. super_cluster)")
    max_models: int = Field(6, ge=2, description="the largest domains (by documents) get a model")
    order: int = Field(4, ge=1, le=7, description="n-gram order in bytes")
    max_bytes: int = Field(8192, gt=0, description="bytes of each document the models train on and score")
    train_docs: int = Field(400, gt=0, description="documents each model trains on, at most")
    benchmark: str = Field(description="read-only SQL returning id and text: the set each model's score is "
                                       "measured on (score = minus bits per byte); never trained on")
    documents: str = Field(description="read-only SQL returning id and text: the documents strength is "
                                       "computed on and the classifier is trained from")
    strength: Literal["concordant", "spearman"] = "concordant"
    positive_fraction: float = Field(0.2, gt=0, le=0.5, description="positives: this top share of the documents")
    column: str = "preselect"
    epoch: int = Field(PRESELECT["epoch"], gt=0)
    lr: float = Field(PRESELECT["lr"], gt=0)
    bucket: int = Field(100_000, gt=0, description="hashed word n-gram buckets, as for the classifier")
    max_chars: int = Field(20_000, gt=0)


class DataManTraining(_Section):
    """DataMan ratings of a sample of the run (demo teacher or an LLM endpoint), distilled into students."""

    teacher: Literal["demo", "endpoint"] = Field("demo", description="demo: the offline approximation; endpoint: "
                                                                     "an OpenAI-compatible LLM server")
    base_url: str | None = Field(None, description="endpoint: e.g. http://127.0.0.1:8000/v1 (default: "
                                                   "OPENAI_BASE_URL)")
    model: str | None = Field(None, description="endpoint: the model name it serves")
    concurrency: int = Field(8, gt=0)
    documents: str = Field(description="read-only SQL returning id and text: the documents the teacher rates")
    similarity: Literal["embeddings", "tfidf"] = Field("embeddings", description="demo teacher's domain similarity")
    c: float = Field(STUDENT["c"], gt=0, description="students' inverse regularization strength (scikit-learn's "
                                                     "LogisticRegression C)")
    max_features: int = Field(STUDENT["max_features"], gt=0, description="students' TF-IDF vocabulary size at most "
                                                                         "(each model holds classes x this many "
                                                                         "weights)")


class ScorersConfig(_Section):
    """Scorers trained from the run (`scorers:` section of the pipeline config); any of the three."""

    classifier: ClassifierTraining | None = None
    preselect: PreSelectTraining | None = None
    dataman: DataManTraining | None = None

    def score_config(self, out_dir: Path, base: ScoreConfig | None = None) -> ScoreConfig:
        """The `score` config applying these scorers (after `base`'s own)."""
        folder = Path(out_dir).resolve() / FOLDER  # absolute: Ray's actors load the models wherever they run
        fasttext = list(base.fasttext) if base else []
        if self.classifier:
            fasttext.append(FastTextScorer(model=str(folder / "dclm.bin"), column=self.classifier.column,
                                           max_chars=self.classifier.max_chars))
        if self.preselect:
            fasttext.append(FastTextScorer(model=str(folder / "preselect.bin"), column=self.preselect.column,
                                           max_chars=self.preselect.max_chars))
        students = StudentScorer(model=str(folder / "students")) if self.dataman else None
        update = {"fasttext": fasttext, "students": (base.students if base else None) or students}
        return base.model_copy(update=update) if base else ScoreConfig(**update)


def _record(out_dir: Path, name: str) -> Path:
    return out_dir / FOLDER / f"{name}.json"


def _done(out_dir: Path, name: str, digest: str, restart: bool) -> dict | None:
    """The scorer's record if it was trained with this fingerprint; None if it is to be trained (no record, or
    `restart`); RunMismatch if it was trained from other documents or settings (the runs' one resume policy)."""
    path = _record(out_dir, name)
    if not path.exists() or restart:
        return None
    record = json.loads(path.read_text())
    if record.get("fingerprint") != digest:
        raise RunMismatch(f"{out_dir}: scorer '{name}' was trained from other documents or settings; rerun with "
                          "--restart to retrain it, or use a new --out")
    return record


def _save(out_dir: Path, name: str, digest: str, settings: _Section, summary: dict) -> dict:
    record = {"scorer": name, "fingerprint": digest, "settings": settings.model_dump(), **summary}
    write_json_atomic(record, _record(out_dir, name))
    return record


def _texts(out_dir: Path, sql: str, limit: int | None) -> list[str]:
    from scoring.fasttext_classifier import load_texts

    return load_texts(sql, out_dir, limit)


@task(name="train-classifier", cache_policy=NO_CACHE)
def train_classifier(out_dir: Path, config: ClassifierTraining, digest: str, restart: bool) -> dict:
    from scoring.fasttext_classifier import FastTextClassifier

    if (record := _done(out_dir, "classifier", digest, restart)) is not None:
        return record
    positives, negatives = _texts(out_dir, config.positives, config.max_docs), _texts(out_dir, config.negatives,
                                                                                      config.max_docs)
    classifier = FastTextClassifier(lr=config.lr, dim=config.dim, epoch=config.epoch, word_ngrams=config.word_ngrams,
                                    bucket=config.bucket, max_chars=config.max_chars, seed=0)
    classifier.fit(positives + negatives, [True] * len(positives) + [False] * len(negatives))
    classifier.save(out_dir / FOLDER / "dclm.bin")
    return _save(out_dir, "classifier", digest, config, {"model": "dclm.bin", "column": config.column,
                                                         "positives": len(positives), "negatives": len(negatives)})


def _domain_texts(out_dir: Path, stage: str, config: PreSelectTraining, exclude: list[str]) -> dict[str, list[str]]:
    """Training texts of the stage's largest domains (`config.domains` values), benchmark documents left out."""
    from storage.catalog import open_catalog, query

    con = open_catalog(out_dir)
    column = '"' + config.domains.replace('"', '""') + '"'
    ranked = query(con, f"SELECT CAST({column} AS VARCHAR) AS domain FROM stage_{stage} WHERE {column} IS NOT NULL "
                        f"GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT {config.max_models}").column(0).to_pylist()
    excluded = pa.array(exclude, pa.string())
    texts: dict[str, list[str]] = {}
    for domain in ranked:
        literal = "'" + domain.replace("'", "''") + "'"
        table = query(con, f"SELECT id, text FROM stage_{stage} WHERE CAST({column} AS VARCHAR) = {literal} "
                           f"ORDER BY hash(id) LIMIT {config.train_docs + len(exclude)}")
        keep = np.logical_not(np.isin(table.column("id").to_numpy(zero_copy_only=False), excluded.to_numpy(False)))
        texts[domain] = [t or "" for t in np.asarray(table.column("text").to_pylist(), dtype=object)[keep]
                         ][: config.train_docs]
    if len(texts) < 2:
        raise ValueError(f"preselect: the run has {len(texts)} value(s) of `{config.domains}`; a family needs two")
    return texts


@task(name="train-preselect", cache_policy=NO_CACHE)
def train_preselect(out_dir: Path, stage: str, config: PreSelectTraining, digest: str, restart: bool) -> dict:
    from scoring.byte_ngram import ByteNgramLM
    from scoring.losses import loss_matrix
    from scoring.preselect import PreSelect

    if (record := _done(out_dir, "preselect", digest, restart)) is not None:
        return record
    folder = out_dir / FOLDER
    bench_ids, bench_texts = query_documents(out_dir, config.benchmark)
    family = []
    for domain, texts in _domain_texts(out_dir, stage, config, bench_ids).items():
        model = ByteNgramLM(order=config.order, max_bytes=config.max_bytes, name=f"{config.domains}-{domain}")
        model.fit(texts)
        bits = float(np.nanmean(model.bits_per_byte(bench_texts)))
        family.append({"model": model, "domain": domain, "train_docs": len(texts), "benchmark_bpb": bits})
    scores = [-member["benchmark_bpb"] for member in family]
    ids, texts = query_documents(out_dir, config.documents)
    preselect = PreSelect(strength=config.strength, positive_fraction=config.positive_fraction, epoch=config.epoch,
                          lr=config.lr, bucket=config.bucket, max_chars=config.max_chars)
    preselect.fit(texts, loss_matrix([m["model"] for m in family], texts), scores)
    preselect.classifier_.save(folder / "preselect.bin")
    fit = preselect.fit_
    label = np.full(len(ids), None, dtype=object)
    label[fit.positives], label[fit.negatives] = "positive", "negative"
    strength = pa.table({"id": pa.array(ids, pa.string()), "strength": pa.array(fit.strength, pa.float64()),
                         "label": pa.array(label.tolist(), pa.string())})
    write_table_atomic(strength, folder / "preselect_strength.parquet")
    members = []
    for member in family:  # family.yaml: the layout `mixforge score train-preselect --family` reads
        path = member.pop("model").save(folder / "family" / f"{config.domains}-{member['domain']}.npz")
        members.append({"path": str(path.relative_to(folder)), "score": -member["benchmark_bpb"], **member})
    (folder / "family.yaml").write_text(yaml.safe_dump({"models": members}, sort_keys=False))
    return _save(out_dir, "preselect", digest, config, {
        "model": "preselect.bin", "column": config.column, "family": members, "benchmark_docs": len(bench_ids),
        "documents": len(ids), "positives": len(fit.positives), "negatives": len(fit.negatives),
        "max_strength": fit.max_strength})


@task(name="train-dataman-students", cache_policy=NO_CACHE)
def train_dataman(out_dir: Path, config: DataManTraining, digest: str, restart: bool) -> dict:
    if (record := _done(out_dir, "dataman", digest, restart)) is not None:
        return record
    folder = out_dir / FOLDER
    ids, texts = query_documents(out_dir, config.documents)
    failed: dict[str, str] = {}
    if config.teacher == "demo":
        from scoring.dataman_teacher import OfflineTeacher

        annotations = OfflineTeacher(similarity=config.similarity).annotate(ids, texts)
    else:
        from scoring.dataman_llm import LLMAnnotator

        base_url = config.base_url or os.environ.get("OPENAI_BASE_URL")
        if not base_url or not config.model:
            raise ValueError("dataman.teacher endpoint needs base_url (or OPENAI_BASE_URL) and model")
        result = LLMAnnotator(base_url, config.model, concurrency=config.concurrency,
                              cache=out_dir / "_dataman_cache").annotate(ids, texts)
        annotations, failed = result.annotations, result.failed
    if annotations.num_rows < 2:
        raise ValueError(f"dataman: only {annotations.num_rows} document(s) rated ({len(failed)} failed)")
    write_table_atomic(annotations, folder / "dataman_annotations.parquet")
    by_id = dict(zip(ids, texts, strict=True))
    rated = np.asarray([by_id[i] for i in annotations.column("id").to_pylist()], dtype=object)
    students = StudentRater(c=config.c, max_features=config.max_features,
                            held_out=HELD_OUT).fit(rated.tolist(), annotations)
    students.save(folder / "students")
    agreement = students.agreement_
    overall = np.asarray(annotations.column("overall").to_pylist(), dtype=float)
    return _save(out_dir, "dataman", digest, config, {
        "model": "students", "annotator": annotations.column("annotator")[0].as_py(),
        "rated": annotations.num_rows, "failed": len(failed), "held_out": annotations.num_rows - students.n_train_,
        "overall_mean": float(np.nanmean(overall)), "agreement": {
            "within_1": float(np.mean([agreement[k]["within_1"] for k in CRITERIA])),
            "spearman": float(np.nanmean([agreement[k]["spearman"] for k in CRITERIA])),
            "domain": agreement["domain"]["accuracy"], "by_criterion": agreement}})


def summary_markdown(records: dict[str, dict]) -> str:
    lines = ["# Scorers trained from the run", ""]
    if "classifier" in records:
        r = records["classifier"]
        lines += [f"- DCLM-style classifier `{r['column']}`: {r['positives']:,} positives, {r['negatives']:,} "
                  "negatives"]
    if "preselect" in records:
        r = records["preselect"]
        lines += [f"- PreSelect `{r['column']}`: family of {len(r['family'])} byte n-gram LMs, strength on "
                  f"{r['documents']:,} documents, {r['positives']:,} positives / {r['negatives']:,} negatives", "",
                  "| model | trained on | benchmark bits/byte |", "|---|--:|--:|"]
        lines += [f"| {m['path']} | {m['train_docs']:,} docs | {m['benchmark_bpb']:.4f} |" for m in r["family"]]
        lines.append("")
    if "dataman" in records:
        r = records["dataman"]
        a = r["agreement"]
        lines += [f"- DataMan students: {r['rated']:,} documents rated by `{r['annotator']}` ({r['failed']:,} "
                  f"failed), mean Overall Score {r['overall_mean']:.2f}; on {r['held_out']:,} held-out documents "
                  f"the students rate within 1 of the teacher {a['within_1']:.0%} of the time (mean Spearman over "
                  f"the criteria {a['spearman']:.2f}) and name the same domain for {a['domain']:.0%}"]
    return "\n".join(lines) + "\n"


@flow(name="train_scorers", log_prints=True)
def train_scorers(out: str, config: ScorersConfig, stage: str | None = None, restart: bool = False
                  ) -> dict[str, dict]:
    """Train the configured scorers from the run `out`; their records. A scorer already trained from the same
    documents with the same settings is kept; one trained otherwise is refused (RunMismatch) unless `restart`.

    `stage` is the document stage the scorers learn from and `score` will score: by default the one a
    previous training used, else the run's final stage (never `score` or `select`, whose documents they made).
    """
    out_dir = Path(out).resolve()
    manifest = open_run(out_dir)
    final = manifest.final_stage if manifest.final_stage not in (SCORE, SELECT) else None
    stage = stage or manifest.config.get(FOLDER, {}).get("stage") or final
    if not stage:
        raise ValueError("cannot tell which document stage the scorers learn from: give the stage")
    inputs = input_print(stage_units(out_dir, stage))  # the stage's files (size, time) stand for its documents
    records = {}
    if config.classifier:
        records["classifier"] = train_classifier(out_dir, config.classifier,
                                                 fingerprint(inputs, config.classifier.model_dump()), restart)
    if config.preselect:
        records["preselect"] = train_preselect(out_dir, stage, config.preselect,
                                               fingerprint(inputs, config.preselect.model_dump()), restart)
    if config.dataman:
        records["dataman"] = train_dataman(out_dir, config.dataman, fingerprint(inputs, config.dataman.model_dump()),
                                           restart)
    manifest.config[FOLDER] = {"stage": stage, **{name: {k: v for k, v in record.items() if k != "settings"}
                                                  for name, record in records.items()}}
    save_manifest(manifest, out_dir)
    report = summary_markdown(records)
    create_markdown_artifact(markdown=report, key="trained-scorers", description=f"scorers of run {manifest.run_id}")
    print(report)
    return records
