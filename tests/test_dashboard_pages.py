"""Dashboard pages through Streamlit's AppTest, on a small real run: fortunes as documents (tokenised,
scored by measurable rules, clustered by the cluster flow's CLIMB code on TF-IDF vectors) and RegMix's
released proxy runs.

The demo run is built here once per session; test_dashboard_browser.py shows the same run.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import sys
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from streamlit.testing.v1 import AppTest

from operators.base import split_dropped
from storage.manifest import Manifest, StageRecord, save_manifest
from storage.schema import QUARANTINE_SCHEMA, document_id
from storage.shards import ShardWriter

FORTUNES = Path("/usr/share/games/fortunes")
DOMAINS = ("computers", "science", "literature", "politics", "sports", "food", "medicine", "law")
MIN_CHARS = 60  # the demo run's filter stage drops shorter fortunes as `too_short`
N_CLUSTERS = 8
N_SUPER = 3
KEPT_CLUSTERS = N_CLUSTERS - 1  # the cluster with the lowest mean preselect is pruned
REGMIX_TARGET = "metric/the_pile_pile_cc_val_loss"
FITTED = "mixtures/science-law"  # an experiment with two stored fits: auto (fit/) and linear (fit-linear/)
FITTED_TARGETS = ("loss/science", "acc/law")
APP_TIMEOUT = 120
SEARCH_SAMPLES = 10_000


def read_fortunes() -> pa.Table:
    """Every fortune of DOMAINS as a document (source = its file, offset = its byte offset)."""
    rows = {"id": [], "text": [], "url": [], "source": [], "offset": [], "metadata": [], "domain": []}
    for domain in DOMAINS:
        path = FORTUNES / domain
        raw = path.read_bytes()
        offset = 0
        for chunk in raw.split(b"\n%\n"):
            text = re.sub(r".\x08", "", chunk.decode("utf-8", errors="replace")).strip()
            if text:
                rows["id"].append(document_id(str(path), offset))
                rows["text"].append(text)
                rows["url"].append(None)
                rows["source"].append(str(path))
                rows["offset"].append(offset)
                rows["metadata"].append(f'{{"domain": "{domain}"}}')
                rows["domain"].append(domain)
            offset += len(chunk) + 3
    return pa.table(rows)


def measure(docs: pa.Table) -> pa.Table:
    """Columns the curation and scoring stages add, computed for real: o200k tokens, chars, two scores."""
    import quicktok

    texts = docs.column("text").to_pylist()
    encoding = quicktok.get_encoding("o200k_base")
    n_chars = np.array([len(t) for t in texts])
    # preselect stand-in: the share of letters (prose high, tables and code low); dataman_overall: 1-5 by length
    letters = [sum(c.isalpha() for c in t) / len(t) for t in texts]
    overall = np.clip(np.ceil(np.log2(n_chars) - 5), 1, 5)
    return (docs.append_column("lang", pa.array(["en"] * len(texts)))
            .append_column("n_chars", pa.array(n_chars, pa.int64()))
            .append_column("n_tokens", pa.array([len(encoding.encode(t)) for t in texts], pa.int64()))
            .append_column("preselect", pa.array(letters, pa.float32()))
            .append_column("dataman_overall", pa.array(overall, pa.float32()))
            .append_column("drop_reason", pa.array([None if n >= MIN_CHARS else "too_short" for n in n_chars],
                                                   pa.string())))


def stand_in_embeddings(docs: pa.Table) -> np.ndarray:
    """TF-IDF reduced to 50 dimensions by SVD: topic vectors in seconds, where a sentence encoder takes minutes."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer
    from threadpoolctl import threadpool_limits

    vectors = TfidfVectorizer(max_features=5000, stop_words="english", sublinear_tf=True).fit_transform(
        docs.column("text").to_pylist())
    with threadpool_limits(1):  # BLAS threads cost seconds to spin up on an input this small
        return TruncatedSVD(50, n_iter=3, random_state=0).fit_transform(vectors).astype(np.float32)


def write_cluster_stage(out: Path, docs_file: Path) -> dict:
    """The `cluster` flow's outputs, made with its own pieces (CLIMB k-means, pruning by mean preselect,
    super-clusters, cluster table, centroids, 2-D map) on stand-in embeddings; its stage counts."""
    from threadpoolctl import threadpool_limits

    from clustering.climb import ClimbClustering
    from clustering.projection import project, projection_table
    from clustering.table import ClusterCorpus, centroid_table, cluster_table
    from operators.base import split_dropped, with_column
    from operators.cluster_assign import ClusterAssign

    docs = pq.read_table(docs_file)
    points = stand_in_embeddings(docs)
    with threadpool_limits(1):
        model = ClimbClustering(N_CLUSTERS, n_super_clusters=N_SUPER, random_state=0).fit(points)
        labels, distances = model.assign(points)
    assignments = out / "clusters" / "assignments" / "part-00000.parquet"
    assignments.parent.mkdir(parents=True)
    pq.write_table(pa.table({"id": docs.column("id"), "cluster": pa.array(labels, pa.int32()),
                             "centroid_distance": pa.array(distances, pa.float32())}), assignments)
    corpus = ClusterCorpus([docs_file], [assignments])
    statistics = corpus.statistics(model.n_clusters_, corpus.score_columns())
    means = statistics.column("mean_preselect").to_numpy(zero_copy_only=False)
    model.set_params(prune_thresholds={"preselect": float(np.sort(means)[0]) + 1e-6})  # prune the worst cluster
    model.prune({"preselect": means})

    assign = ClusterAssign(model)
    kept, dropped = split_dropped(assign(with_column(docs, "cluster", pa.array(labels, pa.int32()))))
    writer = ShardWriter(out, "cluster", 0)
    writer.write(kept=kept, dropped=dropped)
    writer.close()
    folder = out / "clusters"
    pq.write_table(cluster_table(corpus, model, statistics), folder / "clusters.parquet")
    pq.write_table(centroid_table(model, statistics.column("size").to_numpy()), folder / "centroids.parquet")
    with threadpool_limits(1):
        xy = project(model.to_cluster_space(points))
    pq.write_table(projection_table(docs.column("id").to_pylist(), xy, labels, model.super_cluster_[labels],
                                    docs.column("source").to_pylist()), folder / "projection.parquet")
    return {"docs_in": docs.num_rows, "docs_out": kept.num_rows, "dropped": {"cluster_pruned": dropped.num_rows},
            "quarantined": 0, "tokens_out": int(pc.sum(kept.column("n_tokens")).as_py())}


def build_demo_run(out: Path, regmix: Path) -> Path:
    """Stages ingest -> filter (drops short fortunes) -> cluster (prunes one cluster), one quarantined
    input, the cluster outputs, and RegMix's released runs as the experiment mixtures/regmix-paper/."""
    docs = read_fortunes()
    ingest = ShardWriter(out, "ingest", 0)
    bad = pa.table({"source": [str(FORTUNES / "broken.gz")], "offset": [0], "error": ["not a gzip file"],
                    "snippet": ["\x1f\x8b..."]}, schema=QUARANTINE_SCHEMA)
    ingest.write(kept=docs.drop_columns(["domain"]), quarantine=bad)
    ingest.close()
    kept, dropped = split_dropped(measure(docs))
    filtered = ShardWriter(out, "filter", 0)
    filtered.write(kept=kept, dropped=dropped)
    (filter_file,) = (out / name for name in filtered.close() if name.startswith("shards/"))

    counts = {
        "ingest": {"docs_in": docs.num_rows + 1, "docs_out": docs.num_rows, "dropped": {}, "quarantined": 1},
        "filter": {"docs_in": docs.num_rows, "docs_out": kept.num_rows, "dropped": {"too_short": dropped.num_rows},
                   "quarantined": 0, "tokens_out": int(pc.sum(kept.column("n_tokens")).as_py())},
        "cluster": write_cluster_stage(out, filter_file),
    }
    experiment = out / "mixtures" / "regmix-paper"
    experiment.mkdir(parents=True)
    shutil.copy(regmix / "train_mixture_1m.csv", experiment / "ratios.csv")
    shutil.copy(regmix / "train_pile_loss_1m.csv", experiment / "metrics.csv")
    write_domain_experiment(out / "mixtures" / "synthetic-science")
    write_fitted_experiment(out / FITTED)

    manifest = Manifest(command="demo: fortunes")
    for minute, (stage, stage_counts) in enumerate(counts.items()):
        manifest.stages[stage] = StageRecord(name=stage, status="complete", units=1, units_done=1,
                                             started=f"2026-01-01T00:0{minute}:00+00:00", counts=stage_counts)
    manifest.final_stage = "cluster"
    save_manifest(manifest, out)
    return out


def write_domain_experiment(folder: Path, runs: int = 24) -> None:
    """A small experiment over the run's own domains (our CSV dialect) whose loss falls with the share of
    science: the truth the fit must find. Few runs, so the page scores it by cross-validation."""
    from mixtures.io import write_metrics, write_mixtures

    rng = np.random.default_rng(0)
    weights = pd.DataFrame(rng.dirichlet(np.ones(len(DOMAINS)), runs), columns=list(DOMAINS),
                           index=[f"run-{i:02d}" for i in range(runs)])
    loss = 4.0 - 2.0 * weights["science"] + 0.5 * weights["sports"] + rng.normal(0, 0.01, runs)
    write_mixtures(weights, folder / "ratios.csv")
    write_metrics(pd.DataFrame({"loss/science": loss}), folder / "metrics.csv")


def write_fitted_experiment(folder: Path, runs: int = 40) -> None:
    """Runs over the run's domains with a loss to minimise (the mixing law's own form in the science share)
    and an accuracy to maximise (linear in law and food), fitted as users fit them, by `mixforge regmix
    fit`: `--model auto` into fit/, `--model linear` into fit-linear/. 40 runs: 5-fold, the fewest that
    are not left one out."""
    from typer.testing import CliRunner

    from mixforge.cli import app
    from mixtures.io import write_metrics, write_mixtures

    rng = np.random.default_rng(1)
    weights = pd.DataFrame(rng.dirichlet(np.ones(len(DOMAINS)), runs), columns=list(DOMAINS),
                           index=[f"run-{i:02d}" for i in range(runs)])
    loss = 3.0 + 1.5 * np.exp(-4 * weights["science"]) + 0.3 * weights["sports"] + rng.normal(0, 0.005, runs)
    accuracy = 30 + 40 * weights["law"] - 10 * weights["food"] + rng.normal(0, 0.5, runs)
    write_mixtures(weights, folder / "ratios.csv")
    write_metrics(pd.DataFrame(dict(zip(FITTED_TARGETS, (loss, accuracy), strict=True))), folder / "metrics.csv")
    for model, out in (("auto", "fit"), ("linear", "fit-linear")):
        result = CliRunner().invoke(app, ["regmix", "fit", "--runs", str(folder), "--model", model, "--target",
                                          FITTED_TARGETS[0], "--target", f"{FITTED_TARGETS[1]}:max",
                                          "--out", str(folder / out)])
        assert result.exit_code == 0, result.output


def shared_demo_run(base: Path, regmix: Path) -> Path:
    """One demo run per test session for both dashboard modules (the pages only read it). Its manifest is
    written last, so a run that has one is complete."""
    run = base / "dashboard-demo-run"
    return run if (run / "manifest.json").exists() else build_demo_run(run, regmix)


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory, regmix_data) -> Path:
    return shared_demo_run(tmp_path_factory.getbasetemp(), regmix_data)


@pytest.fixture(scope="session")
def kept_docs(demo_run) -> pa.Table:
    """The documents of the final stage (the `docs` view)."""
    return pq.read_table(demo_run / "shards" / "cluster")


@pytest.fixture(autouse=True)
def keep_main_module():
    """AppTest runs a page as the `__main__` module and leaves it there; put pytest's back, or every process pool
    spawned later in the session re-imports the page's deleted temporary script and dies."""
    main = sys.modules["__main__"]
    yield
    sys.modules["__main__"] = main


def page_app(name: str, run_dir: Path) -> AppTest:
    """One page of the dashboard as an AppTest (the page module's render on the run)."""
    def script(page: str, run: str) -> None:
        import importlib
        from pathlib import Path

        importlib.import_module(f"dashboards.{page}").render(Path(run))

    app = AppTest.from_function(script, args=(name, str(run_dir)), default_timeout=APP_TIMEOUT)
    return app.run()


def no_failures(app: AppTest) -> None:
    assert not app.exception, [e.value for e in app.exception]


def button(app: AppTest, label: str):
    return next(b for b in app.button if b.label == label)


def test_runs_page_shows_funnel_tokens_and_quarantine(demo_run, kept_docs):
    app = page_app("runs", demo_run)
    no_failures(app)
    funnel, tokens, quarantine = (d.value for d in app.dataframe[-3:])
    assert funnel["stage"].tolist() == ["ingest", "filter", "cluster"]
    assert funnel["docs_out"].iloc[-1] == kept_docs.num_rows
    assert (funnel["docs_out"].iloc[:-1].to_numpy() == funnel["docs_in"].iloc[1:].to_numpy()).all()
    assert funnel["dropped: cluster_pruned"].iloc[-1] == funnel["docs_in"].iloc[-1] - kept_docs.num_rows > 0
    expected = {row["domain"]: row["n_tokens_sum"]
                for row in kept_docs.group_by("domain").aggregate([("n_tokens", "sum")]).to_pylist()}
    assert dict(zip(tokens["domain"], tokens["tokens"], strict=True)) == expected
    assert quarantine["error"].tolist() == ["not a gzip file"]

    app.selectbox(key="runs_group_by").set_value("super_cluster").run()
    by_super = app.dataframe[-2].value
    assert len(by_super) == N_SUPER and by_super["tokens"].sum() == pc.sum(kept_docs.column("n_tokens")).as_py()


def run_query(app: AppTest, sql: str, *, cap: int | None = None, timeout: int | None = None) -> AppTest:
    app.text_area(key="sql_text").set_value(sql)
    if cap is not None:
        next(n for n in app.number_input if n.label == "Row cap").set_value(cap)
    if timeout is not None:
        next(n for n in app.number_input if n.label == "Timeout (s)").set_value(timeout)
    return button(app, "Run query").click().run()


@pytest.mark.parametrize("statement, kind", [("COPY (SELECT * FROM docs) TO 'leak.csv'", "COPY"),
                                             ("CREATE TABLE t AS SELECT * FROM docs", "CREATE"),
                                             ("SELECT 1; DROP VIEW docs", "DROP")])
def test_sql_page_refuses_writes_in_one_line(demo_run, statement, kind):
    app = run_query(page_app("sql", demo_run), statement)
    no_failures(app)
    assert len(app.error) == 1 and "\n" not in app.error[0].value
    assert f"refused a {kind} statement" in app.error[0].value
    assert not app.dataframe
    assert not (demo_run / "leak.csv").exists()


def test_sql_page_runs_reads_with_cap_timeout_and_downloads(demo_run, kept_docs):
    app = run_query(page_app("sql", demo_run), "SELECT domain, count(*) AS docs FROM docs GROUP BY 1 ORDER BY 1")
    no_failures(app)
    expected = sorted((r["domain"], r["count_all"]) for r in kept_docs.group_by("domain").aggregate(
        [([], "count_all")]).to_pylist())
    result = app.dataframe[0].value
    assert list(zip(result["domain"], result["docs"], strict=True)) == expected
    assert [b.label for b in app.get("download_button")] == ["Download CSV", "Download Parquet"]

    app = run_query(app, "SELECT id FROM docs", cap=25)
    assert len(app.dataframe[0].value) == 25 and "capped at 25" in app.success[0].value

    app = run_query(app, "SELECT count(*) FROM range(1000000) a, range(1000000) b WHERE a.range + b.range < 0",
                    timeout=1)
    assert len(app.error) == 1 and "timeout" in app.error[0].value

    app = run_query(app, "SELECT no_such_column FROM docs")
    assert len(app.error) == 1 and "no_such_column" in app.error[0].value and "\n" not in app.error[0].value

    app.selectbox(key="sql_example").set_value("Tokens per domain").run()
    assert app.text_area(key="sql_text").value.startswith("SELECT domain, count(*) AS docs, sum(n_tokens)")


def test_clusters_page_map_table_and_representatives(demo_run, tmp_path):
    app = page_app("clusters", demo_run)
    no_failures(app)
    assert [r.value for r in app.radio] == ["super_cluster"]
    table = app.dataframe[0].value
    assigned = pq.read_metadata(next((demo_run / "shards" / "filter").glob("*.parquet"))).num_rows
    assert len(table) == N_CLUSTERS and table["size"].sum() == assigned
    assert table["super_cluster"].notna().sum() == KEPT_CLUSTERS and table["pruned"].sum() == 1
    nearest = pq.read_table(demo_run / "clusters" / "clusters.parquet").to_pylist()[0]
    assert [t.value for t in app.text] == [text.strip() for text in nearest["representative_texts"]]
    assert [c.value for c in app.caption][-3:] == nearest["representative_ids"]
    assert app.markdown[-1].value.startswith("Distinctive terms: `" + nearest["terms"][0])

    bare = tmp_path / "run"
    shutil.copytree(demo_run / "shards" / "filter", bare / "shards" / "filter")
    app = page_app("clusters", bare)
    no_failures(app)
    assert "no clusters yet" in app.info[0].value


def test_scores_page_threshold_preview_counts(demo_run, kept_docs):
    app = page_app("scores", demo_run)
    no_failures(app)
    assert app.selectbox(key="scores_column").options == ["preselect", "dataman_overall"]
    app.slider(key="scores_threshold_preselect").set_value(0.7).run()
    kept = pc.greater_equal(kept_docs.column("preselect"), pa.scalar(0.7, pa.float32()))
    docs, tokens = (m.value for m in app.metric)
    assert docs == f"{pc.sum(kept).as_py():,} of {kept_docs.num_rows:,}"
    assert tokens == (f"{pc.sum(kept_docs.column('n_tokens').filter(kept)).as_py():,} of "
                      f"{pc.sum(kept_docs.column('n_tokens')).as_py():,}")
    groups = app.dataframe[0].value
    assert groups["docs"].sum() == kept_docs.num_rows and groups["mean"].is_monotonic_decreasing


def fitted(app: AppTest) -> AppTest:
    """Fit with a smaller search than the page's default (100k candidates): the ranking is what is tested."""
    next(n for n in app.number_input if n.label == "Candidate mixtures").set_value(SEARCH_SAMPLES)
    return button(app, "Fit").click().run()


def spearman(app: AppTest) -> float:
    metric = next(m for m in app.metric if m.label.startswith("Spearman"))
    return float(metric.value)


def test_regmix_page_fits_the_run_experiment(demo_run, monkeypatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    app = page_app("regmix", demo_run)
    no_failures(app)
    assert app.selectbox(key="regmix_experiment").value == "mixtures/regmix-paper"
    assert app.multiselect[0].label == "Target(s) to minimise" and app.multiselect[0].value == [REGMIX_TARGET]
    app = fitted(app)
    no_failures(app)
    assert not app.error
    assert spearman(app) >= 0.9
    best = app.dataframe[-1].value
    assert best["best"].idxmax() == "train_the_pile_pile_cc" and abs(best["best"].sum() - 1) < 1e-6
    assert [b.label for b in app.get("download_button")] == ["Download mixture (YAML)", "Download mixture (JSON)"]
    assert app.info[-1].value.startswith("No Prefect server configured")


def test_regmix_page_small_experiment_uses_the_token_prior(demo_run, kept_docs, monkeypatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    app = page_app("regmix", demo_run)
    app.selectbox(key="regmix_experiment").set_value("mixtures/synthetic-science").run()
    app.selectbox(key="regmix_model").set_value("linear")
    app = fitted(app)
    no_failures(app)
    assert not app.error and any("leave-one-out cross-validation" in c.value for c in app.caption)  # < 40 runs
    assert len(points(plotted(app)[0])) == 24  # every run, predicted out of fold
    assert spearman(app) >= 0.95
    best = app.dataframe[-1].value
    tokens = {r["domain"]: r["n_tokens_sum"] for r in kept_docs.group_by("domain").aggregate(
        [("n_tokens", "sum")]).to_pylist()}
    total = sum(tokens.values())
    assert best["token prior"].to_dict() == pytest.approx({d: n / total for d, n in tokens.items()})
    assert best["best"].idxmax() == "science" and best.loc["science", "best"] > best.loc["science", "token prior"]


def plotted(app: AppTest) -> list[dict]:
    """The page's plotly figures as Streamlit sends them to the browser (JSON)."""
    return [json.loads(chart.proto.spec) for chart in app.get("plotly_chart")]


def plotted_array(value) -> list:
    """A trace's array: plotly sends numbers as base64 typed arrays ({dtype, bdata})."""
    if isinstance(value, dict):
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"]).tolist()
    return list(value)


def points(figure: dict) -> pd.DataFrame:
    """A predicted-against-measured scatter's points: measured (x), predicted (y), by run (hover name)."""
    trace = figure["data"][0]
    return pd.DataFrame({"measured": plotted_array(trace["x"]), "predicted": plotted_array(trace["y"])},
                        index=list(trace["hovertext"]))


def stored_fit_page(demo_run: Path, monkeypatch) -> AppTest:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    app = page_app("regmix", demo_run)
    app.selectbox(key="regmix_experiment").set_value(FITTED).run()
    no_failures(app)
    return app


def test_regmix_page_shows_the_stored_fits(demo_run, monkeypatch):
    """As stored, not refitted: per target its direction, every candidate's cross-validated Spearman and
    MAE with the chosen model ticked, and the chosen model's out-of-fold predictions against the measured
    values; for a single-model fit, the report's score and scored runs."""
    app = stored_fit_page(demo_run, monkeypatch)
    assert app.selectbox(key="regmix_stored_fit_science-law").options == ["fit", "fit-linear"]
    stored = json.loads((demo_run / FITTED / "fit" / "fit.json").read_text())
    targets = app.dataframe[0].value
    assert targets["target"].tolist() == list(FITTED_TARGETS)
    assert targets["direction"].tolist() == ["minimize", "maximize"]
    assert targets["model"].tolist() == stored["model_names"]
    assert stored["model_names"][0] == "log_linear"  # the law wins on the loss made in its own form
    measured = pd.DataFrame(stored["measured"]["metrics"], index=stored["measured"]["runs"], columns=stored["targets"])
    figures = plotted(app)
    for i, target in enumerate(FITTED_TARGETS):
        selection = stored["selection"][target]
        table = app.dataframe[1 + i].value.set_index("model")
        assert sorted(table.index) == sorted(selection["scores"]) and len(table) == 5
        assert table.index[table["chosen"]].tolist() == [selection["chosen"]] == [stored["model_names"][i]]
        assert table[["spearman", "mae"]].to_dict("index") == selection["scores"]
        shown = points(figures[i])
        assert shown.index.tolist() == selection["runs"]
        assert shown["predicted"].tolist() == selection["out_of_fold"][selection["chosen"]]
        assert shown["measured"].tolist() == measured.loc[selection["runs"], target].tolist()

    app.selectbox(key="regmix_stored_fit_science-law").set_value("fit-linear").run()
    no_failures(app)
    report = json.loads((demo_run / FITTED / "fit-linear" / "report.json").read_text())
    assert report["method"] == "5-fold" and app.dataframe[0].value["model"].tolist() == ["linear", "linear"]
    figures = plotted(app)
    for i, target in enumerate(FITTED_TARGETS):
        table = app.dataframe[1 + i].value
        score = report["targets"][target]
        assert table.to_dict("records") == [{"model": "linear", "chosen": True, "spearman": score["spearman"],
                                             "mae": score["mae"]}]
        shown = points(figures[i])
        predictions = report["predictions"]
        assert shown.index.tolist() == predictions["runs"]
        assert shown["predicted"].tolist() == predictions["predicted"][target]
        assert shown["measured"].tolist() == predictions["measured"][target]


def test_regmix_page_stored_fit_optimum_under_the_repetition_cap(demo_run, kept_docs, monkeypatch):
    """The optimum of the stored fit beside the prior and the best run, each with its predicted values, and
    the cap from the run's tokens: planned tokens that allow science a quarter (it holds 19% of the tokens;
    uncapped, the optimum gives it a third) make the cap bind there."""
    from mixtures.objective import RepetitionCap
    from mixtures.regression import RegMixRegressor

    app = stored_fit_page(demo_run, monkeypatch)
    tokens = {r["domain"]: float(r["n_tokens_sum"]) for r in kept_docs.group_by("domain").aggregate(
        [("n_tokens", "sum")]).to_pylist()}
    tag = f"{FITTED}/fit"
    assert app.number_input(key=f"regmix_stored_planned_{tag}").value == sum(tokens.values())  # the corpus once
    planned = int(4 * tokens["science"] / 0.25)
    app.number_input(key=f"regmix_stored_samples_{tag}").set_value(SEARCH_SAMPLES)
    app.number_input(key=f"regmix_stored_planned_{tag}").set_value(planned)
    app = button(app, "Find the optimum").click().run()
    no_failures(app)
    assert not app.error, app.error[0].value

    regressor = RegMixRegressor.load(demo_run / FITTED / "fit")
    cap = RepetitionCap(tokens, planned)
    upper = dict(zip(regressor.domains_, cap.upper(regressor.domains_), strict=True))
    expected = regressor.compare(regressor.optimum(SEARCH_SAMPLES, 128, upper=cap.upper(regressor.domains_)))
    uncapped = regressor.compare(regressor.optimum(SEARCH_SAMPLES, 128))["optimum"]
    values, weights = (d.value for d in app.dataframe[-2:])
    assert values.index.tolist() == ["objective", *FITTED_TARGETS]
    for column, entry in (("optimum", expected["optimum"]), ("prior", expected["prior"]),
                          ("best run", expected["best_run"]), ("uncapped optimum", uncapped)):
        assert values[column].tolist() == pytest.approx([entry["objective"], *entry["predicted"].values()], rel=1e-9)
    best_run = expected["best_run"]
    assert values["best run, measured"].tolist() == pytest.approx([best_run["measured_objective"],
                                                                   *best_run["measured"].values()])
    assert any(f"best run: `{best_run['run']}`" in c.value for c in app.caption)
    assert values.loc["objective", "optimum"] < values.loc["objective", "prior"]

    assert weights["tokens"].to_dict() == tokens and weights["max weight"].to_dict() == pytest.approx(upper)
    assert (weights["optimum"] <= weights["max weight"] + 1e-9).all() and weights["optimum"].sum() == pytest.approx(1)
    assert weights["binds"].to_dict() == {d: uncapped["weights"][d] > upper[d] for d in upper}
    assert weights.loc["science", "binds"] and weights.loc["science", "uncapped optimum"] > 0.3
    assert weights.loc["science", "optimum"] == pytest.approx(upper["science"], abs=1e-3) == pytest.approx(0.25)
    assert any("**binds** on " in m.value and "science" in m.value for m in app.markdown)


def upload(app: AppTest, key: str, name: str, content: bytes) -> None:
    app.get("file_uploader")
    next(u for u in app.get("file_uploader") if u.label.startswith(key)).set_value((name, content, "text/csv"))


def test_regmix_page_uploads_released_files_and_rejects_bad_ones(demo_run, regmix_data, monkeypatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    app = page_app("regmix", demo_run)
    app.radio(key="regmix_source").set_value("Upload CSVs").run()
    metrics = (regmix_data / "train_pile_loss_1m.csv").read_bytes()
    ratios = (regmix_data / "train_mixture_1m.csv").read_bytes()
    bad_inputs = {
        "wrong columns": (b"domain,a,b\nx,0.5,0.5\n", "fits no known layout; expected ours: run"),
        "non-numeric": (ratios.replace(b"\n2,0.025,", b"\n2,abc,", 1), "non-numeric weight 'abc'"),
        "empty": (b"", "not a readable CSV"),
    }
    for name, (content, message) in bad_inputs.items():
        upload(app, "Mixtures", f"{name}.csv", content)
        upload(app, "Metrics", "train_pile_loss_1m.csv", metrics)
        app.run()
        no_failures(app)
        assert len(app.error) == 1 and message in app.error[0].value and "\n" not in app.error[0].value, name
        assert f"{name}.csv" in app.error[0].value

    upload(app, "Mixtures", "train_mixture_1m.csv", ratios)
    upload(app, "Test mixtures", "test_mixture_1m.csv", (regmix_data / "test_mixture_1m.csv").read_bytes())
    upload(app, "Test metrics", "test_pile_loss_1m.csv", (regmix_data / "test_pile_loss_1m.csv").read_bytes())
    app = fitted(app.run())
    no_failures(app)
    assert any("256 test runs" in c.value for c in app.caption)
    assert spearman(app) >= 0.97  # the paper: 98.45 x 1/100 for LightGBM on the 1M-parameter runs

    upload(app, "Metrics", "train_pile_loss_1m.csv", metrics.replace(b"\n1,7.02", b"\n1,7.03", 1))
    app.run()
    assert not [m for m in app.metric if m.label.startswith("Spearman")]  # that fit was of other data


def test_dashboard_asks_for_the_token(demo_run, monkeypatch):
    monkeypatch.setenv("MIXFORGE_RUN_DIR", str(demo_run))
    monkeypatch.setenv("MIXFORGE_UI_TOKEN", "s3cret")
    app = AppTest.from_file(str(Path(__file__).parent.parent / "dashboards" / "app.py"), default_timeout=APP_TIMEOUT)
    app.run()
    assert not app.metric and app.text_input[0].label == "Access token"
    app.text_input[0].set_value("guess")
    app = button(app, "Open").click().run()
    assert "not the one" in app.error[0].value and not app.metric
    app.text_input[0].set_value("s3cret")
    app = button(app, "Open").click().run()
    no_failures(app)
    assert app.title[0].value == "Run" and app.metric[0].label == "Run"

    link = AppTest.from_file(str(Path(__file__).parent.parent / "dashboards" / "app.py"), default_timeout=APP_TIMEOUT)
    link.query_params["token"] = "s3cret"
    link.run()
    assert link.title[0].value == "Run" and "token" not in link.query_params


def test_launch_form_parameters_follow_the_flow_schema():
    from prefect import flow
    from prefect.utilities.callables import parameter_schema

    from dashboards.launch import Deployment, ParameterError, parse_parameters

    @flow(name="mixture_experiment")
    def experiment(run_dir: str, n_mixtures: int = 16, targets: list[str] | None = None, dry_run: bool = False):
        return n_mixtures

    schema = parameter_schema(experiment.fn).model_dump()
    deployment = Deployment("mixture_experiment/x", uuid.uuid4(), {"n_mixtures": 16}, schema["properties"],
                            schema["required"])
    form = {"run_dir": "/runs/a", "n_mixtures": 32, "targets": '["science", "law"]', "dry_run": True}
    assert parse_parameters(deployment, form) == {"run_dir": "/runs/a", "n_mixtures": 32,
                                                  "targets": ["science", "law"], "dry_run": True}
    assert parse_parameters(deployment, {**form, "targets": ""}) == {"run_dir": "/runs/a", "n_mixtures": 32,
                                                                     "dry_run": True}
    with pytest.raises(ParameterError, match="parameter 'targets': not valid JSON"):
        parse_parameters(deployment, {**form, "targets": "[science"})
    with pytest.raises(ParameterError, match="required parameter.*run_dir"):
        parse_parameters(deployment, {**form, "run_dir": ""})


def mixture_experiment_deployment():
    """A deployment of the real `mixture_experiment` flow as the dashboard reads it, with `corpus.by` as its
    default (as `mixforge ui` serves it from the run's own experiment)."""
    from prefect.utilities.callables import parameter_schema

    from dashboards.launch import Deployment
    from flows.mixture_experiment import mixture_experiment

    schema = parameter_schema(mixture_experiment.fn).model_dump()
    return Deployment("mixture_experiment/x", uuid.UUID(int=0), {"config": {"corpus": {"by": "domain"}}},
                      schema["properties"], schema["required"], schema["definitions"])


def test_launch_form_of_the_mixture_experiment_flow():
    """The real flow's form is its ExperimentConfig, field by field: Literals are select boxes on their
    defaults, numbers number inputs, lists and dicts JSON; the launched parameter is the whole config."""
    def script() -> None:
        import streamlit as st

        from dashboards.launch import ParameterError, parameter_form, parse_parameters
        from tests.test_dashboard_pages import mixture_experiment_deployment

        deployment = mixture_experiment_deployment()
        with st.form("launch"):
            raw = parameter_form(deployment, key="p", prefill={"run_dir": "/runs/a"})
            st.form_submit_button("Launch")
        try:
            st.session_state["parameters"] = parse_parameters(deployment, raw)
        except ParameterError as error:
            st.session_state["parameters"] = str(error)

    from mixtures.config import ExperimentConfig

    app = AppTest.from_function(script, default_timeout=APP_TIMEOUT).run()
    no_failures(app)
    key = "p_mixture_experiment/x_config."
    method, model = app.selectbox(key=key + "method"), app.selectbox(key=key + "regression.model")
    assert (method.options, method.value, model.value) == (["regmix", "climb"], "regmix", "lightgbm")
    assert "auto" in model.options
    assert [app.text_input(key=key + n).label for n in ("corpus.run_dir", "corpus.by", "targets", "rounds")] == [
        "corpus.run_dir (required)", "corpus.by (required)", "targets (required) (JSON)", "rounds (JSON)"]
    assert (app.text_input(key=key + "corpus.run_dir").value, app.text_input(key=key + "corpus.by").value,
            app.text_input(key=key + "rounds").value) == ("/runs/a", "domain", "[16]")
    assert app.number_input(key=key + "materialize.budget_tokens").value == 100_000
    assert app.session_state["parameters"] == "required parameter(s) missing: config.targets"

    app.text_input(key=key + "targets").set_value('["science", "law"]')
    app.text_input(key=key + "rounds").set_value("[4, 2]")
    app.number_input(key=key + "proxy.d_model").set_value(16)
    method.set_value("climb")
    model.set_value("linear")
    app = button(app, "Launch").click().run()
    config = app.session_state["parameters"]["config"]
    assert ExperimentConfig.model_validate(config) == ExperimentConfig(
        corpus={"run_dir": "/runs/a", "by": "domain"}, targets=["science", "law"], method="climb", rounds=[4, 2],
        proxy={"d_model": 16}, regression={"model": "linear"})


def test_launch_form_leaves_empty_fields_to_the_deployment():
    """A field left empty takes the deployment's value (the run's own experiment), else the model's default;
    the config is sent whole, since Prefect replaces a deployment's parameter with the run's."""
    from dashboards.launch import parse_parameters

    raw = {"config.corpus.run_dir": "/runs/a", "config.corpus.by": "", "config.targets": '["law"]',
           "config.method": None, "config.export.budget_tokens": "", "ray_address": ""}
    assert parse_parameters(mixture_experiment_deployment(), raw) == {
        "config": {"corpus": {"run_dir": "/runs/a", "by": "domain"}, "targets": ["law"]}}


def test_ui_command_refuses_a_missing_run_and_knows_loopback(tmp_path):
    from typer.testing import CliRunner

    from mixforge.cli import app
    from mixforge.commands.ui import is_loopback

    result = CliRunner().invoke(app, ["ui", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "no run directory" in result.output
    assert [is_loopback(h) for h in ("127.0.0.1", "::1", "localhost", "0.0.0.0", "10.0.0.5")] == [
        True, True, True, False, False]
