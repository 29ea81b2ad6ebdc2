"""The one config model of a mixture experiment (`mixforge regmix run CONFIG.yaml`, the Prefect flow).

Unknown keys are errors, and every error names the key it is about (`materialize.budget_tokens:
Input should be greater than 0`), so a typo never silently falls back to a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CorpusConfig(Section):
    run_dir: Path
    by: str = Field(description="domain column (domain, cluster, super_cluster, source, lang) or metadata.<field>")
    stage: str | None = None
    valid_fraction: float = Field(0.1, gt=0, lt=1, description="documents held out as validation sets")


class SamplerConfig(Section):
    temperature: float = Field(0.5, gt=0)
    max_usage: float = Field(15.0, gt=0)
    min_weight: float = Field(2e-4, gt=0, lt=1)
    seed: int = 0


class MaterializeConfig(Section):
    budget_tokens: int = Field(gt=0, description="training tokens per proxy")
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
    model: Literal["lightgbm", "lightgbm_climb", "linear", "log_linear", "gp", "auto"] = "lightgbm"
    params: dict | None = None
    n_samples: int = Field(100_000, gt=0)
    top_k: int = Field(128, gt=0)
    num_threads: int = Field(2, gt=0)


class ExportConfig(Section):
    budget_tokens: int | None = Field(None, gt=0, description="materialize the best mixture at this budget")
    max_epochs: float = Field(4.0, ge=1)


MIN_RUNS_TO_SCORE = 4  # k-fold scoring of the fit (mixtures/regression.py) needs this many runs


class ExperimentConfig(Section):
    out: Path
    corpus: CorpusConfig
    targets: list[str] = Field(min_length=1, description="domains whose held-out documents are the target sets")
    method: Literal["regmix", "climb"] = "regmix"
    rounds: list[int] = Field(default=[64], min_length=1, description="proxies per round; regmix uses one round")
    trainer_command: str | None = Field(None, description="external trainer: a command with {ratios} and {out}")
    sampler: SamplerConfig = SamplerConfig()
    materialize: MaterializeConfig
    proxy: ProxySettings = ProxySettings()
    regression: RegressionConfig = RegressionConfig()
    export: ExportConfig = ExportConfig()

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentConfig:
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


class ConfigError(ValueError):
    """An experiment config that does not validate; one line per problem, each naming its key."""


def load_config(path: str | Path) -> ExperimentConfig:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: {str(error).splitlines()[0]}") from None
    return parse_config(data or {}, source=str(path))


def parse_config(data: dict, source: str = "config") -> ExperimentConfig:
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as error:
        lines = []
        for problem in error.errors():
            key = ".".join(str(part) for part in problem["loc"]) or "(top level)"
            lines.append(f"{source}: {key}: {problem['msg']}")
        raise ConfigError("\n".join(lines)) from None
