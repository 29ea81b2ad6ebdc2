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
    prior_from_tokenizer: str = typer.Option(None, "--prior-from-tokenizer", help="Centre the draws on the domains' "
                                             "shares inferred from this BPE tokenizer (see infer-mixture) instead "
                                             "of token shares ** temperature."),
) -> None:
    """Sample mixtures as RegMix does, around the domains' token shares in the run's shards."""
    from dataclasses import replace

    from mixtures.domains import CorpusDomains, DomainError
    from mixtures.io import write_mixtures
    from mixtures.sampler import MixtureSampler

    try:
        counts = CorpusDomains(domains_from, by, stage=stage).token_counts()
        sampler = MixtureSampler.from_token_counts(counts.tokens.to_dict(), temperature=temperature,
                                                   max_usage=max_usage, min_weight=min_weight, seed=seed)
        if prior_from_tokenizer is not None:
            from mixtures.tokenizer_attack import infer_mixture
            from mixtures.tokenizer_attack.samples import sample_run

            inferred = infer_mixture(prior_from_tokenizer, sample_run(domains_from, by, stage=stage)).proportions
            shares = json.dumps({d: round(w, 4) for d, w in inferred.items()})
            typer.echo(f"prior from {prior_from_tokenizer}: {shares}", err=True)
            # a domain the tokenizer shows none of keeps the smallest weight, so that draws can still give it some
            sampler = replace(sampler, centre=[max(inferred[d], min_weight) for d in sampler.domains])
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
    target: list[str] = typer.Option(..., "--target", help="Metric to predict; repeat for several. name:max "
                                                             "maximises it, name:min:2 gives it weight 2."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the models, fit.json and report.json."),
    runs: Path = typer.Option(None, "--runs", help="A folder with ratios.csv + metrics.csv (ours or olmix's swarm) "
                                                  "or a Data Mixing Laws <size>.txt table."),
    mixtures: Path = typer.Option(None, "--mixtures", help="ratios.csv (ours, olmix's, RegMix's train_mixture_*)."),
    metrics: Path = typer.Option(None, "--metrics", help="metrics.csv (ours, olmix's, RegMix's train_*_loss_*)."),
    model: str = typer.Option("lightgbm", help="lightgbm (RegMix), lightgbm_climb (CLIMB), linear, log_linear "
                                               "(Data Mixing Laws), gp, or auto: the best by cross-validation."),
    test_mixtures: Path = typer.Option(None, help="Held-out runs to score on (else a hold-out split or k-fold)."),
    test_metrics: Path = typer.Option(None, help="Metrics of the held-out runs."),
    num_threads: int = typer.Option(2, help="LightGBM prediction threads."),
) -> None:
    """Fit one regression per target; print and save how well it predicts runs it did not see."""
    from mixtures.io import MixtureFileError, join_runs, read_metrics, read_mixtures, read_runs
    from mixtures.objective import Objective
    from mixtures.regression import RegMixRegressor

    try:
        if (runs is None) == (mixtures is None) or (mixtures is None) != (metrics is None):
            raise MixtureFileError("give --runs, or --mixtures with --metrics")
        X, Y = read_runs(runs) if runs is not None else read_runs(mixtures, metrics)
        names, directions, weights = Objective.parse(target)
        missing = [t for t in names if t not in Y.columns]
        if missing:
            raise MixtureFileError(f"{runs or metrics}: no metric {', '.join(missing)}; "
                                   f"metrics: {', '.join(Y.columns)}")
        held = {}
        if (test_mixtures is None) != (test_metrics is None):
            raise MixtureFileError("--test-mixtures and --test-metrics go together")
        if test_mixtures is not None:
            X_test, Y_test = join_runs(read_mixtures(test_mixtures), read_metrics(test_metrics),
                                       mixtures_name=str(test_mixtures), metrics_name=str(test_metrics))
            held = {"X_test": X_test, "Y_test": Y_test[names]}
        regressor = RegMixRegressor(model, num_threads=num_threads, directions=directions, weights=weights)
        report = regressor.fit_report(X, Y[names], **held)
    except ValueError as error:
        fail(str(error))
    regressor.save(out)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    for name, selection in report["selection"].items():
        typer.echo(f"{name}: {selection['method']} cross-validation of every model:")
        for candidate, score in selection["scores"].items():
            typer.echo(f"  {candidate:15s} spearman {score['spearman']:.4f}  mae {score['mae']:.6g}")
        typer.echo(f"  chosen: {selection['chosen']}")
    typer.echo(f"{model} fit on {len(X)} runs x {X.shape[1]} domains; scored by {report['method']}:")
    for name, score in report["targets"].items():
        typer.echo(f"  {name} ({score['model']}, {regressor.objective(name).directions[0]}): spearman "
                   f"{score['spearman']:.4f}  pearson {score['pearson']:.4f}  mae {score['mae']:.6g}  "
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
    final: str = typer.Option("top_k_mean", help="top_k_mean (RegMix) or best (CLIMB: the single best candidate)."),
    method: str = typer.Option("simulation", help="simulation, or exact (log_linear fits: a direct solve on the "
                                                  "simplex with a KL penalty to the prior, as olmix)."),
    kl: float = typer.Option(0.1, help="KL penalty of the exact solve, in units of the standardised objective."),
    target: str = typer.Option(None, help="Optimise this target (default: every target's weighted objective)."),
    domains_from: Path = typer.Option(None, "--domains-from", help="Run whose shards give tokens per domain "
                                                                   "(with --by) for the repetition cap."),
    by: str = typer.Option(None, "--by", help="Domain column of --domains-from."),
    tokens: Path = typer.Option(None, "--tokens", help="JSON {domain: tokens} for the repetition cap instead."),
    planned_tokens: float = typer.Option(None, "--planned-tokens", help="Tokens the final model trains on: "
                                                                        "turns the repetition cap on."),
    repetition_factor: float = typer.Option(4.0, help="At most this many epochs of any domain (olmix's cap)."),
    seed: int = typer.Option(0, help="Random seed of the candidates."),
    out: Path = typer.Option(None, "--out", "-o", help="Also write the mixture to this .yaml or .json file."),
) -> None:
    """Print the best mixture as JSON, beside the prior's and the best measured run's predicted values."""
    from mixtures.io import export_mixture
    from mixtures.objective import RepetitionCap
    from mixtures.regression import RegMixRegressor

    try:
        regressor = RegMixRegressor.load(fit_dir)
        cap = upper = None
        if planned_tokens is not None:
            if tokens is not None:
                counts = json.loads(tokens.read_text())
                cap = RepetitionCap({str(k): float(v) for k, v in counts.items()}, planned_tokens, repetition_factor)
            elif domains_from is not None and by is not None:
                cap = RepetitionCap.from_run(str(domains_from), by, planned_tokens, repetition_factor=repetition_factor)
            else:
                raise ValueError("--planned-tokens needs the tokens per domain: --tokens FILE, or --domains-from "
                                 "RUN with --by COLUMN")
            upper = cap.upper(regressor.domains_)
        best = regressor.optimum(samples, top_k, seed=seed, target=target, upper=upper, final=final, method=method,
                                 kl=kl)
    except (ValueError, FileNotFoundError, OSError) as error:
        fail(" ".join(str(error).split()))
    comparison = regressor.compare(best, target)
    context = {"predicted": comparison["optimum"]["predicted"], "objective": comparison["optimum"]["objective"],
               "targets": comparison["targets"], "directions": comparison["directions"], "n_samples": samples,
               "top_k": top_k, "final": final, "method": method,
               "constraint": cap.describe(regressor.domains_) if cap else None, "comparison": comparison}
    typer.echo(json.dumps({"weights": {d: round(float(w), 6) for d, w in best.items()}, **context}, indent=2))
    if out is not None:
        export_mixture(best.to_dict(), out, **context)


@regmix_app.command("run")
def run(
    config: Path = typer.Argument(..., help="Experiment YAML: the keys of mixtures/config.py ExperimentConfig "
                                            "(also the pipeline's `mixture:` section)."),
    ray_address: RayAddress = None,
) -> None:
    """Run a whole experiment: target sets, proxy rounds on Ray, fit, best mixture, exports."""
    from flows.config import ConfigError, load_config
    from flows.engine import init_ray
    from mixtures.config import ExperimentConfig
    from mixtures.experiment import MixtureExperiment

    try:
        settings = load_config(config, model=ExperimentConfig)
        experiment = MixtureExperiment(settings)
    except (ConfigError, ValueError) as error:
        fail(str(error))
    init_ray(ray_address)
    summary = experiment.run()
    typer.echo(json.dumps({"best": summary["best"], "predicted": summary["predicted"],
                           "report": summary["report"]["targets"]}, indent=2))
    typer.echo(f"experiment written to {settings.out} (best_mixture.yaml, ratios.csv, metrics.csv, fit/)")
