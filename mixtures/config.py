"""The one config model of a mixture experiment, and the only place its defaults live.

`mixforge regmix run CONFIG.yaml` reads it from a file, the `mixture_experiment` flow takes it as its
parameter (so the dashboard's launch form is this model's schema) and the pipeline's `mixture:` section is
it, less what the run fills in. Files are read by flows.config.load_config: unknown keys are errors, each
with its line and the keys allowed there, so a typo never silently falls back to a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mixtures.sampler import MAX_USAGE, MIN_WEIGHT, TEMPERATURE


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CorpusConfig(Section):
    run_dir: Path = Field(description="curated run whose shards hold the documents")
    by: str = Field(description="domain column (domain, cluster, super_cluster, source, lang) or metadata.<field>")
    stage: str | None = None
    valid_fraction: float = Field(0.1, gt=0, lt=1, description="documents held out as validation sets")


class SamplerConfig(Section):
    temperature: float = Field(TEMPERATURE, gt=0, description="prior = token shares ** temperature")
    max_usage: float = Field(MAX_USAGE, gt=0, description="reject mixtures giving a domain more than this x its share")
    min_weight: float = Field(MIN_WEIGHT, gt=0, lt=1, description="weights below this become 0")
    seed: int = Field(0, description="seed of the sampled mixtures")


class MaterializeConfig(Section):
    budget_tokens: int = Field(100_000, gt=0, description="training tokens per proxy")
    max_epochs: float = Field(4.0, ge=1)
    tokenizer: str = "o200k_base"
    vocab_size: int = Field(4096, ge=16, description="compact proxy vocabulary (UNK included)")
    vocab_sample_tokens: int = Field(1_000_000, gt=0, description="prior-mixture tokens the vocabulary is counted on")


class ProxySettings(Section):
    d_model: int = Field(96, gt=0)
    n_layers: int = Field(4, gt=0)
    n_heads: int = Field(4, gt=0)
    seq_len: int = Field(128, gt=1)
    batch_size: int = Field(8, gt=0)
    learning_rate: float = Field(3e-3, gt=0)
    eval_tokens: int = Field(32_768, gt=0)
    seed: int = 0
    num_gpus: float = Field(0.0, ge=0, description="GPUs per proxy task (fractions share one GPU)")


class RegressionConfig(Section):
    model: Literal["lightgbm", "lightgbm_climb", "linear", "log_linear", "gp", "auto"] = Field(
        "lightgbm", description="the predictor (linear suits a dozen runs; auto: the best by cross-validation)")
    params: dict | None = Field(None, description="the predictor's own parameters, to override")
    n_samples: int = Field(100_000, gt=0, description="candidate mixtures the predictor ranks")
    top_k: int = Field(128, gt=0, description="the best mixture is the mean of this many best-predicted candidates")
    num_threads: int = Field(2, gt=0)


class ExportConfig(Section):
    budget_tokens: int | None = Field(None, gt=0, description="materialize the best mixture at this budget")
    max_epochs: float = Field(4.0, ge=1)


MIN_RUNS_TO_SCORE = 4  # k-fold scoring of the fit (mixtures/regression.py) needs this many runs


class ExperimentConfig(Section):
    """RegMix (one round of mixtures sampled around the prior) or CLIMB (rounds proposed by the predictor)."""

    out: Path | None = Field(None, description="experiment folder (default: <run_dir>/mixtures/<method>-<targets>)")
    corpus: CorpusConfig
    targets: list[str] = Field(min_length=1, description="domains whose held-out documents are the target sets")
    method: Literal["regmix", "climb"] = Field("regmix", description="regmix (one round sampled from the prior) "
                                                                     "or climb (rounds proposed by the predictor)")
    # 16 proxies: a quick local experiment (RegMix trains 512, CLIMB 64 -> 32 -> 16); the demo sets 8
    rounds: list[int] = Field(default=[16], min_length=1, description="proxies per round (regmix: one round)")
    trainer_command: str | None = Field(None, description="external trainer, instead of the built-in proxies: "
                                                          "a command with {ratios} and {out} placeholders")
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    materialize: MaterializeConfig = Field(default_factory=MaterializeConfig)
    proxy: ProxySettings = Field(default_factory=ProxySettings)
    regression: RegressionConfig = Field(default_factory=RegressionConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentConfig:
        if self.out is None and self.corpus.run_dir is not None:  # (None: a pipeline's section, see for_run)
            self.out = Path(self.corpus.run_dir) / "mixtures" / f"{self.method}-{'-'.join(self.targets)}"
        if self.method == "regmix" and len(self.rounds) != 1:
            raise ValueError(f"method regmix runs one round; rounds has {len(self.rounds)} (use method: climb)")
        if any(r < 1 for r in self.rounds):
            raise ValueError("rounds: every round needs at least one proxy")
        if sum(self.rounds) < MIN_RUNS_TO_SCORE:
            raise ValueError(f"rounds: {sum(self.rounds)} proxies in all are too few to score the fit "
                             f"(it needs at least {MIN_RUNS_TO_SCORE})")
        if self.trainer_command and ("{ratios}" not in self.trainer_command or "{out}" not in self.trainer_command):
            raise ValueError("trainer_command must contain the placeholders {ratios} and {out}")
        if self.regression.top_k > self.regression.n_samples:
            raise ValueError("regression.top_k cannot exceed regression.n_samples")
        return self

    def target_metrics(self) -> list[str]:
        """The metrics.csv columns the predictor learns: each target set's validation loss."""
        return [f"{t}_val_loss" for t in self.targets]
