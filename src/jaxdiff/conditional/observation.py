r"""Linear Gaussian observations and the exact posterior of an exact prior.

An observation $Y = A X_0 + s\,\varepsilon$, $\varepsilon \sim N(0, I_m)$, with $A$ an
$m \times d$ matrix acting on the flattened sample. For a Gaussian mixture prior
$\sum_k \pi_k N(m_k, C_k)$ each component is conjugate: with $S_k = A C_k A^\top + s^2 I$
and $G_k = C_k A^\top S_k^{-1}$,

$$X_0 \mid Y = y \;\sim\; \sum_k \tilde\pi_k\, N\big(m_k + G_k (y - A m_k),\; C_k - G_k A C_k\big),
\qquad \tilde\pi_k \propto \pi_k\, N(y;\, A m_k,\, S_k),$$

again a Gaussian mixture (singular where the observation pins coordinates down). For a
point cloud the posterior is the same cloud with weights
$\tilde\pi_i \propto \exp(-|y - A x_i|^2 / 2s^2)$: a zero-variance `GaussianMixture`.
Either way `ExactScore` and `ExactSampler` of the posterior give ground truth for
posterior samplers.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._checks import as_float_array, check_finite, is_concrete
from ..distributions import AbstractLaw, Gaussian, GaussianMixture, PointCloud

Scalar = Float[ArrayLike, ""]


def _check_noise_std(noise_std):
    s = as_float_array("noise_std", noise_std)
    if s.shape != ():
        raise ValueError(f"`noise_std` must be a scalar, got shape {s.shape}")
    if is_concrete(s):
        v = float(s)
        if not np.isfinite(v) or v < 0:
            raise ValueError(f"`noise_std` must be finite and >= 0 (a standard deviation), got {v}")
        return s
    return eqx.error_if(s, ~(jnp.isfinite(s) & (s >= 0)), "`noise_std` must be finite and >= 0")


class LinearObservation(eqx.Module):
    """`Y = A X_0 + noise_std * N(0, I_m)`, `A` of shape `(m, d)` acting on flattened samples.

    Ready-made `A`: `LinearObservation.inpainting(mask, noise_std)` (observe the coordinates
    where `mask` is true) and `LinearObservation.downsampling(shape, factor, noise_std)`
    (average over `factor x factor` pixel blocks).
    """

    A: Float[Array, "m d"]
    noise_std: Float[Array, ""]

    def __init__(self, A, noise_std: Scalar = 0.0):
        """**Arguments:** `A`, shape `(m, d)`, finite; `noise_std >= 0` (0: noise-free)."""
        A = check_finite("A", as_float_array("A", A))
        if A.ndim != 2 or A.shape[0] < 1 or A.shape[1] < 1:
            raise ValueError(f"`A` must be a matrix of shape (m, d) with m, d >= 1, got {A.shape}")
        self.A = A
        self.noise_std = _check_noise_std(noise_std)

    @classmethod
    def inpainting(cls, mask, noise_std: Scalar = 0.0) -> LinearObservation:
        """Observe `x[mask]`: `A` is the rows of the identity where the (flattened, concrete,
        boolean) `mask` is true."""
        if not is_concrete(mask):
            raise ValueError("`mask` must be concrete (not traced): it fixes the observation's size")
        m = np.asarray(mask)
        if m.dtype != bool:
            raise ValueError(f"`mask` must be boolean (True = observed), got dtype {m.dtype}")
        m = m.reshape(-1)
        if not m.any():
            raise ValueError("`mask` observes nothing: at least one entry must be True")
        return cls(np.eye(m.size)[m], noise_std)

    @classmethod
    def downsampling(cls, shape: tuple[int, ...], factor: int, noise_std: Scalar = 0.0) -> LinearObservation:
        """Average pooling of images of `shape` `(H, W)` or `(C, H, W)` over `factor x factor`
        blocks (`H` and `W` divisible by `factor`); the output is flattened channel-first."""
        shape = tuple(int(s) for s in shape)
        if len(shape) not in (2, 3) or min(shape) < 1:
            raise ValueError(f"`shape` must be (H, W) or (C, H, W), got {shape}")
        C, H, W = (1, *shape) if len(shape) == 2 else shape
        if not isinstance(factor, (int, np.integer)) or factor < 1 or H % factor or W % factor:
            raise ValueError(
                f"`factor` must be a positive integer dividing H = {H} and W = {W}, got {factor!r}"
            )
        h, w = H // factor, W // factor
        A = np.zeros((C, h, w, C, H, W))
        for c in range(C):
            for i in range(h):
                for j in range(w):
                    A[c, i, j, c, i * factor : (i + 1) * factor, j * factor : (j + 1) * factor] = (
                        1.0 / factor**2
                    )
        return cls(A.reshape(C * h * w, C * H * W), noise_std)

    @property
    def obs_dim(self) -> int:
        """`m`, the size of `y`."""
        return self.A.shape[0]

    @property
    def dim(self) -> int:
        """`d`, the size of one (flattened) sample."""
        return self.A.shape[1]

    def check_sample(self, x, name: str = "x"):
        """Refuse a sample whose size is not `d`."""
        if math.prod(x.shape) != self.dim:
            raise ValueError(
                f"`{name}` has shape {x.shape} ({math.prod(x.shape)} values) but the observation's `A` "
                f"acts on samples of {self.dim} values"
            )

    def check_y(self, y) -> Float[Array, " m"]:
        """`y` as a float array of shape `(m,)`, or a clear error."""
        y = as_float_array("y", y)
        if y.shape != (self.obs_dim,):
            raise ValueError(
                f"`y` must have shape ({self.obs_dim},), one value per row of `A`, got {y.shape}"
            )
        return y

    def mean(self, x0: Float[Array, "*event"]) -> Float[Array, " m"]:
        """`A x0` (`x0` flattened)."""
        self.check_sample(x0, "x0")
        return self.A @ x0.reshape(-1)

    def sample(self, key: PRNGKeyArray, x0: Float[Array, "*event"]) -> Float[Array, " m"]:
        """One draw of `Y` given `X_0 = x0`."""
        mu = self.mean(x0)
        return mu + self.noise_std * jax.random.normal(key, mu.shape, mu.dtype)

    def log_likelihood(self, x0: Float[Array, "*event"], y: Float[ArrayLike, " m"]) -> Float[Array, ""]:
        """`log N(y; A x0, noise_std^2 I)` (needs `noise_std > 0`)."""
        y = self.check_y(y)
        r = y - self.mean(x0)
        v = self.noise_std**2
        return -0.5 * jnp.sum(r**2) / v - 0.5 * self.obs_dim * jnp.log(2 * jnp.pi * v)


# ---------------------------------------------------------------------------------------
# Exact posteriors
# ---------------------------------------------------------------------------------------


def _psd(c):
    """Symmetrise and clip rounding-level negative eigenvalues of a batch of covariances."""
    c = 0.5 * (c + jnp.swapaxes(c, -1, -2))
    evals, evecs = jnp.linalg.eigh(c)
    return jnp.einsum("kij,kj,klj->kil", evecs, jnp.clip(evals, 0.0), evecs)


def _mixture_posterior(means, log_weights, covs, obs: LinearObservation, y):
    A, v = obs.A.astype(means.dtype), (obs.noise_std**2).astype(means.dtype)
    m = A.shape[0]
    CAt = jnp.einsum("kij,lj->kil", covs, A)  # C_k A^T, (K, d, m)
    S = jnp.einsum("li,kim->klm", A, CAt) + v * jnp.eye(m, dtype=means.dtype)  # (K, m, m)
    r = y[None, :] - means @ A.T  # (K, m)
    Sinv_r = jnp.linalg.solve(S, r[..., None])[..., 0]
    _, logdet = jnp.linalg.slogdet(S)
    ll = -0.5 * jnp.sum(r * Sinv_r, axis=1) - 0.5 * logdet - 0.5 * m * math.log(2 * math.pi)
    post_means = means + jnp.einsum("kim,km->ki", CAt, Sinv_r)
    # C - C A^T S^-1 A C
    post_covs = covs - jnp.einsum("kim,kmj->kij", CAt, jnp.linalg.solve(S, jnp.swapaxes(CAt, 1, 2)))
    return post_means, jax.nn.softmax(log_weights + ll), _psd(post_covs)


def posterior_given(
    law: AbstractLaw, observation: LinearObservation, y: Float[ArrayLike, " m"]
) -> AbstractLaw:
    """The exact law of `X_0` given `Y = y` for a `GaussianMixture`, `Gaussian` or `PointCloud`
    prior (a `Labelled` law: its unlabelled law) and a `LinearObservation`.

    Returns a `Gaussian` for a `Gaussian` prior, else a `GaussianMixture` (zero variances for
    a point cloud: the reweighted cloud). A point cloud needs `noise_std > 0`.
    """
    from .labels import Labelled

    if not isinstance(observation, LinearObservation):
        raise ValueError(f"`observation` must be a LinearObservation, got {type(observation).__name__}")
    if isinstance(law, Labelled):
        law = law.law
    if not isinstance(law, (GaussianMixture, Gaussian, PointCloud)):
        raise ValueError(
            "the exact posterior is known for a GaussianMixture, Gaussian or PointCloud prior, got "
            f"{type(law).__name__}"
        )
    if observation.dim != law.dim:
        raise ValueError(
            f"the observation's `A` has {observation.dim} columns but the law's samples have d = {law.dim}: "
            f"`A` must have shape (m, {law.dim})"
        )
    y = observation.check_y(y)
    if isinstance(law, PointCloud):
        s = observation.noise_std
        if is_concrete(s) and float(s) == 0:
            raise ValueError(
                "a point cloud's posterior given a noise-free observation is degenerate (it keeps only the "
                "points with A x_i = y exactly): use `noise_std > 0`"
            )
        pts = law.points
        r = y[None, :] - pts @ observation.A.astype(pts.dtype).T
        w = jax.nn.softmax(-0.5 * jnp.sum(r**2, axis=1) / s**2)
        return GaussianMixture(pts, 0.0, w)
    if isinstance(law, Gaussian):
        means, log_w, covs = law.mean[None], jnp.zeros((1,), law.mean.dtype), law.cov[None]
        pm, _, pc = _mixture_posterior(means, log_w, covs, observation, y.astype(means.dtype))
        return Gaussian(pm[0], pc[0])
    pm, pw, pc = _mixture_posterior(
        law.means, law.log_weights, law.covariances, observation, y.astype(law.means.dtype)
    )
    return GaussianMixture(pm, weights=pw, covs=pc)
