"""Mixture and metric tables on disk: ratios.csv, metrics.csv and the exported best mixture.

Two CSV dialects are read: ours (`run`, then one weight column per domain; metrics.csv: `run`, then
one column per metric) and RegMix's released files (`index`, then `train_the_pile_<domain>` weights;
loss files `index`, then `metric/..._val_loss`). Runs become string ids, so `1` in a RegMix mixture
file pairs with `1` in its loss file. Weights are renormalised to sum to 1 (RegMix rounded them to 3
decimals). Bad input raises MixtureFileError with one line naming the file, row and column.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

RUN_COLUMNS = ("run", "index")


class MixtureFileError(ValueError):
    """A ratios or metrics file that cannot be used as it is; the message says where and why."""


def read_mixtures(path: str | Path) -> pd.DataFrame:
    """Mixture weights, one row per run (index `run`, str), one column per domain, rows summing to 1."""
    path = Path(path)
    table = _read_table(path)
    weights = _numeric(table, path, what="weight")
    negative = weights.lt(0).to_numpy().nonzero()
    if len(negative[0]):
        row, col = negative[0][0], negative[1][0]
        raise MixtureFileError(f"{path}: run '{weights.index[row]}' has a negative weight "
                               f"{weights.iat[row, col]} for '{weights.columns[col]}'")
    totals = weights.sum(axis=1)
    if (totals <= 0).any():
        raise MixtureFileError(f"{path}: run '{totals.index[(totals <= 0).argmax()]}' has no positive weight")
    return weights.div(totals, axis=0)


def read_metrics(path: str | Path) -> pd.DataFrame:
    """Metrics of runs (index `run`, str), one float column per metric; empty cells (failed runs) are NaN."""
    path = Path(path)
    return _numeric(_read_table(path), path, what="metric value")


def join_runs(mixtures: pd.DataFrame, metrics: pd.DataFrame, *, mixtures_name: str = "mixtures",
              metrics_name: str = "metrics") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both tables restricted to and ordered by the same runs; every run must be in both."""
    only_mix = mixtures.index.difference(metrics.index)
    only_met = metrics.index.difference(mixtures.index)
    if len(only_mix) or len(only_met):
        side, missing = (metrics_name, only_mix) if len(only_mix) else (mixtures_name, only_met)
        shown = ", ".join(map(str, missing[:5])) + (" ..." if len(missing) > 5 else "")
        raise MixtureFileError(f"runs do not match: {len(missing)} run(s) missing from {side}: {shown}")
    return mixtures, metrics.loc[mixtures.index]


def write_mixtures(mixtures: pd.DataFrame, path: str | Path) -> Path:
    """Write ratios.csv in our dialect: `run`, then one column per domain."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mixtures.rename_axis("run").to_csv(path, float_format="%.6g")
    return path


def write_metrics(metrics: pd.DataFrame, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metrics.rename_axis("run").to_csv(path, float_format="%.8g")
    return path


def export_mixture(weights: Mapping[str, float], path: str | Path, **extra: object) -> Path:
    """The chosen mixture as YAML or JSON (by suffix): `weights` plus whatever context is passed."""
    path = Path(path)
    # through JSON so numpy scalars in the context become plain numbers YAML can write
    doc = json.loads(json.dumps({"weights": {k: round(float(v), 6) for k, v in weights.items()}, **extra},
                                default=float))
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix in (".yaml", ".yml"):
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
    else:
        path.write_text(json.dumps(doc, indent=2))
    return path


def _read_table(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise MixtureFileError(f"{path}: no such file")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise MixtureFileError(f"{path}: not a readable CSV ({str(error).splitlines()[0]})") from None
    if table.columns.empty or table.columns[0] not in RUN_COLUMNS:
        first = table.columns[0] if len(table.columns) else "nothing"
        raise MixtureFileError(f"{path}: the first column must be 'run' (or RegMix's 'index'), found '{first}'")
    if len(table.columns) < 2:
        raise MixtureFileError(f"{path}: no columns after '{table.columns[0]}'")
    runs = table.pop(table.columns[0]).str.strip()
    duplicated = runs[runs.duplicated()]
    if len(duplicated):
        raise MixtureFileError(f"{path}: run '{duplicated.iloc[0]}' appears more than once")
    if (runs == "").any():
        raise MixtureFileError(f"{path}: row {int((runs == '').argmax()) + 2} has an empty run id")
    table.index = pd.Index(runs, name="run")
    return table


def _numeric(table: pd.DataFrame, path: Path, *, what: str) -> pd.DataFrame:
    """Every cell as float; the first cell that is not a number is named in the error."""
    stripped = table.apply(lambda col: col.str.strip())
    values = stripped.apply(lambda col: pd.to_numeric(col, errors="coerce")).astype(float)
    bad = ~np.isfinite(values.to_numpy())
    if what != "weight":  # an empty metric cell is a failed run, not an error
        bad &= (stripped != "").to_numpy()
    if bad.any():
        row, col = (int(i[0]) for i in np.nonzero(bad))
        raise MixtureFileError(f"{path}: run '{table.index[row]}' column '{table.columns[col]}': "
                               f"non-numeric {what} '{table.iat[row, col]}'")
    return values
