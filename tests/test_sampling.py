"""Sampling engine: the exact bridge, grids, DDPM/DDIM exactness, input checks,
reproducibility, jit and gradients. Statistical accuracy lives in test_sampling_accuracy.py.

Closed forms come from docs/theory.md (OU bridge), Ho et al. 2020 (DDPM posterior) and Gaussian
conditioning; statistical tolerances are stated next to each check.
"""

import math

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdiff as jd
from jaxdiff.sampling import bridge

KEY = jax.random.PRNGKey(0)
RING = jd.GaussianMixture(
    2.0 * jnp.stack([jnp.cos(jnp.arange(8) * jnp.pi / 4), jnp.sin(jnp.arange(8) * jnp.pi / 4)], axis=1), 0.3
)
OU = jd.OU()
OU_SCORE = jd.ExactScore(OU, RING)
X0 = jnp.array([0.7, -1.3])
POINT = jd.PointCloud(X0[None])  # a Dirac law: its denoiser is exactly X0


# ---- the bridge -----------------------------------------------------------------------

PROCESSES = [jd.OU(), jd.VP(), jd.SubVP(), jd.CosineVP(), jd.VE()]


@pytest.mark.parametrize("process", PROCESSES, ids=lambda p: type(p).__name__)
def test_bridge_is_gaussian_conditioning(process):
    # Independent route: the joint law of (X_s, X_t) given x0 is Gaussian with
    # Cov = [[sig_s^2, a sig_s^2], [a sig_s^2, sig_t^2]], a = alpha_t / alpha_s; condition on X_t.
    T = float(process.T)
    x_t = jnp.array([0.3, -2.0, 1.1])
    x0 = jnp.array([1.0, 0.5, -0.4])
    for t, s in [(0.9 * T, 0.5 * T), (0.3 * T, 0.05 * T), (0.6 * T, 0.59 * T)]:
        a_s, a_t = float(process.alpha(s)), float(process.alpha(t))
        v_s, v_t = float(process.sigma2(s)), float(process.sigma2(t))
        a = a_t / a_s
        mean_ref = a_s * x0 + (a * v_s / v_t) * (x_t - a_t * x0)
        var_ref = v_s - a**2 * v_s**2 / v_t
        mean, std = bridge(process, t, s, x_t, x0)
        np.testing.assert_allclose(mean, mean_ref, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(std**2, var_ref, rtol=1e-8)


def test_bridge_matches_theory_ou_formulas():
    # docs/theory.md: coefficient of x_t is sinh s / sinh t, of x0 is e^-s s_{t-s}^2 / s_t^2,
    # variance s_s^2 s_{t-s}^2 / s_t^2 with s_u^2 = 1 - e^-2u.
    s2 = lambda u: 1 - math.exp(-2 * u)
    x_t, x0 = jnp.array([1.5, -0.2]), jnp.array([-0.5, 2.0])
    for t, s in [(2.0, 1.0), (0.5, 0.01), (4.0, 3.9)]:
        mean, std = bridge(OU, t, s, x_t, x0)
        ref = math.sinh(s) / math.sinh(t) * x_t + math.exp(-s) * s2(t - s) / s2(t) * x0
        np.testing.assert_allclose(mean, ref, rtol=1e-12)
        np.testing.assert_allclose(std**2, s2(s) * s2(t - s) / s2(t), rtol=1e-10)


def test_bridge_is_ddpm_posterior():
    # Ho et al. (2020), eq. (7): with alpha_bar_k = alpha(t_k)^2, alpha_k = alpha_bar_k / alpha_bar_{k-1},
    # beta_k = 1 - alpha_k: mean = sqrt(ab_{k-1}) beta_k / (1 - ab_k) x0
    #                              + sqrt(alpha_k)(1 - ab_{k-1})/(1 - ab_k) x_k,
    # variance (1 - ab_{k-1}) beta_k / (1 - ab_k).
    vp = jd.VP()
    x_t, x0 = jnp.array([0.4, 1.2]), jnp.array([-1.0, 0.3])
    for t, s in [(0.5, 0.49), (0.9, 0.7), (0.02, 0.001)]:
        ab_k, ab_km1 = float(vp.alpha(t)) ** 2, float(vp.alpha(s)) ** 2
        alpha_k = ab_k / ab_km1
        beta_k = 1 - alpha_k
        ref = (
            math.sqrt(ab_km1) * beta_k / (1 - ab_k) * x0
            + math.sqrt(alpha_k) * (1 - ab_km1) / (1 - ab_k) * x_t
        )
        mean, std = bridge(vp, t, s, x_t, x0)
        np.testing.assert_allclose(mean, ref, rtol=1e-9)
        np.testing.assert_allclose(std**2, (1 - ab_km1) * beta_k / (1 - ab_k), rtol=1e-8)


def test_bridge_end_points_and_errors():
    x_t, x0 = jnp.array([1.0, 2.0]), jnp.array([-3.0, 0.5])
    mean, std = bridge(OU, 1.0, 0.0, x_t, x0)
    np.testing.assert_allclose(mean, x0, rtol=1e-14)
    assert float(std) == 0.0
    mean, std = bridge(OU, 1.0, 1.0, x_t, x0)
    np.testing.assert_allclose(mean, x_t, rtol=1e-14)
    assert float(std) == 0.0
    with pytest.raises(ValueError, match="`s` must be >= 0 and <= t"):
        bridge(OU, 1.0, 2.0, x_t, x0)
    with pytest.raises(ValueError, match="`t` must be > 0 and <= T"):
        bridge(OU, 6.0, 1.0, x_t, x0)
    with pytest.raises(ValueError, match="same shape"):
        bridge(OU, 1.0, 0.5, x_t, x0[:1])


# ---- grids ----------------------------------------------------------------------------


@pytest.mark.parametrize("process", [jd.OU(), jd.VP(), jd.VE()], ids=lambda p: type(p).__name__)
def test_grids(process):
    T, t_end, K = float(process.T), 1e-3 * float(process.T), 12
    for grid in [jd.UniformGrid(), jd.GeometricGrid(), jd.LogSNRGrid(), jd.EDMGrid(rho=7.0)]:
        ts = np.asarray(grid(process, K, jnp.asarray(t_end)))
        assert ts.shape == (K + 1,)
        assert ts[0] == T and ts[-1] == t_end  # exact end points
        assert np.all(np.diff(ts) < 0)
    u = np.arange(K + 1) / K
    np.testing.assert_allclose(jd.UniformGrid()(process, K, t_end), T + u * (t_end - T), rtol=1e-13)
    np.testing.assert_allclose(jd.GeometricGrid()(process, K, t_end), T * (t_end / T) ** u, rtol=1e-12)
    lam = np.asarray(process.log_snr(jd.LogSNRGrid()(process, K, t_end)))
    np.testing.assert_allclose(np.diff(lam), (lam[-1] - lam[0]) / K, rtol=1e-8)
    # Karras et al. eq. (5) on the noise level sigma/alpha, computed directly
    sig = lambda t: float(process.sigma(t) / process.alpha(t))
    smax, smin = sig(T), sig(t_end)
    ref = (smax ** (1 / 7) + u * (smin ** (1 / 7) - smax ** (1 / 7))) ** 7
    ts = jd.EDMGrid(rho=7.0)(process, K, t_end)
    np.testing.assert_allclose(np.asarray(process.sigma(ts) / process.alpha(ts)), ref, rtol=1e-8)
    # as rho grows the EDM grid tends to the log-SNR grid, with an O(1/rho) gap (the grid
    # search of the optimise_sampler experiment puts 1/rho = 0 there)
    lam_edm = lambda rho: np.asarray(process.log_snr(jd.EDMGrid(rho)(process, K, t_end)))
    gaps = [np.max(np.abs(lam_edm(rho) - lam)) for rho in (1e2, 1e3, 1e4)]
    assert gaps[2] < 1e-2 * (lam[-1] - lam[0]), gaps
    assert 7 < gaps[0] / gaps[1] < 13 and 7 < gaps[1] / gaps[2] < 13, gaps


# ---- DDPM / DDIM on a Dirac law: exact transitions -------------------------------------


def test_ddpm_step_is_the_bridge_transition():
    # One DDPM step from x_t (every row the same) on a Dirac law, whose denoiser is x0 exactly:
    # X_s must be N(bridge mean, bridge var) (Ho et al.'s posterior; checked above against the
    # closed forms). n = 20000 rows: 5-sigma bounds from the standard errors of mean and variance.
    vp = jd.VP()
    t, s = 0.6, 0.45
    x_t = jnp.array([0.9, -0.4])
    n = 20000
    ab_k, ab_km1 = float(vp.alpha(t)) ** 2, float(vp.alpha(s)) ** 2
    beta_k = 1 - ab_k / ab_km1
    mean_ref = (
        math.sqrt(ab_km1) * beta_k / (1 - ab_k) * X0 + math.sqrt(1 - beta_k) * (1 - ab_km1) / (1 - ab_k) * x_t
    )
    var_ref = (1 - ab_km1) * beta_k / (1 - ab_k)
    out = jd.sample(KEY, jd.ExactScore(vp, POINT), vp, (n, 2), sampler=jd.DDPM(), grid=jnp.array([t, s]),
                    x_init=jnp.broadcast_to(x_t, (n, 2)))  # fmt: skip
    se_mean = math.sqrt(var_ref / n)
    se_var = var_ref * math.sqrt(2 / (n - 1))
    np.testing.assert_array_less(np.abs(np.mean(out, 0) - mean_ref), 5 * se_mean)
    np.testing.assert_array_less(np.abs(np.var(out, 0, ddof=1) - var_ref), 5 * se_var)


def test_ddim_is_the_exact_flow_of_a_dirac_law():
    # docs/theory.md: for rho_0 = delta_{x0} the PF-ODE gives Y_t = e^-t x0 + (s_t / s_T)(y0 - e^-T x0)
    # on OU; DDIM (eta = 0) is exact for any grid. Also: denoise=True returns x0, and the
    # trajectory has every grid time plus t = 0.
    T, t_end = float(OU.T), 0.05
    ts = jnp.asarray(np.geomspace(T, t_end, 8))
    y0 = jax.random.normal(jax.random.PRNGKey(4), (5, 2))
    out_ts, xs = jd.sample(KEY, jd.ExactScore(OU, POINT), OU, (5, 2), sampler=jd.DDIM(), grid=ts, x_init=y0,
                           trajectory=True, denoise=True)  # fmt: skip
    s = lambda u: math.sqrt(1 - math.exp(-2 * u))
    assert out_ts.shape == (9,) and xs.shape == (9, 5, 2) and float(out_ts[-1]) == 0.0
    np.testing.assert_array_equal(xs[0], y0)
    for k, t in enumerate(np.asarray(ts)):
        ref = math.exp(-t) * X0 + s(t) / s(T) * (y0 - math.exp(-T) * X0)
        np.testing.assert_allclose(xs[k], ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(xs[-1], jnp.broadcast_to(X0, (5, 2)), rtol=1e-12)


# ---- input checks -----------------------------------------------------------------------


def test_bad_input():
    f = lambda **kw: jd.sample(KEY, OU_SCORE, OU, (4, 2), **kw)
    with pytest.raises(ValueError, match="`t_end` must be > 0"):
        f(t_end=0.0)
    with pytest.raises(ValueError, match="`t_end` must be > 0"):
        f(t_end=-1e-3)
    with pytest.raises(ValueError, match="`t_end` must be > 0 and < T"):
        f(t_end=5.0)
    with pytest.raises(ValueError, match="`steps` must be >= 1"):
        f(steps=0)
    with pytest.raises(ValueError, match="`steps` must be a positive Python integer"):
        f(steps=2.5)
    with pytest.raises(ValueError, match="strictly decreasing"):
        f(grid=jnp.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="`x_init` must have shape"):
        f(x_init=jnp.zeros((3, 2)))
    with pytest.raises(ValueError, match="`shape` must be batch-first"):
        jd.sample(KEY, OU_SCORE, OU, (4,))
    with pytest.raises(ValueError, match="`sampler` must be"):
        f(sampler="ddpm")
    with pytest.raises(ValueError, match="must return the shape of one sample"):
        jd.sample(KEY, lambda t, x: jnp.sum(x), OU, (4, 2))
    with pytest.raises(ValueError, match="failed on one sample"):
        jd.sample(KEY, OU_SCORE, OU, (4, 3))  # the law is 2-D
    with pytest.raises(ValueError, match="`eta` must lie in"):
        jd.DDIM(eta=1.5)
    with pytest.raises(ValueError, match="`order` of DPMSolverPP must be one of"):
        jd.DPMSolverPP(order=4)


def test_nan_score_is_an_error():
    nan_score = lambda t, x: jnp.where(t < 1.0, jnp.nan, -x)
    # a check of computed values: raised from the device, not by a transfer to the host
    with pytest.raises(Exception, match="NaN or inf"):
        jd.sample(KEY, nan_score, OU, (4, 2), steps=8).block_until_ready()
    # under an outer jit the same check is an eqx.error_if
    with pytest.raises(Exception, match="NaN or inf"):
        jax.jit(lambda t_end: jd.sample(KEY, nan_score, OU, (4, 2), steps=8, t_end=t_end))(jnp.asarray(0.01))


def test_traced_t_end_is_checked():
    g = jax.jit(lambda t_end: jd.sample(KEY, OU_SCORE, OU, (4, 2), steps=8, t_end=t_end))
    assert g(jnp.asarray(0.01)).shape == (4, 2)
    with pytest.raises(Exception, match="`t_end` must be > 0 and < T"):
        g(jnp.asarray(-0.01)).block_until_ready()


# ---- reproducibility and compilation ----------------------------------------------------


@pytest.mark.parametrize(
    "sampler",
    [jd.ReverseSDE(), jd.ExactSampler(jd.PointCloud(RING.means)),
     jd.ProbabilityFlow(diffrax.Tsit5(), diffrax.PIDController(rtol=1e-6, atol=1e-6))],
    ids=["ReverseSDE", "ExactSampler(PointCloud)", "ProbabilityFlow(adaptive)"],
)  # fmt: skip
def test_batch_size_invariance(sampler):
    # Same key: bit-identical. First 16 of 256 rows equal a batch of 16 (to 1e-5 relative).
    kw = dict(sampler=sampler, steps=10, t_end=jnp.asarray(0.01))
    small = jd.sample(KEY, OU_SCORE, OU, (16, 2), **kw)
    again = jd.sample(KEY, OU_SCORE, OU, (16, 2), **kw)
    big = jd.sample(KEY, OU_SCORE, OU, (256, 2), **kw)
    np.testing.assert_array_equal(small, again)
    np.testing.assert_allclose(big[:16], small, rtol=1e-5, atol=1e-8)
    assert not np.allclose(big[16:32], small)  # and the rows differ


def test_diffrax_euler_reproduces_the_fast_path():
    # The grid Brownian path draws step k's increment from fold_in(key_i, k), as the scan does.
    kw = dict(steps=10, t_end=jnp.asarray(0.01))
    fast = jd.sample(KEY, OU_SCORE, OU, (16, 2), sampler=jd.ReverseSDE(), **kw)
    slow = jd.sample(KEY, OU_SCORE, OU, (16, 2), sampler=jd.DiffraxReverseSDE(diffrax.Euler()), **kw)
    np.testing.assert_allclose(slow, fast, rtol=1e-10, atol=1e-12)


class _CountingScore(eqx.Module):
    inner: jd.ExactScore
    log: list = eqx.field(static=True)

    def __call__(self, t, x):
        self.log.append(1)  # runs only while tracing
        return self.inner(t, x)


def test_new_t_end_does_not_recompile():
    log = []
    score = _CountingScore(OU_SCORE, log)
    kw = dict(sampler=jd.ReverseSDE(), steps=10)
    jd.sample(KEY, score, OU, (16, 2), t_end=jnp.asarray(0.01), **kw)
    traced = len(log)
    jd.sample(KEY, score, OU, (16, 2), t_end=jnp.asarray(0.02), **kw)
    jd.sample(jax.random.PRNGKey(3), score, OU, (16, 2), t_end=jnp.asarray(0.03), **kw)
    assert traced > 0 and len(log) == traced


def test_plain_callable_score_uses_tweedie():
    # A bare function goes through D = (x + sigma^2 s) / alpha; ExactScore uses its own denoiser.
    kw = dict(sampler=jd.DDIM(), steps=10, t_end=jnp.asarray(0.01))
    a = jd.sample(KEY, OU_SCORE, OU, (16, 2), **kw)
    b = jd.sample(KEY, lambda t, x: OU_SCORE(t, x), OU, (16, 2), **kw)
    np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)


# ---- gradients --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sampler",
    [jd.DPMSolverPP(), jd.ReverseSDE(),
     pytest.param(jd.ProbabilityFlow(diffrax.Tsit5()), marks=pytest.mark.slow),  # 15-20 s compiles
     pytest.param(jd.EDMHeun(), marks=pytest.mark.slow)],
    ids=["ODE(DPMSolverPP)", "SDE(fixed noise)", "PF-ODE(Tsit5)", "ODE(EDMHeun)"],
)  # fmt: skip
def test_gradient_matches_finite_differences(sampler):
    # d/d(beta_max) and d/d(t_end) of E|X|^2 over 8 samples (fixed key, so fixed noise), against
    # central differences (h = 1e-5 relative: truncation ~1e-10, rounding ~1e-11 in float64).
    def stat(beta_max, t_end):
        vp = jd.VP(beta_max=beta_max)
        x = jd.sample(KEY, jd.ExactScore(vp, RING), vp, (8, 2), sampler=sampler, steps=16, t_end=t_end)
        return jnp.mean(jnp.sum(x**2, axis=1))

    b, te = jnp.asarray(20.0), jnp.asarray(0.02)
    g_b, g_t = jax.grad(stat, argnums=(0, 1))(b, te)
    f = jax.jit(stat)
    fd_b = (f(b * (1 + 1e-5), te) - f(b * (1 - 1e-5), te)) / (2e-5 * b)
    fd_t = (f(b, te * (1 + 1e-5)) - f(b, te * (1 - 1e-5))) / (2e-5 * te)
    np.testing.assert_allclose(g_b, fd_b, rtol=1e-5)
    np.testing.assert_allclose(g_t, fd_t, rtol=1e-5)
    assert abs(float(g_t)) > 1e-3  # the statistic does depend on t_end
