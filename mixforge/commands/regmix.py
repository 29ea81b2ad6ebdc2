"""`mixforge regmix ...`: sample mixtures, fit mixture -> loss regressions, predict, find the best mixture,
or run a whole experiment from a YAML config."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from mixforge.options import RayAddress, fail

regmix_app = typer.Typer(help="Data-mixture experiments (RegMix, CLIMB): sample, fit, predict, optimum, run.",
                         no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(regmix_app, name="regmix")



@regmix_app.command("sample")
def sample(
    domains_from: Path = typer.Option(..., "--domains-from", help="Run directory whose shards define the domains."),
    by: str = typer.Option(..., "--by", help="Domain column (domain, cluster, super_cluster, source, lang) "
                                             "or a metadata JSON field as metadata.<field>."),
    n: int = typer.Option(..., "-n", "--n", min=1, help="Number of mixtures."),
    out: Path = typer.Option(..., "--out", "-o", help="ratios.csv to write (`run`, then one column per domain)."),
    stage: str = typer.Option(None, help="Stage whose documents count (default: the run's final stage)."),
    seed: int = typer.Option(0, help="Random seed: the same seed gives the same mixtures."),
    temperature: float = typer.Option(0.5, help="Prior = token shares ** temperature (RegMix: 0.5)."),
    max_usage: float = typer.Option(15.0, help="Reject mixtures giving a domain more than this x its share."),
    min_weight: float = typer.Option(2e-4, help="Weights below this become 0."),
) -> None:
    """Sample mixtures as RegMix does, around the domains' token shares in the run's shards."""
    from mixtures.domains import CorpusDomains, DomainError
    from mixtures.io import write_mixtures
    from mixtures.sampler import MixtureSampler

    try:
        counts = CorpusDomains(domains_from, by, stage=stage).token_counts()
        sampler = MixtureSampler.from_token_counts(counts.tokens.to_dict(), temperature=temperature,
                                                   max_usage=max_usage, min_weight=min_weight, seed=seed)
        mixtures = sampler.sample(n)
    except (DomainError, ValueError) as error:
        fail(str(error))
    table = counts.table()
    typer.echo(f"{len(table)} domains by {by} (tokens: {counts.token_source}):", err=True)
    typer.echo(table.to_string(float_format=lambda v: f"{v:.4f}"), err=True)
    write_mixtures(mixtures, out)
    typer.echo(f"wrote {len(mixtures)} mixtures to {out}")


@regmix_app.command("fit")
def fit(
    mixtures: Path = typer.Option(..., "--mixtures", help="ratios.csv (ours, or RegMix's train_mixture_*.csv)."),
    metrics: Path = typer.Option(..., "--metrics", help="metrics.csv (ours, or RegMix's train_*_loss_*.csv)."),
    target: list[str] = typer.Option(..., "--target", help="Metric column to predict; repeat for several."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the models, fit.json and report.json."),
    model: str = typer.Option("lightgbm", help="lightgbm (RegMix) or linear."),
    test_mixtures: Path = typer.Option(None, help="Held-out runs to score on (else a hold-out split or k-fold)."),
    test_metrics: Path = typer.Option(None, help="Metrics of the held-out runs."),
    num_threads: int = typer.Option(2, help="LightGBM threads."),
) -> None:
    """Fit one regression per target; print and save how well it predicts runs it did not see."""
    from mixtures.io import MixtureFileError, join_runs, read_metrics, read_mixtures
    from mixtures.regression import RegMixRegressor

    try:
        X, Y = join_runs(read_mixtures(mixtures), read_metrics(metrics), mixtures_name=str(mixtures),
                         metrics_name=str(metrics))
        missing = [t for t in target if t not in Y.columns]
        if missing:
            raise MixtureFileError(f"{metrics}: no metric {', '.join(missing)}; metrics: {', '.join(Y.columns)}")
        held = {}
        if (test_mixtures is None) != (test_metrics is None):
            raise MixtureFileError("--test-mixtures and --test-metrics go together")
        if test_mixtures is not None:
            X_test, Y_test = join_runs(read_mixtures(test_mixtures), read_metrics(test_metrics),
                                       mixtures_name=str(test_mixtures), metrics_name=str(test_metrics))
            held = {"X_test": X_test, "Y_test": Y_test[target]}
        regressor = RegMixRegressor(model, num_threads=num_threads)
        report = regressor.fit_report(X, Y[target], **held)
    except ValueError as error:
        fail(str(error))
    regressor.save(out)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    typer.echo(f"{model} fit on {len(X)} runs x {X.shape[1]} domains; scored by {report['method']}:")
    for name, score in report["targets"].items():
        typer.echo(f"  {name}: spearman {score['spearman']:.4f}  pearson {score['pearson']:.4f}  "
                   f"mse {score['mse']:.6g}  ({score['n_runs']} runs)")
    typer.echo(f"saved to {out}")


@regmix_app.command("predict")
def predict(
    fit_dir: Path = typer.Option(..., "--fit", help="Folder written by `mixforge regmix fit`."),
    mixtures: Path = typer.Option(..., "--mixtures", help="Mixtures CSV to predict."),
    target: str = typer.Option(None, help="Predict this target (default: the only one, or the mean of all)."),
) -> None:
    """Print CSV: the input's first column, then `prediction` (predicted loss)."""
    import pandas as pd

    from mixtures.io import read_mixtures
    from mixtures.regression import RegMixRegressor

    try:
        regressor = RegMixRegressor.load(fit_dir)
        X = read_mixtures(mixtures)
        predicted = regressor.predict_frame(X)
        if target is not None and target not in predicted.columns:
            raise ValueError(f"unknown target '{target}'; fitted targets: {', '.join(predicted.columns)}")
    except (ValueError, FileNotFoundError) as error:
        fail(str(error))
    first = pd.read_csv(mixtures, nrows=0).columns[0]
    values = predicted[target] if target else predicted.mean(axis=1)
    pd.DataFrame({first: X.index, "prediction": values.to_numpy()}).to_csv(sys.stdout, index=False,
                                                                           float_format="%.6f")


@regmix_app.command("optimum")
def optimum(
    fit_dir: Path = typer.Option(..., "--fit", help="Folder written by `mixforge regmix fit`."),
    samples: int = typer.Option(1_000_000, "--samples", min=1, help="Candidate mixtures to rank (RegMix: 1M)."),
    top_k: int = typer.Option(128, "--top-k", min=1, help="Average of this many best-predicted candidates."),
    target: str = typer.Option(None, help="Optimise this target (default: the only one, or the mean of all)."),
    seed: int = typer.Option(0, help="Random seed of the candidates."),
    out: Path = typer.Option(None, "--out", "-o", help="Also write the mixture to this .yaml or .json file."),
) -> None:
    """Print the best mixture as JSON: the mean of the top-k predicted of many sampled mixtures."""
    from mixtures.io import export_mixture
    from mixtures.regression import RegMixRegressor

    try:
        regressor = RegMixRegressor.load(fit_dir)
        best = regressor.optimum(samples, top_k, seed=seed, target=target)
    except (ValueError, FileNotFoundError) as error:
        fail(str(error))
    predicted = regressor.predict_frame(best.to_frame().T)
    score = float(predicted[target].iloc[0] if target else predicted.iloc[0].mean())
    context = {"predicted": round(score, 6), "target": target or regressor.targets_, "n_samples": samples,
               "top_k": top_k}
    typer.echo(json.dumps({"weights": {d: round(float(w), 6) for d, w in best.items()}, **context}, indent=2))
    if out is not None:
        export_mixture(best.to_dict(), out, **context)


@regmix_app.command("run")
def run(
    config: Path = typer.Argument(..., help="Experiment YAML (see mixtures/config.py)."),
    ray_address: RayAddress = None,
) -> None:
    """Run a whole experiment: target sets, proxy rounds on Ray, fit, best mixture, exports."""
    from flows.engine import init_ray
    from mixtures.config import ConfigError, load_config
    from mixtures.experiment import MixtureExperiment

    try:
        settings = load_config(config)
        experiment = MixtureExperiment(settings)
    except (ConfigError, ValueError) as error:
        fail(str(error))
    init_ray(ray_address)
    summary = experiment.run()
    typer.echo(json.dumps({"best": summary["best"], "predicted": summary["predicted"],
                           "report": summary["report"]["targets"]}, indent=2))
    typer.echo(f"experiment written to {settings.out} (best_mixture.yaml, ratios.csv, metrics.csv, fit/)")
