"""Mixture and metric tables as their authors release them: ours, RegMix's, olmix's, the Data Mixing Laws'.

- ours: ratios.csv `run`, then one weight column per domain; metrics.csv `run`, then one column per metric.
- RegMix (sail-sg/regmix data/): `index`, then `train_the_pile_<domain>` weights; loss files `index`, then
  `metric/..._val_loss`.
- olmix swarms (allenai/olmix `olmix/fit/loaders.py`, written by pandas `to_csv` with its index): an
  unnamed first column (the pandas index), then `run`, `name`, `index`, then one column per domain (ratios)
  or per task (metrics); olmix's `load_from_csv` layout (`run_id`, optional `name`) too. Runs are keyed by
  `run`; `name` and `index` are labels, not data.
- Data Mixing Laws (yegcjs/mixinglaws data/): `<size>.txt` rows `checkpoint path<TAB>validation file<TAB>
  loss`, the mixture encoded in the checkpoint name, read by `read_mixing_laws`.

Runs become string ids, so `1` in a RegMix mixture file pairs with `1` in its loss file. Weights are
renormalised to sum to 1 (RegMix rounded them to 3 decimals). Bad input raises MixtureFileError with one
line naming the file, row and column, or the layouts that were expected.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

RUN_COLUMNS = ("run", "index", "run_id")
OLMIX_LABELS = ("name", "index")  # olmix's per-run label columns after `run`
LAYOUTS = ("ours: run, then one column per domain or metric; RegMix's: index, then train_the_pile_* or "
           "metric/* columns; olmix's swarm: an unnamed pandas index column, then run, name, index, then "
           "one column per domain or task")
# 5Mix's training domains in the order of its proportions.txt, and the Pile validation domains each
# aggregates (the authors' mix_5_domains.ipynb)
MIXING_LAWS_GROUPS = {
    "academic": ("ArXiv", "PubMed_Abstracts", "PhilPapers", "NIH_ExPorter", "FreeLaw", "USPTO_Backgrounds",
                 "PubMed_Central"),
    "prose": ("PG19", "Books3", "BookCorpus2"),
    "dialogue": ("Ubuntu_IRC", "OpenSubtitles", "EuroParl", "Enron_Emails", "HackerNews", "YoutubeSubtitles"),
    "symbolic": ("DM_Mathematics", "Github"),
    "internet": ("Pile-CC", "OpenWebText2", "StackExchange", "Wikipedia_en"),
}


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
    columns = list(table.columns)
    if len(columns) > 1 and (columns[0] == "" or columns[0].startswith("Unnamed: ")) and columns[1] == "run":
        table = table.drop(columns=columns[0])  # olmix: pandas wrote its own index first
    if "run" in table.columns[:1] or "run_id" in table.columns[:1]:
        table = table.drop(columns=[c for c in OLMIX_LABELS if c in table.columns[1:3]])
    if table.columns.empty or table.columns[0] not in RUN_COLUMNS:
        first = table.columns[0] if len(table.columns) else "nothing"
        raise MixtureFileError(f"{path}: first column '{first}' fits no known layout; expected {LAYOUTS}")
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


def read_mixing_laws(path: str | Path, *, step: int | None = None,
                     aggregate: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(mixtures, losses) from a Data Mixing Laws table `<folder>/<size>.txt` (e.g. 5Mix/70M.txt).

    The checkpoint name `<size>_<run>-<p1>-...-<pk>/<step>` carries the run and its proportions; `step`
    defaults to the last step every run reached (30000 for 5Mix 70M). Losses are one column per Pile
    validation domain, or with `aggregate` the mean over each of 5Mix's five groups (the paper's targets).
    Domains are named after 5Mix's groups when there are five, else domain_1..k.
    """
    path = Path(path)
    if not path.is_file():
        raise MixtureFileError(f"{path}: no such file")
    pattern = re.compile(r"[^/]+_(?P<run>[^/]*?)-(?P<mix>[0-9.]+(?:-[0-9.]+)+)/(?P<step>\d+)$")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        match = pattern.search(fields[0].rstrip("/")) if len(fields) == 3 else None
        domain = re.search(r"valid\.(?P<domain>[^/]+)\.bin$", fields[1]) if match else None
        try:
            loss = float(fields[2]) if domain else None
        except ValueError:
            loss = None
        if loss is None:
            raise MixtureFileError(f"{path}:{number}: expected the Data Mixing Laws layout: checkpoint "
                                   f"'<size>_<run>-<p1>-...-<pk>/<step>', validation file "
                                   f"'...valid.<Domain>.bin' and a loss, tab-separated")
        rows.append((match["run"], match["mix"], int(match["step"]), domain["domain"], loss))
    if not rows:
        raise MixtureFileError(f"{path}: no rows")
    table = pd.DataFrame(rows, columns=["run", "mix", "step", "domain", "loss"])
    last = int(table.groupby("run")["step"].max().min()) if step is None else step
    table = table[table["step"] == last]
    if table.empty:
        raise MixtureFileError(f"{path}: no run has a checkpoint at step {last}")
    weights = table.drop_duplicates("run").set_index("run")["mix"].str.split("-", expand=True).astype(float)
    names = list(MIXING_LAWS_GROUPS) if weights.shape[1] == len(MIXING_LAWS_GROUPS) else [
        f"domain_{i + 1}" for i in range(weights.shape[1])]
    weights.columns = names
    losses = table.pivot_table(index="run", columns="domain", values="loss", aggfunc="mean")
    if aggregate:
        losses = pd.DataFrame({group: losses[[d for d in members if d in losses.columns]].mean(axis=1)
                               for group, members in MIXING_LAWS_GROUPS.items()})
    order = sorted(weights.index, key=lambda r: (len(r), r))
    weights, losses = weights.loc[order], losses.loc[order]
    weights.index.name = losses.index.name = "run"
    return weights.div(weights.sum(axis=1), axis=0), losses


def read_runs(path: str | Path, metrics: str | Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(mixtures, metrics) joined on run, from any released layout.

    `path` is a ratios file with `metrics` beside it, a folder holding ratios.csv and metrics.csv (ours,
    olmix's swarm), or a Data Mixing Laws `<size>.txt` table.
    """
    path = Path(path)
    if metrics is not None:
        return join_runs(read_mixtures(path), read_metrics(metrics), mixtures_name=str(path),
                         metrics_name=str(metrics))
    if path.is_dir():
        if (path / "ratios.csv").exists() and (path / "metrics.csv").exists():
            return read_runs(path / "ratios.csv", path / "metrics.csv")
        raise MixtureFileError(f"{path}: expected ratios.csv and metrics.csv in the folder")
    if path.suffix == ".txt":
        return read_mixing_laws(path)
    raise MixtureFileError(f"{path}: expected a folder with ratios.csv and metrics.csv, a Data Mixing Laws "
                           f"<size>.txt table, or a ratios file with its metrics file")


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
