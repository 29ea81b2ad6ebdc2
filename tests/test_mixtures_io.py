"""ratios.csv / metrics.csv readers: RegMix's released dialect, ours, and input they must refuse."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from mixtures.io import (
    MixtureFileError,
    export_mixture,
    join_runs,
    read_metrics,
    read_mixtures,
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
    ("name,web,code\nr1,1,2\n", "first column must be 'run'"),
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
