"""The `mixture_experiment` flow: RegMix (one round) or CLIMB (several) on a curated run, proxies on Ray.

Each task is a step of mixtures.experiment.MixtureExperiment: prepare the target sets and the proxy
vocabulary, one task per round (propose, train the proxies, refit the predictor), then export the fit
and the best mixture. The parameter is the experiment's config model itself: Prefect validates it, and the
deployment's parameter schema, so the dashboard's launch form, is mixtures/config.py's, defaults included.
"""

# No `from __future__ import annotations`: `flow.serve` runs each flow run in a process that gets the flow
# function cloudpickled by value, without the module globals that string annotations resolve in.
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.engine import init_ray
from mixtures.config import ExperimentConfig
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


@flow(name="mixture_experiment", log_prints=True)
def mixture_experiment(config: ExperimentConfig, ray_address: str | None = None) -> dict:
    """Find the mixture of the run's domains that minimises the loss on the target domains.

    Args:
        config: the experiment (mixtures/config.py: its fields and their defaults).
        ray_address: Ray cluster for the proxies (default: RAY_ADDRESS, else a local Ray).
    """
    experiment = MixtureExperiment(config)
    print(f"{len(experiment.domain_tokens.tokens)} domains by {config.corpus.by}; "
          f"targets {', '.join(config.targets)}; out {config.out}")
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
