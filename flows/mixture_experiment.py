"""The `mixture_experiment` flow: RegMix (one round) or CLIMB (several) on a curated run, proxies on Ray.

Each task is a step of mixtures.experiment.MixtureExperiment: prepare the target sets and the proxy
vocabulary, one task per round (propose, train the proxies, refit the predictor), then export the fit
and the best mixture. The parameters are plain types so the dashboard can launch it through the
Prefect API; everything else takes the defaults of mixtures/config.py.
"""

# No `from __future__ import annotations`: `flow.serve` runs each flow run in a process that gets the flow
# function cloudpickled by value, without the module globals that string annotations (Literal) resolve in.
from pathlib import Path
from typing import Literal

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.engine import init_ray
from mixtures.config import ExperimentConfig, parse_config
from mixtures.experiment import MixtureExperiment
from mixtures.search import IterativeSearch


@task(name="prepare targets and vocabulary", cache_policy=NO_CACHE)
def prepare(experiment: MixtureExperiment) -> dict:
    return experiment.prepare()


@task(name="proxy round", cache_policy=NO_CACHE)
def proxy_round(search: IterativeSearch, index: int) -> int:
    return len(search.run_round(index))


@task(name="export best mixture", cache_policy=NO_CACHE)
def export(experiment: MixtureExperiment, search: IterativeSearch) -> dict:
    return experiment.export(search.run())


def experiment_config(run_dir: str, by: str, targets: list[str], out: str | None, method: str, rounds: list[int],
                      budget_tokens: int, **sections: dict) -> ExperimentConfig:
    """The flow's parameters as the experiment config (validation errors name the key)."""
    out = out or str(Path(run_dir) / "mixtures" / f"{method}-{'-'.join(targets)}")
    data = {"out": out, "corpus": {"run_dir": run_dir, "by": by}, "targets": targets, "method": method,
            "rounds": rounds, "materialize": {"budget_tokens": budget_tokens}}
    for key, section in sections.items():
        if isinstance(section, dict):
            data[key] = {**data.get(key, {}), **section}
        elif section is not None:
            data[key] = section
    return parse_config(data, source="mixture_experiment")


@flow(name="mixture_experiment", log_prints=True)
def mixture_experiment(
    run_dir: str,
    by: str,
    targets: list[str],
    out: str | None = None,
    method: Literal["regmix", "climb"] = "regmix",
    rounds: list[int] = [16],  # noqa: B006 - Prefect shows the default in the launch form
    budget_tokens: int = 100_000,
    model: Literal["lightgbm", "linear"] = "lightgbm",
    n_samples: int = 100_000,
    top_k: int = 128,
    seed: int = 0,
    trainer_command: str | None = None,
    proxy: dict | None = None,
    export_budget_tokens: int | None = None,
    ray_address: str | None = None,
) -> dict:
    """Find the mixture of `run_dir`'s domains (column `by`) that minimises the loss on the `targets` domains.

    Args:
        run_dir: curated run whose shards hold the documents.
        by: domain column (domain, cluster, super_cluster, source, lang) or metadata.<field>.
        targets: domains whose held-out documents are the target sets.
        out: experiment folder (default: <run_dir>/mixtures/<method>-<targets>).
        method: regmix (one round sampled from the prior) or climb (rounds proposed by the predictor).
        rounds: proxies per round (regmix: exactly one round).
        budget_tokens: training tokens per proxy.
        model: the predictor, lightgbm or linear (linear suits a dozen runs).
        n_samples: candidate mixtures the predictor ranks.
        top_k: the best mixture is the mean of this many best-predicted candidates.
        seed: seed of the sampled mixtures.
        trainer_command: external trainer with {ratios} and {out} placeholders, instead of the built-in proxies.
        proxy: proxy settings to override (d_model, n_layers, seq_len, batch_size, ...).
        export_budget_tokens: also materialize the best mixture at this many tokens.
        ray_address: Ray cluster for the proxies (default: RAY_ADDRESS, else a local Ray).
    """
    config = experiment_config(
        run_dir, by, targets, out, method, rounds, budget_tokens, trainer_command=trainer_command,
        regression={"model": model, "n_samples": n_samples, "top_k": top_k}, sampler={"seed": seed},
        proxy=proxy, export={"budget_tokens": export_budget_tokens})
    experiment = MixtureExperiment(config)
    print(f"{len(experiment.domain_tokens.tokens)} domains by {by}; targets {', '.join(targets)}; out {config.out}")
    prepare(experiment)
    if not config.trainer_command:
        init_ray(ray_address)
    search = experiment.search()
    for index in range(len(config.rounds)):
        print(f"round {index + 1}/{len(config.rounds)}: {proxy_round(search, index)} proxies")
    summary = export(experiment, search)
    rows = "\n".join(f"| {d} | {w:.4f} |" for d, w in sorted(summary["best"].items(), key=lambda kv: -kv[1]))
    create_markdown_artifact(key="best-mixture", description="best mixture found",
                             markdown=f"## Best mixture ({config.out})\n\n| domain | weight |\n|---|---|\n{rows}\n\n"
                                      f"Predicted: {summary['predicted']}")
    return summary
