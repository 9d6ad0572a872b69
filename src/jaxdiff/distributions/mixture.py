r"""Gaussian mixtures: `GaussianMixture`, isotropic or with full (possibly singular) covariances."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._checks import as_float_array, check_finite, is_concrete
from ._translation import centre, shifted_query
from .base import AbstractLaw, Posterior, _batch_keys


def _check_weights(weights, K: int, dtype):
    if weights is None:
        return jnp.full((K,), -math.log(K), dtype)
    w = as_float_array("weights", weights)
    if w.shape != (K,):
        raise ValueError(f"`weights` must have shape ({K},) to match `means`, got {w.shape}")
    if is_concrete(w):
        wn = np.asarray(w, dtype=np.float64)
        if not np.all(np.isfinite(wn)) or np.any(wn < 0):
            raise ValueError("`weights` must be finite and non-negative")
        if abs(wn.sum() - 1.0) > 1e-5:
            raise ValueError(f"`weights` must sum to one, got sum {wn.sum():.8g}")
    return jnp.log(w)


class GaussianMixture(AbstractLaw):
    r"""A mixture $\sum_k \pi_k N(m_k, C_k)$, isotropic ($C_k = s_k^2 I$) or full.

    Noised, it is again a Gaussian mixture: $\sum_k \pi_k N(\alpha m_k, \alpha^2 C_k + \sigma^2 I)$.
    Full covariances are held by their eigendecomposition, so singular ones (data on a
    subspace) are exact at every $t > 0$. Residuals $x - \alpha m_k$ are formed relative to
    a centre of the means, so a mixture far from the origin keeps its accuracy.
    """

    means: Float[Array, "K d"]
    center: Float[Array, " d"]  # residuals are (x - alpha c) - alpha (m_k - c), exactly shifted
    log_weights: Float[Array, " K"]
    variances: Float[Array, " K"] | None  # isotropic s_k^2
    evals: Float[Array, "K d"] | None  # full: C_k = U_k diag(evals_k) U_k^T
    evecs: Float[Array, "K d d"] | None
    is_singular: bool = eqx.field(static=True)  # decided once, so it survives jit and vmap

    def __init__(self, means, stds=None, weights=None, *, covs=None):
        """**Arguments:**

        - `means`: shape `(K, d)`.
        - `stds`: isotropic standard deviations, a scalar or shape `(K,)`, each `>= 0`.
        - `weights`: shape `(K,)`, non-negative, summing to one (default: uniform).
        - `covs`: full covariances instead of `stds`, shape `(K, d, d)`, symmetric PSD.
        """
        means = check_finite("means", as_float_array("means", means))
        if means.ndim != 2 or means.shape[0] < 1 or means.shape[1] < 1:
            raise ValueError(f"`means` must have shape (K, d) with K, d >= 1, got {means.shape}")
        K, d = means.shape
        self.means = means
        self.center = centre(means)
        self.log_weights = _check_weights(weights, K, means.dtype)
        if (stds is None) == (covs is None):
            raise ValueError("give exactly one of `stds` (isotropic) and `covs` (full covariances)")
        if stds is not None:
            s = check_finite("stds", as_float_array("stds", stds))
            if s.ndim == 0:
                s = jnp.full((K,), s)
            if s.shape != (K,):
                raise ValueError(f"`stds` must be a scalar or have shape ({K},), got {s.shape}")
            if is_concrete(s) and np.any(np.asarray(s) < 0):
                raise ValueError("`stds` must be non-negative")
            self.variances, self.evals, self.evecs = jnp.square(s), None, None
        else:
            c = check_finite("covs", as_float_array("covs", covs))
            if c.shape != (K, d, d):
                raise ValueError(f"`covs` must have shape ({K}, {d}, {d}), got {c.shape}")
            if is_concrete(c):
                cn = np.asarray(c, dtype=np.float64)
                if not np.allclose(cn, np.swapaxes(cn, -1, -2), atol=1e-6 * max(1.0, np.abs(cn).max())):
                    raise ValueError("`covs` must be symmetric")
            evals, evecs = jnp.linalg.eigh(c)
            if is_concrete(evals):
                scale = max(1.0, float(jnp.max(jnp.abs(evals))))
                smallest = float(jnp.min(evals))
                if smallest < -1e-6 * scale:
                    raise ValueError(
                        f"`covs` must be positive semi-definite, smallest eigenvalue {smallest:.3g}"
                    )
            self.variances, self.evals, self.evecs = None, jnp.clip(evals, 0.0), evecs
        v = self.variances if self.variances is not None else self.evals
        # A law built from traced arrays cannot be inspected: treat it as singular (t > 0).
        self.is_singular = not is_concrete(v) or bool(np.min(np.asarray(v)) <= 0)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    @property
    def weights(self) -> Float[Array, " K"]:
        return jnp.exp(self.log_weights)

    @property
    def singular(self) -> bool:
        return self.is_singular

    @property
    def covariances(self) -> Float[Array, "K d d"]:
        """Component covariances `C_k`, shape `(K, d, d)`."""
        if self.variances is not None:
            return self.variances[:, None, None] * jnp.eye(self.dim, dtype=self.means.dtype)
        return jnp.einsum("kij,kj,klj->kil", self.evecs, self.evals, self.evecs)

    def mean(self) -> Float[Array, " d"]:
        return self.weights @ self.means

    def with_labels(self, labels, *, n_classes: int | None = None):
        """This law with a class label per component: a `jaxdiff.Labelled` law, whose
        `condition(y)` is the exact law of `X_0` given the class and whose
        `log_classifier_at` is the exact noisy classifier."""
        from ..conditional.labels import Labelled

        return Labelled(self, labels, n_classes=n_classes)

    def covariance(self) -> Float[Array, "d d"]:
        """Covariance of the whole mixture."""
        mu = self.mean()
        dm = self.means - mu
        return jnp.einsum("k,kij->ij", self.weights, self.covariances) + jnp.einsum(
            "k,ki,kj->ij", self.weights, dm, dm
        )

    # Per-component pieces at (alpha, sigma): log-likelihoods, whitened residuals.
    def _components(self, alpha, sigma, x):
        diff = shifted_query(x, alpha, self.center)[None, :] - alpha * (self.means - self.center)  # (K, d)
        if self.variances is not None:
            v = alpha**2 * self.variances + sigma**2  # (K,)
            ll = -0.5 * jnp.sum(diff**2, axis=1) / v - 0.5 * self.dim * jnp.log(2 * jnp.pi * v)
            return ll, diff, v
        y = jnp.einsum("kji,kj->ki", self.evecs, diff)  # U^T diff
        v = alpha**2 * self.evals + sigma**2  # (K, d)
        ll = -0.5 * jnp.sum(y**2 / v, axis=1) - 0.5 * jnp.sum(jnp.log(2 * jnp.pi * v), axis=1)
        return ll, y, v

    def log_prob_at(self, alpha, sigma, x):
        ll, _, _ = self._components(alpha, sigma, x)
        return jax.nn.logsumexp(self.log_weights + ll)

    def score_at(self, alpha, sigma, x):
        ll, r, v = self._components(alpha, sigma, x)
        resp = jax.nn.softmax(self.log_weights + ll)
        if self.variances is not None:
            return -jnp.einsum("k,kd->d", resp / v, r)
        return -jnp.einsum("k,kij,kj->i", resp, self.evecs, r / v)

    def posterior_at(self, alpha, sigma, x):
        ll, r, v = self._components(alpha, sigma, x)
        log_w = jax.nn.log_softmax(self.log_weights + ll)
        if self.variances is not None:
            gain = alpha * self.variances / v  # (K,)
            means = self.means + gain[:, None] * r
            scale = jnp.sqrt(self.variances * sigma**2 / v)
            return Posterior(log_w, means, scale)
        gain = alpha * self.evals / v  # (K, d)
        means = self.means + jnp.einsum("kij,kj->ki", self.evecs, gain * r)
        scale = self.evecs * jnp.sqrt(self.evals * sigma**2 / v)[:, None, :]
        return Posterior(log_w, means, scale)

    def denoise_at(self, alpha, sigma, x):
        return self.posterior_at(alpha, sigma, x).mean()

    def posterior_sample_at(self, key, alpha, sigma, x):
        return self.posterior_at(alpha, sigma, x).sample(key)

    def sample_at(self, key, n, alpha, sigma):
        def one(k):
            kc, kx, kz = jax.random.split(k, 3)
            c = jax.random.categorical(kc, self.log_weights)
            z0 = jax.random.normal(kx, (self.dim,), self.means.dtype)
            if self.variances is not None:
                x0 = self.means[c] + jnp.sqrt(self.variances[c]) * z0
            else:
                x0 = self.means[c] + self.evecs[c] @ (jnp.sqrt(self.evals[c]) * z0)
            return alpha * x0 + sigma * jax.random.normal(kz, (self.dim,), self.means.dtype)

        return jax.vmap(one)(_batch_keys(key, n))
