"""Small data sets: 2-D toys generated in code, their exact laws by name (`toy_law`),
scikit-learn's bundled 8x8 digits, and data tables read from `.npy`/`.csv` files.

Every generator takes a key and a size and returns an array of shape `(n, 2)`; point `i`
uses `fold_in(key, i)`, so the first `m` points do not change when `n` grows. The toys are
centred near the origin with coordinates of order one, a scale that suits the default
networks and processes.
"""

from __future__ import annotations

import functools
import pathlib

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


TOY_LAWS = ("gaussian", "ring8", "grid25", "two-moons", "rings", "circle")


def toy_law(name: str, *, key: PRNGKeyArray | None = None, n_points: int = 512):
    """The exact law behind a toy name (`TOY_LAWS`): `"gaussian"` (standard, 2-D), `"ring8"`
    (eight N(m, 0.1^2 I) on the circle of radius 2), `"grid25"` (a 5x5 grid on [-2, 2]^2, std
    0.1), or a point cloud of `n_points` draws (with `key`) of `"two-moons"`, `"rings"` or
    `"circle"`, whose exact score memorises its points."""
    from .distributions import Gaussian, GaussianMixture, PointCloud

    key = jax.random.PRNGKey(0) if key is None else key
    if name == "gaussian":
        return Gaussian(jnp.zeros(2), jnp.eye(2))
    if name == "ring8":
        a = 2 * jnp.pi * jnp.arange(8) / 8
        return GaussianMixture(2.0 * jnp.stack([jnp.cos(a), jnp.sin(a)], 1), 0.1)
    if name == "grid25":
        g = jnp.linspace(-2.0, 2.0, 5)
        return GaussianMixture(jnp.stack(jnp.meshgrid(g, g), -1).reshape(-1, 2), 0.1)
    makers = {"two-moons": two_moons, "rings": rings, "circle": circle}
    if name in makers:
        return PointCloud(makers[name](key, _n(n_points)))
    raise ValueError(f"`name` must be one of {', '.join(TOY_LAWS)}; got {name!r}")


def _read_csv(path: pathlib.Path) -> np.ndarray:
    """Comma-separated numbers; a first row with no number at all is a header. Line numbers
    in errors count from 1, as editors do."""

    def is_number(field):
        try:
            float(field)
        except ValueError:
            return False
        return True

    rows = [
        (i, [f.strip() for f in line.split(",")])
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if line.strip()
    ]
    if rows and not any(is_number(f) for f in rows[0][1]):
        rows = rows[1:]  # a header: names, not numbers
    if not rows:
        raise ValueError(f"`data` file {path} holds no rows of numbers")
    first, width = rows[0][0], len(rows[0][1])
    values = []
    for i, fields in rows:
        if len(fields) != width:
            raise ValueError(
                f"`data` file {path}: line {i} has {len(fields)} values, line {first} has {width}"
            )
        bad = [j for j, f in enumerate(fields, 1) if not is_number(f)]
        if bad:
            raise ValueError(
                f"`data` file {path}: line {i}, column {bad[0]}: {fields[bad[0] - 1]!r} is not a number"
            )
        values.append([float(f) for f in fields])
    return np.array(values, dtype=float)


def load_table(path) -> np.ndarray:
    """A data file as an `(N, d)` float array, N >= 2: `.npy`, or `.csv` (comma-separated
    numbers; a first row without any number is a header). Errors name the file and, for a
    CSV, the line (counted from 1)."""

    path = pathlib.Path(path)
    if not path.is_file():
        raise ValueError(f"`data` file {path} does not exist")
    if path.suffix == ".npy":
        data = np.load(path, allow_pickle=False)
    elif path.suffix == ".csv":
        data = _read_csv(path)
    else:
        raise ValueError(f"`data` must be a .npy or .csv file, got {path.name}")
    data = np.asarray(data, dtype=float)
    if data.ndim == 1:
        data = data[:, None]
    if data.ndim != 2 or data.shape[0] < 2:
        raise ValueError(f"`data` must hold an (N, d) table with N >= 2 rows, got shape {data.shape}")
    if not np.all(np.isfinite(data)):
        raise ValueError("`data` contains NaN or inf values")
    return data
