"""RegMix page: fit mixture -> loss regressions on an experiment's runs, see how well they rank held-out
runs, find the best mixture, and launch a new `mixture_experiment` run through Prefect.

The reading, fitting and search are `mixtures.io` and `mixtures.regression.RegMixRegressor`; this page
only chooses the runs, shows the results and catches bad input as one-line messages.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st
from sklearn.model_selection import train_test_split

from dashboards import launch
from dashboards.run import columns, quoted, run_sql
from mixtures.io import MixtureFileError, export_mixture, join_runs, read_metrics, read_mixtures
from mixtures.regression import MODELS, RegMixRegressor, importance
from storage.catalog import QueryRefused

RATIOS, METRICS, EXPERIMENT_FILE = "ratios.csv", "metrics.csv", "experiment.json"
FLOW_NAME = "mixture_experiment"
HOLDOUT = 0.25
MIN_HELD_RUNS = 8  # fewer held-out runs than this make a meaningless Spearman: k-fold instead
DOMAIN_COLUMNS = ("domain", "super_cluster", "cluster", "source", "lang")
SOURCES = ("An experiment in this run", "Upload CSVs")
RUN_PARAMETERS = ("run_dir", "out", "domains_from")  # flow parameters the shown run directory fills in


@dataclass
class Experiment:
    """Runs to fit on: mixtures and metrics joined on run, optional held-out test runs."""

    name: str
    mixtures: pd.DataFrame
    metrics: pd.DataFrame
    test_mixtures: pd.DataFrame | None = None
    test_metrics: pd.DataFrame | None = None
    tokens: pd.Series | None = None  # tokens per domain, when the experiment recorded them

    def fingerprint(self) -> int:
        """Identifies the runs' data, so a fit is shown only beside the data it was made from."""
        frames = [f for f in (self.mixtures, self.metrics, self.test_mixtures, self.test_metrics) if f is not None]
        return hash(tuple((tuple(f.columns), int(pd.util.hash_pandas_object(f).sum())) for f in frames))


def render(run_dir: Path) -> None:
    st.title("RegMix")
    st.caption("Fit one regression per target loss on mixture -> loss runs (RegMix: LightGBM, or linear), "
               "score it on held-out runs, and search many Dirichlet mixtures for the best one.")
    source = st.radio("Runs", SOURCES, horizontal=True, key="regmix_source")
    try:
        experiment = pick_experiment(run_dir) if source == SOURCES[0] else uploaded_experiment()
    except MixtureFileError as error:
        st.error(str(error))
        experiment = None
    if experiment is not None:
        fit_form(run_dir, experiment)
    result = st.session_state.get("regmix_result")
    if result is not None and experiment is not None and result["fingerprint"] == experiment.fingerprint():
        show_result(result)
    st.divider()
    launch_section(run_dir)


# -- choosing the runs -----------------------------------------------------------------------------
def experiments_in(run_dir: Path) -> list[Path]:
    """Folders up to three levels under the run that hold both ratios.csv and metrics.csv."""
    found = {p.parent for depth in ("*/", "*/*/", "*/*/*/") for p in run_dir.glob(f"{depth}{RATIOS}")}
    return sorted(f for f in found if (f / METRICS).exists())


def pick_experiment(run_dir: Path) -> Experiment | None:
    folders = experiments_in(run_dir)
    if not folders:
        st.info(f"No experiment in this run yet (a folder with {RATIOS} and {METRICS}, e.g. mixtures/<name>/): "
                "upload the CSVs instead, or launch one below.")
        return None
    names = [str(f.relative_to(run_dir)) for f in folders]
    name = st.selectbox("Experiment", names, key="regmix_experiment")
    folder = run_dir / name
    mixtures, metrics = join_runs(read_mixtures(folder / RATIOS), read_metrics(folder / METRICS),
                                  mixtures_name=RATIOS, metrics_name=METRICS)
    return Experiment(name, mixtures, metrics, tokens=recorded_tokens(folder, run_dir, list(mixtures.columns)))


def recorded_tokens(folder: Path, run_dir: Path, domains: list[str]) -> pd.Series | None:
    """Tokens per domain from the experiment.json of the `mixture_experiment` that wrote `folder` (the
    folder itself, or a round inside it)."""
    for candidate in (folder, *folder.parents):
        summary = candidate / EXPERIMENT_FILE
        if summary.exists():
            try:
                tokens = pd.Series(json.loads(summary.read_text()).get("domain_tokens") or {}, dtype=float)
            except (json.JSONDecodeError, ValueError, TypeError, AttributeError):
                return None
            return tokens[domains] if set(domains) <= set(tokens.index) and (tokens[domains] > 0).all() else None
        if candidate == run_dir:
            break
    return None


def uploaded_experiment() -> Experiment | None:
    left, right = st.columns(2)
    ratios = left.file_uploader("Mixtures (ratios.csv, or RegMix's train_mixture_*.csv)", type="csv",
                                key="regmix_up_ratios")
    metrics = right.file_uploader("Metrics (metrics.csv, or RegMix's train_pile_loss_*.csv)", type="csv",
                                  key="regmix_up_metrics")
    with st.expander("Held-out test runs (optional; otherwise a quarter of the runs is held out)"):
        a, b = st.columns(2)
        test_ratios = a.file_uploader("Test mixtures", type="csv", key="regmix_up_test_ratios")
        test_metrics = b.file_uploader("Test metrics", type="csv", key="regmix_up_test_metrics")
    if ratios is None or metrics is None:
        st.info("Upload a mixtures CSV and a metrics CSV: `run` (or RegMix's `index`) first, then one column per "
                "domain or metric.")
        return None
    with tempfile.TemporaryDirectory() as folder:
        mixtures, measured = join_runs(read_upload(ratios, read_mixtures, folder),
                                       read_upload(metrics, read_metrics, folder),
                                       mixtures_name=ratios.name, metrics_name=metrics.name)
        experiment = Experiment(f"upload: {ratios.name} + {metrics.name}", mixtures, measured)
        if (test_ratios is None) != (test_metrics is None):
            st.warning("Upload both test files to score on them; holding out a quarter of the runs instead.")
        elif test_ratios is not None:
            experiment.test_mixtures, experiment.test_metrics = join_runs(
                read_upload(test_ratios, read_mixtures, folder), read_upload(test_metrics, read_metrics, folder),
                mixtures_name=test_ratios.name, metrics_name=test_metrics.name)
            experiment.name += f" (test: {test_ratios.name} + {test_metrics.name})"
    return experiment


def read_upload(upload, reader, folder: str) -> pd.DataFrame:
    """Read an uploaded CSV with the mixtures.io reader; errors name the upload, not the temp file."""
    path = Path(folder) / Path(upload.name).name
    path.write_bytes(upload.getvalue())
    try:
        return reader(path)
    except MixtureFileError as error:
        raise MixtureFileError(str(error).replace(str(path), upload.name)) from None


# -- fitting -------------------------------------------------------------------------------------------
def default_targets(metrics: list[str]) -> list[str]:
    """RegMix's headline target (Pile-CC loss) when present, else the first metric."""
    return [m for m in metrics if "pile_cc" in m][:1] or metrics[:1]


def fit_form(run_dir: Path, experiment: Experiment) -> None:
    metrics = list(experiment.metrics.columns)
    st.caption(f"{len(experiment.mixtures):,} runs over {experiment.mixtures.shape[1]} domains, "
               f"{len(metrics)} metric(s).")
    with st.form("regmix_fit"):
        targets = st.multiselect("Target(s) to minimise", metrics, default=default_targets(metrics),
                                 key=f"regmix_targets_{experiment.name}")  # per experiment: their metrics differ
        a, b, c = st.columns(3)
        model = a.selectbox("Model", MODELS, key="regmix_model")
        n_samples = b.number_input("Candidate mixtures", min_value=1_000, max_value=2_000_000, value=100_000,
                                   step=10_000, help="Dirichlet samples the search ranks (RegMix: 100k-1M).")
        top_k = c.number_input("Average the top", min_value=1, max_value=10_000, value=128,
                               help="The best mixture is the mean of this many best-predicted candidates.")
        submitted = st.form_submit_button("Fit", type="primary")
    if not submitted:
        return
    if not targets:
        st.error("Pick at least one target metric.")
        return
    try:
        with st.spinner("Fitting and searching..."):
            result = fit(run_dir, experiment, targets, model, int(n_samples), int(top_k))
    except (MixtureFileError, ValueError, QueryRefused) as error:
        st.error(f"Could not fit: {' '.join(str(error).split())}")
        return
    st.session_state["regmix_result"] = result


def fit(run_dir: Path, experiment: Experiment, targets: list[str], model: str, n_samples: int, top_k: int) -> dict:
    """Fit, score on held-out runs, refit on every run and find the best mixture."""
    X, Y = experiment.mixtures, experiment.metrics[targets]
    prior = experiment.tokens if experiment.tokens is not None else token_prior(run_dir, list(X.columns))
    # One LightGBM thread: on a few hundred runs a second one is slower, and on a busy machine OpenMP's
    # spinning threads made a fit 10-30x slower; the server also has other sessions to serve.
    regressor = RegMixRegressor(model, num_threads=1, prior=None if prior is None else prior.to_dict())
    predicted = measured = None
    if experiment.test_mixtures is not None:
        X_test = experiment.test_mixtures
        measured = experiment.test_metrics[targets]
        report = regressor.fit_report(X, Y, X_test=X_test, Y_test=measured)
        predicted = regressor.predict_frame(X_test)
        report["method"] = f"{len(X_test):,} test runs"
    elif len(X) * HOLDOUT >= MIN_HELD_RUNS:
        X_fit, X_held, Y_fit, measured = train_test_split(X, Y, test_size=HOLDOUT, random_state=0)
        report = regressor.fit_report(X_fit, Y_fit, X_test=X_held, Y_test=measured)
        predicted = regressor.predict_frame(X_held)
        report["method"] = f"{len(X_held):,} held-out runs ({HOLDOUT:.0%}) after fitting on the other {len(X_fit):,}"
        regressor.fit(X, Y)
    else:
        report = regressor.fit_report(X, Y)
        report["method"] += " cross-validation"
    best = regressor.optimum(n_samples=n_samples, top_k=top_k)
    reference = prior / prior.sum() if prior is not None else X.mean(axis=0)
    return {"experiment": experiment.name, "fingerprint": experiment.fingerprint(), "targets": targets,
            "model": model, "report": report, "n_runs": len(X),
            "predicted": predicted, "measured": measured, "importance": importances(regressor),
            "best": best, "reference": reference,
            "reference_name": "token prior" if prior is not None else "mean of the runs",
            "search": {"n_samples": n_samples, "top_k": top_k}}


def token_prior(run_dir: Path, domains: list[str]) -> pd.Series | None:
    """Tokens per domain in the run, when one of its columns has every domain of the experiment as a value."""
    try:
        docs = columns(run_dir)
        measure = "sum(n_tokens)" if "n_tokens" in docs else "count(*)"
        for column in (c for c in DOMAIN_COLUMNS if c in docs):
            table = run_sql(run_dir, f"SELECT CAST({quoted(column)} AS VARCHAR) AS domain, {measure}::DOUBLE AS "
                                     f"tokens FROM docs GROUP BY 1").to_pandas().dropna()
            counts = table.set_index("domain")["tokens"]
            if set(domains) <= set(counts.index) and (counts[domains] > 0).all():
                return counts[domains].rename("tokens")
    except QueryRefused:
        return None
    return None


def importances(regressor: RegMixRegressor) -> pd.DataFrame:
    """Per target, each domain's share of the model's importance (LightGBM gain, |coefficient|, |t|);
    zeros for a model without one (the Gaussian process)."""
    shares = {}
    for target, model in zip(regressor.targets_, regressor.models_, strict=True):
        share = importance(model)
        shares[target] = np.zeros(len(regressor.domains_)) if share is None else share
    return pd.DataFrame(shares, index=regressor.domains_)


# -- results -------------------------------------------------------------------------------------------
def show_result(result: dict) -> None:
    report = result["report"]
    st.subheader("Fit")
    scores = pd.DataFrame(report["targets"]).T.rename_axis("target").reset_index()
    st.caption(f"{result['model']}, scored on {report['method']}; the best mixture comes from a fit on all "
               f"{result['n_runs']:,} runs.")
    cols = st.columns(min(len(scores), 4))
    for col, row in zip(cols, scores.itertuples(), strict=False):
        col.metric(f"Spearman: {short(row.target)}", f"{row.spearman:.4f}")
    st.dataframe(scores, hide_index=True)
    target = st.selectbox("Show target", result["targets"], key="regmix_show_target") \
        if len(result["targets"]) > 1 else result["targets"][0]
    left, right = st.columns(2)
    with left:
        if result["predicted"] is not None:
            show_scatter(result, target)
        else:
            st.info("Too few runs to hold some out: the scores above are k-fold cross-validation.")
    with right:
        importance = result["importance"][target].sort_values()
        figure = go.Figure(go.Bar(x=importance.values, y=[short(d) for d in importance.index], orientation="h"))
        figure.update_layout(title="Feature importance", xaxis_title="share", height=420, margin={"t": 40})
        st.plotly_chart(figure)
    show_best(result)


def short(name: str) -> str:
    """RegMix's long column names without their common prefixes."""
    for prefix in ("train_the_pile_", "metric/the_pile_", "metric/"):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def show_scatter(result: dict, target: str) -> None:
    frame = pd.DataFrame({"measured": result["measured"][target], "predicted": result["predicted"][target]}).dropna()
    rho = result["report"]["targets"][target]["spearman"]
    figure = px.scatter(frame, x="measured", y="predicted", hover_name=frame.index,
                        title=f"Predicted against measured: Spearman {rho:.4f}")
    low, high = float(frame.min().min()), float(frame.max().max())
    figure.add_trace(go.Scatter(x=[low, high], y=[low, high], mode="lines", name="y = x",
                                line={"dash": "dot", "color": "grey"}))
    figure.update_layout(height=420, margin={"t": 40}, xaxis_title=f"measured {short(target)}",
                         yaxis_title=f"predicted {short(target)}", showlegend=False)
    st.plotly_chart(figure)


def show_best(result: dict) -> None:
    st.subheader("Best mixture")
    best, reference = result["best"], result["reference"].reindex(result["best"].index)
    search = result["search"]
    st.caption(f"Mean of the {search['top_k']:,} best-predicted of {search['n_samples']:,} candidate mixtures, "
               f"beside the {result['reference_name']}.")
    table = pd.DataFrame({"best": best, result["reference_name"]: reference}).sort_values("best", ascending=False)
    figure = go.Figure([go.Bar(name=name, x=[short(d) for d in table.index], y=table[name]) for name in table.columns])
    figure.update_layout(barmode="group", height=380, margin={"t": 10}, yaxis_title="weight")
    st.plotly_chart(figure)
    st.dataframe(table, column_config={c: st.column_config.NumberColumn(format="%.4f") for c in table.columns})
    context = {"targets": result["targets"], "model": result["model"], "experiment": result["experiment"],
               "fit": {t: round(s["spearman"], 4) for t, s in result["report"]["targets"].items()}}
    left, right = st.columns(2)
    left.download_button("Download mixture (YAML)", lambda: exported(best, "mixture.yaml", context), "mixture.yaml",
                         "application/yaml", on_click="ignore")
    right.download_button("Download mixture (JSON)", lambda: exported(best, "mixture.json", context), "mixture.json",
                          "application/json", on_click="ignore")


def exported(best: pd.Series, name: str, context: dict) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        return export_mixture(best.to_dict(), Path(folder) / name, **context).read_bytes()


# -- launching a new experiment ----------------------------------------------------------------------
def launch_section(run_dir: Path) -> None:
    st.subheader("Launch a new experiment")
    try:
        deployments = launch.find_deployments(FLOW_NAME)
    except launch.PrefectUnavailable as error:
        st.info(str(error))
        deployments = []
    if deployments:
        by_name = {d.name: d for d in deployments}
        deployment = by_name[st.selectbox("Deployment", list(by_name), key="regmix_deployment")]
        with st.form("regmix_launch"):
            raw = launch.parameter_form(deployment, key="regmix_param",
                                        prefill=dict.fromkeys(RUN_PARAMETERS, str(run_dir)))
            submitted = st.form_submit_button("Launch")
        if submitted:
            try:
                run_id = launch.launch(deployment, launch.parse_parameters(deployment, raw))
            except (launch.ParameterError, launch.PrefectUnavailable) as error:
                st.error(str(error))
            else:
                st.session_state["regmix_launched"] = {"id": run_id, "deployment": deployment.name, "state": None}
    if "regmix_launched" in st.session_state:
        launched = st.session_state["regmix_launched"]
        final = launched["state"] in launch.FINAL_STATES
        st.fragment(follow_run, run_every=None if final else 3)()


def follow_run() -> None:
    launched = st.session_state["regmix_launched"]
    try:
        kind, name = launch.flow_run_state(launched["id"])
    except launch.PrefectUnavailable as error:
        st.error(str(error))
        return
    link = launch.ui_link(launched["id"])
    where = f" ([open in Prefect]({link}))" if link else ""
    message = f"Flow run `{launched['id']}` of `{launched['deployment']}`: **{name}**{where}"
    {"COMPLETED": st.success, "FAILED": st.error, "CRASHED": st.error}.get(kind, st.info)(message)
    became_final = kind in launch.FINAL_STATES and launched["state"] not in launch.FINAL_STATES
    launched["state"] = kind
    if became_final:
        st.rerun()  # the whole page again, now without the polling timer
