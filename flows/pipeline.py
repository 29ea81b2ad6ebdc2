"""The `pipeline` flow: curate, cluster, score, select and a mixture experiment, from one config.

The sections after curation are optional: a stage runs when its section is in the config. Each stage
is itself a resumable flow (completion records per unit), so rerunning a killed pipeline into the same
directory skips what finished, stage by stage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from prefect import flow
from pydantic import BaseModel, ConfigDict, Field

from flows.cluster import ClusterConfig, EmbedConfig, cluster
from flows.config import RunConfig, load_config
from flows.curate import curate, scheduled_path
from flows.mixture_experiment import mixture_experiment
from flows.score import ScoreConfig, SelectConfig, score, select
from storage.manifest import describe, load_manifest, save_manifest


class MixtureSection(BaseModel):
    """A mixture experiment on the pipeline's output (`mixture:` section; see flows/mixture_experiment.py)."""

    model_config = ConfigDict(extra="forbid")

    by: str = Field(description="domain column: super_cluster, cluster, domain, source, lang or metadata.<field>")
    targets: list[str] = Field(min_length=1, description="domains whose held-out documents are the target sets")
    method: Literal["regmix", "climb"] = "regmix"
    rounds: list[int] = Field(default_factory=lambda: [16], description="proxies per round (regmix: one round)")
    budget_tokens: int = Field(100_000, gt=0, description="training tokens per proxy")
    model: Literal["lightgbm", "linear"] = "lightgbm"
    n_samples: int = Field(100_000, gt=0, description="candidate mixtures the predictor ranks")
    top_k: int = Field(128, gt=0, description="the best mixture averages this many best candidates")
    seed: int = 0
    proxy: dict | None = Field(None, description="proxy settings to override (d_model, n_layers, seq_len, ...)")


class PipelineConfig(RunConfig):
    """The whole pipeline: the curation sections of RunConfig, then the optional stages after it."""

    embed: EmbedConfig = Field(default_factory=EmbedConfig)
    cluster: ClusterConfig | None = None
    score: ScoreConfig | None = None
    select: SelectConfig | None = None
    mixture: MixtureSection | None = None

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
    if config.score is not None:
        results["score"] = score(out=out, config=config.score, ray_address=address, progress=progress)
    if config.select is not None:
        results["select"] = select(out=out, config=config.select, ray_address=address, progress=progress)
    if config.mixture is not None:
        results["mixture"] = mixture_experiment(run_dir=str(Path(out).resolve()), ray_address=address,
                                                **config.mixture.model_dump())
    manifest = load_manifest(out)
    manifest.command = "pipeline"
    manifest.config["pipeline"] = config.model_dump(mode="json", exclude_none=True)
    save_manifest(manifest, out)
    print(describe(manifest))
    return results
