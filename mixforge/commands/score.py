"""`mixforge score ...` (train scorers, annotate, score a run) and `mixforge select` (keep a subset by score)."""

from __future__ import annotations

from pathlib import Path

import typer

from mixforge.options import Progress, RayAddress, Restart, RunDir, fail, load_section

score_app = typer.Typer(help="Train document scorers (PreSelect, DCLM-style fastText, DataMan students), annotate "
                             "documents with DataMan ratings, and score a run.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(score_app, name="score")
    app.command("select")(select)



def _section(config: Path, name: str, model):
    """The `name:` section of a YAML file (or the whole file if it has no such key), validated: unknown keys
    (top level included) and bad values are one line each with their line number, as curate's config."""
    return load_section(config, name, model)


def _texts(sources: list[str], run: Path | None, limit: int | None) -> list[str]:
    from scoring.fasttext_classifier import load_texts

    texts: list[str] = []
    for source in sources:
        texts.extend(load_texts(source, run, None if limit is None else limit - len(texts)))
    return texts


SOURCE_HELP = "files/folders/globs in any input format, or a SELECT over the run's views (needs --run)"


@score_app.command("run")
def run(
    out: RunDir,
    config: Path = typer.Argument(..., help="YAML with a `score:` section (or the section itself)."),
    ray_address: RayAddress = None,
    progress: Progress = True,
    restart: Restart = False,
) -> None:
    """Score a run's documents with the configured fastText classifiers and student rater (stage `score`)."""
    from flows.score import ScoreConfig, score

    result = score(str(out), _section(config, "score", ScoreConfig), ray_address=ray_address, progress=progress,
                   restart=restart)
    typer.echo(f"\n{result['documents']:,} documents scored: {', '.join(result['columns'])}")
    typer.echo(f"Look: mixforge sql {out} \"SELECT domain, avg(dataman_overall), count(*) FROM docs GROUP BY 1\"")


@score_app.command("train-classifier")
def train_classifier(
    positives: list[str] = typer.Option(None, "--positives", "-p", help=f"Positive texts: {SOURCE_HELP}."),
    negatives: list[str] = typer.Option(None, "--negatives", "-n", help=f"Negative texts: {SOURCE_HELP}."),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the classifier (.bin)."),
    run: Path = typer.Option(None, "--run", help="Run directory the SQL sources query."),
    seeds_from: Path = typer.Option(None, "--seeds-from", help="A `mixforge verify` output folder: positives from "
                                                               "the best-verified candidates, negatives from the "
                                                               "worst (instead of --positives/--negatives)."),
    best: int = typer.Option(1, min=1, help="--seeds-from: positives from this many top candidates."),
    worst: int = typer.Option(1, min=1, help="--seeds-from: negatives from this many bottom candidates."),
    max_docs: int = typer.Option(None, help="At most this many texts per side."),
    epoch: int = typer.Option(5, help="DCLM: 5."),
    lr: float = typer.Option(0.1, help="DCLM: 0.1."),
    dim: int = typer.Option(100, help="DCLM: 100."),
    word_ngrams: int = typer.Option(2, help="DCLM: 2."),
    max_chars: int = typer.Option(20_000, help="Text cut before training and scoring."),
) -> None:
    """Train a DCLM-style fastText quality classifier; score with it via a `score:` config (column of your choice)."""
    from scoring.fasttext_classifier import FastTextClassifier, load_texts, save_metadata

    if seeds_from is not None:
        from mixtures.verify import seed_sets

        if positives or negatives:
            fail("give --seeds-from or --positives/--negatives, not both")
        try:
            seeds = seed_sets(seeds_from, best=best, worst=worst)
        except (ValueError, FileNotFoundError) as error:
            fail(error)
        pos, neg = ([t for run_dir, sql in seeds[side] for t in load_texts(sql, run_dir, max_docs)][:max_docs]
                    for side in ("positives", "negatives"))
        record = {"seeds": seeds["record"]}
    elif positives and negatives:
        pos, neg = _texts(positives, run, max_docs), _texts(negatives, run, max_docs)
        record = {"positives": positives, "negatives": negatives}
    else:
        fail("give --positives and --negatives, or --seeds-from a verification")
    classifier = FastTextClassifier(lr=lr, dim=dim, epoch=epoch, word_ngrams=word_ngrams, max_chars=max_chars)
    classifier.fit(pos + neg, [True] * len(pos) + [False] * len(neg)).save(out)
    save_metadata(out, {**record, "n_positive": len(pos), "n_negative": len(neg)})
    typer.echo(f"trained on {len(pos):,} positive and {len(neg):,} negative texts: {out}")


@score_app.command("ngram-lm")
def ngram_lm(
    sources: list[str] = typer.Argument(..., help=f"Training texts: {SOURCE_HELP}."),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the model (.npz)."),
    run: Path = typer.Option(None, "--run", help="Run directory the SQL sources query."),
    order: int = typer.Option(4, help="n-gram order in bytes (1-7)."),
    max_bytes: int = typer.Option(None, help="Bytes read per document (default: all of it)."),
    max_docs: int = typer.Option(None, help="At most this many texts."),
) -> None:
    """Train a byte n-gram LM, one member of a PreSelect model family (list it in a family YAML with its score)."""
    from scoring.byte_ngram import ByteNgramLM

    texts = _texts(sources, run, max_docs)
    model = ByteNgramLM(order=order, max_bytes=max_bytes, name=out.stem).fit(texts)
    model.save(out)
    typer.echo(f"{model.name}: order {order}, {model.n_bytes_:,} training bytes: {out}")


FAMILY_HELP = ("A family YAML (`models:` entries with path - byte n-gram .npz, proxy checkpoint or Hugging Face "
               "directory - and score), or a mixture experiment's directory (its proxies, scored by their "
               "measured target metric).")


def _fit_preselect(family: Path, metric: str | None, ids: list[str], documents: list[str], cache: Path,
                   strength: str, positive_fraction: float | None, epoch: int, lr: float):
    from scoring.family import load_family
    from scoring.preselect import fit_family

    try:
        members = load_family(family, metric)
        fitted, _, scored = fit_family(members, ids, documents, cache=cache, strength=strength,
                                            positive_fraction=positive_fraction, epoch=epoch, lr=lr)
    except ValueError as error:
        fail(error)
    fit = fitted.fit_
    typer.echo(f"family of {len(members)}: " + ", ".join(f"{m.name or Path(m.path).name} ({m.score:g})"
                                                        for m in members))
    typer.echo(f"losses: {sum(scored.values()):,} computed, {len(members) * len(ids) - sum(scored.values()):,} "
               f"from the cache ({cache})")
    typer.echo(f"{len(documents):,} documents, strength max {fit.max_strength:g}: {len(fit.positives):,} positives, "
               f"{len(fit.negatives):,} negatives")
    return fitted


def _text_ids(texts: list[str]) -> list[str]:
    """Content hashes: documents read from files have no ids, and the loss cache needs stable ones."""
    import hashlib

    return [hashlib.sha1(t.encode("utf-8", "surrogatepass")).hexdigest() for t in texts]


@score_app.command("train-preselect")
def train_preselect(
    family: Path = typer.Option(..., "--family", help=FAMILY_HELP),
    texts: list[str] = typer.Option(..., "--texts", "-t", help=f"Documents to compute strength on: {SOURCE_HELP}."),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the PreSelect classifier (.bin)."),
    run: Path = typer.Option(None, "--run", help="Run directory the SQL sources query."),
    max_docs: int = typer.Option(None, help="At most this many documents."),
    metric: str = typer.Option(None, help="Experiment family: the metrics.csv column to score proxies by "
                                          "(default: mean *_val_bpb, lower is better)."),
    cache: Path = typer.Option(None, help="Loss cache folder (default: next to --out, `<out>.losses`)."),
    strength: str = typer.Option("concordant", help="concordant (the paper's pair count) or spearman."),
    positive_fraction: float = typer.Option(None, help="Positives: this top fraction (default: the paper's, "
                                                       "documents with every pair concordant)."),
    epoch: int = typer.Option(3, help="PreSelect: 3."),
    lr: float = typer.Option(0.1, help="PreSelect: 0.1."),
) -> None:
    """Train PreSelect's fastText scorer from a model family's losses on documents and the models' scores."""
    documents = [t for t in _texts(texts, run, max_docs) if t]
    fitted = _fit_preselect(family, metric, _text_ids(documents), documents,
                            cache or out.with_name(out.name + ".losses"), strength, positive_fraction, epoch, lr)
    fitted.classifier_.save(out)
    typer.echo(f"classifier: {out}")


@score_app.command("preselect")
def preselect(
    run: Path = typer.Argument(..., help="The run directory whose documents PreSelect scores and selects from."),
    family: Path = typer.Option(..., "--family", help=FAMILY_HELP),
    sql: str = typer.Option(None, help="Documents to compute strength on: read-only SQL returning id and text "
                                       "(default: every document of the stage scored)."),
    stage: str = typer.Option(None, help="Document stage to score and select from (default: the run's final one "
                                         "before score/select)."),
    metric: str = typer.Option(None, help="Experiment family: the metrics.csv column to score proxies by "
                                          "(default: mean *_val_bpb, lower is better)."),
    fraction: float = typer.Option(0.1, help="Share of the corpus to keep (PreSelect: 10%)."),
    by: str = typer.Option("chars", help="What the fraction counts: chars (the paper) or tokens."),
    strength: str = typer.Option("concordant", help="concordant (the paper's pair count) or spearman."),
    positive_fraction: float = typer.Option(None, help="Positives: this top fraction (default: the paper's, "
                                                       "documents with every pair concordant)."),
    epoch: int = typer.Option(3, help="PreSelect: 3."),
    lr: float = typer.Option(0.1, help="PreSelect: 0.1."),
    ray_address: RayAddress = None,
    progress: Progress = True,
) -> None:
    """PreSelect end to end: the family's losses (cached in <run>/scorers/losses), predictive strength (with the
    positive and negative labels: <run>/scorers/preselect_strength.parquet), the fastText scorer
    (<run>/scorers/preselect.bin), the `preselect` column (stage score) and the top fraction (stage select)."""
    from flows.score import FastTextScorer, ScoreConfig, SelectConfig, open_run, query_documents, score
    from flows.score import select as select_flow

    if by not in ("chars", "tokens"):
        fail(f"--by must be chars or tokens, not {by}")
    try:
        manifest = open_run(run)
    except FileNotFoundError as error:
        fail(error)
    final = manifest.final_stage if manifest.final_stage not in ("score", "select") else None
    stage = stage or final or manifest.config.get("score", {}).get("input_stage")
    if not stage:
        fail("cannot tell which document stage to score: give --stage")
    ids, documents = query_documents(run, sql or f"SELECT id, text FROM stage_{stage}")
    folder = run / "scorers"
    fitted = _fit_preselect(family, metric, ids, documents, folder / "losses", strength, positive_fraction, epoch, lr)
    model = fitted.classifier_.save(folder / "preselect.bin")
    fitted.strength_table(ids).to_parquet(folder / "preselect_strength.parquet")
    # a classifier trained anew gives new scores: the stage is redone (the family's losses come from the cache)
    score(str(run), ScoreConfig(input_stage=stage, fasttext=[FastTextScorer(model=str(model))]),
          ray_address=ray_address, progress=progress, restart=True)
    totals = select_flow(str(run), SelectConfig(column="preselect", fraction=fraction, by=by), ray_address=ray_address,
                         progress=progress)
    typer.echo(f"\n{totals['selected']:,} of {totals['documents']:,} documents selected "
               f"({totals[f'selected_{by}']:,} of {totals[by]:,} {by}): stage select of {run}")


@score_app.command("annotate")
def annotate(
    run: Path = typer.Argument(..., help="The run directory."),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the annotations (.parquet)."),
    sql: str = typer.Option("SELECT id, text FROM docs USING SAMPLE 2000 ROWS (reservoir, 0)",
                            help="Which documents: read-only SQL returning id and text."),
    base_url: str = typer.Option(None, envvar="OPENAI_BASE_URL",
                                 help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1 (vLLM, TGI)."),
    model: str = typer.Option(None, help="Model name the endpoint serves."),
    hf_model: str = typer.Option(None, "--hf-model", help="A local Hugging Face causal LM directory (or hub name) "
                                                          "to generate with, e.g. a DataMan rater."),
    template: str = typer.Option(None, help="rater (dataman_annotate.py's request, for DataMan's fine-tuned raters; "
                                            "default with --hf-model) or teacher (prepare_data.py's criteria and "
                                            "instructions, for an instruction-tuned LLM; default with --base-url)."),
    teacher: str = typer.Option(None, "--teacher", help="`demo`: the offline DEMO teacher, heuristics standing in "
                                                        "for an LLM (NOT DataMan's ratings; labelled as such)."),
    similarity: str = typer.Option("embeddings", help="Demo teacher's domain similarity: embeddings or tfidf."),
    concurrency: int = typer.Option(8, help="Endpoint: requests in flight at once."),
    batch_size: int = typer.Option(8, help="--hf-model: documents generated per batch."),
    cache: Path = typer.Option(None, help="Annotation cache folder (default: <run>/_dataman_cache)."),
) -> None:
    """Rate documents on DataMan's 14 criteria and 15 domains: an endpoint, a local Hugging Face model, or the demo."""
    import pyarrow.parquet as pq

    from flows.score import query_documents

    chosen = [name for name, given in (("--base-url", base_url), ("--hf-model", hf_model), ("--teacher", teacher))
              if given]
    if len(chosen) != 1:
        fail("give one annotator: --base-url and --model (an endpoint), --hf-model (a local model) or --teacher demo"
             + (f", not {' and '.join(chosen)}" if chosen else ""))
    if teacher is not None and teacher != "demo":
        fail(f"--teacher takes only `demo` (the offline heuristic demo), not {teacher!r}")
    if template not in (None, "rater", "teacher"):
        fail(f"--template must be rater or teacher, not {template}")
    ids, texts = query_documents(run, sql)
    cache = cache or run / "_dataman_cache"
    if teacher:
        from scoring.dataman_teacher import OfflineTeacher

        demo = OfflineTeacher(similarity=similarity)
        table, failed = demo.annotate(ids, texts), {}
        typer.echo(f"DEMO teacher ({demo.annotator}): heuristic ratings, not DataMan's; for trying the pipeline only")
    elif hf_model:
        from scoring.dataman_hf import HFRater

        result = HFRater(hf_model, template or "rater", batch_size=batch_size, cache=cache).annotate(ids, texts)
        table, failed = result.annotations, result.failed
    else:
        from scoring.dataman_llm import LLMAnnotator

        if not model:
            fail("give --model: the model name the endpoint serves")
        result = LLMAnnotator(base_url, model, template=template or "teacher", concurrency=concurrency,
                              cache=cache).annotate(ids, texts)
        table, failed = result.annotations, result.failed
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out)
    typer.echo(f"{table.num_rows:,} documents annotated, {len(failed):,} failed: {out}")
    for doc_id, error in list(failed.items())[:5]:
        typer.echo(f"  {doc_id}: {error}")


@score_app.command("train-students")
def train_students(
    annotations: Path = typer.Argument(..., help="Annotations (.parquet) from `mixforge score annotate`."),
    run: Path = typer.Option(..., "--run", help="The run holding the annotated documents."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write the student rater to (students.npz and "
                                                      "student.json)."),
    stage: str = typer.Option(None, help="Stage holding the documents (default: the run's final stage)."),
    c: float = typer.Option(None, "--c", help="Inverse regularization strength of the logistic regressions "
                                              "(default 10: scoring.students.DEFAULTS)."),
    max_features: int = typer.Option(None, help="TF-IDF vocabulary size at most (default 100,000)."),
    held_out: float = typer.Option(0.2, help="Share of the annotations kept out of training to measure agreement."),
) -> None:
    """Train student raters (a logistic regression per criterion, one for the domain, over one TF-IDF) on DataMan
    annotations; report their agreement with the annotator on held-out documents (also in <out>/student.json)."""
    import pyarrow.parquet as pq

    from flows.score import texts_by_id
    from scoring.students import StudentRater
    from storage.manifest import load_manifest

    if not 0 <= held_out < 1:
        fail(f"--held-out must be within [0, 1), not {held_out}")
    table = pq.read_table(annotations)
    manifest = load_manifest(run)
    stage = stage or (manifest.final_stage if manifest else None)
    if not stage:
        fail("give --stage: the run has no manifest naming its final stage")
    texts = texts_by_id(run, stage, table.column("id").to_pylist())
    given = {name: value for name, value in (("c", c), ("max_features", max_features)) if value is not None}
    rater = StudentRater(held_out=held_out, **given).fit(texts, table)
    rater.save(out)
    annotator = ", ".join(rater.annotators_)
    typer.echo(f"student rater trained on {rater.n_train_:,} annotations by {annotator}: {out}")
    if rater.agreement_:
        typer.echo(f"agreement with the annotator on {table.num_rows - rater.n_train_:,} held-out documents:")
        for key, values in rater.agreement_.items():
            typer.echo(f"  {key:<28}" + "  ".join(f"{name} {value:.2f}" for name, value in values.items()))


def select(
    out: RunDir,
    config: Path = typer.Argument(..., help="YAML with a `select:` section (or the section itself)."),
    ray_address: RayAddress = None,
    progress: Progress = True,
) -> None:
    """Keep the best documents of a scored run (top fraction, threshold, or DataMan domain budgets): stage `select`."""
    from flows.score import SelectConfig
    from flows.score import select as select_flow

    totals = select_flow(str(out), _section(config, "select", SelectConfig), ray_address=ray_address,
                         progress=progress)
    typer.echo(f"\n{totals['selected']:,} of {totals['documents']:,} documents selected "
               f"({totals['upsampled']:,} upsampled).")
