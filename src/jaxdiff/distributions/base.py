r"""The interface of exact laws: `AbstractLaw`, its noised law `NoisedLaw`, and `Posterior`.

A law $p_0$ of $X_0$ and a forward process give the law of $X_t = \alpha X_0 + \sigma Z$.
For the laws of this package that law is known in closed form, and so are its score and
the posterior of $X_0$ given $X_t$. Each law has `law.noised(process, t)`, a `NoisedLaw`
with `log_prob`, `score`, `sample`, `posterior`, `denoise` (Tweedie's $E[X_0 | X_t = x]$)
and `posterior_sample`. The same quantities at explicit `(alpha, sigma)` are the `*_at`
methods of the law, which samplers and the PDE engine use directly.
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._checks import check_sample_shape, check_time
from ..processes import AbstractProcess

Scalar = Float[ArrayLike, ""]


def _batch_keys(key: PRNGKeyArray, n: int):
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n))


def _check_n(n) -> int:
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ValueError(f"`n` must be a positive integer number of samples, got {n!r}")
    return int(n)


class Posterior(eqx.Module):
    """The law of `X_0` given `X_t = x`: a mixture `sum_k w_k N(means_k, L_k L_k^T)`.

    `scale` is `None` (Dirac components, a point cloud), shape `(K,)` (isotropic standard
    deviations) or `(K, d, d)` (a factor `L_k` of each covariance).
    """

    log_weights: Float[Array, " K"]
    means: Float[Array, "K d"]
    scale: Float[Array, " K"] | Float[Array, "K d d"] | None

    @property
    def weights(self) -> Float[Array, " K"]:
        """Posterior component probabilities (they sum to one)."""
        return jnp.exp(self.log_weights)

    def mean(self) -> Float[Array, " d"]:
        """Tweedie's denoiser `E[X_0 | X_t = x]`."""
        return self.weights @ self.means

    def sample(self, key: PRNGKeyArray) -> Float[Array, " d"]:
        """One draw of `X_0 | X_t = x`."""
        kc, kn = jax.random.split(key)
        k = jax.random.categorical(kc, self.log_weights)
        m = self.means[k]
        if self.scale is None:
            return m
        z = jax.random.normal(kn, m.shape, m.dtype)
        if self.scale.ndim == 1:
            return m + self.scale[k] * z
        return m + self.scale[k] @ z


class AbstractLaw(eqx.Module):
    """A law of `X_0` on `R^d` whose Gaussian noising `alpha X_0 + sigma Z` is known exactly.

    The `*_at(alpha, sigma, ...)` methods give the noised law's quantities for one sample
    `x` of shape `(d,)`; `noised(process, t)` binds them to a time.
    """

    @property
    @abc.abstractmethod
    def dim(self) -> int:
        """The dimension `d` of one sample."""

    @property
    @abc.abstractmethod
    def singular(self) -> bool:
        """True when the law has no density at `t = 0` (then `t > 0` is required)."""

    @abc.abstractmethod
    def log_prob_at(self, alpha, sigma, x: Float[Array, " d"]) -> Float[Array, ""]:
        """Log-density of `alpha X_0 + sigma Z` at `x`."""

    @abc.abstractmethod
    def score_at(self, alpha, sigma, x: Float[Array, " d"]) -> Float[Array, " d"]:
        """Score `grad log p` of `alpha X_0 + sigma Z` at `x`."""

    @abc.abstractmethod
    def posterior_at(self, alpha, sigma, x: Float[Array, " d"]) -> Posterior:
        """The law of `X_0` given `alpha X_0 + sigma Z = x`."""

    @abc.abstractmethod
    def sample_at(self, key: PRNGKeyArray, n: int, alpha, sigma) -> Float[Array, "n d"]:
        """`n` draws of `alpha X_0 + sigma Z`; row `i` uses `fold_in(key, i)`."""

    @abc.abstractmethod
    def denoise_at(self, alpha, sigma, x: Float[Array, " d"]) -> Float[Array, " d"]:
        """Tweedie's denoiser `E[X_0 | alpha X_0 + sigma Z = x]`."""

    @abc.abstractmethod
    def posterior_sample_at(
        self, key: PRNGKeyArray, alpha, sigma, x: Float[Array, " d"]
    ) -> Float[Array, " d"]:
        """One draw of `X_0` given `alpha X_0 + sigma Z = x`."""

    # ---- the law itself (t = 0) -------------------------------------------------------

    def _refuse_singular(self, what: str):
        if self.singular:
            raise ValueError(
                f"{type(self).__name__} has no {what} at t = 0 (it has no density); "
                "use law.noised(process, t) with t > 0"
            )

    def log_prob(self, x: Float[Array, " d"]) -> Float[Array, ""]:
        """Log-density of the law at one sample `x`."""
        self._refuse_singular("log-density")
        check_sample_shape("x", x, self.dim)
        return self.log_prob_at(1.0, 0.0, x)

    def score(self, x: Float[Array, " d"]) -> Float[Array, " d"]:
        """Score of the law at one sample `x`."""
        self._refuse_singular("score")
        check_sample_shape("x", x, self.dim)
        return self.score_at(1.0, 0.0, x)

    def sample(self, key: PRNGKeyArray, n: int) -> Float[Array, "n d"]:
        """`n` draws, shape `(n, d)`; row `i` uses `fold_in(key, i)`."""
        return self.sample_at(key, _check_n(n), 1.0, 0.0)

    def noised(self, process: AbstractProcess, t: Scalar) -> NoisedLaw:
        """The law of `X_t` when `X_0` has this law and `process` noises it."""
        return NoisedLaw(self, process, t)

    def given(self, observation, y) -> AbstractLaw:
        """The exact law of `X_0` given a `LinearObservation` `Y = A X_0 + s N(0, I)` equal to
        `y`, in closed form (`jaxdiff.conditional.posterior_given`; Gaussian mixtures,
        Gaussians and point clouds)."""
        from ..conditional.observation import posterior_given

        return posterior_given(self, observation, y)


class NoisedLaw(eqx.Module):
    """The law of `X_t = alpha(t) X_0 + sigma(t) Z` for an exact law of `X_0`.

    Methods act on one sample `x` of shape `(d,)`; batch with `jax.vmap`.
    """

    law: AbstractLaw
    process: AbstractProcess
    t: Scalar

    def __init__(self, law: AbstractLaw, process: AbstractProcess, t: Scalar):
        """**Arguments:** `law`, the law of `X_0`; `process`; `t` in `[0, T]` (`> 0` for a
        point cloud or any law without a density)."""
        self.law = law
        self.process = process
        self.t = check_time(
            "t",
            t,
            process.T,
            strictly_positive=law.singular,
            what=f"a {type(law).__name__} is singular at t = 0",
        )

    @property
    def alpha(self):
        return self.process.alpha(self.t)

    @property
    def sigma(self):
        return self.process.sigma(self.t)

    def log_prob(self, x: Float[Array, " d"]) -> Float[Array, ""]:
        check_sample_shape("x", x, self.law.dim)
        return self.law.log_prob_at(self.alpha, self.sigma, x)

    def score(self, x: Float[Array, " d"]) -> Float[Array, " d"]:
        check_sample_shape("x", x, self.law.dim)
        return self.law.score_at(self.alpha, self.sigma, x)

    def sample(self, key: PRNGKeyArray, n: int) -> Float[Array, "n d"]:
        return self.law.sample_at(key, _check_n(n), self.alpha, self.sigma)

    def posterior(self, x: Float[Array, " d"]) -> Posterior:
        """The law of `X_0` given `X_t = x` (component weights, means and scales)."""
        check_sample_shape("x", x, self.law.dim)
        return self.law.posterior_at(self.alpha, self.sigma, x)

    def denoise(self, x: Float[Array, " d"]) -> Float[Array, " d"]:
        """Tweedie's denoiser `E[X_0 | X_t = x] = (x + sigma^2 score(x)) / alpha`."""
        check_sample_shape("x", x, self.law.dim)
        return self.law.denoise_at(self.alpha, self.sigma, x)

    def posterior_sample(self, key: PRNGKeyArray, x: Float[Array, " d"]) -> Float[Array, " d"]:
        """One draw of `X_0 | X_t = x`."""
        check_sample_shape("x", x, self.law.dim)
        return self.law.posterior_sample_at(key, self.alpha, self.sigma, x)
