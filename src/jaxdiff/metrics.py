r"""Sample-based metrics: distances between sample sets, memorisation, distance to manifolds.

All functions take batches (`(n, d)` arrays) and are jit-compatible and differentiable where
that makes sense (sliced Wasserstein, MMD). PDE diagnostics on grid densities (L^p norms,
entropy, Fisher information, the Li–Yau quantity) live in `jaxdiff.pde`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray


def _as_samples(name: str, x) -> Array:
    x = jnp.asarray(x)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] < 1:
        raise ValueError(f"`{name}` must be a batch of samples of shape (n, d), got {x.shape}")
    return x


def _same_dim(x, y):
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"`x` and `y` must have the same dimension, got {x.shape[1]} and {y.shape[1]}")


def _quantiles(sorted_proj: Float[Array, "n P"], levels: Float[Array, " K"]) -> Float[Array, "K P"]:
    n = sorted_proj.shape[0]
    pos = levels * n - 0.5  # empirical quantile function at the mid-points of its steps
    grid = jnp.arange(n, dtype=sorted_proj.dtype)
    return jax.vmap(lambda col: jnp.interp(pos, grid, col), in_axes=1, out_axes=1)(sorted_proj)


def sliced_wasserstein(
    x: Float[Array, "n d"],
    y: Float[Array, "m d"],
    *,
    key: PRNGKeyArray,
    n_projections: int = 256,
    p: float = 2.0,
) -> Float[Array, ""]:
    r"""Sliced Wasserstein-`p` distance $\big(E_\theta W_p^p(\theta_\# x, \theta_\# y)\big)^{1/p}$.

    Directions $\theta$ are uniform on the sphere (`n_projections` of them, from `key`). With
    `n == m` the 1-D distances are exact sort-and-match; otherwise both quantile functions are
    compared on `max(n, m)` levels.
    """
    x, y = _as_samples("x", x), _as_samples("y", y)
    _same_dim(x, y)
    theta = jax.random.normal(key, (x.shape[1], n_projections), dtype=jnp.result_type(x, y))
    theta = theta / jnp.linalg.norm(theta, axis=0, keepdims=True)
    px, py = jnp.sort(x @ theta, axis=0), jnp.sort(y @ theta, axis=0)
    if x.shape[0] != y.shape[0]:
        k = max(x.shape[0], y.shape[0])
        levels = (jnp.arange(k, dtype=px.dtype) + 0.5) / k
        px, py = _quantiles(px, levels), _quantiles(py, levels)
    return jnp.mean(jnp.abs(px - py) ** p) ** (1.0 / p)


def mmd(x: Float[Array, "n d"], y: Float[Array, "m d"], *, bandwidth: float | Array) -> Float[Array, ""]:
    r"""Unbiased estimate of the squared maximum mean discrepancy with a Gaussian kernel
    $k(a, b) = \exp(-|a - b|^2 / (2 h^2))$, `h = bandwidth` (may be slightly negative)."""
    x, y = _as_samples("x", x), _as_samples("y", y)
    _same_dim(x, y)
    n, m = x.shape[0], y.shape[0]
    if n < 2 or m < 2:
        raise ValueError("`mmd` needs at least two samples in `x` and in `y`")

    def gram(a, b):
        d2 = jnp.sum(a**2, 1)[:, None] - 2 * a @ b.T + jnp.sum(b**2, 1)[None, :]
        return jnp.exp(-jnp.maximum(d2, 0.0) / (2 * bandwidth**2))

    kxx, kyy, kxy = gram(x, x), gram(y, y), gram(x, y)
    sxx = (jnp.sum(kxx) - jnp.trace(kxx)) / (n * (n - 1))
    syy = (jnp.sum(kyy) - jnp.trace(kyy)) / (m * (m - 1))
    return sxx + syy - 2 * jnp.mean(kxy)


def nearest_neighbours(
    x: Float[Array, "n d"], data: Float[Array, "N d"], k: int = 2, *, chunk_size: int = 8192
) -> tuple[Float[Array, "n k"], Int[Array, "n k"]]:
    """Euclidean distances and indices of the `k` nearest points of `data` to each row of `x`,
    nearest first. `data` is streamed in chunks, so memory is `O(n x chunk_size)`."""
    x, data = _as_samples("x", x), _as_samples("data", data)
    _same_dim(x, data)
    N = data.shape[0]
    if not 1 <= k <= N:
        raise ValueError(f"`k` must be between 1 and the number of data points ({N}), got {k}")
    chunk = min(chunk_size, N)
    n_chunks = -(-N // chunk)
    pad = n_chunks * chunk - N
    dpad = jnp.pad(data, ((0, pad), (0, 0))).reshape(n_chunks, chunk, -1)
    sq = jnp.sum(dpad**2, -1)
    xsq = jnp.sum(x**2, 1)[:, None]

    def body(carry, c):
        best_d, best_i = carry
        d2 = xsq - 2 * x @ dpad[c].T + sq[c][None, :]
        idx = (c * chunk + jnp.arange(chunk)).astype(jnp.int32)
        d2 = jnp.where(idx[None, :] < N, d2, jnp.inf)
        all_d = jnp.concatenate([best_d, d2], axis=1)
        all_i = jnp.concatenate([best_i, jnp.broadcast_to(idx, d2.shape)], axis=1)
        neg, pos = jax.lax.top_k(-all_d, k)
        return (-neg, jnp.take_along_axis(all_i, pos, axis=1)), None

    init = (jnp.full((x.shape[0], k), jnp.inf, x.dtype), jnp.zeros((x.shape[0], k), jnp.int32))
    (d2, idx), _ = jax.lax.scan(body, init, jnp.arange(n_chunks))
    return jnp.sqrt(jnp.maximum(d2, 0.0)), idx


def copy_fraction(
    x: Float[Array, "n d"], data: Float[Array, "N d"], ratio: float = 1 / 3
) -> Float[Array, ""]:
    """Share of samples that are copies of a training point by the ratio test: the distance
    to the nearest training point is below `ratio` times the distance to the second nearest."""
    if jnp.shape(data)[0] < 2:
        raise ValueError("`copy_fraction` needs at least two training points")
    d, _ = nearest_neighbours(x, data, 2)
    return jnp.mean(d[:, 0] < ratio * d[:, 1])


def distance_to_subspace(
    x: Float[Array, "n d"], mean: Float[Array, " d"], basis: Float[Array, "k d"]
) -> Float[Array, " n"]:
    """Distance of each row of `x` to the affine subspace `mean + span(basis rows)`.

    `basis` need not be orthonormal (it is orthonormalised by QR); `k = 0` rows means the
    point `mean`."""
    x = _as_samples("x", x)
    mean = jnp.asarray(mean)
    r = x - mean[None, :]
    basis = jnp.asarray(basis).reshape(-1, x.shape[1])
    if basis.shape[0] == 0:
        return jnp.linalg.norm(r, axis=1)
    q, _ = jnp.linalg.qr(basis.T)  # (d, k), orthonormal columns
    return jnp.linalg.norm(r - (r @ q) @ q.T, axis=1)


def participation(weights: Float[Array, "... N"]) -> Float[Array, ...]:
    r"""$\sum_i w_i^2$ over the last axis: 1 when one training point carries all the weight,
    $1/N$ when the weights are uniform (the inverse participation ratio)."""
    return jnp.sum(jnp.square(weights), axis=-1)
