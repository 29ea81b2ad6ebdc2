"""Reproduce RegMix's regression results on its released 1M-parameter proxy runs.

Fit on the 512 train runs, score the 256 held-out test runs on the paper's headline target
(Pile-CC validation loss). Published: LightGBM Spearman 98.45 (paper) / 99.0 (notebook), linear
90.08. The linear band 85-93 is the published 90 +- the spread a different train/test draw gives
(our LightGBM lands within 0.5 of the notebook, so the data and protocol match). The best mixture
(top 128 of 1M simulated) puts 0.87-0.89 on pile_cc in the paper, with ubuntu_irc second.
"""

from __future__ import annotations

import numpy as np
import pytest

from mixtures.io import join_runs, read_metrics, read_mixtures
from mixtures.regression import RegMixRegressor

TARGET = "metric/the_pile_pile_cc_val_loss"


@pytest.fixture(scope="module")
def regmix_runs(regmix_data):
    train = join_runs(read_mixtures(regmix_data / "train_mixture_1m.csv"),
                      read_metrics(regmix_data / "train_pile_loss_1m.csv"))
    test = join_runs(read_mixtures(regmix_data / "test_mixture_1m.csv"),
                     read_metrics(regmix_data / "test_pile_loss_1m.csv"))
    return train, test


@pytest.fixture(scope="module")
def lightgbm_fit(regmix_runs):
    (X, Y), _ = regmix_runs
    return RegMixRegressor("lightgbm", num_threads=2).fit(X, Y[TARGET])


def test_released_files_pair_up(regmix_runs):
    (X, Y), (X_test, Y_test) = regmix_runs
    assert X.shape == (512, 17) and Y.shape == (512, 13)
    assert X_test.shape == (256, 17) and Y_test.shape == (256, 13)
    np.testing.assert_allclose(X.sum(axis=1), 1.0)
    assert list(X.index[:3]) == ["1", "2", "3"] and list(Y.index) == list(X.index)


def test_lightgbm_ranks_held_out_runs_like_the_paper(regmix_runs, lightgbm_fit):
    _, (X_test, Y_test) = regmix_runs
    score = lightgbm_fit.evaluate(X_test, Y_test[TARGET])[TARGET]
    assert score.n_runs == 256
    assert score.spearman * 100 >= 98.0
    assert score.pearson * 100 >= 97.0
    assert score.mse < 0.01


def test_linear_regression_is_clearly_worse(regmix_runs, lightgbm_fit):
    (X, Y), (X_test, Y_test) = regmix_runs
    linear = RegMixRegressor("linear").fit(X, Y[TARGET]).evaluate(X_test, Y_test[TARGET])[TARGET]
    boosted = lightgbm_fit.evaluate(X_test, Y_test[TARGET])[TARGET]
    assert 85.0 <= linear.spearman * 100 <= 93.0
    assert linear.mse > 3 * boosted.mse


def test_best_mixture_is_mostly_pile_cc(lightgbm_fit):
    best = lightgbm_fit.optimum(n_samples=1_000_000, top_k=128, seed=0)
    assert best.sum() == pytest.approx(1.0)
    assert 0.85 <= best["train_the_pile_pile_cc"] <= 0.90
    assert best.sort_values(ascending=False).index[1] == "train_the_pile_ubuntu_irc"
