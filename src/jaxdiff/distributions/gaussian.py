r"""A single Gaussian `N(mean, cov)`, `cov` possibly singular (data on an affine subspace)."""

from __future__ import annotations

from jaxtyping import Array, Float

from .._checks import as_float_array
from .base import AbstractLaw
from .mixture import GaussianMixture


class Gaussian(AbstractLaw):
    """A Gaussian `N(mean, cov)`; `cov` may be singular (data on an affine subspace)."""

    mixture: GaussianMixture

    def __init__(self, mean, cov):
        """**Arguments:** `mean`, shape `(d,)`; `cov`, shape `(d, d)`, symmetric PSD."""
        mean = as_float_array("mean", mean)
        if mean.ndim != 1:
            raise ValueError(f"`mean` must have shape (d,), got {mean.shape}")
        cov = as_float_array("cov", cov)
        d = mean.shape[0]
        if cov.shape != (d, d):
            raise ValueError(f"`cov` must have shape ({d}, {d}) to match `mean`, got {cov.shape}")
        self.mixture = GaussianMixture(mean[None], covs=cov[None])

    @property
    def mean(self) -> Float[Array, " d"]:
        return self.mixture.means[0]

    @property
    def cov(self) -> Float[Array, "d d"]:
        return self.mixture.covariances[0]

    @property
    def dim(self) -> int:
        return self.mixture.dim

    @property
    def singular(self) -> bool:
        return self.mixture.singular

    def log_prob_at(self, alpha, sigma, x):
        return self.mixture.log_prob_at(alpha, sigma, x)

    def score_at(self, alpha, sigma, x):
        return self.mixture.score_at(alpha, sigma, x)

    def posterior_at(self, alpha, sigma, x):
        return self.mixture.posterior_at(alpha, sigma, x)

    def denoise_at(self, alpha, sigma, x):
        return self.mixture.denoise_at(alpha, sigma, x)

    def posterior_sample_at(self, key, alpha, sigma, x):
        return self.mixture.posterior_sample_at(key, alpha, sigma, x)

    def sample_at(self, key, n, alpha, sigma):
        return self.mixture.sample_at(key, n, alpha, sigma)
