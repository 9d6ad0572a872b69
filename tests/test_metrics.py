"""Sample metrics against closed forms and brute force."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiff import metrics


def test_sliced_wasserstein_gaussian_shift():
    """Two N(0, I) and N(m, I) samples in d = 3: SW2^2 = |m|^2 / d + two-sample noise."""
    key = jax.random.PRNGKey(0)
    n, d = 4000, 3
    x = jax.random.normal(jax.random.PRNGKey(1), (n, d))
    m = jnp.array([1.5, 0.0, 0.0])
    y = jax.random.normal(jax.random.PRNGKey(2), (n, d)) + m
    sw = float(metrics.sliced_wasserstein(x, y, key=key, n_projections=512))
    assert abs(sw**2 - 1.5**2 / d) < 0.05, sw
    # same law: the two-sample noise floor is small and it shrinks with n
    z = jax.random.normal(jax.random.PRNGKey(3), (n, d))
    floor = float(metrics.sliced_wasserstein(x, z, key=key))
    assert floor < 0.1
    # unequal sizes through quantile functions give the same answer up to noise
    sw_uneq = float(metrics.sliced_wasserstein(x, y[: n // 2], key=key, n_projections=512))
    assert abs(sw_uneq - sw) < 0.05
    # exactly zero for identical sets, and differentiable
    assert float(metrics.sliced_wasserstein(x, x, key=key)) == 0.0
    g = jax.grad(lambda s: metrics.sliced_wasserstein(x, y + s, key=key))(0.1)
    assert np.isfinite(g)


def test_nearest_neighbours_brute_force_and_copies():
    rng = np.random.default_rng(0)
    data = rng.normal(size=(1000, 4))
    x = rng.normal(size=(30, 4))
    d, idx = metrics.nearest_neighbours(jnp.asarray(x), jnp.asarray(data), 3, chunk_size=97)
    D = np.linalg.norm(x[:, None] - data[None], axis=-1)
    np.testing.assert_allclose(d, np.sort(D, 1)[:, :3], rtol=1e-10)
    np.testing.assert_array_equal(idx, np.argsort(D, 1)[:, :3])
    # exact copies (plus tiny noise) are copies; fresh draws almost never are in d = 4
    copies = jnp.asarray(data[:50] + 1e-6)
    assert float(metrics.copy_fraction(copies, jnp.asarray(data))) == 1.0
    assert float(metrics.copy_fraction(jnp.asarray(x), jnp.asarray(data))) < 0.2
    with pytest.raises(ValueError, match="`k`"):
        metrics.nearest_neighbours(jnp.asarray(x), jnp.asarray(data[:2]), 3)


def test_mmd_and_subspace_and_participation():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(500, 2)))
    y = jnp.asarray(rng.normal(size=(500, 2)))
    z = jnp.asarray(rng.normal(size=(500, 2)) + 2.0)
    # unbiased: near zero for equal laws, clearly positive for different ones
    assert abs(float(metrics.mmd(x, y, bandwidth=1.0))) < 0.02
    assert float(metrics.mmd(x, z, bandwidth=1.0)) > 0.3
    # distance to the plane x + y = 0 in R^3 (non-orthonormal basis), against the formula
    pts = jnp.asarray(rng.normal(size=(10, 3)))
    basis = jnp.array([[1.0, -1.0, 0.0], [0.0, 0.0, 2.0]])
    expected = np.abs(np.asarray(pts[:, 0] + pts[:, 1])) / np.sqrt(2)
    np.testing.assert_allclose(metrics.distance_to_subspace(pts, jnp.zeros(3), basis), expected, rtol=1e-10)
    w = jnp.array([[1.0, 0, 0, 0], [0.25, 0.25, 0.25, 0.25]])
    np.testing.assert_allclose(metrics.participation(w), [1.0, 0.25])
    with pytest.raises(ValueError, match="dimension"):
        metrics.sliced_wasserstein(x, jnp.zeros((5, 3)), key=jax.random.PRNGKey(0))
