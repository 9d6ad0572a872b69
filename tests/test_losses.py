"""Score-matching losses against closed forms and against each other, with Monte Carlo
tolerances of 4 standard errors (fixed keys)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate

import jaxdiff as jd

PROCESS = jd.OU(T=2.0)
MIX = jd.GaussianMixture(jnp.array([[-1.5, 0.0], [1.0, 1.0]]), jnp.array([0.3, 0.5]), jnp.array([0.4, 0.6]))
N = 4000
X0 = MIX.sample(jax.random.PRNGKey(11), N)
KEY = jax.random.PRNGKey(5)

SETTINGS = {
    "sigma2-uniform": dict(weighting=jd.SigmaSquaredWeighting(), time_sampler=jd.UniformTime()),
    "g2-uniform": dict(weighting=jd.LikelihoodWeighting(), time_sampler=jd.UniformTime()),
    "g2-importance": dict(weighting=jd.LikelihoodWeighting(), time_sampler=jd.LikelihoodImportanceTime()),
    "edm-lognormal": dict(weighting=jd.EDMWeighting(sigma_data=0.5), time_sampler=jd.LogNormalTime()),
}


def _mean_se(terms):
    terms = np.asarray(terms)
    return terms.mean(), terms.std(ddof=1) / np.sqrt(terms.size)


@pytest.mark.parametrize("name", ["sigma2-uniform", "g2-importance", "edm-lognormal"])
def test_dsm_loss_of_exact_score_is_the_minimum(name):
    kw = SETTINGS[name]
    exact = jd.ExactScore(PROCESS, MIX)
    loss = jd.dsm_loss(exact, PROCESS, X0, key=KEY, reduce=False, **kw)
    floor = jd.dsm_minimum(MIX, PROCESS, X0, key=KEY, reduce=False, **kw)
    # paired: per example, E[loss - floor | x_t] = 0 for the exact score
    m, se = _mean_se(loss - floor)
    assert abs(m) < 4 * se, (m, se)
    # the floor is resolved by the test: a loss that missed it would fail
    assert float(jnp.mean(floor)) > 4 * se


def _ou(t):
    # OU in closed form, independently of jaxdiff: alpha^2 = e^-2t, sigma^2 = 1 - e^-2t
    return np.exp(-2 * t), -np.expm1(-2 * t)


def _gaussian_floor_integrand(t, c2, d, weighting):
    a2, s2 = _ou(t)
    lam = {"sigma2": s2, "g2": 2.0}[weighting]  # OU: g^2 = 2
    return lam * a2 / s2**2 * d * c2 * s2 / (a2 * c2 + s2)  # tr Cov(X0|Xt) = d c^2 s^2 / (a^2 c^2 + s^2)


@pytest.mark.parametrize("name", ["g2-uniform", "g2-importance"])
def test_dsm_minimum_closed_form_for_a_gaussian(name):
    c, d, t_min = 0.7, 2, 1e-2
    law = jd.Gaussian(jnp.array([0.5, -0.3]), c**2 * jnp.eye(d))
    x0 = law.sample(jax.random.PRNGKey(1), 4000)
    floor = jd.dsm_minimum(law, PROCESS, x0, key=KEY, t_min=t_min, reduce=False, **SETTINGS[name])
    args = (c**2, d, name[: name.index("-")])
    value, _ = integrate.quad(_gaussian_floor_integrand, t_min, float(PROCESS.T), args=args, limit=200)
    expect = value / (float(PROCESS.T) - t_min)
    m, se = _mean_se(floor)
    assert abs(m - expect) < 4 * se, (m, expect, se)


def test_loss_minus_minimum_is_the_fisher_divergence():
    exact = jd.ExactScore(PROCESS, MIX)
    wrong = lambda t, x: 0.8 * exact(t, x)
    loss = jd.dsm_loss(wrong, PROCESS, X0, key=KEY, reduce=False)
    d = loss - jd.dsm_minimum(MIX, PROCESS, X0, key=KEY, reduce=False)
    f = jd.fisher_divergence(wrong, exact, PROCESS, X0, key=jax.random.PRNGKey(6), reduce=False)
    (m1, se1), (m2, se2) = _mean_se(d), _mean_se(f)
    assert m2 > 10 * se2  # a clearly visible score error
    assert abs(m1 - m2) < 4 * np.hypot(se1, se2), (m1, m2, se1, se2)


def test_fisher_divergence_closed_form_at_fixed_time():
    c, d, t = 0.6, 2, jnp.array(0.3)
    law = jd.Gaussian(jnp.zeros(d), c**2 * jnp.eye(d))
    exact = jd.ExactScore(PROCESS, law)
    scaled = lambda t, x: 1.5 * exact(t, x)
    a2, s2 = _ou(float(t))
    v = a2 * c**2 + s2
    expect = 0.5**2 * d / v  # E|0.5 x / v|^2 with x ~ N(0, v I)
    f = jd.fisher_divergence(scaled, exact, PROCESS, law, key=KEY, n=4000, t=t, reduce=False)
    m, se = _mean_se(f)
    assert abs(m - expect) < 4 * se, (m, expect, se)


def test_sliced_score_matching_of_exact_score_closed_form():
    # For N(0, c^2 I): E[2 v^T (ds/dx) v + |s|^2] = -2 d / v_t + d / v_t = -d / v_t with v_t = a^2 c^2 + s^2,
    # weighted by sigma^2 and averaged over uniform t.
    c, d, t_min = 0.8, 2, 1e-2
    law = jd.Gaussian(jnp.zeros(d), c**2 * jnp.eye(d))
    x0 = law.sample(jax.random.PRNGKey(2), 4000)
    terms = jd.sliced_score_matching_loss(jd.ExactScore(PROCESS, law), PROCESS, x0, key=KEY, n_projections=2,
                                          t_min=t_min, reduce=False)

    def integrand(t):
        a2, s2 = _ou(t)
        return -s2 * d / (a2 * c**2 + s2)

    expect = integrate.quad(integrand, t_min, float(PROCESS.T))[0] / (float(PROCESS.T) - t_min)
    m, se = _mean_se(terms)
    assert abs(m - expect) < 4 * se, (m, expect, se)


def test_importance_time_sampler_density():
    # q(t) = (g^2 / sigma^2) / (lambda(t_min) - lambda(T)), CDF (lambda(t_min) - lambda(t)) / (same)
    t_min = 1e-3
    keys = jax.vmap(lambda i: jax.random.fold_in(KEY, i))(jnp.arange(20000))
    ts, w = jax.vmap(lambda k: jd.LikelihoodImportanceTime().sample(k, PROCESS, t_min))(keys)
    lo, hi = float(PROCESS.log_snr(PROCESS.T)), float(PROCESS.log_snr(t_min))
    for t in (0.01, 0.1, 0.5):
        cdf = (hi - float(PROCESS.log_snr(t))) / (hi - lo)
        emp = float(jnp.mean(ts <= t))
        assert abs(emp - cdf) < 4 * np.sqrt(cdf * (1 - cdf) / ts.size)
    # the importance factors average to one (w = d nu / d q)
    m, se = _mean_se(w)
    assert abs(m - 1) < 4 * se


def test_losses_refuse_bad_input():
    exact = jd.ExactScore(PROCESS, MIX)
    with pytest.raises(ValueError, match="t_min"):
        jd.dsm_loss(exact, PROCESS, X0[:4], key=KEY, t_min=0.0)
    with pytest.raises(ValueError, match="x0"):
        jd.dsm_loss(exact, PROCESS, X0[0], key=KEY)
    with pytest.raises(Exception, match="NaN"):  # a computed value: checked on the device
        jd.dsm_loss(lambda t, x: x * jnp.nan, PROCESS, X0[:4], key=KEY).block_until_ready()
    with pytest.raises(ValueError, match="law"):
        jd.dsm_minimum(exact, PROCESS, X0[:4], key=KEY)


def test_dsm_loss_jits_and_differentiates():
    # the loss is a smooth function of a score parameter; its gradient matches central differences
    exact = jd.ExactScore(PROCESS, MIX)

    @jax.jit
    def loss(c):
        return jd.dsm_loss(lambda t, x: c * exact(t, x), PROCESS, X0[:256], key=KEY)

    c, h = jnp.array(0.9), 1e-5
    fd = (loss(c + h) - loss(c - h)) / (2 * h)
    np.testing.assert_allclose(jax.grad(loss)(c), fd, rtol=1e-6)


def _n_conditionals(fn, *args):
    """Conditionals in the optimised HLO: each run-time `t` check (`eqx.error_if`) is one."""
    return jax.jit(fn).lower(*args).compile().as_text().count(" conditional(")


def test_losses_and_samplers_call_scores_without_time_checks():
    """A loss draws t in [t_min, T] and a sampler's grid is checked once, so neither pays for a
    per-call `error_if` (7% of a U-Net step); the user-facing score keeps its checks."""
    import equinox as eqx

    model = jd.nn.MLP(2, key=jax.random.PRNGKey(0), width=16, depth=1)
    net = jd.NetworkScore(model, PROCESS)
    exact = jd.ExactScore(PROCESS, jd.PointCloud(X0[:50]))
    x = jnp.ones(2)
    for score in (net, exact):
        assert _n_conditionals(lambda t, x: score(t, x), 0.5, x) == 1
        fast = score.without_time_checks()
        assert _n_conditionals(lambda t, x: fast(t, x), 0.5, x) == 0
        assert _n_conditionals(lambda t, x: fast.denoise(t, x), 0.5, x) == 0
        np.testing.assert_array_equal(fast(0.5, x), score(0.5, x))
        # the original still refuses a bad traced time, with the message for the bound broken
        with pytest.raises(Exception, match="must be > 0"):
            eqx.filter_jit(score)(jnp.array(0.0), x)
        with pytest.raises(Exception, match="<= T"):
            eqx.filter_jit(score)(jnp.array(PROCESS.T + 1.0), x)
        with pytest.raises(Exception, match="must be > 0"):
            eqx.filter_jit(score)(jnp.array(jnp.nan), x)
    loss = jd.DSMLoss()
    assert _n_conditionals(lambda s: loss(s, PROCESS, X0[:64], key=KEY), net) == 0
    assert _n_conditionals(lambda s: jax.grad(lambda s: loss(s, PROCESS, X0[:64], key=KEY))(s), net) == 0
    sliced = jd.SlicedScoreMatchingLoss()
    assert _n_conditionals(lambda s: sliced(s, PROCESS, X0[:64], key=KEY), net) == 0
    # a sampler under an outer jit keeps one check: the output's NaN guard, not one per step
    run = lambda s: jd.sample(KEY, s, PROCESS, (8, 2), sampler=jd.ReverseSDE(), steps=20)
    assert _n_conditionals(run, net) <= 1
