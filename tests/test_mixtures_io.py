"""ratios.csv / metrics.csv readers: RegMix's released dialect, ours, and input they must refuse."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from mixtures.io import (
    MixtureFileError,
    export_mixture,
    join_runs,
    read_metrics,
    read_mixing_laws,
    read_mixtures,
    read_runs,
    write_metrics,
    write_mixtures,
)


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_regmix_released_format(regmix_data):
    mixtures = read_mixtures(regmix_data / "test_mixture_1m.csv")
    metrics = read_metrics(regmix_data / "test_pile_loss_1m.csv")
    assert mixtures.shape == (256, 17) and metrics.shape == (256, 13)
    assert mixtures.columns[0] == "train_the_pile_arxiv"
    assert "metric/the_pile_pile_cc_val_loss" in metrics.columns
    # the file rounds to 3 decimals (rows sum to 0.996..1.003); the reader renormalises
    raw = np.loadtxt(regmix_data / "test_mixture_1m.csv", delimiter=",", skiprows=1)
    sums = raw[:, 1:].sum(axis=1)
    assert sums.min() < 0.999 or sums.max() > 1.001
    np.testing.assert_allclose(mixtures.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(mixtures.loc["1"].to_numpy(), raw[0, 1:] / sums[0])
    m, y = join_runs(mixtures, metrics)
    assert list(m.index) == list(y.index)


def test_our_format_round_trips(tmp_path):
    path = write(tmp_path, "ratios.csv", "run,web,code,books\nr1,2,1,1\nr2,0,0.5,0.5\n")
    mixtures = read_mixtures(path)
    assert mixtures.loc["r1"].tolist() == [0.5, 0.25, 0.25]
    assert mixtures.loc["r2"].tolist() == [0.0, 0.5, 0.5]
    again = read_mixtures(write_mixtures(mixtures, tmp_path / "out" / "ratios.csv"))
    assert again.equals(mixtures)
    metrics = read_metrics(write(tmp_path, "metrics.csv", "run,web_val_loss\nr2,3.5\nr1,\n"))
    assert np.isnan(metrics.loc["r1", "web_val_loss"]) and metrics.loc["r2", "web_val_loss"] == 3.5
    _, aligned = join_runs(mixtures, metrics)
    assert list(aligned.index) == ["r1", "r2"]
    assert read_metrics(write_metrics(aligned, tmp_path / "m2.csv")).loc["r2"].item() == 3.5


@pytest.mark.parametrize(("text", "message"), [
    ("name,web,code\nr1,1,2\n", "first column 'name' fits no known layout; expected ours: run"),
    ("run\nr1\n", "no columns after 'run'"),
    ("run,web,code\nr1,0.5,abc\n", "run 'r1' column 'code': non-numeric weight 'abc'"),
    ("run,web,code\nr1,0.5,\n", "column 'code': non-numeric weight ''"),
    ("run,web,code\nr1,1.2,-0.2\n", "run 'r1' has a negative weight -0.2 for 'code'"),
    ("run,web,code\nr1,0,0\n", "run 'r1' has no positive weight"),
    ("run,web,code\nr1,1,1\nr1,1,2\n", "run 'r1' appears more than once"),
])
def test_bad_mixture_files_fail_with_one_line(tmp_path, text, message):
    with pytest.raises(MixtureFileError) as error:
        read_mixtures(write(tmp_path, "ratios.csv", text))
    assert message in str(error.value)
    assert "\n" not in str(error.value)
    assert isinstance(error.value, ValueError)


def test_bad_metrics_and_mismatched_runs(tmp_path):
    with pytest.raises(MixtureFileError, match="column 'loss': non-numeric metric value 'nan-ish'"):
        read_metrics(write(tmp_path, "metrics.csv", "run,loss\nr1,nan-ish\n"))
    with pytest.raises(MixtureFileError, match="no such file"):
        read_metrics(tmp_path / "absent.csv")
    mixtures = read_mixtures(write(tmp_path, "ratios.csv", "run,a,b\nr1,1,1\nr2,1,3\nr3,1,0\n"))
    metrics = read_metrics(write(tmp_path, "m.csv", "run,loss\nr1,3\nr2,4\n"))
    with pytest.raises(MixtureFileError, match=r"1 run\(s\) missing from metrics: r3"):
        join_runs(mixtures, metrics)


def test_export_mixture_yaml_and_json(tmp_path):
    weights = {"web": 0.7, "code": 0.3}
    as_yaml = yaml.safe_load(export_mixture(weights, tmp_path / "best.yaml", target="web_val_loss").read_text())
    as_json = json.loads(export_mixture(weights, tmp_path / "best.json").read_text())
    assert as_yaml == {"weights": weights, "target": "web_val_loss"}
    assert as_json == {"weights": weights}


# olmix writes its swarm with pandas' to_csv (index kept): an unnamed first column, then run, name, index
OLMIX_RATIOS = """,run,name,index,dclm:science,dclm:code,arxiv
0,a1b2c3,swarm-0000,0,0.5,0.3,0.2
1,d4e5f6,swarm-0001,1,0.1,0.6,0.3
2,g7h8i9,swarm-0002,2,0.25,0.25,0.5
"""
OLMIX_METRICS = """,run,name,index,mmlu_bpb,arc_easy:acc
0,d4e5f6,swarm-0001,1,1.12,0.41
1,a1b2c3,swarm-0000,0,1.05,0.44
2,g7h8i9,swarm-0002,2,1.20,0.38
"""


def test_olmix_swarm_files_are_read_as_released(tmp_path):
    folder = tmp_path / "swarm"
    folder.mkdir()
    write(folder, "ratios.csv", OLMIX_RATIOS)
    write(folder, "metrics.csv", OLMIX_METRICS)
    mixtures, metrics = read_runs(folder)
    assert list(mixtures.columns) == ["dclm:science", "dclm:code", "arxiv"]  # name and index are labels
    assert list(metrics.columns) == ["mmlu_bpb", "arc_easy:acc"]
    assert list(mixtures.index) == ["a1b2c3", "d4e5f6", "g7h8i9"] == list(metrics.index)  # joined on run
    assert metrics.loc["a1b2c3", "mmlu_bpb"] == 1.05 and mixtures.loc["d4e5f6", "dclm:code"] == 0.6
    # the same file as pandas writes it from olmix's DataFrame, byte for byte
    frame = pd.read_csv(folder / "ratios.csv", index_col=0)
    assert frame.to_csv(float_format="%g") == OLMIX_RATIOS
    # olmix's load_from_csv layout: run_id, optional name
    path = write(tmp_path, "flat.csv", "run_id,name,web,code\nx,first,1,3\n")
    assert read_mixtures(path).loc["x"].tolist() == [0.25, 0.75]


def test_mixing_laws_tables_are_read_as_released(mixinglaws_data):
    mixtures, losses = read_mixing_laws(mixinglaws_data / "5Mix" / "70M.txt")
    assert mixtures.shape == (26, 5) and list(mixtures.columns) == ["academic", "prose", "dialogue", "symbolic",
                                                                    "internet"]
    assert list(losses.columns) == list(mixtures.columns) and not losses.isna().any().any()
    # proportions.txt lists the same 26 mixtures, in the run order of the checkpoint names
    released = {tuple(map(float, line.split("-")))
                for line in (mixinglaws_data / "5Mix" / "proportions.txt").read_text().split()}
    assert {tuple(row) for row in mixtures.to_numpy().round(6)} == released
    # run 3 is `70M_3-0.125-0-0-0.125-0.75`; its Github loss at the last step (30000) is in the file
    assert mixtures.loc["3"].tolist() == [0.125, 0, 0, 0.125, 0.75]
    _, per_domain = read_mixing_laws(mixinglaws_data / "5Mix" / "70M.txt", aggregate=False)
    assert per_domain.shape == (26, 22) and 1.0 < per_domain.loc["3", "Github"] < 2.0
    assert losses.loc["3", "symbolic"] == pytest.approx(per_domain.loc["3", ["DM_Mathematics", "Github"]].mean())
    two, _ = read_mixing_laws(mixinglaws_data / "2Mix" / "70M.txt")
    assert list(two.columns) == ["domain_1", "domain_2"] and len(two) == 5


def test_files_fitting_no_layout_name_what_was_expected(tmp_path):
    with pytest.raises(MixtureFileError, match=r"bad.txt:1: expected the Data Mixing Laws layout"):
        read_mixing_laws(write(tmp_path, "bad.txt", "not\ta mixing\tlaw row\n"))
    with pytest.raises(MixtureFileError, match="expected ratios.csv and metrics.csv in the folder"):
        read_runs(tmp_path)
    with pytest.raises(MixtureFileError, match="olmix's swarm: an unnamed pandas index column, then run, name"):
        read_mixtures(write(tmp_path, "x.csv", ",id,web\n0,a,1\n"))
