"""RegMix's regression: predict a target loss from mixture weights, then search for the best mixture.

One model per target (LightGBM or plain linear regression), scikit-learn style. LightGBM settings
are RegMix's notebook (sail-sg/regmix regression_fitting/regression.ipynb: regression objective,
1000 rounds, lr 0.01, seed 42, LightGBM defaults otherwise); CLIMB's predictor adds L1/L2 = 1,
max_depth 4 and min_child_samples 5 (`CLIMB_LIGHTGBM`). The optimum is RegMix's simulation: rank many
Dirichlet mixtures drawn like the sampler by predicted loss and average the top k, which is steadier
than the single argmin of a piecewise-constant tree ensemble.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import pearsonr, spearmanr
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.model_selection import KFold, train_test_split

from mixtures.config import MIN_RUNS_TO_SCORE
from mixtures.sampler import MixtureSampler, regmix_strengths

REGMIX_LIGHTGBM = {"objective": "regression", "n_estimators": 1000, "learning_rate": 0.01, "random_state": 42}
CLIMB_LIGHTGBM = {**REGMIX_LIGHTGBM, "reg_alpha": 1.0, "reg_lambda": 1.0, "max_depth": 4, "min_child_samples": 5}
MODELS = ("lightgbm", "linear")
SCREEN_TREES = 100
SCREEN_KEEP = 0.1
FIT_FILE = "fit.json"


@dataclass
class TargetScore:
    """How well predictions rank and match held-out runs of one target."""

    spearman: float
    pearson: float
    mse: float
    n_runs: int

    @classmethod
    def of(cls, truth: np.ndarray, predicted: np.ndarray) -> TargetScore:
        return cls(float(spearmanr(truth, predicted).statistic), float(pearsonr(truth, predicted).statistic),
                   float(np.mean((truth - predicted) ** 2)), len(truth))


class RegMixRegressor(RegressorMixin, BaseEstimator):
    """Mixture weights -> target losses, one model per target; `optimum` finds the best mixture.

    `num_threads` is for predicting many candidates (fits use one thread). `prior` (token counts per
    domain) makes `optimum` draw candidates with RegMix's sampler rules; without it candidates are
    drawn around the training runs (their mean, bounded by their maxima), the region where the model
    has seen data. With fewer runs than twice LightGBM's min_child_samples no split could grow, so it
    is lowered to runs // 4 (with a warning) rather than fitting a constant.
    """

    def __init__(self, model: str = "lightgbm", params: dict | None = None, num_threads: int = 2,
                 prior: dict[str, float] | None = None):
        self.model = model
        self.params = params
        self.num_threads = num_threads
        self.prior = prior

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
        features = X.to_numpy(dtype=float)
        self.models_ = []
        self.n_runs_ = {}
        for target in Y.columns:
            values = Y[target].to_numpy(dtype=float)
            known = np.isfinite(values)
            if known.sum() < 3:
                raise ValueError(f"target '{target}' has {int(known.sum())} measured runs; at least 3 are needed")
            self.models_.append(self._new_model(int(known.sum())).fit(features[known], values[known]))
            self.n_runs_[str(target)] = int(known.sum())
        sampler = (MixtureSampler.from_token_counts({d: self.prior[d] for d in self.domains_})
                   if self.prior else MixtureSampler.from_mixtures(X))
        self.search_space_ = {"centre": sampler.centre.tolist(), "upper": sampler.upper.tolist()}
        return self

    def _new_model(self, n_runs: int):
        if self.model == "linear":
            from sklearn.linear_model import LinearRegression

            return LinearRegression(**(self.params or {}))
        import lightgbm

        # One thread to fit: run sets are small (RegMix: 512 x 17) and LightGBM's OpenMP threads spin-wait;
        # a 512-run fit took 0.5 s on one thread and 38 s on two on a busy 2-core machine.
        params = {**REGMIX_LIGHTGBM, "n_jobs": 1, "verbosity": -1, **(self.params or {})}
        min_child = params.get("min_child_samples", 20)
        if n_runs < 2 * min_child:  # no leaf could be split: LightGBM would predict a constant
            params["min_child_samples"] = max(1, n_runs // 4)
            warnings.warn(f"{n_runs} runs are too few for LightGBM's min_child_samples={min_child}; "
                          f"using {params['min_child_samples']}", stacklevel=3)
        return lightgbm.LGBMRegressor(**params)

    def predict(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Predicted targets: shape (n,) for one target, (n, targets) for several."""
        features = _as_frame(X, self.domains_).to_numpy(dtype=float)
        predictions = np.column_stack([self._predict_one(i, features) for i in range(len(self.models_))])
        return predictions[:, 0] if len(self.models_) == 1 else predictions

    def predict_frame(self, X: pd.DataFrame) -> pd.DataFrame:
        """Predictions as a DataFrame with the input's index, one column per target."""
        return pd.DataFrame(self.predict(X).reshape(len(X), -1), index=X.index, columns=self.targets_)

    def _predict_one(self, target: int, features: np.ndarray, num_iteration: int | None = None) -> np.ndarray:
        if self.model == "linear":
            return self.models_[target].predict(features)
        # the same call for a fitted LGBMRegressor and a Booster loaded from its text file
        return self.models_[target].predict(features, num_iteration=num_iteration, num_threads=self.num_threads)

    # -- scoring ---------------------------------------------------------------------------------
    def evaluate(self, X: pd.DataFrame, Y: pd.DataFrame | pd.Series) -> dict[str, TargetScore]:
        """Spearman, Pearson and MSE of the predictions on runs not used for fitting."""
        Y = Y.to_frame() if isinstance(Y, pd.Series) else Y
        predicted = self.predict_frame(X)
        scores = {}
        for target in self.targets_:
            truth = Y[target].to_numpy(dtype=float)
            known = np.isfinite(truth)
            scores[target] = TargetScore.of(truth[known], predicted[target].to_numpy()[known])
        return scores

    def fit_report(self, X: pd.DataFrame, Y: pd.DataFrame | pd.Series, *, X_test: pd.DataFrame | None = None,
                   Y_test: pd.DataFrame | None = None, holdout: float = 0.25, min_holdout_runs: int = 32,
                   n_splits: int = 5, seed: int = 0) -> dict:
        """Fit on all of X, Y and say how good the fit is, on the most honest runs available.

        Given test runs, score them. Otherwise hold out `holdout` of the runs when that leaves at least
        `min_holdout_runs` for scoring, else k-fold cross-validation (pooled out-of-fold predictions).
        """
        Y = Y.to_frame() if isinstance(Y, pd.Series) else Y
        if X_test is not None and Y_test is not None:
            self.fit(X, Y)
            method, scores = "test", self.evaluate(X_test, Y_test)
        elif len(X) * holdout >= min_holdout_runs:
            X_fit, X_held, Y_fit, Y_held = train_test_split(X, Y, test_size=holdout, random_state=seed)
            method, scores = "holdout", clone(self).fit(X_fit, Y_fit).evaluate(X_held, Y_held)
            self.fit(X, Y)
        else:
            method, scores = f"{min(n_splits, len(X))}-fold", self._cross_validate(X, Y, n_splits, seed)
            self.fit(X, Y)
        return {"model": self.model, "method": method, "n_runs": len(X), "domains": self.domains_,
                "targets": {t: vars(s) for t, s in scores.items()}}

    def _cross_validate(self, X: pd.DataFrame, Y: pd.DataFrame, n_splits: int, seed: int) -> dict[str, TargetScore]:
        if len(X) < MIN_RUNS_TO_SCORE:
            raise ValueError(f"{len(X)} runs are too few to score a fit (k-fold needs at least {MIN_RUNS_TO_SCORE})")
        out_of_fold = pd.DataFrame(np.nan, index=X.index, columns=Y.columns)
        for fit_rows, held_rows in KFold(min(n_splits, len(X)), shuffle=True, random_state=seed).split(X):
            fold = clone(self).fit(X.iloc[fit_rows], Y.iloc[fit_rows])
            out_of_fold.iloc[held_rows] = fold.predict_frame(X.iloc[held_rows]).to_numpy()
        scores = {}
        for target in Y.columns:
            truth = Y[target].to_numpy(dtype=float)
            known = np.isfinite(truth)
            scores[str(target)] = TargetScore.of(truth[known], out_of_fold[target].to_numpy()[known])
        return scores

    # -- the best mixture ------------------------------------------------------------------------
    def rank_candidates(self, n_samples: int = 100_000, *, keep: int = 1024, seed: int = 0,
                        target: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The `keep` best of `n_samples` mixtures drawn from the fitted search space (see `rank`)."""
        sampler = MixtureSampler(self.domains_, np.array(self.search_space_["centre"]),
                                 np.array(self.search_space_["upper"]), strengths=regmix_strengths(), seed=seed)
        return self.rank(sampler.candidates(n_samples), keep=keep, target=target)

    def rank(self, candidates: np.ndarray, *, keep: int = 1024, target: str | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
        """The `keep` best candidate mixtures, best (lowest predicted loss) first, with their scores.

        The score is the predicted `target`, or the mean over targets when there are several and no
        `target`. A LightGBM ensemble is slow to evaluate on a million rows (1000 trees), so candidates
        are first screened by its first SCREEN_TREES trees (their ranking agrees with the full model's
        at Spearman 0.99 on RegMix's data, and its top 128 of 200k all sit within the screen's top 7%)
        and only the best SCREEN_KEEP of them are scored by the full model.
        """
        columns = self._target_columns(target)
        candidates = np.asarray(candidates, dtype=float)
        if self.model == "lightgbm" and len(candidates) * SCREEN_KEEP > keep:
            screen = self._score(candidates, columns, num_iteration=SCREEN_TREES)
            candidates = candidates[np.argsort(screen, kind="stable")[:max(keep, int(len(candidates) * SCREEN_KEEP))]]
        score = self._score(candidates, columns)
        order = np.argsort(score, kind="stable")[:keep]
        return candidates[order], score[order]

    def _target_columns(self, target: str | None) -> list[int]:
        if target is None:
            return list(range(len(self.targets_)))
        if target not in self.targets_:
            raise ValueError(f"unknown target '{target}'; fitted targets: {', '.join(self.targets_)}")
        return [self.targets_.index(target)]

    def _score(self, candidates: np.ndarray, columns: list[int], num_iteration: int | None = None) -> np.ndarray:
        return np.mean([self._predict_one(i, candidates, num_iteration) for i in columns], axis=0)

    def optimum(self, n_samples: int = 100_000, top_k: int = 128, *, seed: int = 0, target: str | None = None,
                candidates: np.ndarray | None = None) -> pd.Series:
        """RegMix's optimum: the mean of the `top_k` best-predicted of `n_samples` candidate mixtures.

        Candidates are drawn from the fitted search space unless given (e.g. by a search's own sampler).
        """
        n_samples = n_samples if candidates is None else len(candidates)
        if not 1 <= top_k <= n_samples:
            raise ValueError(f"need 1 <= top_k <= n_samples, got top_k={top_k}, n_samples={n_samples}")
        ranked, _ = (self.rank_candidates(n_samples, keep=top_k, seed=seed, target=target) if candidates is None
                     else self.rank(candidates, keep=top_k, target=target))
        best = ranked[:top_k].mean(axis=0)
        return pd.Series(best / best.sum(), index=self.domains_, name="weight")

    # -- persistence -----------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Models (LightGBM text files, or joblib for linear) plus fit.json with domains and targets."""
        import joblib

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        files = []
        for i, fitted in enumerate(self.models_):
            if self.model == "lightgbm":
                name = f"model-{i:03d}.lgb.txt"
                booster = getattr(fitted, "booster_", fitted)
                booster.save_model(str(folder / name))
            else:
                name = f"model-{i:03d}.joblib"
                joblib.dump(fitted, folder / name)
            files.append(name)
        meta = {"model": self.model, "params": self.params, "num_threads": self.num_threads, "prior": self.prior,
                "domains": self.domains_, "targets": self.targets_, "n_runs": self.n_runs_,
                "model_files": files, "search_space": self.search_space_}
        (folder / FIT_FILE).write_text(json.dumps(meta, indent=2))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> RegMixRegressor:
        import joblib

        folder = Path(folder)
        if not (folder / FIT_FILE).exists():
            raise FileNotFoundError(f"{folder} holds no fitted regression ({FIT_FILE} missing)")
        meta = json.loads((folder / FIT_FILE).read_text())
        self = cls(meta["model"], meta["params"], meta["num_threads"], meta["prior"])
        self.domains_, self.targets_, self.n_runs_ = meta["domains"], meta["targets"], meta["n_runs"]
        self.search_space_ = meta["search_space"]
        if self.model == "lightgbm":
            import lightgbm

            self.models_ = [lightgbm.Booster(model_file=str(folder / f)) for f in meta["model_files"]]
        else:
            self.models_ = [joblib.load(folder / f) for f in meta["model_files"]]
        return self


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
