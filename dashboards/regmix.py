"""RegMix page: an experiment's stored fit (every candidate model's cross-validated scores, predicted
against measured out of fold, the targets' directions, the optimum under the repetition cap beside the
prior and the best run), a fit of its runs here, and a new `mixture_experiment` run launched through Prefect.

The reading, fitting and search are `mixtures.io`, `mixtures.regression.RegMixRegressor` and
`mixtures.objective.RepetitionCap`; a stored fit is shown from what `mixforge regmix fit` and the experiment
saved (fit.json, report.json), not refitted. This page only chooses, shows, and catches bad input as
one-line messages.
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
from mixtures.objective import REPETITION_FACTOR, RepetitionCap
from mixtures.regression import FINALS, FIT_FILE, MODELS, RegMixRegressor, importance
from storage.catalog import QueryRefused

RATIOS, METRICS, EXPERIMENT_FILE, REPORT_FILE = "ratios.csv", "metrics.csv", "experiment.json", "report.json"
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
    st.caption("An experiment's stored fit, or a fit of its runs here: one regression per target (LightGBM as "
               "RegMix or CLIMB, linear, the log-linear mixing law, a Gaussian process, or auto by "
               "cross-validation), scored on runs it did not see, and many Dirichlet mixtures searched for the best.")
    source = st.radio("Runs", SOURCES, horizontal=True, key="regmix_source")
    try:
        experiment = pick_experiment(run_dir) if source == SOURCES[0] else uploaded_experiment()
    except MixtureFileError as error:
        st.error(str(error))
        experiment = None
    if experiment is not None:
        if source == SOURCES[0]:
            stored_fit_section(run_dir / experiment.name, run_dir)
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
    if experiment.test_mixtures is not None:
        X_test = experiment.test_mixtures
        report = regressor.fit_report(X, Y, X_test=X_test, Y_test=experiment.test_metrics[targets])
        report["method"] = f"{len(X_test):,} test runs"
    elif len(X) * HOLDOUT >= MIN_HELD_RUNS:
        X_fit, X_held, Y_fit, Y_held = train_test_split(X, Y, test_size=HOLDOUT, random_state=0)
        report = regressor.fit_report(X_fit, Y_fit, X_test=X_held, Y_test=Y_held)
        report["method"] = f"{len(X_held):,} held-out runs ({HOLDOUT:.0%}) after fitting on the other {len(X_fit):,}"
        regressor.fit(X, Y)
    else:
        report = regressor.fit_report(X, Y)
        report["method"] += " cross-validation"
    best = regressor.optimum(n_samples=n_samples, top_k=top_k)
    reference = prior / prior.sum() if prior is not None else X.mean(axis=0)
    return {"experiment": experiment.name, "fingerprint": experiment.fingerprint(), "targets": targets,
            "model": model, "report": report, "n_runs": len(X), "importance": importances(regressor),
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
        show_scatter(scored_runs(report["predictions"], target), target, report["targets"][target]["spearman"])
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


def scored_runs(predictions: dict, target: str) -> pd.DataFrame:
    """Measured and predicted values of the runs a fit was scored on (fit_report's `predictions`)."""
    return pd.DataFrame({"measured": predictions["measured"][target], "predicted": predictions["predicted"][target]},
                        index=pd.Index(predictions["runs"], name="run"))


def show_scatter(frame: pd.DataFrame, target: str, spearman: float, key: str | None = None) -> None:
    """Predicted against measured, one point per run, with the y = x line."""
    frame = frame.dropna()
    figure = px.scatter(frame, x="measured", y="predicted", hover_name=frame.index,
                        title=f"Predicted against measured: Spearman {spearman:.4f}")
    low, high = float(frame.min().min()), float(frame.max().max())
    figure.add_trace(go.Scatter(x=[low, high], y=[low, high], mode="lines", name="y = x",
                                line={"dash": "dot", "color": "grey"}))
    figure.update_layout(height=420, margin={"t": 40}, xaxis_title=f"measured {short(target)}",
                         yaxis_title=f"predicted {short(target)}", showlegend=False)
    st.plotly_chart(figure, key=key)


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


# -- an experiment's stored fit -------------------------------------------------------------------
@dataclass
class StoredFit:
    """A fit saved by `mixforge regmix fit --out` or a `mixture_experiment` (its fit/): the models with
    fit.json (every `auto` candidate's cross-validated scores and out-of-fold predictions), and
    report.json, how the fit was scored and on which runs, when the command wrote one."""

    folder: Path
    regressor: RegMixRegressor
    report: dict | None

    @classmethod
    def load(cls, folder: Path) -> StoredFit:
        report = folder / REPORT_FILE
        return cls(folder, RegMixRegressor.load(folder), json.loads(report.read_text()) if report.exists() else None)

    def chosen(self, target: str) -> str:
        return self.regressor.model_names_[self.regressor.targets_.index(target)]

    def comparison(self, target: str) -> tuple[pd.DataFrame, str] | None:
        """Every candidate's Spearman and MAE with the chosen one marked, and what scored them: `auto`'s
        cross-validation, else the report's score of the one model fitted."""
        selection = self.regressor.selection_.get(target)
        if selection:
            scores, method = pd.DataFrame(selection["scores"]).T, f"{selection['method']} cross-validation"
        elif self.report and target in self.report.get("targets", {}):
            scores, method = pd.DataFrame({self.chosen(target): self.report["targets"][target]}).T, \
                scored_by(self.report["method"])
        else:
            return None
        table = scores[["spearman", "mae"]].astype(float).rename_axis("model").reset_index()
        table.insert(1, "chosen", table["model"] == self.chosen(target))
        return table, method

    def out_of_fold(self, target: str) -> tuple[pd.DataFrame, str] | None:
        """The chosen model's predictions of runs it was not fitted on, beside what they measured."""
        selection = self.regressor.selection_.get(target)
        if selection:
            measured = self.regressor.measured_
            column = self.regressor.targets_.index(target)
            truth = dict(zip(measured["runs"], np.asarray(measured["metrics"], dtype=float)[:, column], strict=True))
            frame = pd.DataFrame({"measured": [truth[r] for r in selection["runs"]],
                                  "predicted": selection["out_of_fold"][selection["chosen"]]},
                                 index=pd.Index(selection["runs"], name="run"))
            return frame, f"{selection['method']} cross-validation"
        predictions = (self.report or {}).get("predictions")
        if predictions:
            return scored_runs(predictions, target), scored_by(self.report["method"])
        return None


def scored_by(method: str) -> str:
    """fit_report's method as words."""
    return {"test": "the test runs", "holdout": "held-out runs"}.get(method, f"{method} cross-validation")


def stored_fits(folder: Path) -> list[Path]:
    """The experiment's own fits: its sub-folders holding fit.json (fit/ of a mixture_experiment, or any
    `regmix fit --out` written inside it)."""
    return sorted(p.parent for p in folder.glob(f"*/{FIT_FILE}"))


def stored_fit_section(folder: Path, run_dir: Path) -> None:
    fits = stored_fits(folder)
    if not fits:
        return
    st.subheader("Stored fit")
    names = [str(f.relative_to(folder)) for f in fits]
    name = st.selectbox("Stored fit", names, key=f"regmix_stored_fit_{folder.name}") if len(names) > 1 else names[0]
    try:
        fit = StoredFit.load(folder / name)
    except (OSError, ValueError, KeyError) as error:  # a half-written or foreign fit.json
        st.error(f"Could not read the stored fit {name}: {' '.join(str(error).split())}")
        return
    regressor = fit.regressor
    objective = regressor.objective()
    st.caption(f"`{name}`: {regressor.model} fitted on {max(regressor.n_runs_.values()):,} runs x "
               f"{len(regressor.domains_)} domains; targets combine as a weighted mean of standardised predictions.")
    st.dataframe(pd.DataFrame({"target": objective.targets, "direction": objective.directions,
                               "weight": objective.weights, "model": [fit.chosen(t) for t in objective.targets]}),
                 hide_index=True)
    for target in objective.targets:
        st.markdown(f"**{target}**: {objective.directions[objective.targets.index(target)]}, "
                    f"model `{fit.chosen(target)}`")
        left, right = st.columns(2)
        compared = fit.comparison(target)
        with left:
            if compared is not None:
                table, method = compared
                st.caption(f"Every candidate model, scored by {method}; the chosen one is ticked.")
                st.dataframe(table, hide_index=True, column_config={
                    "spearman": st.column_config.NumberColumn(format="%.4f"),
                    "mae": st.column_config.NumberColumn(format="%.6g")})
        with right:
            scored = fit.out_of_fold(target)
            if scored is not None:
                frame, method = scored
                known = frame.dropna()
                spearman = float(known["measured"].corr(known["predicted"], method="spearman"))
                st.caption(f"{fit.chosen(target)} out of fold ({method}).")
                show_scatter(frame, target, spearman, key=f"regmix_stored_scatter_{fit.folder}_{target}")
            else:
                st.caption("This fit stored no out-of-fold predictions (fitted before report.json kept them).")
    optimum_form(fit, run_dir)


def cap_tokens(fit: StoredFit, run_dir: Path) -> tuple[pd.Series | None, str]:
    """Tokens per domain for the repetition cap, and where they come from: the experiment's record, the
    prior the fit was given, or the run's documents."""
    domains = fit.regressor.domains_
    recorded = recorded_tokens(fit.folder, run_dir, domains)
    if recorded is not None:
        return recorded, EXPERIMENT_FILE
    if fit.regressor.prior:
        return pd.Series({d: float(fit.regressor.prior[d]) for d in domains}), "the fit's token prior"
    counted = token_prior(run_dir, domains)
    return counted, "the run's documents"


def optimum_form(fit: StoredFit, run_dir: Path) -> None:
    regressor = fit.regressor
    tokens, tokens_from = cap_tokens(fit, run_dir)
    exact = all(name == "log_linear" for name in regressor.model_names_)
    tag = fit.folder.relative_to(run_dir)  # per fit: each has its own defaults
    with st.form(f"regmix_stored_optimum_{tag}"):
        st.markdown("**Optimum** of the stored fit, under the repetition cap")
        a, b, c, d = st.columns(4)
        samples = a.number_input("Candidates to rank", min_value=1_000, max_value=2_000_000, value=100_000,
                                 step=10_000, key=f"regmix_stored_samples_{tag}")
        top_k = b.number_input("Mean of the top", min_value=1, max_value=10_000, value=128,
                               key=f"regmix_stored_top_k_{tag}")
        final = c.selectbox("Final mixture", FINALS, key=f"regmix_stored_final_{tag}",
                            help="top_k_mean: RegMix's mean of the top k; best: CLIMB's single best candidate.")
        method = d.selectbox("Search", ("simulation", "exact") if exact else ("simulation",),
                             key=f"regmix_stored_method_{tag}",
                             help="exact: olmix's direct solve on the simplex (log_linear fits only).")
        planned = factor = None
        if tokens is not None:
            e, f = st.columns(2)
            planned = e.number_input("Planned training tokens (0: no cap)", min_value=0, value=int(tokens.sum()),
                                     step=1_000_000, key=f"regmix_stored_planned_{tag}",
                                     help=f"Tokens per domain from {tokens_from}; default: the corpus once.")
            factor = f.number_input("Repetition factor (epochs)", min_value=0.1, value=REPETITION_FACTOR,
                                    key=f"regmix_stored_factor_{tag}")
        else:
            st.caption("No tokens per domain known for these domains: the optimum is uncapped.")
        submitted = st.form_submit_button("Find the optimum")
    key = (str(fit.folder), (fit.folder / FIT_FILE).stat().st_mtime_ns)
    if submitted:
        try:
            cap = RepetitionCap(tokens.to_dict(), float(planned), float(factor)) if planned else None
            upper = cap.upper(regressor.domains_) if cap else None
            settings = {"final": final, "method": method}
            with st.spinner("Ranking candidate mixtures..."):
                best = regressor.optimum(int(samples), int(top_k), upper=upper, **settings)
                # the same search without the cap: where it would go past a domain's cap, the cap binds
                uncapped = regressor.optimum(int(samples), int(top_k), **settings) if cap else None
        except ValueError as error:
            st.error(f"Could not find the optimum: {' '.join(str(error).split())}")
            return
        st.session_state["regmix_stored_optimum"] = {
            "key": key, "best": best, "comparison": regressor.compare(best), "cap": cap, "tokens_from": tokens_from,
            "uncapped": None if uncapped is None else regressor.compare(uncapped)["optimum"]}
    shown = st.session_state.get("regmix_stored_optimum")
    if shown is not None and shown["key"] == key:
        show_optimum(regressor, shown)


def show_optimum(regressor: RegMixRegressor, shown: dict) -> None:
    """The optimum's predicted objective and targets beside the prior's, the best run's and (under a cap) the
    uncapped optimum's; the weights with each domain's cap and whether it binds."""
    comparison, cap, uncapped = shown["comparison"], shown["cap"], shown["uncapped"]
    entries = {"optimum": comparison["optimum"], "prior": comparison["prior"], "best run": comparison["best_run"]}
    if uncapped is not None:
        entries["uncapped optimum"] = uncapped
    rows = ["objective", *comparison["targets"]]
    values = pd.DataFrame({name: [entry["objective"], *entry["predicted"].values()] for name, entry in entries.items()},
                          index=pd.Index(rows, name="predicted"))
    best_run = comparison["best_run"]
    values["best run, measured"] = [best_run["measured_objective"], *best_run["measured"].values()]
    st.caption(f"Predicted values (objective: lower is better). Prior: "
               f"{'token shares' if regressor.prior else 'the mean of the runs'}; best run: `{best_run['run']}`, "
               "the measured run with the best objective.")
    st.dataframe(values, column_config={c: st.column_config.NumberColumn(format="%.6g") for c in values.columns})
    weights = pd.DataFrame({name: entry["weights"] for name, entry in entries.items()}).rename_axis("domain")
    weights["optimum"] = shown["best"].reindex(weights.index)
    if cap is not None:
        upper = pd.Series(cap.upper(regressor.domains_), index=regressor.domains_)
        weights.insert(0, "tokens", pd.Series(cap.tokens).reindex(weights.index).astype(float))
        weights.insert(1, "max weight", upper)
        weights["binds"] = weights["uncapped optimum"] > upper + 1e-9
        binding = list(weights.index[weights["binds"]])
        st.markdown(f"Repetition cap: {cap.planned_tokens:,.0f} planned tokens, at most {cap.repetition_factor:g} "
                    f"epochs of each domain (tokens from {shown['tokens_from']}): "
                    + (f"**binds** on {', '.join(binding)} (the uncapped optimum would give them more)."
                       if binding else "does not bind."))
    else:
        st.markdown("No repetition cap.")
    st.dataframe(weights.sort_values("optimum", ascending=False), column_config={
        c: st.column_config.NumberColumn(format="%.4f")
        for c in ("max weight", "optimum", "prior", "best run", "uncapped optimum")})


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
