"""The `pipeline` flow: curate, cluster, train scorers, score, select and a mixture experiment, from one config.

The sections after curation are optional: a stage runs when its section is in the config. `scorers:`
trains scorers from the run itself (flows/scorers.py), and `score` applies them (with any listed in
`score:`); `mixture_targets` names the experiment's targets with SQL over the run once it is scored and
selected (e.g. the super-cluster the quality classifier rates best), since the domains CLIMB finds are
not known before it runs. Each stage is itself resumable (completion records per unit, trained scorers
kept while their inputs and settings are unchanged), so rerunning a killed pipeline into the same
directory skips what finished, stage by stage.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from pydantic import Field, field_validator, model_validator

from flows.cluster import ClusterConfig, EmbedConfig, cluster
from flows.config import RunConfig, load_config
from flows.curate import curate, scheduled_path
from flows.mixture_experiment import mixture_experiment
from flows.score import ScoreConfig, SelectConfig, score, select
from flows.scorers import ScorersConfig, train_scorers
from mixtures.config import CorpusConfig, ExperimentConfig
from storage.manifest import describe, load_manifest, save_manifest


class RunCorpus(CorpusConfig):
    """The corpus of the pipeline's experiment: the pipeline's own run, so no `run_dir`."""

    run_dir: Path | None = Field(None, description="(the pipeline's run)")

    @field_validator("run_dir")
    @classmethod
    def _the_run(cls, run_dir: Path | None) -> None:
        raise ValueError("the corpus is the pipeline's own run (--out): remove run_dir")


class MixtureSection(ExperimentConfig):
    """The `mixture:` section: a mixture experiment (mixtures/config.py, the same keys and defaults as
    `mixforge regmix run`) on the pipeline's output, whose targets may come from `mixture_targets`."""

    corpus: RunCorpus
    targets: list[str] = Field(default_factory=list, description="domains whose held-out documents are the target "
                                                                 "sets (or the pipeline's `mixture_targets`)")

    def for_run(self, run_dir: Path, targets: list[str]) -> ExperimentConfig:
        """The experiment this section describes on the run at `run_dir`, for these targets."""
        data = self.model_dump()
        data["corpus"]["run_dir"] = run_dir
        return ExperimentConfig.model_validate({**data, "targets": targets})


class PipelineConfig(RunConfig):
    """The whole pipeline: the curation sections of RunConfig, then the optional stages after it."""

    embed: EmbedConfig = Field(default_factory=EmbedConfig)
    cluster: ClusterConfig | None = None
    scorers: ScorersConfig | None = None
    score: ScoreConfig | None = None
    select: SelectConfig | None = None
    mixture: MixtureSection | None = None
    mixture_targets: str | None = Field(None, description="read-only SQL over the run, run before the mixture "
                                                          "experiment: its first column lists the target domains")

    @model_validator(mode="after")
    def _mixture_has_targets(self) -> PipelineConfig:
        if self.mixture is not None and not self.mixture.targets and not self.mixture_targets:
            raise ValueError("mixture: give targets, or mixture_targets (SQL naming them)")
        return self

    def curation(self) -> RunConfig:
        return RunConfig.model_validate(self.model_dump(include=set(RunConfig.model_fields)))


@flow(name="pipeline", log_prints=True)
def pipeline(config: PipelineConfig | str, out: str, ray_address: str | None = None, progress: bool = True) -> dict:
    """Curate the inputs, then cluster, score, select and run a mixture experiment as the config says."""
    config = config if isinstance(config, PipelineConfig) else load_config(config, PipelineConfig)
    out = scheduled_path(out)
    address = ray_address or config.ray.address
    results = {"curate": curate(config=config.curation(), out=out, ray_address=address, progress=progress)}
    if config.cluster is not None:
        results["cluster"] = cluster(out=out, config=config.cluster, embed=config.embed, ray_address=address,
                                     progress=progress)
    scoring = config.score
    if config.scorers is not None:
        results["scorers"] = train_scorers(out=out, config=config.scorers, stage=scoring and scoring.input_stage)
        scoring = config.scorers.score_config(Path(out), scoring)
    if scoring is not None:
        results["score"] = score(out=out, config=scoring, ray_address=address, progress=progress)
    if config.select is not None:
        results["select"] = select(out=out, config=config.select, ray_address=address, progress=progress)
    if config.mixture is not None:
        targets = mixture_targets(out, config.mixture_targets) if config.mixture_targets else config.mixture.targets
        experiment = config.mixture.for_run(Path(out).resolve(), targets)
        results["mixture"] = mixture_experiment(config=experiment, ray_address=address)
    manifest = load_manifest(out)
    manifest.command = "pipeline"
    manifest.config["pipeline"] = config.model_dump(mode="json", exclude_none=True)
    if "mixture" in results:  # what the experiment found, for `mixforge manifest` and the dashboard
        manifest.config["mixture"] = {"targets": targets, "best": results["mixture"]["best"],
                                      "predicted": results["mixture"]["predicted"]}
    save_manifest(manifest, out)
    print(describe(manifest))
    return results


def mixture_targets(out: str, sql: str) -> list[str]:
    """The target domains `sql` names (its first column, as text) in the run as it stands."""
    from storage.catalog import open_catalog, query

    targets = [str(v) for v in query(open_catalog(out), sql).column(0).to_pylist() if v is not None]
    if not targets:
        raise ValueError(f"mixture_targets named no domain: {sql}")
    return targets
