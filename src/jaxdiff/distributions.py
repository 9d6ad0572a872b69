r"""Exact data laws, closed under Gaussian noising.

A law $p_0$ of $X_0$ and a forward process give the law of
$X_t = \alpha X_0 + \sigma Z$. For the three families here that law is known in closed
form, and so are its score and the posterior of $X_0$ given $X_t$:

* `PointCloud(points)`: the empirical measure $\frac1N\sum_i \delta_{x_i}$; noised, a
  mixture of $N(\alpha x_i, \sigma^2 I)$ with posterior weights
  $w_i(x) = \mathrm{softmax}_i\big((\alpha x\cdot x_i - \alpha^2|x_i|^2/2)/\sigma^2\big)$.
  Large clouds are streamed in chunks with an online log-sum-exp, so memory stays
  $O(\text{batch} \times \text{chunk} + N d)$.
* `GaussianMixture(means, stds, weights)` (isotropic components) or with `covs=` (full
  covariances, possibly singular).
* `Gaussian(mean, cov)`, `cov` possibly singular: data on an affine subspace.

Each law `law` has `law.noised(process, t)`, a `NoisedLaw` with `log_prob`, `score`,
`sample`, `posterior`, `denoise` (Tweedie's $E[X_0 | X_t = x]$) and `posterior_sample`.
The same quantities at explicit `(alpha, sigma)` are the `*_at` methods of the law, which
samplers and the PDE engine use directly.
"""

from __future__ import annotations

import abc
import contextvars
import functools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from ._checks import as_float_array, check_finite, check_sample_shape, check_time, is_concrete
from .processes import AbstractProcess

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

    def denoise_at(self, alpha, sigma, x: Float[Array, " d"]) -> Float[Array, " d"]:
        """Tweedie's denoiser `E[X_0 | alpha X_0 + sigma Z = x]`."""
        return self.posterior_at(alpha, sigma, x).mean()

    def posterior_sample_at(
        self, key: PRNGKeyArray, alpha, sigma, x: Float[Array, " d"]
    ) -> Float[Array, " d"]:
        """One draw of `X_0` given `alpha X_0 + sigma Z = x`."""
        return self.posterior_at(alpha, sigma, x).sample(key)

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


# ---------------------------------------------------------------------------------------
# Gaussian mixtures (and single Gaussians)
# ---------------------------------------------------------------------------------------


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
    subspace) are exact at every $t > 0$.
    """

    means: Float[Array, "K d"]
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

    def covariance(self) -> Float[Array, "d d"]:
        """Covariance of the whole mixture."""
        mu = self.mean()
        dm = self.means - mu
        return jnp.einsum("k,kij->ij", self.weights, self.covariances) + jnp.einsum(
            "k,ki,kj->ij", self.weights, dm, dm
        )

    # Per-component pieces at (alpha, sigma): log-likelihoods, whitened residuals.
    def _components(self, alpha, sigma, x):
        diff = x[None, :] - alpha * self.means  # (K, d)
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

    def sample_at(self, key, n, alpha, sigma):
        return self.mixture.sample_at(key, n, alpha, sigma)


# ---------------------------------------------------------------------------------------
# Point clouds (empirical measures), streamed
# ---------------------------------------------------------------------------------------


def _default_chunk(n_points: int) -> int:
    """Points per streamed chunk, from the shapes and the backend (see `benchmarks/bench_score.py`).

    On a CPU the `tile x chunk` logits block must stay in cache, so chunks are small; a GPU
    wants large ones. A divisor of `N` near the target is preferred: then no chunk is ragged
    and no masking is needed.
    """
    cpu = jax.default_backend() == "cpu"
    dense_max, target = (_DENSE_MAX_CPU, _CHUNK_CPU) if cpu else (_DENSE_MAX_GPU, _CHUNK_GPU)
    if n_points <= dense_max:
        return n_points
    for c in range(target, target // 2, -1):
        if n_points % c == 0:
            return c
    return target


# How many devices a batch traced now is split over (set by `jaxdiff.parallel` while it
# traces sharded work), so that each device's share of a query tile is cache-sized.
_QUERY_SPLIT = contextvars.ContextVar("jaxdiff_query_split", default=1)


def _query_tiles(n: int, chunk: int) -> int:
    """How many query tiles a batch of `n` is cut into: `tile x chunk` logits per device
    within a cache budget. Under a split over `k` devices a divisor of `n / k` is preferred,
    so each device holds whole rows of every tile and nothing is padded."""
    budget = _TILE_ELEMS_CPU if jax.default_backend() == "cpu" else _TILE_ELEMS_GPU
    k = _QUERY_SPLIT.get()
    local = -(-n // k)
    n_tiles = -(-local // max(8, budget // chunk))
    if k > 1 and n % k == 0:
        for m in range(n_tiles, 2 * n_tiles + 1):
            if local % m == 0:
                return m
    return n_tiles


@functools.cache
def _streamer(n_points: int):
    r"""The empirical-measure kernel for clouds of `n_points` points.

    Returns `f(a, b, chunks, sq_norms, x) -> (lse, mean)` on one query `x`, with
    $\ell_i = a\,x\cdot x_i - b|x_i|^2$, `lse` $= \log\sum_i e^{\ell_i}$ and `mean`
    $= \sum_i \mathrm{softmax}(\ell)_i x_i$, streamed over the chunks with an online
    log-sum-exp. Three layers, because how the batch is laid out matters several-fold:

    * `rows`: the kernel on a block of queries `X` (n, d). Queries sit on the left of both
      matmuls (`X @ D_c^T`, then `P @ D_c`), so the batch is the row dimension and XLA
      emits plain GEMMs (a vmapped `D_c @ x` puts the batch last and ran at 0.2 of the
      matmul figure). The running max is a `stop_gradient` shift: the result does not
      depend on it, so differentiating it would only add work.
    * a `custom_vmap` rule: under `jax.vmap` the whole batch goes to `rows` in query tiles
      (`lax.map`, `_query_tiles`), so each `tile x chunk` logits block stays in cache
      instead of streaming a `batch x chunk` block through memory several times.
    * a `custom_jvp` whose rule is `jax.jvp` of the plain per-sample kernel: `custom_vmap`
      has no reverse mode of its own, so every derivative (forward, reverse, any order)
      goes through ordinary, rematerialised JAX code, and only evaluation takes the fast
      path. Both paths compute the same sums; they agree to float rounding.
    """

    def rows(a, b, chunks, sq_norms, X):
        n_chunks, chunk, d = chunks.shape
        ragged = n_points % chunk != 0
        # Many queries per point coordinate: fold the scale and the norm term into the GEMM
        # as one more column, `[-b, a x] @ [|x_i|^2, x_i]^T`, which saves a pass over the
        # logits block (1.1x at d = 64, B = 4096) for a copy of each chunk that costs 1/B as
        # much. With few queries per coordinate (d = 3072, B = 1024) that copy costs more than
        # the pass it saves, so the plain form is kept. The norm column goes first: the GEMM's
        # sum then starts from the large term that the products cancel, whatever the kernel's
        # blocking, so per-device GEMMs of a sharded batch round alike (float32 sampling on 4
        # devices vs 1: 2.7e-6 relative with it first, 1.6e-5 with it last).
        folded = X.shape[0] >= 8 * (d + 1)
        if folded:
            Xa = jnp.concatenate([-b[:, None], a[:, None] * X], axis=1)

        def logits_of(c, Dc, sc):
            if folded:
                logits = jnp.matmul(Xa, jnp.concatenate([sc[:, None], Dc], axis=1).T, precision=_HIGHEST)
            else:
                logits = a[:, None] * jnp.matmul(X, Dc.T, precision=_HIGHEST) - b[:, None] * sc[None, :]
            if ragged:  # the zero padding of the last chunk gets weight exactly 0
                logits = jnp.where((c * chunk + jnp.arange(chunk) < n_points)[None, :], logits, -jnp.inf)
            return logits

        if n_chunks == 1:
            logits = logits_of(0, chunks[0], sq_norms[0])
            m = jax.lax.stop_gradient(jnp.max(logits, axis=1))
            p = jnp.exp(logits - m[:, None])
            l, acc = jnp.sum(p, axis=1), jnp.matmul(p, chunks[0], precision=_HIGHEST)
        else:

            @jax.checkpoint  # reverse mode stores the carries only, never a logits block
            def body(carry, inp):
                m, l, acc = carry
                c, Dc, sc = inp
                logits = logits_of(c, Dc, sc)
                m_new = jnp.maximum(m, jax.lax.stop_gradient(jnp.max(logits, axis=1)))
                scale = jnp.exp(m - m_new)
                p = jnp.exp(logits - m_new[:, None])
                acc = acc * scale[:, None] + jnp.matmul(p, Dc, precision=_HIGHEST)
                return (m_new, l * scale + jnp.sum(p, axis=1), acc), None

            n, dtype = X.shape[0], jnp.result_type(X, chunks, a, b)
            zeros = jnp.zeros((n,), dtype)
            init = (jnp.full((n,), -jnp.inf, dtype), zeros, jnp.zeros((n, chunks.shape[2]), dtype))
            (m, l, acc), _ = jax.lax.scan(body, init, (jnp.arange(n_chunks), chunks, sq_norms))
        return m + jnp.log(l), acc / l[:, None]

    def one(a, b, chunks, sq_norms, x):
        lse, mean = rows(jnp.reshape(a, (1,)), jnp.reshape(b, (1,)), chunks, sq_norms, x[None])
        return lse[0], mean[0]

    fast = jax.custom_batching.custom_vmap(one)

    @fast.def_vmap
    def _rule(axis_size, in_batched, a, b, chunks, sq_norms, x):
        a_b, b_b, c_b, s_b, x_b = in_batched
        if c_b or s_b:  # a batch of clouds: nothing to tile, fall back to plain vmap
            axes = tuple(0 if f else None for f in in_batched)
            return jax.vmap(one, in_axes=axes)(a, b, chunks, sq_norms, x), (True, True)
        dtype = jnp.result_type(a, b)
        a = a if a_b else jnp.broadcast_to(jnp.asarray(a, dtype), (axis_size,))
        b = b if b_b else jnp.broadcast_to(jnp.asarray(b, dtype), (axis_size,))
        X = x if x_b else jnp.broadcast_to(x, (axis_size, *x.shape))
        n_tiles = _query_tiles(axis_size, chunks.shape[1])
        if n_tiles == 1:
            return rows(a, b, chunks, sq_norms, X), (True, True)
        tile = -(-axis_size // n_tiles)
        pad = n_tiles * tile - axis_size  # padded queries (x = 0, a = b = 0) are finite, then dropped
        a, b = jnp.pad(a, (0, pad)), jnp.pad(b, (0, pad))
        X = jnp.pad(X, ((0, pad), (0, 0)))
        # Query r goes to tile r % n_tiles (strided, not blocked): a batch split in blocks
        # over devices then splits every tile the same way, so an SPMD-partitioned loop over
        # tiles needs no communication (a blocked layout made XLA all-gather each tile).
        tiles = lambda v: jnp.swapaxes(v.reshape(tile, n_tiles, *v.shape[1:]), 0, 1)
        untile = lambda v: jnp.swapaxes(v, 0, 1).reshape(-1, *v.shape[2:])[:axis_size]
        lse, mean = jax.lax.map(
            lambda blk: rows(blk[0], blk[1], chunks, sq_norms, blk[2]), (tiles(a), tiles(b), tiles(X))
        )
        return (untile(lse), untile(mean)), (True, True)

    @jax.custom_jvp
    def stream(a, b, chunks, sq_norms, x):
        return fast(a, b, chunks, sq_norms, x)

    @stream.defjvp
    def _stream_jvp(primals, tangents):
        return jax.jvp(one, primals, tangents)

    return stream


# Full float32 products on every backend: the logits are multiplied by alpha / sigma^2
# (up to ~1e6 near t = 0), so TF32's ~1e-3 relative error (a GPU's default for float32
# matmuls) would scramble the weights. No effect on a CPU.
_HIGHEST = jax.lax.Precision.HIGHEST

# Defaults from benchmarks/bench_score.py (CPU, AVX-512, two cores); the GPU ones are sized
# for tens of GB of device memory.
_DENSE_MAX_CPU, _CHUNK_CPU, _TILE_ELEMS_CPU = 4096, 1024, 2**22
_DENSE_MAX_GPU, _CHUNK_GPU, _TILE_ELEMS_GPU = 65536, 16384, 2**27


class PointCloud(AbstractLaw):
    r"""The empirical measure $\frac1N \sum_i \delta_{x_i}$ of `N` points in `R^d`.

    Noised, it is the mixture $\frac1N \sum_i N(\alpha x_i, \sigma^2 I)$; its posterior
    weights are $w_i = \mathrm{softmax}_i(a\, x\cdot x_i - b |x_i|^2)$ with
    $a = \alpha/\sigma^2$, $b = \alpha^2 / (2\sigma^2)$. Beyond `chunk_size` points the sum
    is streamed chunk by chunk with an online log-sum-exp (and rematerialised under
    reverse-mode differentiation), so no `batch x N` matrix is ever formed. The squared
    norms $|x_i|^2$ are computed once, here. Under `jax.vmap` the batch is processed in
    cache-sized tiles of queries (a `custom_vmap` rule; derivatives use the plain kernel).

    Streaming changes the order of the floating-point sums only: streamed and dense agree
    to float rounding. Posterior sampling draws its noise per chunk, so its
    random stream depends on `chunk_size`.
    """

    chunks: Float[Array, "C n d"]  # points, zero-padded to a whole number of chunks
    sq_norms: Float[Array, "C n"]
    n_points: int = eqx.field(static=True)

    def __init__(self, points, *, chunk_size: int | None = None):
        """**Arguments:**

        - `points`: shape `(N, d)`, finite, `N >= 1`.
        - `chunk_size`: points per streamed chunk. Default, from the shapes and the backend:
          on a CPU one dense pass up to 4096 points, else chunks of about 1024 (a divisor of
          `N` when there is one near, so no chunk is ragged); on a GPU 65536 and 16384.
          `benchmarks/bench_score.py` measures the choice.
        """
        points = check_finite("points", as_float_array("points", points))
        if points.ndim != 2:
            raise ValueError(f"`points` must have shape (N, d), got {points.shape}")
        N, d = points.shape
        if N < 1:
            raise ValueError("`points` is empty: a PointCloud needs at least one point")
        if d < 1:
            raise ValueError("`points` must have at least one coordinate (d >= 1)")
        if chunk_size is None:
            chunk_size = _default_chunk(N)
        if not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
            raise ValueError(f"`chunk_size` must be a positive integer, got {chunk_size!r}")
        chunk_size = min(int(chunk_size), N)
        n_chunks = -(-N // chunk_size)
        pad = n_chunks * chunk_size - N
        padded = jnp.pad(points, ((0, pad), (0, 0))) if pad else points
        self.chunks = padded.reshape(n_chunks, chunk_size, d)
        self.sq_norms = jnp.sum(self.chunks**2, axis=-1)
        self.n_points = N

    @property
    def points(self) -> Float[Array, "N d"]:
        return self.chunks.reshape(-1, self.dim)[: self.n_points]

    @property
    def dim(self) -> int:
        return self.chunks.shape[2]

    @property
    def chunk_size(self) -> int:
        return self.chunks.shape[1]

    @property
    def singular(self) -> bool:
        return True

    def _logits(self, c: int | Int[Array, ""], a, b, x):
        logits = a * jnp.matmul(x, self.chunks[c].T, precision=_HIGHEST) - b * self.sq_norms[c]
        if self.n_points % self.chunk_size:  # mask the zero padding of the last chunk
            valid = c * self.chunk_size + jnp.arange(self.chunk_size) < self.n_points
            logits = jnp.where(valid, logits, -jnp.inf)
        return logits

    def _lse_and_mean(self, alpha, sigma, x):
        """`log sum_i exp(logit_i)` and `sum_i w_i x_i`, streamed over chunks."""
        a = alpha / sigma**2
        b = 0.5 * alpha**2 / sigma**2
        return _streamer(self.n_points)(a, b, self.chunks, self.sq_norms, x)

    def log_prob_at(self, alpha, sigma, x):
        lse, _ = self._lse_and_mean(alpha, sigma, x)
        var = sigma**2
        return (
            lse
            - 0.5 * jnp.sum(x**2) / var
            - math.log(self.n_points)
            - 0.5 * self.dim * jnp.log(2 * jnp.pi * var)
        )

    def score_at(self, alpha, sigma, x):
        _, mean = self._lse_and_mean(alpha, sigma, x)
        return (alpha * mean - x) / sigma**2

    def denoise_at(self, alpha, sigma, x):
        return self._lse_and_mean(alpha, sigma, x)[1]

    def posterior_at(self, alpha, sigma, x):
        """Dense: weights over all `N` points (use `denoise_at` / `posterior_sample_at` to stream)."""
        a = alpha / sigma**2
        b = 0.5 * alpha**2 / sigma**2
        sq = self.sq_norms.reshape(-1)[: self.n_points]
        logits = a * jnp.matmul(x, self.points.T, precision=_HIGHEST) - b * sq
        return Posterior(jax.nn.log_softmax(logits), self.points, None)

    def posterior_index(self, key: PRNGKeyArray, alpha, sigma, x) -> Int[Array, ""]:
        """Index of a training point drawn from the posterior weights, streamed.

        Within a chunk: inverse CDF (one uniform). Across chunks: weighted reservoir
        sampling, the running pick replaced by chunk `c`'s with probability
        `M_c / (M_1 + ... + M_c)` (one more uniform). Two uniforms per chunk instead of one
        Gumbel variable per point: the exact sampler ran 4x faster than with Gumbel-max at
        N = 1024 and 2x at N = 20000 (d = 2, 2048 samples, 200 steps, CPU).
        """
        a = alpha / sigma**2
        b = 0.5 * alpha**2 / sigma**2
        chunk = self.chunk_size

        def pick(c, k):  # (log-mass of chunk c, an index in it drawn by inverse CDF)
            logits = self._logits(c, a, b, x)
            lse = jax.nn.logsumexp(logits)
            cdf = jnp.cumsum(jnp.exp(logits - lse))
            u = 1.0 - jax.random.uniform(k, (), cdf.dtype)  # in (0, 1]: never a zero-mass point
            return lse, jnp.minimum(jnp.searchsorted(cdf, u * cdf[-1]), chunk - 1).astype(jnp.int32)

        if self.chunks.shape[0] == 1:
            return pick(0, key)[1]

        def body(carry, c):
            log_w, idx = carry
            k_in, k_take = jax.random.split(jax.random.fold_in(key, c))
            lse, j = pick(c, k_in)
            log_w_new = jnp.logaddexp(log_w, lse)
            take = jax.random.uniform(k_take, (), log_w.dtype) < jnp.exp(lse - log_w_new)
            return (log_w_new, jnp.where(take, (c * chunk + j).astype(jnp.int32), idx)), None

        dtype = jnp.result_type(x, self.chunks, a)
        init = (jnp.array(-jnp.inf, dtype), jnp.array(0, jnp.int32))
        (_, idx), _ = jax.lax.scan(body, init, jnp.arange(self.chunks.shape[0]))
        return idx

    def posterior_sample_at(self, key, alpha, sigma, x):
        idx = self.posterior_index(key, alpha, sigma, x)
        return self.chunks.reshape(-1, self.dim)[idx]

    def sample_at(self, key, n, alpha, sigma):
        flat = self.chunks.reshape(-1, self.dim)

        def one(k):
            ki, kz = jax.random.split(k)
            i = jax.random.randint(ki, (), 0, self.n_points)
            return alpha * flat[i] + sigma * jax.random.normal(kz, (self.dim,), flat.dtype)

        return jax.vmap(one)(_batch_keys(key, n))
