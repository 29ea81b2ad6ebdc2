"""Mixture -> metric regression and the best mixture: the predictors of RegMix, CLIMB, the Data Mixing
Laws and olmix behind one scikit-learn interface, chosen per target by cross-validation.

Per-target models (each `fit(X, y)` / `predict(X)`, hyper-parameters in `__init__`, state in `*_`):

- `lightgbm`: RegMix's notebook (sail-sg/regmix regression_fitting/regression.ipynb): up to 1000 rounds,
  lr 0.01, seed 42, early stopping after 3 rounds without gain on held-out runs. RegMix stops on the
  same 128 runs it then reports Spearman on; we stop on an inner 1/8 of the fitting runs and refit on all
  of them for the number of rounds found, so runs scored later are never seen.
- `lightgbm_climb`: CLIMB's predictor as NeMo Curator's tutorial `8_predict.py` fits it: 90/10 split
  (shuffled, seed 42), early stopping after min(20, n_valid) rounds, L1 = L2 = 1, max_depth 4,
  min_child_samples 5, the model trained on the 90% kept as it is.
- `linear`: ordinary least squares (RegMix's linear baseline).
- `log_linear`: the Data Mixing Laws' per-target law L(r) = c + k exp(t . r) (yegcjs/mixinglaws law.py,
  olmix's default `log_linear`), fitted with a Huber loss by L-BFGS. Instead of their hundreds to
  thousands of random starts we start from a good initialisation: for a grid of c below (k > 0) or above
  (k < 0) the data, log|y - c| = t . r is a linear least-squares problem; the best few of those starts
  and a few random ones are refined. Because mixture weights sum to 1, log|k| is absorbed into t.
- `gp`: olmix's Gaussian process (constant * RBF + white noise, normalised targets), the one model with
  a predictive standard deviation (`predict(X, return_std=True)`).
- `auto`: every model above, scored per target by k-fold cross-validation on the user's runs
  (leave-one-out below 40 runs); the best Spearman wins, MAE breaks ties. Every candidate's scores
  and the winner's out-of-fold predictions are kept (`selection_`).

`RegMixRegressor` holds one model per target, ranks candidate mixtures by an Objective (directions,
weights, standardised) under optional per-domain caps, and finds the optimum: RegMix's simulation (the
mean of the top k of many Dirichlet candidates), CLIMB's single best candidate, or for log-linear laws
olmix's direct solve on the simplex with a KL penalty to the prior.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.stats import pearsonr, spearmanr
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.model_selection import KFold, LeaveOneOut, train_test_split
from threadpoolctl import threadpool_limits

from mixtures.config import MIN_RUNS_TO_SCORE
from mixtures.objective import Objective
from mixtures.optimum import KL_PENALTY, cap_mixtures, solve_log_linear
from mixtures.sampler import MixtureSampler, regmix_strengths

REGMIX_LIGHTGBM = {"objective": "regression", "n_estimators": 1000, "learning_rate": 0.01, "random_state": 42}
REGMIX_STOPPING_ROUNDS = 3
REGMIX_VALID_FRACTION = 0.125  # RegMix held 128 of its 1,000 runs out for early stopping
CLIMB_LIGHTGBM = {**REGMIX_LIGHTGBM, "reg_alpha": 1.0, "reg_lambda": 1.0, "max_depth": 4, "min_child_samples": 5}
CLIMB_STOPPING_ROUNDS = 20
CLIMB_VALID_FRACTION = 0.1
CANDIDATES = ("lightgbm", "lightgbm_climb", "linear", "log_linear", "gp")
MODELS = (*CANDIDATES, "auto")
LEAVE_ONE_OUT_BELOW = 40
FINALS = ("top_k_mean", "best")  # RegMix: mean of the top k; CLIMB: the single best candidate
METHODS = ("simulation", "exact")
SCREEN_TREES = 100
SCREEN_KEEP = 0.1
FIT_FILE = "fit.json"
PREDICT_BLOCK = 32_768


@dataclass
class TargetScore:
    """How well predictions rank and match held-out runs of one target."""

    spearman: float
    pearson: float
    mse: float
    mae: float
    n_runs: int

    @classmethod
    def of(cls, truth: np.ndarray, predicted: np.ndarray) -> TargetScore:
        constant = np.ptp(predicted) == 0 or np.ptp(truth) == 0  # a correlation is undefined: no ranking skill
        return cls(0.0 if constant else float(spearmanr(truth, predicted).statistic),
                   0.0 if constant else float(pearsonr(truth, predicted).statistic),
                   float(np.mean((truth - predicted) ** 2)), float(np.mean(np.abs(truth - predicted))), len(truth))


# -- the per-target models -------------------------------------------------------------------------------
class LightGBMModel(RegressorMixin, BaseEstimator):
    """LightGBM with RegMix's (`preset="regmix"`) or CLIMB's (`"climb"`) settings and early stopping.

    With fewer runs than twice min_child_samples no split could grow, so it is lowered to runs // 4 (with a
    warning) rather than fitting a constant. Fits use one thread: run sets are small and LightGBM's
    OpenMP threads spin-wait (a 512-run fit took 0.5 s on one thread and 38 s on two on a busy machine).
    """

    def __init__(self, preset: str = "regmix", params: dict | None = None, early_stopping: bool = True,
                 random_state: int = 42):
        self.preset = preset
        self.params = params
        self.early_stopping = early_stopping
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: np.ndarray) -> LightGBMModel:
        import lightgbm

        if self.preset not in ("regmix", "climb"):
            raise ValueError(f"preset must be regmix or climb, got '{self.preset}'")
        X, y = np.asarray(X, dtype=float), np.asarray(y, dtype=float)
        climb = self.preset == "climb"
        params = {**(CLIMB_LIGHTGBM if climb else REGMIX_LIGHTGBM), "n_jobs": 1, "verbosity": -1,
                  **(self.params or {})}
        min_child = params.get("min_child_samples", 20)
        if len(y) < 2 * min_child:  # no leaf could be split: LightGBM would predict a constant
            params["min_child_samples"] = max(1, len(y) // 4)
            warnings.warn(f"{len(y)} runs are too few for LightGBM's min_child_samples={min_child}; "
                          f"using {params['min_child_samples']}", stacklevel=2)
        n_valid = int(round(len(y) * (CLIMB_VALID_FRACTION if climb else REGMIX_VALID_FRACTION)))
        self.best_iteration_ = params["n_estimators"]
        if self.early_stopping and n_valid >= 2 and len(y) - n_valid >= 2:
            order = np.random.default_rng(self.random_state).permutation(len(y))
            held, kept = order[:n_valid], order[n_valid:]
            rounds = min(CLIMB_STOPPING_ROUNDS, n_valid) if climb else REGMIX_STOPPING_ROUNDS
            model = lightgbm.LGBMRegressor(**params).fit(
                X[kept], y[kept], eval_X=(X[held],), eval_y=(y[held],), eval_metric="l2",
                callbacks=[lightgbm.early_stopping(rounds, verbose=False)])
            self.best_iteration_ = int(model.best_iteration_ or params["n_estimators"])
            if not climb:  # RegMix: all runs, for the rounds early stopping found
                model = lightgbm.LGBMRegressor(**{**params, "n_estimators": self.best_iteration_}).fit(X, y)
        else:
            model = lightgbm.LGBMRegressor(**params).fit(X, y)
        self.model_ = model
        self.n_trees_ = int(model.booster_.num_trees())
        return self

    def predict(self, X: np.ndarray, num_iteration: int | None = None, num_threads: int = 1) -> np.ndarray:
        iterations = self.best_iteration_ if num_iteration is None else min(num_iteration, self.best_iteration_)
        return self.model_.predict(np.asarray(X, dtype=float), num_iteration=iterations, num_threads=num_threads)

    def importance(self) -> np.ndarray:
        return self.model_.booster_.feature_importance(importance_type="gain").astype(float)


def _huber(residual: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """Huber loss per residual and its derivative."""
    small = np.abs(residual) <= delta
    loss = np.where(small, 0.5 * residual**2, delta * (np.abs(residual) - 0.5 * delta))
    return loss, np.where(small, residual, delta * np.sign(residual))


class LogLinearLaw(RegressorMixin, BaseEstimator):
    """The Data Mixing Laws' L(r) = c + k exp(t . r), fitted with a Huber loss (see the module docstring).

    Fitted on standardised targets so `delta` (0.05 standard deviations) means the same for a loss in
    nats and an accuracy in percent; the authors used 0.05 nats on their 5Mix losses (std ~0.2).
    Learned: `c_`, `k_` (its sign: the direction of the curvature), `t_`.
    """

    def __init__(self, delta: float = 0.05, n_grid: int = 24, n_random: int = 2, n_refine: int = 2,
                 random_state: int = 0):
        self.delta = delta
        self.n_grid = n_grid
        self.n_random = n_random
        self.n_refine = n_refine
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: np.ndarray) -> LogLinearLaw:
        with threadpool_limits(1):  # tiny matrices: BLAS threads only contend (0.07 s vs 6 s on a busy 2-core box)
            return self._fit(np.asarray(X, dtype=float), np.asarray(y, dtype=float))

    def _fit(self, X: np.ndarray, y: np.ndarray) -> LogLinearLaw:
        centre, scale = float(y.mean()), float(y.std()) or 1.0
        z = (y - centre) / scale
        rng = np.random.default_rng(self.random_state)
        best = (np.inf, None, None)
        for sign in (1.0, -1.0):
            starts = []
            edge = z.min() if sign > 0 else z.max()
            for gap in np.geomspace(1e-3, 20.0, self.n_grid):  # c just beyond the data, to far away
                c = edge - sign * gap
                t = np.linalg.lstsq(X, np.log(sign * (z - c)), rcond=None)[0]
                starts.append(np.concatenate([[c], t]))
            starts.sort(key=lambda p: self._loss(p, X, z, sign)[0])
            starts = starts[:self.n_refine]
            starts += [np.concatenate([[edge - sign * rng.uniform(0.1, 3)], rng.normal(0, 1, X.shape[1])])
                       for _ in range(self.n_random)]
            for start in starts:
                result = minimize(self._loss, start, args=(X, z, sign), jac=True, method="L-BFGS-B",
                                  options={"maxiter": 200})
                if result.fun < best[0]:
                    best = (float(result.fun), result.x, sign)
        _, params, sign = best
        self.c_ = centre + scale * float(params[0])
        self.k_ = sign * scale
        self.t_ = params[1:]
        return self

    def _loss(self, params: np.ndarray, X: np.ndarray, z: np.ndarray, sign: float) -> tuple[float, np.ndarray]:
        curve = sign * np.exp(np.clip(X @ params[1:], -50, 50))
        loss, slope = _huber(z - params[0] - curve, self.delta)
        grad_c = -slope.sum()
        grad_t = -(slope * curve) @ X
        return float(loss.sum()), np.concatenate([[grad_c], grad_t])

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.c_ + self.k_ * np.exp(np.clip(np.asarray(X, dtype=float) @ self.t_, -50, 50))

    def importance(self) -> np.ndarray:
        return np.abs(self.t_ - self.t_.mean())


def _gaussian_process():
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

    # olmix's GPRegressor kernel and bounds; 3 optimizer restarts instead of its 10 (the 2-core budget)
    kernel = (ConstantKernel(1.0, constant_value_bounds=(1e-3, 1e3)) * RBF(1.0, length_scale_bounds=(1e-2, 1e2))
              + WhiteKernel(0.1, noise_level_bounds=(1e-5, 1e1)))
    return GaussianProcessRegressor(kernel=kernel, n_restarts_optimizer=3, normalize_y=True, random_state=0)


def make_model(name: str, params: dict | None = None):
    """A fresh estimator for one target; `params` override LightGBM's settings."""
    from sklearn.linear_model import LinearRegression

    if name == "lightgbm":
        return LightGBMModel("regmix", params)
    if name == "lightgbm_climb":
        return LightGBMModel("climb", params)
    if name == "linear":
        return LinearRegression()
    if name == "log_linear":
        return LogLinearLaw()
    if name == "gp":
        return _gaussian_process()
    raise ValueError(f"model must be one of {', '.join(MODELS)}, got '{name}'")


def importance(estimator) -> np.ndarray | None:
    """Each domain's share of what a fitted model attends to (gain, |coefficient|, |t - mean t|), if any."""
    if hasattr(estimator, "importance"):
        raw = estimator.importance()
    elif hasattr(estimator, "coef_"):
        raw = np.abs(estimator.coef_ - np.mean(estimator.coef_))  # weights sum to 1: only differences matter
    else:
        return None
    total = float(np.sum(raw))
    return raw / total if total > 0 else np.zeros(len(raw))


@dataclass
class ModelComparison:
    """Every candidate's out-of-fold Spearman and MAE on one target, and which one won."""

    method: str
    scores: pd.DataFrame  # index: model; columns: spearman, mae
    out_of_fold: pd.DataFrame  # index: run; one column per model
    chosen: str

    def as_dict(self) -> dict:
        return {"method": self.method, "chosen": self.chosen,
                "scores": {m: {k: float(v) for k, v in row.items()} for m, row in self.scores.iterrows()},
                "out_of_fold": {m: self.out_of_fold[m].tolist() for m in self.out_of_fold.columns},
                "runs": [str(r) for r in self.out_of_fold.index]}


def cv_splitter(n_runs: int, n_splits: int = 5, seed: int = 0):
    """Leave-one-out under LEAVE_ONE_OUT_BELOW runs, else shuffled k-fold."""
    if n_runs < MIN_RUNS_TO_SCORE:
        raise ValueError(f"{n_runs} runs are too few to score a fit (cross-validation needs at least "
                         f"{MIN_RUNS_TO_SCORE})")
    if n_runs < LEAVE_ONE_OUT_BELOW:
        return "leave-one-out", LeaveOneOut()
    return f"{n_splits}-fold", KFold(n_splits, shuffle=True, random_state=seed)


def compare_models(X: pd.DataFrame, y: pd.Series, candidates: tuple[str, ...] = CANDIDATES, *,
                   params: dict | None = None, n_splits: int = 5, seed: int = 0) -> ModelComparison:
    """Out-of-fold predictions of every candidate on the same folds; the best Spearman wins (MAE on ties)."""
    method, splitter = cv_splitter(len(X), n_splits, seed)
    features, values = X.to_numpy(dtype=float), y.to_numpy(dtype=float)
    predictions = pd.DataFrame(np.nan, index=X.index, columns=list(candidates))
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore")  # small folds: LightGBM's min_child warning and GP bound warnings
        for fit_rows, held_rows in splitter.split(features):
            for name in candidates:
                model = make_model(name, params).fit(features[fit_rows], values[fit_rows])
                predictions.iloc[held_rows, predictions.columns.get_loc(name)] = model.predict(features[held_rows])
    scores = pd.DataFrame({name: vars(TargetScore.of(values, predictions[name].to_numpy()))
                           for name in candidates}).T[["spearman", "mae"]].astype(float)
    order = sorted(candidates, key=lambda m: (-round(scores.loc[m, "spearman"], 3), scores.loc[m, "mae"]))
    return ModelComparison(method, scores, predictions, order[0])


# -- the multi-target regressor ------------------------------------------------------------------------
class RegMixRegressor(RegressorMixin, BaseEstimator):
    """Mixture weights -> targets, one model per target; `rank` and `optimum` find the best mixture.

    `num_threads` is for predicting many candidates. `prior` (token counts per domain) makes `optimum`
    draw candidates with RegMix's sampler rules and is the KL anchor of the exact solve; without it
    candidates are drawn around the training runs (their mean, bounded by their maxima), the region where
    the model has seen data. `directions` ({target: minimize|maximize}) and `weights` define the Objective.
    """

    def __init__(self, model: str = "lightgbm", params: dict | None = None, num_threads: int = 2,
                 prior: dict[str, float] | None = None, directions: dict[str, str] | None = None,
                 weights: dict[str, float] | None = None, cv_folds: int = 5, seed: int = 0):
        self.model = model
        self.params = params
        self.num_threads = num_threads
        self.prior = prior
        self.directions = directions
        self.weights = weights
        self.cv_folds = cv_folds
        self.seed = seed

    # -- fitting ---------------------------------------------------------------------------------
    def fit(self, X: pd.DataFrame, y: pd.DataFrame | pd.Series) -> RegMixRegressor:
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {', '.join(MODELS)}, got '{self.model}'")
        labelled = isinstance(X, pd.DataFrame) and isinstance(y, pd.DataFrame | pd.Series)
        X = _as_frame(X, None)
        Y = y.to_frame() if isinstance(y, pd.Series) else _as_frame(y, None, prefix="target")
        if labelled and not X.index.equals(Y.index):  # pair rows by run, not by position
            if set(X.index) != set(Y.index):
                raise ValueError("mixtures and targets are indexed by different runs")
            Y = Y.loc[X.index]
        if len(X) != len(Y):
            raise ValueError(f"{len(X)} mixtures but {len(Y)} rows of targets")
        self.domains_ = [str(c) for c in X.columns]
        self.targets_ = [str(c) for c in Y.columns]
        self.objective(None)  # directions and weights must name fitted targets
        self.models_, self.model_names_, self.selection_, self.n_runs_ = [], [], {}, {}
        self.centre_, self.scale_ = {}, {}
        with threadpool_limits(1):  # small problems: BLAS threads only contend on a shared machine
            for target in self.targets_:
                self._fit_target(X, Y, target)
        sampler = (MixtureSampler.from_token_counts({d: self.prior[d] for d in self.domains_})
                   if self.prior else MixtureSampler.from_mixtures(X))
        self.search_space_ = {"centre": sampler.centre.tolist(), "upper": sampler.upper.tolist()}
        self.measured_ = {"runs": [str(r) for r in X.index], "mixtures": X.to_numpy(dtype=float).tolist(),
                          "metrics": Y.to_numpy(dtype=float).tolist()}
        return self

    def _fit_target(self, X: pd.DataFrame, Y: pd.DataFrame, target: str) -> None:
        known = np.isfinite(Y[target].to_numpy(dtype=float))
        if known.sum() < 3:
            raise ValueError(f"target '{target}' has {int(known.sum())} measured runs; at least 3 are needed")
        Xk, yk = X[known], Y.loc[known, target]
        name = self.model
        if self.model == "auto":
            comparison = compare_models(Xk, yk, params=self.params, n_splits=self.cv_folds, seed=self.seed)
            self.selection_[target] = comparison.as_dict()
            name = comparison.chosen
        self.models_.append(make_model(name, self.params).fit(Xk.to_numpy(dtype=float), yk.to_numpy(dtype=float)))
        self.model_names_.append(name)
        self.n_runs_[target] = int(known.sum())
        self.centre_[target] = float(yk.mean())
        self.scale_[target] = float(yk.std(ddof=0)) or 1.0

    def objective(self, target: str | None = None) -> Objective:
        """The fitted objective: one `target`, or every target with its direction and weight."""
        targets = self.targets_ if target is None else [self.targets_[self._target_columns(target)[0]]]
        directions = {t: d for t, d in (self.directions or {}).items() if target is None or t == target}
        weights = {t: w for t, w in (self.weights or {}).items() if target is None or t == target}
        return Objective.of(targets, directions, weights)

    def predict(self, X: pd.DataFrame | np.ndarray, return_std: bool = False):
        """Predicted targets: shape (n,) for one target, (n, targets) for several; with `return_std`,
        also the predictive standard deviation (NaN where the model has none, i.e. all but `gp`)."""
        features = _as_frame(X, self.domains_).to_numpy(dtype=float)
        predictions = np.column_stack([self._predict_one(i, features) for i in range(len(self.models_))])
        squeeze = (lambda a: a[:, 0]) if len(self.models_) == 1 else (lambda a: a)
        if not return_std:
            return squeeze(predictions)
        stds = np.column_stack([self.models_[i].predict(features, return_std=True)[1] if name == "gp"
                                else np.full(len(features), np.nan) for i, name in enumerate(self.model_names_)])
        return squeeze(predictions), squeeze(stds)

    def predict_frame(self, X: pd.DataFrame) -> pd.DataFrame:
        """Predictions as a DataFrame with the input's index, one column per target."""
        return pd.DataFrame(self.predict(X).reshape(len(X), -1), index=X.index, columns=self.targets_)

    def _predict_one(self, target: int, features: np.ndarray, num_iteration: int | None = None) -> np.ndarray:
        model = self.models_[target]
        if isinstance(model, LightGBMModel):
            return model.predict(features, num_iteration=num_iteration, num_threads=self.num_threads)
        # in blocks: a GP's kernel against a million candidates would not fit in memory at once
        return np.concatenate([model.predict(features[i:i + PREDICT_BLOCK])
                               for i in range(0, len(features), PREDICT_BLOCK)]) if len(features) else np.empty(0)

    # -- scoring ---------------------------------------------------------------------------------
    def evaluate(self, X: pd.DataFrame, Y: pd.DataFrame | pd.Series) -> dict[str, TargetScore]:
        """Spearman, Pearson, MSE and MAE of the predictions on runs not used for fitting."""
        Y = Y.to_frame() if isinstance(Y, pd.Series) else Y
        return _scores(Y[self.targets_], self.predict_frame(X))

    def fit_report(self, X: pd.DataFrame, Y: pd.DataFrame | pd.Series, *, X_test: pd.DataFrame | None = None,
                   Y_test: pd.DataFrame | None = None, holdout: float = 0.25, min_holdout_runs: int = 32,
                   n_splits: int = 5, seed: int = 0) -> dict:
        """Fit on all of X, Y and say how good the fit is, on the most honest runs available.

        Given test runs, score them. Otherwise hold out `holdout` of the runs when that leaves at least
        `min_holdout_runs` for scoring, else cross-validation (pooled out-of-fold predictions; leave-one-out
        under 40 runs). The report keeps the scored runs' measured and predicted values (`predictions`,
        what the dashboard plots); with `auto` it also holds every candidate's cross-validated scores.
        """
        Y = Y.to_frame() if isinstance(Y, pd.Series) else Y
        if X_test is not None and Y_test is not None:
            self.fit(X, Y)
            method, measured, predicted = "test", Y_test, self.predict_frame(X_test)
        elif len(X) * holdout >= min_holdout_runs:
            X_fit, X_held, Y_fit, measured = train_test_split(X, Y, test_size=holdout, random_state=seed)
            method, predicted = "holdout", clone(self).fit(X_fit, Y_fit).predict_frame(X_held)
            self.fit(X, Y)
        else:
            self.fit(X, Y)
            method, predicted = self._cross_validate(X, Y, n_splits, seed)
            measured = Y
        measured = measured[self.targets_]
        scores = _scores(measured, predicted)
        targets = {t: {**vars(s), "model": name} for (t, s), name in zip(scores.items(), self.model_names_,
                                                                          strict=True)}
        predictions = {"runs": [str(r) for r in predicted.index],
                       "measured": {t: measured[t].tolist() for t in self.targets_},
                       "predicted": {t: predicted[t].tolist() for t in self.targets_}}
        return {"model": self.model, "method": method, "n_runs": len(X), "domains": self.domains_,
                "targets": targets, "selection": self.selection_, "predictions": predictions}

    def _cross_validate(self, X: pd.DataFrame, Y: pd.DataFrame, n_splits: int, seed: int
                        ) -> tuple[str, pd.DataFrame]:
        """The pooled out-of-fold predictions of this regressor, fitted on X, Y. For `auto`, those of each
        target's chosen model in the comparison its fit ran: the choice is not cross-validated again, since
        nested cross-validation costs runs x runs fits (six minutes for 26 runs on 2 cores) and the
        comparison's row of the chosen model is the figure users compare anyway."""
        method, splitter = cv_splitter(len(X), n_splits, seed)
        out_of_fold = pd.DataFrame(np.nan, index=X.index, columns=[str(c) for c in Y.columns])
        if self.model == "auto":
            for target, selection in self.selection_.items():
                chosen = pd.Series(selection["out_of_fold"][selection["chosen"]], index=selection["runs"])
                out_of_fold[target] = chosen.reindex([str(r) for r in X.index]).to_numpy()
            return selection["method"], out_of_fold
        for fit_rows, held_rows in splitter.split(X):
            fold = clone(self).fit(X.iloc[fit_rows], Y.iloc[fit_rows])
            out_of_fold.iloc[held_rows] = fold.predict_frame(X.iloc[held_rows]).to_numpy()
        return method, out_of_fold

    # -- the best mixture ------------------------------------------------------------------------
    def objective_score(self, candidates: np.ndarray, target: str | None = None, num_iteration: int | None = None
                        ) -> np.ndarray:
        """The objective of each candidate mixture (lower is better; see mixtures.objective)."""
        objective = self.objective(target)
        columns = [self.targets_.index(t) for t in objective.targets]
        predictions = np.column_stack([self._predict_one(i, candidates, num_iteration) for i in columns])
        return objective.score(predictions, np.array([self.centre_[t] for t in objective.targets]),
                               np.array([self.scale_[t] for t in objective.targets]))

    def candidates(self, n_samples: int, *, seed: int = 0, upper: np.ndarray | None = None) -> np.ndarray:
        """`n_samples` Dirichlet mixtures from the fitted search space, capped by `upper` when given."""
        sampler = MixtureSampler(self.domains_, np.array(self.search_space_["centre"]),
                                 np.array(self.search_space_["upper"]), strengths=regmix_strengths(), seed=seed)
        drawn = sampler.candidates(n_samples)
        return drawn if upper is None else cap_mixtures(drawn, upper)

    def rank_candidates(self, n_samples: int = 100_000, *, keep: int = 1024, seed: int = 0,
                        target: str | None = None, upper: np.ndarray | None = None
                        ) -> tuple[np.ndarray, np.ndarray]:
        """The `keep` best of `n_samples` mixtures drawn from the fitted search space (see `rank`)."""
        return self.rank(self.candidates(n_samples, seed=seed, upper=upper), keep=keep, target=target)

    def rank(self, candidates: np.ndarray, *, keep: int = 1024, target: str | None = None,
             upper: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The `keep` best candidate mixtures, best (lowest objective) first, with their scores.

        A LightGBM ensemble is slow to evaluate on a million rows (1000 trees), so when every model in
        the objective is a large LightGBM ensemble, candidates are first screened by its first
        SCREEN_TREES trees (their ranking agrees with the full model's at Spearman 0.99 on RegMix's
        data, and its top 128 of 200k all sit within the screen's top 7%) and only the best SCREEN_KEEP
        of them are scored by the full model.
        """
        candidates = np.asarray(candidates, dtype=float)
        if upper is not None:
            candidates = cap_mixtures(candidates, upper)
        columns = [self.targets_.index(t) for t in self.objective(target).targets]
        screenable = all(isinstance(self.models_[i], LightGBMModel) and self.models_[i].n_trees_ > 3 * SCREEN_TREES
                         for i in columns)
        if screenable and len(candidates) * SCREEN_KEEP > keep:
            screen = self.objective_score(candidates, target, num_iteration=SCREEN_TREES)
            candidates = candidates[np.argsort(screen, kind="stable")[:max(keep, int(len(candidates) * SCREEN_KEEP))]]
        score = self.objective_score(candidates, target)
        order = np.argsort(score, kind="stable")[:keep]
        return candidates[order], score[order]

    def _target_columns(self, target: str | None) -> list[int]:
        if target is None:
            return list(range(len(self.targets_)))
        if target not in self.targets_:
            raise ValueError(f"unknown target '{target}'; fitted targets: {', '.join(self.targets_)}")
        return [self.targets_.index(target)]

    def optimum(self, n_samples: int = 100_000, top_k: int = 128, *, seed: int = 0, target: str | None = None,
                candidates: np.ndarray | None = None, upper: np.ndarray | None = None, final: str = "top_k_mean",
                method: str = "simulation", kl: float = KL_PENALTY) -> pd.Series:
        """The best mixture under the objective and the per-domain bounds `upper` (the repetition cap).

        simulation: rank `n_samples` candidates (drawn from the fitted search space unless given) and
        return the mean of the `top_k` best (RegMix, `final="top_k_mean"`) or the best one (CLIMB,
        `final="best"`). exact: every model of the objective must be `log_linear`; the law is minimised
        directly on the simplex with a KL penalty `kl` toward the prior (olmix's exact proposer), started
        from the prior and from the best simulated candidate.
        """
        if final not in FINALS:
            raise ValueError(f"final must be one of {', '.join(FINALS)}, got '{final}'")
        if method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got '{method}'")
        n_samples = n_samples if candidates is None else len(candidates)
        keep = top_k if final == "top_k_mean" else 1
        if not 1 <= keep <= n_samples:
            raise ValueError(f"need 1 <= top_k <= n_samples, got top_k={top_k}, n_samples={n_samples}")
        pool = self.candidates(n_samples, seed=seed, upper=upper) if candidates is None else candidates
        ranked, _ = self.rank(pool, keep=keep, target=target, upper=upper)
        best = ranked[:1] if final == "best" else ranked[:keep].mean(axis=0, keepdims=True)
        if method == "exact":
            best = self._solve_exact(target, upper, kl, start=best[0])[None, :]
        weights = best[0] / best[0].sum()
        return pd.Series(weights, index=self.domains_, name="weight")

    def _solve_exact(self, target: str | None, upper: np.ndarray | None, kl: float, start: np.ndarray) -> np.ndarray:
        objective = self.objective(target)
        columns = [self.targets_.index(t) for t in objective.targets]
        laws = [self.models_[i] for i in columns]
        if not all(isinstance(law, LogLinearLaw) for law in laws):
            names = ", ".join(f"{t}: {self.model_names_[i]}" for t, i in zip(objective.targets, columns, strict=True))
            raise ValueError(f"the exact optimum needs log_linear models for every target ({names})")
        weights = np.asarray(objective.weights) / np.sum(objective.weights)
        scales = np.array([self.scale_[t] for t in objective.targets])
        coefficients = weights * objective.signs() * np.array([law.k_ for law in laws]) / scales
        return solve_log_linear(coefficients, np.array([law.t_ for law in laws]), self.prior_mixture(),
                                upper=upper, kl=kl, starts=[start])

    def prior_mixture(self) -> np.ndarray:
        """The prior as weights: token shares when the prior is known, else the runs' mean mixture."""
        if self.prior:
            shares = np.array([float(self.prior[d]) for d in self.domains_])
        else:
            shares = np.asarray(self.measured_["mixtures"], dtype=float).mean(axis=0)
        return shares / shares.sum()

    def compare(self, best: pd.Series, target: str | None = None) -> dict:
        """The optimum's predicted objective and targets beside the prior's and the best measured run's."""
        objective = self.objective(target)
        columns = [self.targets_.index(t) for t in objective.targets]
        measured = np.asarray(self.measured_["metrics"], dtype=float)[:, columns]
        centre = np.array([self.centre_[t] for t in objective.targets])
        scale = np.array([self.scale_[t] for t in objective.targets])
        complete = np.isfinite(measured).all(axis=1)  # runs with every target measured
        observed = np.where(complete, objective.score(np.where(complete[:, None], measured, 0.0), centre, scale),
                            np.inf)
        run = int(np.argmin(observed))
        mixtures = np.asarray(self.measured_["mixtures"], dtype=float)

        def entry(weights: np.ndarray) -> dict:
            predicted = np.array([self._predict_one(i, weights[None, :])[0] for i in columns])
            return {"objective": float(objective.score(predicted[None, :], centre, scale)[0]),
                    "predicted": dict(zip(objective.targets, predicted.tolist(), strict=True)),
                    "weights": dict(zip(self.domains_, np.round(weights, 6).tolist(), strict=True))}

        return {"targets": list(objective.targets), "directions": list(objective.directions),
                "weights": list(objective.weights), "optimum": entry(best.reindex(self.domains_).to_numpy()),
                "prior": entry(self.prior_mixture()),
                "best_run": {**entry(mixtures[run]), "run": self.measured_["runs"][run],
                             "measured": dict(zip(objective.targets, measured[run].tolist(), strict=True)),
                             "measured_objective": float(observed[run])}}

    # -- persistence -----------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """The fitted models (a joblib file per target) plus fit.json: domains, targets, choices, search space."""
        import joblib

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        files = [f"model-{i:03d}.joblib" for i in range(len(self.models_))]
        for model, name in zip(self.models_, files, strict=True):
            joblib.dump(model, folder / name)
        meta = {**self.get_params(), "model_files": files, "domains": self.domains_, "targets": self.targets_,
                "model_names": self.model_names_, "n_runs": self.n_runs_, "centre": self.centre_,
                "scale": self.scale_, "search_space": self.search_space_, "selection": self.selection_,
                "measured": self.measured_}
        (folder / FIT_FILE).write_text(json.dumps(meta, indent=2))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> RegMixRegressor:
        import joblib

        folder = Path(folder)
        if not (folder / FIT_FILE).exists():
            raise FileNotFoundError(f"{folder} holds no fitted regression ({FIT_FILE} missing)")
        meta = json.loads((folder / FIT_FILE).read_text())
        self = cls(**{k: meta[k] for k in cls().get_params()})
        self.domains_, self.targets_, self.model_names_ = meta["domains"], meta["targets"], meta["model_names"]
        self.n_runs_, self.centre_, self.scale_ = meta["n_runs"], meta["centre"], meta["scale"]
        self.search_space_, self.selection_, self.measured_ = meta["search_space"], meta["selection"], meta["measured"]
        self.models_ = [joblib.load(folder / name) for name in meta["model_files"]]
        return self


def _scores(measured: pd.DataFrame, predicted: pd.DataFrame) -> dict[str, TargetScore]:
    """Each target's score over the runs where it was measured (rows paired by position)."""
    scores = {}
    for target in predicted.columns:
        truth = measured[target].to_numpy(dtype=float)
        known = np.isfinite(truth)
        scores[target] = TargetScore.of(truth[known], predicted[target].to_numpy(dtype=float)[known])
    return scores


def _as_frame(X: pd.DataFrame | np.ndarray, columns: list[str] | None, prefix: str = "domain") -> pd.DataFrame:
    """X as a DataFrame; with `columns`, reordered to them (names must match when X has names)."""
    if not isinstance(X, pd.DataFrame):
        array = np.asarray(X, dtype=float)
        array = array[:, None] if array.ndim == 1 else array
        names = columns or [f"{prefix}_{i}" for i in range(array.shape[1])]
        if len(names) != array.shape[1]:
            raise ValueError(f"expected {len(names)} columns, got {array.shape[1]}")
        return pd.DataFrame(array, columns=names)
    if columns is None:
        return X
    missing = [c for c in columns if c not in X.columns]
    extra = [c for c in X.columns if c not in columns]
    if missing or extra:
        raise ValueError(f"mixture columns differ from the fitted domains: missing {missing[:5]}, unknown {extra[:5]}")
    return X[columns]
