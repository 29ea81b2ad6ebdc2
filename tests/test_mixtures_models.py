"""The predictors against each other on released runs, objectives with a direction, the repetition cap,
model choice by cross-validation and the log-linear law's exact optimum."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from mixforge.cli import app
from mixtures.io import read_mixing_laws
from mixtures.objective import Objective, RepetitionCap
from mixtures.optimum import cap_mixtures
from mixtures.regression import LogLinearLaw, RegMixRegressor, make_model
from mixtures.sampler import MixtureSampler


@pytest.fixture(scope="module")
def five_mix(mixinglaws_data):
    return read_mixing_laws(mixinglaws_data / "5Mix" / "70M.txt")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_log_linear_law_beats_linear_and_lightgbm_on_unseen_5mix_mixtures(five_mix, seed):
    """The paper's protocol: fit on 20 of the 26 5Mix mixtures (70M, final step), predict the other 6."""
    X, Y = five_mix
    order = np.random.default_rng(seed).permutation(len(X))
    fit, held = order[:20], order[20:]
    mae = {}
    for name in ("log_linear", "linear", "lightgbm"):
        errors = [np.abs(make_model(name).fit(X.iloc[fit].to_numpy(), Y[t].iloc[fit].to_numpy())
                         .predict(X.iloc[held].to_numpy()) - Y[t].iloc[held].to_numpy()).mean() for t in Y.columns]
        mae[name] = float(np.mean(errors))
    assert mae["log_linear"] < mae["linear"] and mae["log_linear"] < mae["lightgbm"], mae
    assert mae["log_linear"] < 0.05  # nats, mean over the five validation groups


def test_log_linear_law_recovers_a_known_law():
    X = MixtureSampler.from_token_counts({"a": 5, "b": 3, "c": 2}, seed=1).sample(30).to_numpy()
    t = np.array([-2.0, 0.5, 1.0])
    y = 1.5 + 0.8 * np.exp(X @ t)
    law = LogLinearLaw().fit(X, y)
    np.testing.assert_allclose(law.predict(X), y, atol=1e-3)
    assert law.k_ > 0


def test_auto_picks_by_leave_one_out_and_reports_every_candidate(five_mix):
    X, Y = five_mix
    fitted = RegMixRegressor("auto").fit(X, Y["internet"])
    selection = fitted.selection_["internet"]
    assert selection["method"] == "leave-one-out"  # 26 runs < 40
    scores = selection["scores"]
    assert set(scores) == {"lightgbm", "lightgbm_climb", "linear", "log_linear", "gp"}
    best = max(scores, key=lambda m: (round(scores[m]["spearman"], 3), -scores[m]["mae"]))
    assert selection["chosen"] == best == fitted.model_names_[0]
    assert len(selection["out_of_fold"][best]) == 26


def test_maximise_picks_the_highest_predicted_mixture():
    sampler = MixtureSampler.from_token_counts({"web": 40, "code": 30, "books": 30}, seed=0)
    X = sampler.sample(60)
    accuracy = 0.3 + 0.4 * X["code"] - 0.1 * X["books"]
    fitted = RegMixRegressor("linear", directions={"acc": "max"}).fit(X, accuracy.rename("acc"))
    candidates = sampler.candidates(5_000)
    best = fitted.optimum(candidates=candidates, final="best")
    highest = candidates[np.argmax(fitted.predict(candidates))]
    np.testing.assert_allclose(best.to_numpy(), highest / highest.sum())
    minimised = RegMixRegressor("linear").fit(X, accuracy.rename("acc")).optimum(candidates=candidates, final="best")
    assert best["code"] > 0.5 > minimised["code"]


def test_two_targets_combine_as_weighted_standardised_predictions():
    objective = Objective.of(["loss", "acc"], {"acc": "maximize"}, {"loss": 1, "acc": 3})
    score = objective.score(np.array([[3.0, 0.5], [3.0, 0.7]]), np.array([3.0, 0.5]), np.array([1.0, 0.1]))
    np.testing.assert_allclose(score, [0.0, -1.5])  # (1 * 0 - 3 * 2) / 4
    assert Objective.parse(["metric/pile_cc_loss", "arc:acc:max:2"]) == (
        ["metric/pile_cc_loss", "arc:acc"], {"arc:acc": "maximize"}, {"arc:acc": 2.0})


def test_repetition_cap_binds_when_a_domain_is_small():
    """Every predictor wants the small `math` domain; 1M planned tokens may repeat its 50k tokens 4 times."""
    tokens = {"web": 800_000, "code": 150_000, "math": 50_000}
    sampler = MixtureSampler.from_token_counts(tokens, seed=0)
    X = sampler.sample(80)
    loss = pd.Series(3.0 - 2.0 * X["math"] + 0.3 * X["code"], name="loss")
    fitted = RegMixRegressor("linear", prior=tokens).fit(X, loss)
    free = fitted.optimum(20_000, 32)
    assert free["math"] > 0.5
    cap = RepetitionCap(tokens, planned_tokens=1_000_000)
    upper = cap.upper(fitted.domains_)
    assert upper.tolist() == [1.0, 0.6, 0.2]
    capped = fitted.optimum(20_000, 32, upper=upper)
    assert capped["math"] == pytest.approx(0.2, abs=1e-3)  # the cap binds, the rest is still optimised
    assert (capped.to_numpy() <= upper + 1e-9).all() and capped.sum() == pytest.approx(1.0)
    assert capped["web"] == pytest.approx(0.8, abs=1e-3)  # code costs loss: the freed weight goes to web
    with pytest.raises(ValueError, match="no mixture meets the repetition cap"):
        RepetitionCap(tokens, planned_tokens=10_000_000).upper(fitted.domains_)


def test_capped_candidates_stay_on_the_simplex():
    rng = np.random.default_rng(0)
    drawn = rng.dirichlet(np.ones(4) * 0.3, size=2_000)
    upper = np.array([0.1, 0.5, 0.6, 1.0])
    capped = cap_mixtures(drawn, upper)
    assert (capped <= upper + 1e-9).all() and np.allclose(capped.sum(axis=1), 1.0) and (capped >= 0).all()


def test_exact_optimum_of_the_log_linear_law_beats_simulation(five_mix):
    X, Y = five_mix
    fitted = RegMixRegressor("log_linear").fit(X, Y)
    simulated = fitted.optimum(20_000, 64)
    exact = fitted.optimum(20_000, 64, method="exact", kl=0.0)
    value = fitted.objective_score
    assert value(exact.to_numpy()[None, :])[0] <= value(simulated.to_numpy()[None, :])[0] + 1e-6
    anchored = fitted.optimum(20_000, 64, method="exact", kl=100.0)  # a heavy KL pulls to the prior
    assert np.abs(anchored.to_numpy() - fitted.prior_mixture()).sum() < np.abs(exact.to_numpy()
                                                                               - fitted.prior_mixture()).sum()
    report = fitted.compare(exact)
    assert report["optimum"]["objective"] <= report["best_run"]["objective"] + 1e-6
    assert set(report) >= {"optimum", "prior", "best_run"} and report["best_run"]["run"] in X.index
    with pytest.raises(ValueError, match="needs log_linear models"):
        RegMixRegressor("linear").fit(X, Y).optimum(1_000, 8, method="exact")


def test_gp_predictions_carry_an_uncertainty(five_mix):
    X, Y = five_mix
    fitted = RegMixRegressor("gp").fit(X, Y["prose"])
    mean, std = fitted.predict(X, return_std=True)
    assert mean.shape == std.shape == (26,) and (std > 0).all()
    assert np.isnan(RegMixRegressor("linear").fit(X, Y["prose"]).predict(X, return_std=True)[1]).all()


def test_cli_fit_auto_on_an_olmix_swarm_prints_every_model_and_caps_the_optimum(five_mix, tmp_path):
    """The issue's done-when: a swarm as olmix releases it, `fit --model auto`, and a capped optimum."""
    X, Y = five_mix
    swarm = tmp_path / "swarm"
    swarm.mkdir()
    labels = pd.DataFrame({"run": [f"run{r}" for r in X.index], "name": [f"swarm-{r}" for r in X.index],
                           "index": range(len(X))})
    pd.concat([labels, X.reset_index(drop=True)], axis=1).to_csv(swarm / "ratios.csv")
    pd.concat([labels, Y.reset_index(drop=True)], axis=1).to_csv(swarm / "metrics.csv")
    runner = CliRunner()
    result = runner.invoke(app, ["regmix", "fit", "--runs", str(swarm), "--target", "internet",
                                 "--model", "auto", "--out", str(tmp_path / "fit")])
    assert result.exit_code == 0, result.output
    for name in ("lightgbm", "lightgbm_climb", "linear", "log_linear", "gp"):
        assert f"  {name}" in result.output
    assert "leave-one-out" in result.output and "chosen:" in result.output
    tokens = tmp_path / "tokens.json"
    tokens.write_text('{"academic": 1e6, "prose": 1e6, "dialogue": 2e5, "symbolic": 1e6, "internet": 1e6}')
    result = runner.invoke(app, ["regmix", "optimum", "--fit", str(tmp_path / "fit"), "--samples", "20000",
                                 "--tokens", str(tokens), "--planned-tokens", "4000000"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    assert printed["constraint"]["max_weight"]["dialogue"] == pytest.approx(0.2)
    assert printed["weights"]["dialogue"] <= 0.2 + 1e-6
    assert set(printed["comparison"]) >= {"optimum", "prior", "best_run"}
