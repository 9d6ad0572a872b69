r"""The empirical measure of a point cloud, streamed: `PointCloud`."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .._checks import as_float_array, check_finite
from ._translation import centre, shifted_query
from .base import AbstractLaw, Posterior, _batch_keys
from .kernel import default_chunk, make_logits, streamer


def _check_positive_int(name: str, v) -> int:
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {v!r}")
    return int(v)


class PointCloud(AbstractLaw):
    r"""The empirical measure $\frac1N \sum_i \delta_{x_i}$ of `N` points in `R^d`.

    Noised, it is the mixture $\frac1N \sum_i N(\alpha x_i, \sigma^2 I)$; its posterior
    weights are $w_i = \mathrm{softmax}_i(a\, x\cdot x_i - b |x_i|^2)$ with
    $a = \alpha/\sigma^2$, $b = \alpha^2 / (2\sigma^2)$. Beyond `chunk_size` points the sum
    is streamed chunk by chunk with an online log-sum-exp (and rematerialised under
    reverse-mode differentiation), so no `batch x N` matrix is ever formed. Under
    `jax.vmap` the batch is processed in cache-sized tiles of queries (a `custom_vmap`
    rule; derivatives use the plain kernel).

    Guarantees: streamed and dense results agree to float rounding (only the order of the
    sums changes); posterior draws use one uniform per query and do not depend on
    `chunk_size`; a cloud far from the origin is as accurate as the same cloud at the
    origin (points are stored relative to a centre, queries shifted exactly).
    """

    chunks: Float[Array, "C n d"]  # points minus `center`, zero-padded to whole chunks
    sq_norms: Float[Array, "C n"]
    center: Float[Array, " d"]
    n_points: int = eqx.field(static=True)
    query_split: int = eqx.field(static=True)

    def __init__(self, points, *, chunk_size: int | None = None, query_split: int = 1):
        """**Arguments:**

        - `points`: shape `(N, d)`, finite, `N >= 1`. (Or a `PointCloud`: the same cloud,
          its arrays shared, with another `query_split`.)
        - `chunk_size`: points per streamed chunk. Default, from the shapes and the backend:
          on a CPU one dense pass up to 4096 points, else chunks of about 1024 (a divisor of
          `N` when there is one near, so no chunk is ragged); on a GPU 65536 and 16384.
          It changes speed and memory only.
        - `query_split`: the number of devices a vmapped batch of queries is split over,
          so that each device's share of a query tile is cache-sized (`jaxdiff.parallel`
          sets it). It changes speed only.
        """
        self.query_split = _check_positive_int("query_split", query_split)
        if isinstance(points, PointCloud):
            if chunk_size not in (None, points.chunk_size):
                raise ValueError("`chunk_size` cannot change when re-laying out a PointCloud")
            self.chunks, self.sq_norms = points.chunks, points.sq_norms
            self.center, self.n_points = points.center, points.n_points
            return
        points = check_finite("points", as_float_array("points", points))
        if points.ndim != 2:
            raise ValueError(f"`points` must have shape (N, d), got {points.shape}")
        N, d = points.shape
        if N < 1:
            raise ValueError("`points` is empty: a PointCloud needs at least one point")
        if d < 1:
            raise ValueError("`points` must have at least one coordinate (d >= 1)")
        if chunk_size is None:
            chunk_size = default_chunk(N)
        chunk_size = min(_check_positive_int("chunk_size", chunk_size), N)
        n_chunks = -(-N // chunk_size)
        pad = n_chunks * chunk_size - N
        self.center = centre(points)
        offsets = points - self.center
        padded = jnp.pad(offsets, ((0, pad), (0, 0))) if pad else offsets
        self.chunks = padded.reshape(n_chunks, chunk_size, d)
        self.sq_norms = jnp.sum(self.chunks**2, axis=-1)
        self.n_points = N

    @property
    def points(self) -> Float[Array, "N d"]:
        return self.chunks.reshape(-1, self.dim)[: self.n_points] + self.center

    def with_labels(self, labels, *, n_classes: int | None = None):
        """This law with a class label per point: a `jaxdiff.Labelled` law, whose
        `condition(y)` is the exact law of `X_0` given the class and whose
        `log_classifier_at` is the exact noisy classifier."""
        from ..conditional.labels import Labelled

        return Labelled(self, labels, n_classes=n_classes)

    @property
    def dim(self) -> int:
        return self.chunks.shape[2]

    @property
    def chunk_size(self) -> int:
        return self.chunks.shape[1]

    @property
    def singular(self) -> bool:
        return True

    def _coefficients(self, alpha, sigma, x):
        """`a`, `b` of the logits and the query relative to the centre, `x - alpha c`.

        A cloud that needs no centre skips the shift (a `cond`, so `r` is a buffer of its
        own): fused into XLA:CPU's GEMM fusion, the shift's extra operands made the batched
        score 1.3x slower in wall-clock time."""
        dtype = jnp.result_type(x, alpha, self.center)
        shift = lambda: shifted_query(x, alpha, self.center)
        r = jax.lax.cond(jnp.any(self.center != 0), shift, lambda: jnp.asarray(x, dtype))
        return alpha / sigma**2, 0.5 * alpha**2 / sigma**2, r

    def _logits_of(self, a, b, r):
        """The logits of chunk `c` for the one query `r` (relative to the centre)."""
        one = lambda v: jnp.reshape(v, (1,))
        f = make_logits(one(a), one(b), r[None], self.n_points, self.chunk_size)
        return lambda c: f(c, self.chunks[c], self.sq_norms[c])[0]

    def _lse_and_mean(self, alpha, sigma, x):
        """`log sum_i exp(logit_i)`, `sum_i w_i (x_i - c)` (streamed) and `x - alpha c`."""
        a, b, r = self._coefficients(alpha, sigma, x)
        lse, mean = streamer(self.n_points, self.query_split)(a, b, self.chunks, self.sq_norms, r)
        return lse, mean, r

    def log_prob_at(self, alpha, sigma, x):
        lse, _, r = self._lse_and_mean(alpha, sigma, x)
        var = sigma**2
        return (
            lse
            - 0.5 * jnp.sum(r**2) / var
            - math.log(self.n_points)
            - 0.5 * self.dim * jnp.log(2 * jnp.pi * var)
        )

    def score_at(self, alpha, sigma, x):
        _, mean, r = self._lse_and_mean(alpha, sigma, x)
        return (alpha * mean - r) / sigma**2

    def denoise_at(self, alpha, sigma, x):
        return self._lse_and_mean(alpha, sigma, x)[1] + self.center

    def posterior_at(self, alpha, sigma, x):
        """Dense: weights over all `N` points (use `denoise_at` / `posterior_sample_at` to stream)."""
        logits_of = self._logits_of(*self._coefficients(alpha, sigma, x))
        logits = jax.vmap(logits_of)(jnp.arange(self.chunks.shape[0])).reshape(-1)[: self.n_points]
        return Posterior(jax.nn.log_softmax(logits), self.points, None)

    def posterior_index(self, key: PRNGKeyArray, alpha, sigma, x) -> Int[Array, ""]:
        """Index of a training point drawn from the posterior weights, streamed.

        The draw is the inverse CDF of the weights (in the points' order) at one uniform
        from `key`, so it depends on the key and the weights only, not on `chunk_size`.
        With several chunks, a first pass sums each chunk's mass, which locates the chunk
        holding the draw; a second pass recomputes that chunk's CDF.
        """
        logits_of = self._logits_of(*self._coefficients(alpha, sigma, x))
        n_chunks, chunk = self.chunks.shape[:2]
        dtype = jnp.result_type(x, self.chunks, alpha)
        u = 1.0 - jax.random.uniform(key, (), dtype)  # in (0, 1]: never a zero-mass point

        def within(logits, f):  # the index in a chunk at fraction f of its mass
            cdf = jnp.cumsum(jnp.exp(logits - jnp.max(logits)))
            return jnp.minimum(jnp.searchsorted(cdf, f * cdf[-1]), chunk - 1).astype(jnp.int32)

        if n_chunks == 1:
            return within(logits_of(0), u)
        lse = jax.lax.map(lambda c: jax.nn.logsumexp(logits_of(c)), jnp.arange(n_chunks))
        cum = jnp.cumsum(jnp.exp(lse - jnp.max(lse)))
        target = u * cum[-1]
        c_star = jnp.minimum(jnp.searchsorted(cum, target), n_chunks - 1)
        before = jnp.where(c_star > 0, cum[jnp.maximum(c_star - 1, 0)], 0.0)
        mass = cum[c_star] - before
        f = jnp.clip((target - before) / mass, jnp.finfo(dtype).tiny, 1.0)

        # A scan over the chunks, not an indexed chunk: under vmap that index would gather
        # a `batch x chunk x d` copy.
        def body(idx, c):
            j = within(logits_of(c), f)
            return jnp.where(c == c_star, (c * chunk + j).astype(jnp.int32), idx), None

        return jax.lax.scan(body, jnp.array(0, jnp.int32), jnp.arange(n_chunks))[0]

    def posterior_sample_at(self, key, alpha, sigma, x):
        idx = self.posterior_index(key, alpha, sigma, x)
        return self.chunks.reshape(-1, self.dim)[idx] + self.center

    def sample_at(self, key, n, alpha, sigma):
        flat = self.chunks.reshape(-1, self.dim)

        def one(k):
            ki, kz = jax.random.split(k)
            i = jax.random.randint(ki, (), 0, self.n_points)
            x0 = flat[i] + self.center
            return alpha * x0 + sigma * jax.random.normal(kz, (self.dim,), flat.dtype)

        return jax.vmap(one)(_batch_keys(key, n))
