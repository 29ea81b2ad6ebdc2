"""`mixforge score ...` (train scorers, annotate, score a run) and `mixforge select` (keep a subset by score)."""

from __future__ import annotations

from pathlib import Path

import typer

from mixforge.options import Progress, RayAddress, RunDir, fail, yaml_mapping

score_app = typer.Typer(help="Train document scorers (PreSelect, DCLM-style fastText, DataMan students), annotate "
                             "documents with DataMan ratings, and score a run.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(score_app, name="score")
    app.command("select")(select)



def _section(config: Path, name: str, model):
    """The `name:` section of a YAML file (or the whole file if it has no such key), validated."""
    from pydantic import ValidationError

    data = yaml_mapping(config)
    try:
        return model.model_validate(data.get(name, data))
    except ValidationError as error:
        fail(f"invalid `{name}` config in {config}:\n{error}")


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
) -> None:
    """Score a run's documents with the configured fastText classifiers and student rater (stage `score`)."""
    from flows.score import ScoreConfig, score

    result = score(str(out), _section(config, "score", ScoreConfig), ray_address=ray_address, progress=progress)
    typer.echo(f"\n{result['documents']:,} documents scored: {', '.join(result['columns'])}")
    typer.echo(f"Look: mixforge sql {out} \"SELECT domain, avg(dataman_overall), count(*) FROM docs GROUP BY 1\"")


@score_app.command("train-classifier")
def train_classifier(
    positives: list[str] = typer.Option(..., "--positives", "-p", help=f"Positive texts: {SOURCE_HELP}."),
    negatives: list[str] = typer.Option(..., "--negatives", "-n", help=f"Negative texts: {SOURCE_HELP}."),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the classifier (.bin)."),
    run: Path = typer.Option(None, "--run", help="Run directory the SQL sources query."),
    max_docs: int = typer.Option(None, help="At most this many texts per side."),
    epoch: int = typer.Option(5, help="DCLM: 5."),
    lr: float = typer.Option(0.1, help="DCLM: 0.1."),
    dim: int = typer.Option(100, help="DCLM: 100."),
    word_ngrams: int = typer.Option(2, help="DCLM: 2."),
    max_chars: int = typer.Option(20_000, help="Text cut before training and scoring."),
) -> None:
    """Train a DCLM-style fastText quality classifier; score with it via a `score:` config (column of your choice)."""
    from scoring.fasttext_classifier import FastTextClassifier

    pos, neg = _texts(positives, run, max_docs), _texts(negatives, run, max_docs)
    classifier = FastTextClassifier(lr=lr, dim=dim, epoch=epoch, word_ngrams=word_ngrams, max_chars=max_chars)
    classifier.fit(pos + neg, [True] * len(pos) + [False] * len(neg)).save(out)
    typer.echo(f"trained on {len(pos):,} positive and {len(neg):,} negative texts: {out}")


@score_app.command("ngram-lm")
def ngram_lm(
    sources: list[str] = typer.Argument(..., help=f"Training texts: {SOURCE_HELP}."),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the model (.npz)."),
    run: Path = typer.Option(None, "--run", help="Run directory the SQL sources query."),
    order: int = typer.Option(4, help="n-gram order in bytes (1-7)."),
    max_bytes: int = typer.Option(8192, help="Bytes read per document."),
    max_docs: int = typer.Option(None, help="At most this many texts."),
) -> None:
    """Train a byte n-gram LM, one member of a PreSelect model family (list it in a family YAML with its score)."""
    from scoring.losses import ByteNgramLM

    texts = _texts(sources, run, max_docs)
    model = ByteNgramLM(order=order, max_bytes=max_bytes, name=out.stem).fit(texts)
    model.save(out)
    typer.echo(f"{model.name}: order {order}, {model.n_bytes_:,} training bytes: {out}")


@score_app.command("train-preselect")
def train_preselect(
    family: Path = typer.Option(..., "--family", help="YAML `models:` list of {path: model.npz, score: benchmark}."),
    texts: list[str] = typer.Option(..., "--texts", "-t", help=f"Documents to compute strength on: {SOURCE_HELP}."),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the PreSelect classifier (.bin)."),
    run: Path = typer.Option(None, "--run", help="Run directory the SQL sources query."),
    max_docs: int = typer.Option(None, help="At most this many documents."),
    strength: str = typer.Option("concordant", help="concordant (the paper's pair count) or spearman."),
    positive_fraction: float = typer.Option(None, help="Positives: this top fraction (default: the paper's, "
                                                       "documents with every pair concordant)."),
    epoch: int = typer.Option(3, help="PreSelect: 3."),
    lr: float = typer.Option(0.1, help="PreSelect: 0.1."),
) -> None:
    """Train PreSelect's fastText scorer from a model family's losses on documents and the models' scores."""
    from scoring.losses import loss_matrix
    from scoring.preselect import PreSelect, read_family

    models, scores = read_family(family)
    documents = _texts(texts, run, max_docs)
    preselect = PreSelect(strength=strength, positive_fraction=positive_fraction, epoch=epoch, lr=lr)
    try:
        preselect.fit(documents, loss_matrix(models, documents), scores)
    except ValueError as error:
        fail(str(error))
    preselect.classifier_.save(out)
    fit = preselect.fit_
    typer.echo(f"{len(documents):,} documents, strength max {fit.max_strength:g}: {len(fit.positives):,} positives, "
               f"{len(fit.negatives):,} negatives; classifier: {out}")


@score_app.command("annotate")
def annotate(
    run: Path = typer.Argument(..., help="The run directory."),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the annotations (.parquet)."),
    sql: str = typer.Option("SELECT id, text FROM docs USING SAMPLE 2000 ROWS (reservoir, 0)",
                            help="Which documents: read-only SQL returning id and text."),
    teacher: bool = typer.Option(False, "--teacher", help="The offline teacher (an approximation, no LLM)."),
    similarity: str = typer.Option("embeddings", help="Teacher's domain similarity: embeddings or tfidf."),
    base_url: str = typer.Option(None, envvar="OPENAI_BASE_URL",
                                 help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1 (vLLM)."),
    model: str = typer.Option(None, help="Model name the endpoint serves."),
    concurrency: int = typer.Option(8, help="Requests in flight at once."),
    cache: Path = typer.Option(None, help="Annotation cache folder (default: <run>/_dataman_cache)."),
) -> None:
    """Rate documents on DataMan's 14 criteria and 15 domains, with an LLM or the offline teacher."""
    import pyarrow.parquet as pq

    from flows.score import query_documents
    from scoring.dataman_llm import LLMAnnotator
    from scoring.dataman_teacher import OfflineTeacher

    ids, texts = query_documents(run, sql)
    if teacher:
        table = OfflineTeacher(similarity=similarity).annotate(ids, texts)
        failed = {}
    else:
        if not base_url or not model:
            fail("give --base-url and --model for an LLM, or --teacher")
        result = LLMAnnotator(base_url, model, concurrency=concurrency,
                              cache=cache or run / "_dataman_cache").annotate(ids, texts)
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
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the student rater (.joblib)."),
    stage: str = typer.Option(None, help="Stage holding the documents (default: the run's final stage)."),
    features: str = typer.Option("hashing", help="hashing (word 1-2-grams) or embeddings (model2vec)."),
) -> None:
    """Train student raters (a regressor per criterion, a domain classifier) on DataMan annotations."""
    import pyarrow.parquet as pq

    from flows.score import texts_by_id
    from scoring.students import StudentRater
    from storage.manifest import load_manifest

    table = pq.read_table(annotations)
    manifest = load_manifest(run)
    stage = stage or (manifest.final_stage if manifest else None)
    if not stage:
        fail("give --stage: the run has no manifest naming its final stage")
    texts = texts_by_id(run, stage, table.column("id").to_pylist())
    StudentRater(features=features).fit(texts, table).save(out)
    typer.echo(f"student rater trained on {table.num_rows:,} annotations: {out}")


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
