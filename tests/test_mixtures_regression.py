"""RegMixRegressor beyond the paper numbers: report methods, persistence, the optimum, and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from mixforge.cli import app
from mixtures.io import join_runs, read_metrics, read_mixtures
from mixtures.regression import CLIMB_LIGHTGBM, RegMixRegressor
from mixtures.sampler import MixtureSampler

DOMAINS = ["web", "code", "books", "math"]
IDEAL = np.array([0.1, 0.6, 0.1, 0.2])


def synthetic_runs(n: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Mixtures from the sampler and two losses with known minima: one at IDEAL, one at pure web."""
    sampler = MixtureSampler.from_token_counts(dict(zip(DOMAINS, [40, 30, 20, 10], strict=True)), seed=seed)
    X = sampler.sample(n)
    w = X.to_numpy()
    noise = np.random.default_rng(seed).normal(0, 0.01, size=(n, 2))
    Y = pd.DataFrame({"ideal_loss": 3 + ((w - IDEAL) ** 2).sum(axis=1) * 4 + noise[:, 0],
                      "web_loss": 4 - np.log1p(4 * w[:, 0]) + noise[:, 1]}, index=X.index)
    return X, Y


def test_report_uses_test_runs_holdout_or_kfold():
    X, Y = synthetic_runs(160)
    X_test, Y_test = synthetic_runs(40, seed=1)
    with_test = RegMixRegressor("linear").fit_report(X, Y, X_test=X_test, Y_test=Y_test)
    assert with_test["method"] == "test" and with_test["targets"]["web_loss"]["n_runs"] == 40
    holdout = RegMixRegressor("lightgbm", params=CLIMB_LIGHTGBM).fit_report(X, Y)
    assert holdout["method"] == "holdout" and holdout["targets"]["ideal_loss"]["n_runs"] == 40
    assert holdout["targets"]["web_loss"]["spearman"] > 0.9
    few = RegMixRegressor("linear").fit_report(X.iloc[:20], Y.iloc[:20])
    assert few["method"] == "leave-one-out" and few["targets"]["web_loss"]["n_runs"] == 20
    assert few["targets"]["web_loss"]["spearman"] > 0.8  # log-shaped, still monotone in the web weight


def test_save_and_load_predict_the_same(tmp_path):
    X, Y = synthetic_runs(120)
    for model in ("lightgbm", "linear"):
        fitted = RegMixRegressor(model, params=CLIMB_LIGHTGBM if model == "lightgbm" else None).fit(X, Y)
        loaded = RegMixRegressor.load(fitted.save(tmp_path / model))
        np.testing.assert_allclose(loaded.predict(X), fitted.predict(X), rtol=1e-9)
        assert loaded.domains_ == DOMAINS and loaded.targets_ == ["ideal_loss", "web_loss"]
    assert sorted(p.name for p in (tmp_path / "lightgbm").iterdir()) == [
        "fit.json", "model-000.joblib", "model-001.joblib"]


def test_optimum_finds_known_minima():
    X, Y = synthetic_runs(300)
    fitted = RegMixRegressor("lightgbm", params=CLIMB_LIGHTGBM).fit(X, Y)
    ideal = fitted.optimum(50_000, 64, target="ideal_loss")
    assert np.abs(ideal.to_numpy() - IDEAL).sum() < 0.35
    assert ideal.idxmax() == "code"
    web = fitted.optimum(50_000, 64, target="web_loss")
    assert web.idxmax() == "web" and web["web"] > 0.6


def test_screened_ranking_matches_the_full_model(regmix_data):
    X, Y = join_runs(read_mixtures(regmix_data / "train_mixture_1m.csv"),
                     read_metrics(regmix_data / "train_pile_loss_1m.csv"))
    fitted = RegMixRegressor().fit(X, Y["metric/the_pile_pile_cc_val_loss"])
    candidates = MixtureSampler.from_mixtures(X, seed=3).candidates(20_000)
    screened, _ = fitted.rank(candidates, keep=128)  # 100-tree screen keeps the best 10% (2,000)
    full = candidates[np.argsort(fitted.predict(candidates), kind="stable")[:128]]
    np.testing.assert_allclose(screened, full)


def test_wrong_columns_and_models_are_refused():
    X, Y = synthetic_runs(60)
    fitted = RegMixRegressor("linear").fit(X, Y["web_loss"])
    with pytest.raises(ValueError, match=r"missing \['math'\]"):
        fitted.predict(X.drop(columns="math"))
    with pytest.raises(ValueError, match="model must be one of lightgbm, lightgbm_climb, linear, log_linear, gp, auto"):
        RegMixRegressor("forest").fit(X, Y)
    with pytest.raises(ValueError, match="unknown target 'nope'"):
        fitted.optimum(1000, 10, target="nope")
    with pytest.warns(UserWarning, match="12 runs are too few for LightGBM's min_child_samples=20; using 3"):
        RegMixRegressor("lightgbm").fit(X.iloc[:12], Y.iloc[:12])


def test_cli_fit_predict_optimum(regmix_data, tmp_path):
    runner = CliRunner()
    fit_dir = tmp_path / "fit"
    target = "metric/the_pile_pile_cc_val_loss"
    result = runner.invoke(app, ["regmix", "fit", "--mixtures", str(regmix_data / "train_mixture_1m.csv"),
                                 "--metrics", str(regmix_data / "train_pile_loss_1m.csv"), "--target", target,
                                 "--out", str(fit_dir), "--test-mixtures", str(regmix_data / "test_mixture_1m.csv"),
                                 "--test-metrics", str(regmix_data / "test_pile_loss_1m.csv")])
    assert result.exit_code == 0, result.output
    assert "scored by test" in result.output and "(256 runs)" in result.output
    report = json.loads((fit_dir / "report.json").read_text())
    assert report["targets"][target]["spearman"] > 0.98 and len(report["domains"]) == 17
    assert json.loads((fit_dir / "fit.json").read_text())["domains"][11] == "train_the_pile_pile_cc"

    result = runner.invoke(app, ["regmix", "predict", "--fit", str(fit_dir),
                                 "--mixtures", str(regmix_data / "test_mixture_1m.csv")])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0] == "index,prediction" and len(lines) == 257
    predicted = pd.Series([float(line.split(",")[1]) for line in lines[1:]])
    measured = read_metrics(regmix_data / "test_pile_loss_1m.csv")[target].reset_index(drop=True)
    assert predicted.corr(measured, method="spearman") > 0.98

    result = runner.invoke(app, ["regmix", "optimum", "--fit", str(fit_dir), "--samples", "20000", "--top-k", "32",
                                 "--out", str(tmp_path / "best.yaml")])
    assert result.exit_code == 0, result.output
    best = json.loads(result.output)
    assert max(best["weights"], key=best["weights"].get) == "train_the_pile_pile_cc"
    assert sum(best["weights"].values()) == pytest.approx(1.0, abs=1e-4)
    assert (tmp_path / "best.yaml").exists()

    result = runner.invoke(app, ["regmix", "fit", "--mixtures", str(regmix_data / "train_mixture_1m.csv"),
                                 "--metrics", str(regmix_data / "test_pile_loss_1m.csv"), "--target", target,
                                 "--out", str(tmp_path / "bad")])
    assert result.exit_code == 2
    assert "runs do not match: 256 run(s) missing from" in result.output
