"""Networks and parametrisations: shapes, Fourier features, and an oracle check that each
parametrisation turns its ideal network output into the exact score."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdiff as jd
from jaxdiff.nn import MLP, FourierFeatures, UNet


@eqx.filter_jit
def _batched(model, c, x):
    return jax.vmap(model)(c, x)


def test_mlp_default_2d_model():
    model = MLP(2, key=jax.random.PRNGKey(0))
    x = jnp.array([0.3, -1.2])
    out = _batched(model, jnp.array([0.1, 0.1, -1.0]), jnp.stack([x, 2 * x, x]))
    assert out.shape == (3, 2)
    assert bool(jnp.all(jnp.isfinite(out)))
    np.testing.assert_allclose(model(jnp.array(0.1), x), out[0], rtol=1e-10)
    # time conditioning matters: a different noise level gives a different output
    assert float(jnp.max(jnp.abs(out[2] - out[0]))) > 1e-4


def test_mlp_refuses_bad_input():
    with pytest.raises(ValueError, match="dim"):
        MLP(0, key=jax.random.PRNGKey(0))
    model = MLP(2, key=jax.random.PRNGKey(0), width=8, depth=1)
    with pytest.raises(ValueError, match="vmap"):
        model(0.0, jnp.ones((4, 2)))


def test_fourier_features_closed_form():
    ff = FourierFeatures(6, min_freq=1.0, max_freq=16.0)
    c = 0.37
    w = np.array([1.0, 4.0, 16.0])  # geometric between 1 and 16
    expect = np.concatenate([[c], np.sin(w * c), np.cos(w * c)])
    np.testing.assert_allclose(ff(jnp.array(c)), expect, rtol=1e-12)
    with pytest.raises(ValueError, match="n_fourier"):
        FourierFeatures(5)


@pytest.fixture(scope="module")
def unet():
    # one small net for the file: building a U-Net eagerly compiles one random op per layer shape
    return UNet(2, key=jax.random.PRNGKey(1), base=8, mults=(1, 2), emb_size=16)


@pytest.mark.parametrize("size", [8, 16])
def test_unet_shapes(unet, size):
    shape = (2, size, size)
    x = jax.random.normal(jax.random.PRNGKey(2), shape)
    out = _batched(unet, jnp.array([0.2, -0.5]), jnp.stack([x, x]))
    assert out.shape == (2, *shape)
    assert bool(jnp.all(jnp.isfinite(out)))
    assert float(jnp.max(jnp.abs(out[1] - out[0]))) > 1e-6


def test_unet_refuses_bad_shapes(unet):
    with pytest.raises(ValueError, match="divisible by 2"):
        unet(0.0, jnp.ones((2, 7, 7)))
    with pytest.raises(ValueError, match="vmap"):
        unet(0.0, jnp.ones((3, 2, 8, 8)))
    with pytest.raises(ValueError, match="mults"):
        UNet(1, key=jax.random.PRNGKey(0), mults=())


# ---- parametrisations: an oracle network that outputs each parametrisation's exact target ----

LAW = jd.GaussianMixture(jnp.array([[-1.0, 0.5], [1.5, -0.5]]), jnp.array([0.4, 0.7]), jnp.array([0.3, 0.7]))


def _oracle(param, process, sigma_data):
    """The ideal network for `param`, written from the law's posterior mean (not from the score)."""

    def model(c, y):
        t = process.t_from_log_snr(-8.0 * c)  # c_noise = -log_snr / 8
        a, s = process.alpha(t), process.sigma(t)
        x = y * jnp.sqrt(a**2 * sigma_data**2 + s**2)  # undo c_in
        x0 = LAW.denoise_at(a, s, x)
        eps = (x - a * x0) / s
        if isinstance(param, jd.EpsParam):
            return eps
        if isinstance(param, jd.X0Param):
            return x0
        if isinstance(param, jd.VParam):
            return (a * eps - s * x0) / jnp.sqrt(a**2 + s**2)
        if isinstance(param, jd.ScoreParam):
            return -eps / s
        st = s / a  # EDM: D = c_skip x / a + c_out F  =>  F = (x0 - c_skip x / a) / c_out
        c_skip = sigma_data**2 / (st**2 + sigma_data**2)
        c_out = st * sigma_data / jnp.sqrt(st**2 + sigma_data**2)
        return (x0 - c_skip * x / a) / c_out

    return model


@pytest.mark.parametrize("process", [jd.VP(), jd.VE(sigma_min=0.01, sigma_max=20.0)], ids=["VP", "VE"])
@pytest.mark.parametrize("param", [jd.EpsParam(), jd.X0Param(), jd.VParam(), jd.ScoreParam(),
                                   jd.EDMParam(sigma_data=0.8)], ids=lambda p: type(p).__name__)
def test_parametrisation_oracle_gives_exact_score(process, param):
    score = jd.NetworkScore(_oracle(param, process, param.sigma_data), process, param)
    exact = jd.ExactScore(process, LAW)
    xs = jax.random.normal(jax.random.PRNGKey(3), (5, 2)) * 2.0
    for t in (0.05, 0.3, 0.9):
        t = jnp.array(t)
        got = jax.vmap(score, in_axes=(None, 0))(t, xs)
        want = jax.vmap(exact, in_axes=(None, 0))(t, xs)
        np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-8 * float(jnp.max(jnp.abs(want))))


def test_network_score_checks():
    model = MLP(2, key=jax.random.PRNGKey(0), width=8, depth=1)
    with pytest.raises(ValueError, match="process"):
        jd.NetworkScore(model, "OU")
    with pytest.raises(ValueError, match="parametrisation"):
        jd.NetworkScore(model, jd.OU(), "eps")
    score = jd.NetworkScore(model, jd.OU())
    with pytest.raises(ValueError, match="`t` must be > 0"):
        score(jnp.array(0.0), jnp.ones(2))
    # the default is EDM preconditioning with sigma_data unset (1 until `train` estimates it):
    # for OU, alpha^2 + sigma^2 = 1 so c_in = 1; D = c_skip x / alpha + c_out F
    assert isinstance(score.parametrisation, jd.EDMParam) and score.parametrisation.sigma_data is None
    t = jnp.array(0.4)
    p = jd.OU()
    a, s2 = p.alpha(t), p.sigma2(t)
    st2 = s2 / a**2
    d = 1 / (st2 + 1) * jnp.ones(2) / a + jnp.sqrt(st2 / (st2 + 1)) * model(-p.log_snr(t) / 8, jnp.ones(2))
    np.testing.assert_allclose(score(t, jnp.ones(2)), (a * d - jnp.ones(2)) / s2, rtol=1e-10)
