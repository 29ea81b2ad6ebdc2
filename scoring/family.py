"""A PreSelect model family: loss models with their benchmark scores, from a family file or a mixture experiment.

Family file (YAML): `models:` entries with `path` (a byte n-gram .npz, a proxy checkpoint, a Hugging Face
model directory, or with `kind: hf` a hub name), `score` (its benchmark score, higher is better), and
optionally `name` and `kind` (ngram, proxy, hf; read from the path when absent). Relative paths start at
the file's folder.

Mixture experiment (the closed loop): every run of `<dir>/metrics.csv` whose proxy checkpoint
`<dir>/runs/<run>/proxy.pt` exists joins the family; its score is the run's measured target metric, negated
when it is a loss (lower is better): by default the mean of the `*_val_bpb` columns, the targets' bits per byte.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from scoring.losses import LossModel

Kind = Literal["ngram", "proxy", "hf"]
PROXY_FILE = "proxy.pt"  # mixtures.experiment.PROXY_FILE
LOSS_SUFFIXES = ("loss", "bpb", "bpc", "ppl", "perplexity")


class FamilyError(ValueError):
    """A family that cannot be read: the message names the file and what is wrong."""


class FamilyMember(BaseModel):
    """One model of a family and its benchmark score (higher is better); other keys (notes) are ignored."""

    model_config = ConfigDict(extra="ignore")

    path: str = Field(description="n-gram .npz, proxy checkpoint, Hugging Face directory or (kind hf) hub name")
    score: float
    name: str | None = None
    kind: Kind | None = None

    def resolved_kind(self) -> Kind:
        if self.kind:
            return self.kind
        path = Path(self.path)
        if path.suffix == ".npz":
            return "ngram"
        if path.suffix == ".pt" or (path / PROXY_FILE).is_file():
            return "proxy"
        if (path / "config.json").is_file():
            return "hf"
        raise FamilyError(f"{self.path}: not an n-gram .npz, a proxy checkpoint or a Hugging Face model directory "
                          "(give `kind: hf` for a hub name)")

    def load(self, device: str = "auto", batch_tokens: int | None = None) -> LossModel:
        kind = self.resolved_kind()
        if kind == "ngram":
            from scoring.byte_ngram import ByteNgramLM

            model = ByteNgramLM.load(self.path)
            model.name = self.name or model.name
            return model
        if kind == "proxy":
            from scoring.proxy_lm import ProxyLM

            path = Path(self.path)
            return ProxyLM(path / PROXY_FILE if path.is_dir() else path, self.name, device, batch_tokens)
        from scoring.hf_lm import HFCausalLM

        return HFCausalLM(self.path, self.name, device, batch_tokens=batch_tokens)


def read_family(path: str | Path) -> list[FamilyMember]:
    """The members of a family file (relative paths made absolute from the file's folder)."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise FamilyError(f"{path}: cannot read the family file ({error})") from None
    entries = data.get("models") if isinstance(data, dict) else None
    if not isinstance(entries, list) or len(entries) < 2:
        raise FamilyError(f"{path}: a family needs at least two `models:` entries with path and score")
    members = []
    for i, entry in enumerate(entries):
        try:
            member = FamilyMember.model_validate(entry)
        except ValidationError as error:
            problem = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'entry'}: {e['msg']}" for e in error.errors())
            raise FamilyError(f"{path}: models[{i}]: {problem}") from None
        local = path.parent / member.path
        if member.kind != "hf" or local.exists():
            member.path = str(local)
            if not local.exists():
                raise FamilyError(f"{path}: models[{i}]: {local} does not exist")
        members.append(member)
    return members


def experiment_family(directory: str | Path, metric: str | None = None) -> list[FamilyMember]:
    """The proxies of a mixture experiment with their measured target metric as the score."""
    from mixtures.io import MixtureFileError, read_metrics

    directory = Path(directory)
    try:
        metrics = read_metrics(directory / "metrics.csv")
    except (OSError, MixtureFileError) as error:
        raise FamilyError(f"{directory}: not a mixture experiment with metrics.csv ({error})") from None
    if metric is None:
        columns = [c for c in metrics.columns if str(c).endswith("_val_bpb")]
        if not columns:
            raise FamilyError(f"{directory}/metrics.csv has no *_val_bpb columns: name one with --metric")
        values, metric_name = metrics[columns].mean(axis=1), "mean " + ", ".join(columns)
    elif metric in metrics.columns:
        values, metric_name = metrics[metric], metric
    else:
        raise FamilyError(f"{directory}/metrics.csv has no column '{metric}' ({', '.join(map(str, metrics.columns))})")
    sign = -1.0 if any(metric_name.lower().rstrip(", ").endswith(s) for s in LOSS_SUFFIXES) else 1.0
    members = [FamilyMember(path=str(directory / "runs" / str(run) / PROXY_FILE), score=sign * float(value),
                            name=str(run), kind="proxy")
               for run, value in values.items()
               if np.isfinite(value) and (directory / "runs" / str(run) / PROXY_FILE).is_file()]
    if len(members) < 2:
        raise FamilyError(f"{directory}: {len(members)} proxy checkpoint(s) with a measured {metric_name}; "
                          f"PreSelect needs at least two (runs/<run>/{PROXY_FILE})")
    return members


def load_family(source: str | Path, metric: str | None = None) -> list[FamilyMember]:
    """A family from a family file or a mixture experiment's directory."""
    source = Path(source)
    if source.is_dir():
        return experiment_family(source, metric)
    if not source.is_file():
        raise FamilyError(f"{source}: no family file or mixture experiment there")
    return read_family(source)
