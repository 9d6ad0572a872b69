"""Forward processes against closed forms, derivatives and a Diffrax simulation (float64)."""

import diffrax
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import pytest
from scipy import integrate

import jaxdiff as jd

PROCESSES = {
    "OU": jd.OU(),
    "VP": jd.VP(),
    "SubVP": jd.SubVP(),
    "CosineVP": jd.CosineVP(),
    "VE": jd.VE(sigma_min=0.05, sigma_max=10.0),
}


def _times(p):
    T = float(p.T)
    return jnp.array([1e-5, 1e-3, 0.1 * T, 0.5 * T, T])


def _closed_form(name, p, t):
    """alpha(t), sigma(t)^2 written independently (numpy, quadrature) from the SDEs' definitions."""
    t = np.asarray(t, dtype=np.float64)
    if name == "OU":
        return np.exp(-t), 1 - np.exp(-2 * t)
    if name in ("VP", "SubVP"):
        beta = lambda s: p.beta_min + s / p.T * (p.beta_max - p.beta_min)
        B = np.array([integrate.quad(beta, 0, ti)[0] for ti in t])
        alpha = np.exp(-B / 2)
        return alpha, (1 - alpha**2) if name == "VP" else (1 - alpha**2) ** 2
    if name == "CosineVP":
        u = lambda s: np.pi / 2 * (s + p.s) / (1 + p.s)
        a = np.cos(u(t)) / np.cos(u(0))
        return a, 1 - a**2
    if name == "VE":
        g2 = lambda s: float(p.g2(jnp.array(s)))
        return np.ones_like(t), np.array([integrate.quad(g2, 0, ti)[0] for ti in t])
    raise KeyError(name)


@pytest.mark.parametrize("name", PROCESSES)
def test_marginal_matches_independent_closed_form(name):
    p = PROCESSES[name]
    ts = _times(p)[1:]  # quadrature is not relatively accurate at 1e-5; checked in the next test
    alpha, var = _closed_form(name, p, ts)
    np.testing.assert_allclose(jax.vmap(p.alpha)(ts), alpha, rtol=1e-7)
    np.testing.assert_allclose(jax.vmap(p.sigma2)(ts), var, rtol=1e-6)


@pytest.mark.parametrize("name", PROCESSES)
def test_drift_and_diffusion_are_derivatives(name):
    """f = d log alpha/dt and g^2 = d sigma^2/dt - 2 f sigma^2 by autodiff, at all times."""
    p = PROCESSES[name]
    ts = _times(p)
    f_ad = jax.vmap(jax.grad(p.log_alpha))(ts)
    s2 = jax.vmap(p.sigma2)(ts)
    g2_ad = jax.vmap(jax.grad(p.sigma2))(ts) - 2 * f_ad * s2
    np.testing.assert_allclose(jax.vmap(p.f)(ts), f_ad, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(jax.vmap(p.g2)(ts), g2_ad, rtol=1e-9)
    x = jnp.array([1.0, -2.0])
    np.testing.assert_allclose(p.drift(ts[2], x), p.f(ts[2]) * x)
    np.testing.assert_allclose(p.diffusion(ts[2]) ** 2, p.g2(ts[2]), rtol=1e-12)


@pytest.mark.parametrize("name", PROCESSES)
def test_log_snr_inverse(name):
    p = PROCESSES[name]
    ts = _times(p)
    lam = jax.vmap(p.log_snr)(ts)
    assert np.all(np.diff(np.asarray(lam)) < 0), "log-SNR must decrease in t"
    np.testing.assert_allclose(jax.vmap(p.t_from_log_snr)(lam), ts, rtol=1e-7)


@pytest.mark.parametrize("name", PROCESSES)
def test_small_t_float32_accuracy(name):
    """sigma(1e-6) keeps full relative accuracy in float32 (expm1-style forms)."""
    p = PROCESSES[name]
    t32 = jnp.float32(1e-6)
    got = p.sigma(t32)
    assert got.dtype == jnp.float32
    # float64 evaluation of the definitions loses at most ~6 of its 16 digits here
    ref = np.sqrt(_closed_form(name, p, np.array([1e-6]))[1][0])
    np.testing.assert_allclose(float(got), ref, rtol=1e-5)


def test_ou_matches_seed_papers():
    p = jd.OU()
    t = jnp.array(0.7)
    assert float(p.f(t)) == -1.0 and float(p.g2(t)) == 2.0
    np.testing.assert_allclose(p.sigma2(t), -np.expm1(-1.4), rtol=1e-14)


@pytest.mark.parametrize("name", ["OU", "VP", "VE"])
def test_forward_sde_simulation_matches_marginal(name):
    """Euler–Maruyama in Diffrax on a fine grid vs the closed-form mean and variance."""
    p = PROCESSES[name]
    n, steps = 2000, 100
    t1 = 0.5 * float(p.T)
    x0 = jnp.array([1.5, -0.5])

    def path(k):
        bm = diffrax.VirtualBrownianTree(0.0, t1, tol=t1 / steps / 4, shape=(2,), key=k)
        diag = lambda t, y, a: lx.DiagonalLinearOperator(p.diffusion(t) * jnp.ones(2))
        terms = diffrax.MultiTerm(
            diffrax.ODETerm(lambda t, y, a: p.drift(t, y)), diffrax.ControlTerm(diag, bm)
        )
        sol = diffrax.diffeqsolve(terms, diffrax.Heun(), 0.0, t1, t1 / steps, x0)
        return sol.ys[-1]

    keys = jax.random.split(jax.random.PRNGKey(7), n)
    xs = np.asarray(jax.jit(jax.vmap(path))(keys))
    mean, var = np.asarray(p.alpha(t1) * x0), float(p.sigma2(t1))
    se_mean = np.sqrt(var / n)
    se_var = var * np.sqrt(2 / (n - 1))
    assert np.all(np.abs(xs.mean(0) - mean) < 4 * se_mean), (xs.mean(0), mean)
    assert np.all(np.abs(xs.var(0, ddof=1) - var) < 4 * se_var + 1e-3 * var), (xs.var(0), var)


def test_sample_marginal_and_prior():
    p = jd.VP()
    x0 = jnp.array([2.0, -1.0, 0.5])
    t = jnp.array(0.3)
    keys = jax.random.split(jax.random.PRNGKey(1), 20000)
    xs = np.asarray(jax.vmap(lambda k: p.sample_marginal(k, t, x0))(keys))
    n = xs.shape[0]
    assert np.all(np.abs(xs.mean(0) - np.asarray(p.alpha(t) * x0)) < 4 * np.sqrt(float(p.sigma2(t)) / n))
    prior = p.prior_sample(jax.random.PRNGKey(2), (64, 3))
    assert prior.shape == (64, 3)
    # Row i does not depend on the batch size.
    np.testing.assert_array_equal(prior[:8], p.prior_sample(jax.random.PRNGKey(2), (8, 3)))
    from scipy.stats import multivariate_normal

    ve = jd.VE()
    x = jnp.array([3.0, -4.0, 10.0])
    s = float(ve.prior_std)
    np.testing.assert_allclose(
        ve.prior_log_prob(x), multivariate_normal(np.zeros(3), s**2 * np.eye(3)).logpdf(x), rtol=1e-12
    )


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: jd.VP(beta_min=-0.1), "beta_min"),
        (lambda: jd.VP(beta_max=float("nan")), "beta_max"),
        (lambda: jd.OU(T=0.0), "T"),
        (lambda: jd.VE(sigma_min=1.0, sigma_max=0.5), "sigma_max"),
        (lambda: jd.CosineVP(T=1.0), "T"),
    ],
)
def test_bad_parameters(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_process_parameters_are_differentiable():
    """Arrays as parameters: grad of sigma(t) w.r.t. beta_max matches finite differences."""
    t = jnp.array(0.4)
    f = lambda b: jd.VP(beta_max=b).sigma(t)
    b, h = jnp.array(20.0), 1e-5
    fd = (f(b + h) - f(b - h)) / (2 * h)
    np.testing.assert_allclose(jax.grad(f)(b), fd, rtol=1e-6)
