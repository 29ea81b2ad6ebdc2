"""The `verify` flow: Ultra-FineWeb's cheap data verification (mixtures/verify.py) on a curated run.

Tasks: check the inputs and build the target sets, train the base proxy once (a Ray task; skipped with a
checkpoint, or when a base with the same settings exists), anneal the base on each candidate's blend and on
base data alone for every seed (Ray tasks, each resumable), then the tables and a Prefect table artifact
ranking the candidates. The one parameter besides where to run is the YAML config's path.
"""

from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from flows.config import load_config
from flows.engine import init_ray
from mixtures import verify as verification
from mixtures.verify import VerifyConfig

ARTIFACT_COLUMNS = ("rank", "candidate", "score", "spread", "worst_seed", "best_seed", "verdict", "n_seeds")


def load_verify_config(path: str | Path, out: str | Path | None = None) -> VerifyConfig:
    """The config at `path` (flows.config.ConfigError: one line per problem, with its line in the file)."""
    config = load_config(path, model=VerifyConfig)
    return config.model_copy(update={"out": Path(out)}) if out else config


@task(name="check inputs and build targets", cache_policy=NO_CACHE)
def prepare(config: VerifyConfig) -> dict:
    counts = verification.check_inputs(config)
    return {"documents": counts, "target_tokens": verification.prepare_targets(config)}


@task(name="train base proxy", cache_policy=NO_CACHE)
def base(config: VerifyConfig) -> dict | None:
    import ray

    if config.base.checkpoint is not None:
        return None
    train = ray.remote(num_cpus=1, num_gpus=verification._gpus(config.base.proxy.num_gpus))(verification.train_base)
    return ray.get(train.remote(config.model_dump_json(exclude_unset=True)))


@task(name="anneal candidates", cache_policy=NO_CACHE)
def anneals(config: VerifyConfig) -> list[dict]:
    return verification.run_anneals(config)


@task(name="write verdicts", cache_policy=NO_CACHE)
def verdicts(config: VerifyConfig, records: list[dict], trained: dict | None) -> dict:
    return verification.write_tables(config, records, trained)


@flow(name="verify", log_prints=True)
def verify(config: str, out: str | None = None, ray_address: str | None = None) -> dict:
    """Verify candidate data by annealing a base proxy on it (Ultra-FineWeb) and rank the candidates.

    Args:
        config: the verification's YAML file (mixtures/verify.py: VerifyConfig).
        out: output folder instead of the config's.
        ray_address: Ray cluster for the base and the anneals (default: RAY_ADDRESS, else a local Ray).
    """
    settings = load_verify_config(config, out)
    prepared = prepare(settings)
    print(f"targets {prepared['target_tokens']}; {len(settings.candidates)} candidates x "
          f"{len(settings.anneal.seeds)} seeds; out {settings.folder}")
    init_ray(ray_address)
    trained = base(settings)
    record = verdicts(settings, anneals(settings), trained)
    rows = [{k: round(v, 5) if isinstance(v, float) else v for k, v in row.items() if k in ARTIFACT_COLUMNS}
            for row in record["summary"]]
    create_table_artifact(key="verification", table=rows,
                          description=f"Candidates by the change of target loss against the base-only anneal "
                                      f"(nats/token, positive = better), {settings.folder}")
    return record
