"""RegMix sampler properties: the bound, the floor, sums, distinctness, seeds, and the prior's pull."""

from __future__ import annotations

import numpy as np
import pytest

from mixtures.io import read_mixtures
from mixtures.sampler import MixtureSampler, regmix_strengths

TOKENS = {"web": 5_000_000, "code": 2_000_000, "books": 600_000, "math": 30_000, "legal": 8_000}


@pytest.fixture(scope="module")
def sampled():
    return MixtureSampler.from_token_counts(TOKENS, seed=7).sample(512)


def test_strengths_are_regmix_grid():
    strengths = regmix_strengths()
    assert len(strengths) == 15
    assert strengths[0] == pytest.approx(0.1) and strengths[-1] == pytest.approx(5.0)
    np.testing.assert_allclose(np.diff(np.log(strengths)), np.log(50) / 14)


def test_prior_is_token_share_at_temperature_half():
    sampler = MixtureSampler.from_token_counts({"a": 900, "b": 100})
    np.testing.assert_allclose(sampler.centre, [0.75, 0.25])  # sqrt(0.9):sqrt(0.1) = 3:1
    np.testing.assert_allclose(sampler.upper, [1.0, 1.0])  # min(15 * share, 1)
    small = MixtureSampler.from_token_counts({"a": 990, "b": 10})
    assert small.upper[1] == pytest.approx(0.15)


def test_mixtures_respect_bound_floor_and_sum(sampled):
    shares = np.array(list(TOKENS.values()), dtype=float) / sum(TOKENS.values())
    weights = sampled.to_numpy()
    assert sampled.shape == (512, 5) and list(sampled.columns) == list(TOKENS)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-12)
    assert (weights <= np.minimum(15 * shares, 1.0) + 1e-12).all()
    assert ((weights == 0) | (weights >= 2e-4 * 0.99)).all()
    assert (weights == 0).any()  # spiky draws at small strengths zero some domains
    # the bound binds: legal (0.1% of tokens) never exceeds 1.6%, although Dirichlet draws often would
    assert weights[:, 4].max() <= 15 * shares[4] + 1e-12 and weights[:, 4].max() > 0.5 * 15 * shares[4]


def test_mixtures_are_distinct_on_the_grid(sampled):
    grid = np.round(sampled.to_numpy() / 2e-4).astype(np.int64)
    assert len(np.unique(grid, axis=0)) == len(grid)
    assert sampled.index[0] == "run-0000" and sampled.index.is_unique


def test_seed_determines_the_draws(sampled):
    again = MixtureSampler.from_token_counts(TOKENS, seed=7).sample(512)
    other = MixtureSampler.from_token_counts(TOKENS, seed=8).sample(512)
    assert again.equals(sampled)
    assert not np.allclose(other.to_numpy(), sampled.to_numpy())


def test_mean_mixture_follows_the_tempered_prior(sampled):
    # web has 65% of tokens, 45% after temperature 0.5; the bound trims only the small domains
    means = sampled.mean()
    assert means.idxmax() == "web" and 0.35 < means["web"] < 0.6
    assert means["code"] > means["books"] > means["legal"]


def test_ratios_csv_reads_back(sampled, tmp_path):
    from mixtures.io import write_mixtures

    back = read_mixtures(write_mixtures(sampled, tmp_path / "ratios.csv"))
    np.testing.assert_allclose(back.to_numpy(), sampled.to_numpy(), atol=1e-6)


def test_impossible_bound_and_empty_domain_are_refused():
    with pytest.raises(ValueError, match="domains without tokens cannot be sampled: math"):
        MixtureSampler.from_token_counts({"web": 10, "math": 0})
    tight = MixtureSampler(["a", "b"], np.array([0.5, 0.5]), np.array([0.3, 0.3]))
    with pytest.raises(ValueError, match="passed the bound"):
        tight.sample(4, max_rounds=2)
