"""Small data sets: 2-D toys generated in code, and scikit-learn's bundled 8x8 digits.

Every generator takes a key and a size and returns an array of shape `(n, 2)`; point `i`
uses `fold_in(key, i)`, so the first `m` points do not change when `n` grows. The toys are
centred near the origin with coordinates of order one, a scale that suits the default
networks and processes.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray


def _n(n) -> int:
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ValueError(f"`n` must be a positive integer number of points, got {n!r}")
    return int(n)


def _noise(noise) -> float:
    if not (isinstance(noise, (int, float)) and noise >= 0):
        raise ValueError(f"`noise` must be a non-negative number, got {noise!r}")
    return float(noise)


def _per_point(key, n, fn):
    return jax.vmap(lambda i: fn(jax.random.fold_in(key, i)))(jnp.arange(n))


def two_moons(key: PRNGKeyArray, n: int, *, noise: float = 0.05) -> Float[Array, "n 2"]:
    """Two interleaved half circles of radius 1 (the classic "moons"), centred, each point
    on either moon with probability 1/2, plus isotropic Gaussian `noise` (a standard deviation)."""
    return _two_moons(key, _n(n), _noise(noise))


# compiled once per size: eagerly, every vmapped random op would dispatch (and compile) alone
@functools.partial(jax.jit, static_argnames="n")
def _two_moons(key, n, noise):
    def one(k):
        kc, ka, kz = jax.random.split(k, 3)
        theta = jnp.pi * jax.random.uniform(ka, ())
        upper = jax.random.bernoulli(kc)
        p = jnp.where(upper, jnp.stack([jnp.cos(theta), jnp.sin(theta)]),
                      jnp.stack([1 - jnp.cos(theta), 0.5 - jnp.sin(theta)]))
        return p - jnp.array([0.5, 0.25]) + noise * jax.random.normal(kz, (2,))

    return _per_point(key, n, one)


def rings(key: PRNGKeyArray, n: int, *, radii: tuple[float, ...] = (0.5, 1.0, 1.5), noise: float = 0.02
          ) -> Float[Array, "n 2"]:
    """Concentric circles with the given `radii`, each point on a ring chosen uniformly,
    at a uniform angle, plus Gaussian `noise`."""
    r = np.asarray(radii, dtype=float)
    if r.ndim != 1 or r.size < 1 or not np.all(r > 0):
        raise ValueError(f"`radii` must be a non-empty sequence of positive numbers, got {radii!r}")
    return _rings(key, _n(n), jnp.asarray(r), _noise(noise))


@functools.partial(jax.jit, static_argnames="n")
def _rings(key, n, r, noise):
    def one(k):
        kc, ka, kz = jax.random.split(k, 3)
        rad = r[jax.random.randint(kc, (), 0, r.size)]
        theta = 2 * jnp.pi * jax.random.uniform(ka, ())
        return rad * jnp.stack([jnp.cos(theta), jnp.sin(theta)]) + noise * jax.random.normal(kz, (2,))

    return _per_point(key, n, one)


def circle(key: PRNGKeyArray, n: int, *, radius: float = 1.0, noise: float = 0.0) -> Float[Array, "n 2"]:
    """Points at uniform angles on the circle of `radius` (a 1-D manifold in the plane:
    with `noise = 0` the law is singular), plus optional Gaussian `noise`."""
    n, noise = _n(n), _noise(noise)
    if not radius > 0:
        raise ValueError(f"`radius` must be positive, got {radius!r}")
    return rings(key, n, radii=(radius,), noise=noise)


def digits(*, flatten: bool = False, return_labels: bool = False):
    """scikit-learn's bundled 8x8 handwritten digits (1797 images, no download), scaled to `[-1, 1]`.

    Returns an array of shape `(1797, 1, 8, 8)` (channels first, for `jaxdiff.nn.UNet`), or
    `(1797, 64)` with `flatten=True`; with `return_labels=True`, also the labels `(1797,)`.
    Needs scikit-learn: `pip install 'jaxdiff[data]'`.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # optional dependency
        raise ImportError("jaxdiff.data.digits() needs scikit-learn: pip install 'jaxdiff[data]'") from e
    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float64) / 16.0 * 2.0 - 1.0  # pixel values are 0..16
    x = images.reshape(len(images), 64) if flatten else images[:, None, :, :]
    x = jnp.asarray(x, dtype=jnp.result_type(float))
    if return_labels:
        return x, jnp.asarray(bunch.target)
    return x
