"""Interpolants, exact velocities, flow matching and the continuity equation.

Identities in float64 against closed forms or independent computations (autodiff of the
exact marginal density, finite differences, the probability-flow drift of the score)."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.special import ndtr

import jaxdiff as jd
from jaxdiff.velocity import (
    denoiser_from_velocity,
    score_from_velocity,
    velocity_from_denoiser,
    velocity_from_score,
)

LIN, COS = jd.LinearInterpolant(), jd.CosineInterpolant()
MIX = jd.GaussianMixture(
    jnp.array([[-1.5, 0.5], [1.0, -0.5], [0.3, 1.2]]), jnp.array([0.5, 0.7, 0.4]), jnp.array([0.3, 0.5, 0.2])
)
PROCESSES = [LIN, COS, jd.VP(), jd.OU(T=3.0), jd.VE(sigma_max=5.0)]


class _Shifted(jd.AbstractInterpolant):
    """A bad interpolant: alpha(0) = 0.9, so X_0 is not the data."""

    T: float = eqx.field(static=True)

    def __init__(self):
        self.T = 1.0

    def log_alpha(self, t):
        return jnp.log(0.9 * (1 - jnp.asarray(t)))

    def sigma2(self, t):
        return jnp.asarray(t) ** 2

    def f(self, t):
        return -1 / (1 - jnp.asarray(t))

    def g2(self, t):
        return 2 * jnp.asarray(t) / (1 - jnp.asarray(t))

    def t_from_log_snr(self, log_snr):
        return 1 / (1 + jnp.exp(0.5 * log_snr) / 0.9)

    @property
    def prior_std(self):
        return 1.0

    def alpha_dot(self, t):
        return -0.9 * jnp.ones_like(jnp.asarray(t))

    def sigma_dot(self, t):
        return jnp.ones_like(jnp.asarray(t))


@pytest.mark.parametrize("proc", [LIN, COS], ids=["linear", "cosine"])
def test_interpolant_closed_forms(proc):
    t = jnp.linspace(0.05, 0.95, 7)
    if proc is LIN:
        a, s = 1 - t, t
    else:
        a, s = jnp.cos(jnp.pi * t / 2), jnp.sin(jnp.pi * t / 2)
    np.testing.assert_allclose(proc.alpha(t), a, rtol=1e-13)
    np.testing.assert_allclose(proc.sigma(t), s, rtol=1e-13)
    # f = d log alpha/dt, g^2 = d sigma^2/dt - 2 f sigma^2, and the derivatives, by autodiff
    d = jax.jit(jax.vmap(lambda tt: jnp.stack([jax.grad(fn)(tt) for fn in (
        proc.log_alpha, proc.sigma2, proc.alpha, proc.sigma)])))(t).T  # fmt: skip
    np.testing.assert_allclose(proc.f(t), d[0], rtol=1e-12)
    np.testing.assert_allclose(proc.g2(t), d[1] - 2 * proc.f(t) * proc.sigma2(t), rtol=1e-12)
    np.testing.assert_allclose(proc.alpha_dot(t), d[2], rtol=1e-12)
    np.testing.assert_allclose(proc.sigma_dot(t), d[3], rtol=1e-12)
    np.testing.assert_allclose(proc.t_from_log_snr(proc.log_snr(t)), t, rtol=1e-12)
    # the ends, honestly: alpha(T) = 0 exactly, log-SNR -inf, prior exactly N(0, I)
    assert float(proc.alpha(1.0)) == 0.0 and float(proc.sigma(1.0)) == 1.0
    assert float(proc.log_snr(1.0)) == -np.inf and float(proc.t_from_log_snr(-jnp.inf)) == 1.0
    assert float(proc.alpha(0.0)) == 1.0 and float(proc.sigma(0.0)) == 0.0
    assert proc.prior_std == 1.0


@pytest.mark.parametrize("grid", [jd.UniformGrid(), jd.GeometricGrid(), jd.LogSNRGrid(), jd.EDMGrid()])
def test_grids_start_at_T(grid):
    for proc in (LIN, COS):
        ts = np.asarray(grid(proc, 12, 1e-3))
        assert np.all(np.isfinite(ts)) and ts[0] == 1.0 and ts[-1] == 1e-3 and np.all(np.diff(ts) < 0)


def _log_p(proc, t, x):
    return MIX.log_prob_at(proc.alpha(t), proc.sigma(t), x)


@pytest.mark.parametrize("proc", PROCESSES, ids=lambda p: type(p).__name__)
def test_exact_velocity_solves_continuity_pointwise(proc):
    # d p/dt + div(p v) = 0, i.e. d log p/dt + div v + v . grad log p = 0, by autodiff of the
    # exact marginal density (independent of the velocity's formula)
    v = jd.ExactVelocity(proc, MIX)

    @jax.jit
    @jax.vmap
    def residual(t, x):
        dlogp_dt = jax.grad(_log_p, argnums=1)(proc, t, x)
        grad_logp = jax.grad(_log_p, argnums=2)(proc, t, x)
        div_v = jnp.trace(jax.jacfwd(lambda y: v(t, y))(x))
        return dlogp_dt + div_v + v(t, x) @ grad_logp, jnp.abs(dlogp_dt) + jnp.abs(div_v) + 1.0

    ts = jnp.repeat(jnp.array([0.1, 0.5, 0.9]) * float(proc.T), 3)
    xs = jnp.tile(jnp.array([[0.3, -0.2], [-1.0, 1.0], [2.0, 0.5]]), (3, 1))
    res, scale = residual(ts, xs)
    assert np.all(np.abs(np.asarray(res)) < 1e-10 * np.asarray(scale)), res


@pytest.mark.parametrize("proc", [LIN, COS], ids=["linear", "cosine"])
def test_exact_velocity_is_posterior_average(proc):
    # v = E[alpha' X0 + sigma' Z | x] with Z = (x - alpha X0)/sigma, from the posterior mixture
    v = jd.ExactVelocity(proc, MIX)
    x = jnp.array([0.4, -0.7])
    for t in (0.2, 0.6, 1.0):
        post = MIX.noised(proc, t).posterior(x)
        m = post.weights @ post.means
        a, s = proc.alpha(t), proc.sigma(t)
        want = proc.alpha_dot(t) * m + proc.sigma_dot(t) * (x - a * m) / s
        np.testing.assert_allclose(v(t, x), want, rtol=1e-12, atol=1e-13)
    # at T the data are forgotten: v(T, x) = alpha'(T) E[X0] + sigma'(T) x
    want = proc.alpha_dot(1.0) * MIX.mean() + proc.sigma_dot(1.0) * x
    np.testing.assert_allclose(v(1.0, x), want, rtol=1e-12)


def test_continuity_on_a_grid_by_finite_differences():
    # 1-D: central differences in t of the exact density and in x of the flux p v at the
    # cell faces; the residual is O(h^2 + dx^2) and a 1% error in v is visible far above it
    law = jd.GaussianMixture(jnp.array([[-1.0], [1.2]]), jnp.array([0.4, 0.6]))
    proc, t, h, dx = LIN, 0.5, 1e-4, 1e-3
    faces = jnp.arange(-4.0, 4.0 + dx / 2, dx)[:, None]
    centres = 0.5 * (faces[1:] + faces[:-1])

    @jax.jit
    def relative_residual(factor):
        v = jax.vmap(jd.ExactVelocity(proc, law), in_axes=(None, 0))
        p = lambda tt, x: jnp.exp(jax.vmap(lambda y: law.log_prob_at(proc.alpha(tt), proc.sigma(tt), y))(x))
        dp_dt = (p(t + h, centres) - p(t - h, centres)) / (2 * h)
        flux = p(t, faces) * factor * v(t, faces)[:, 0]
        res = dp_dt + jnp.diff(flux) / dx
        return jnp.max(jnp.abs(res)) / jnp.max(jnp.abs(dp_dt))

    assert float(relative_residual(1.0)) < 1e-5
    assert float(relative_residual(1.01)) > 1e-3


@pytest.mark.parametrize("proc", PROCESSES, ids=lambda p: type(p).__name__)
def test_flow_matching_velocity_equals_probability_flow_drift(proc):
    score = jd.ExactScore(proc, MIX)
    v = jd.ExactVelocity(proc, MIX)
    xs = jax.random.normal(jax.random.PRNGKey(1), (5, 2)) * 2
    for t in (0.05, 0.3, 0.7 * float(proc.T)):
        for x in xs:
            pf = proc.f(t) * x - 0.5 * proc.g2(t) * score(t, x)
            np.testing.assert_allclose(v(t, x), pf, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("proc", [LIN, COS, jd.VP()], ids=lambda p: type(p).__name__)
def test_conversions_are_exact(proc):
    score, v = jd.ExactScore(proc, MIX), jd.ExactVelocity(proc, MIX)
    vs = v.as_score()
    x = jnp.array([0.5, -1.0])
    for t in (0.1, 0.5, 0.9 * float(proc.T)):
        np.testing.assert_allclose(vs(t, x), score(t, x), rtol=1e-10)
        np.testing.assert_allclose(vs.denoise(t, x), score.denoise(t, x), rtol=1e-10)
        s, d, vv = score(t, x), score.denoise(t, x), v(t, x)
        np.testing.assert_allclose(velocity_from_score(proc, t, x, s), vv, rtol=1e-10)
        np.testing.assert_allclose(velocity_from_denoiser(proc, t, x, d), vv, rtol=1e-10)
        np.testing.assert_allclose(score_from_velocity(proc, t, x, vv), s, rtol=1e-10)
        np.testing.assert_allclose(denoiser_from_velocity(proc, t, x, vv), d, rtol=1e-10)
    if proc in (LIN, COS):  # at T the velocity's denoiser is the data mean, finite
        np.testing.assert_allclose(vs.denoise(1.0, x), MIX.mean(), rtol=1e-12)
        np.testing.assert_allclose(vs(1.0, x), -x, rtol=1e-12)


def _gaussian_flow_end(proc, law_mean, law_var, t, z):
    # the exact flow map of N(m, diag(var)) from N(0, I) at T: x_t = alpha m + sqrt(alpha^2 var + sigma^2) z
    a, s2 = proc.alpha(t), proc.sigma2(t)
    return a * law_mean + jnp.sqrt(a**2 * law_var + s2) * z


@pytest.mark.parametrize("proc", [LIN, pytest.param(COS, marks=pytest.mark.slow)], ids=["linear", "cosine"])
def test_euler_and_heun_orders_on_the_exact_velocity(proc):
    m, var = jnp.array([1.0, -2.0]), jnp.array([0.25, 2.0])
    law = jd.Gaussian(m, jnp.diag(var))
    v = jd.ExactVelocity(proc, law)
    z = jax.random.normal(jax.random.PRNGKey(3), (64, 2))
    want = _gaussian_flow_end(proc, m, var, 0.05, z)
    for solver, order in ((diffrax.Euler(), 1.0), (diffrax.Heun(), 2.0)):
        errs = []
        for steps in (8, 16, 32):
            x = jd.sample(
                jax.random.PRNGKey(0), v, proc, z.shape, sampler=jd.ProbabilityFlow(solver), steps=steps,
                grid=jd.UniformGrid(), t_end=0.05, x_init=z,
            )  # fmt: skip
            errs.append(float(jnp.sqrt(jnp.mean((x - want) ** 2))))
        slopes = np.log2(np.array(errs[:-1]) / np.array(errs[1:]))
        assert np.all(np.abs(slopes - order) < 0.3), (type(solver).__name__, errs, slopes)


def test_exact_flow_samples_match_the_law():
    # sliced W2 to fresh law samples, against the same distance between two law samples
    # (the two-sample noise floor), both averaged over three seeds
    n, k = 2000, jax.random.PRNGKey(7)
    flow = jax.jit(lambda key: jd.sample(key, jd.ExactVelocity(LIN, MIX), LIN, (n, 2),
                                         sampler=jd.ProbabilityFlow(diffrax.Heun()), steps=30,
                                         grid=jd.UniformGrid()))  # fmt: skip
    sw, floor = [], []
    for i in range(3):
        y1 = MIX.sample(jax.random.PRNGKey(100 + i), n)
        y2 = MIX.sample(jax.random.PRNGKey(200 + i), n)
        sw.append(float(jd.metrics.sliced_wasserstein(flow(jax.random.PRNGKey(i)), y1, key=k)))
        floor.append(float(jd.metrics.sliced_wasserstein(y2, y1, key=k)))
    assert np.mean(sw) < 1.5 * np.mean(floor), (sw, floor)


def test_samplers_start_at_T_and_sde_samplers_say_why_not(key):
    v = jd.ExactVelocity(LIN, MIX)
    # (the probability flow starts at T in the order test)
    for sampler in (jd.DDPM(),):
        x = jd.sample(key, v, LIN, (16, 2), sampler=sampler, steps=4)
        assert np.all(np.isfinite(np.asarray(x)))
    with pytest.raises(Exception, match=r"alpha\(T\) = 0 makes f and g\^2 infinite"):
        jd.sample(key, v, LIN, (4, 2), sampler=jd.ReverseSDE(), steps=4)


def test_bad_input():
    with pytest.raises(ValueError, match=r"alpha\(0\) = 1"):
        jd.ExactVelocity(_Shifted(), MIX)
    with pytest.raises(ValueError, match=r"alpha\(0\) = 1"):
        jd.FlowMatchingLoss()(jd.ExactVelocity(LIN, MIX).as_score(), _Shifted(), jnp.zeros((4, 2)),
                              key=jax.random.PRNGKey(0))  # fmt: skip
    grid = jd.pde.Grid(-5.0, 5.0, (40,))
    p0 = grid.density(lambda x: -0.5 * jnp.sum(x**2) - 0.5 * jnp.log(2 * jnp.pi))
    with pytest.raises(ValueError, match="shape of one sample"):
        jd.solve_continuity(LIN, grid, p0, t0=1.0, t1=0.5, velocity=lambda t, x: jnp.zeros(2))
    with pytest.raises(ValueError, match="VelocityParam"):
        jd.NetworkVelocity(jd.NetworkScore(lambda c, x: x, LIN, jd.EpsParam()))
    with pytest.raises(ValueError, match=r"\(n, 2, \*event\)"):
        jd.PairedCoupling()(jax.random.PRNGKey(0), jnp.zeros((4, 2)))
    with pytest.raises(ValueError, match="epsilon"):
        jd.OTCoupling(epsilon=0.0)


class _Shift(jd.AbstractVelocity):
    base: jd.ExactVelocity
    delta: jax.Array

    def __init__(self, base, delta):
        self.base, self.delta = base, delta

    def without_time_checks(self):
        return _Shift(self.base.without_time_checks(), self.delta)

    @property
    def process(self):
        return self.base.process

    def __call__(self, t, x):
        return self.base(t, x) + self.delta


def test_flow_matching_loss_minimum_and_gradients():
    # L(v + delta) - L(v) has mean |delta|^2 at the exact velocity (the cross term has mean 0)
    exact = jd.ExactVelocity(LIN, MIX)
    x0 = MIX.sample(jax.random.PRNGKey(8), 4000)
    loss = jd.FlowMatchingLoss()
    delta = jnp.array([0.3, -0.2])
    k = jax.random.PRNGKey(9)
    base = loss.terms(exact, LIN, x0, key=k)
    diff = loss.terms(_Shift(exact, delta), LIN, x0, key=k) - base
    se = float(jnp.std(diff) / jnp.sqrt(diff.shape[0]))
    assert abs(float(jnp.mean(diff)) - float(delta @ delta)) < 4 * se + 1e-12
    # differentiable (jit + grad) in the field's parameters; zero gradient at delta = 0
    g = jax.jit(jax.grad(lambda d: loss(_Shift(exact, d), LIN, x0, key=k)))(jnp.zeros(2))
    assert np.all(np.isfinite(np.asarray(g))) and float(jnp.linalg.norm(g)) < 0.1


def test_ot_coupling_pairs_closer_than_independent():
    from scipy.optimize import linear_sum_assignment

    x0 = MIX.sample(jax.random.PRNGKey(10), 128) * 2
    k = jax.random.PRNGKey(11)
    xa, za = jd.IndependentCoupling()(k, x0)
    xb, zb = jd.OTCoupling()(k, x0)
    np.testing.assert_array_equal(xb, x0)
    np.testing.assert_array_equal(za, jd.IndependentCoupling()(k, x0)[1])
    cost = lambda x, z: float(jnp.mean(jnp.sum((x - z) ** 2, 1)))
    # the exact assignment of the same data to the same noise draws (an independent solver)
    c = np.sum((np.asarray(x0)[:, None] - np.asarray(za)[None]) ** 2, -1)
    rows, cols = linear_sum_assignment(c)
    exact = float(c[rows, cols].mean())
    assert exact <= cost(xb, zb) < 1.15 * exact < 0.5 * cost(xa, za), (exact, cost(xb, zb), cost(xa, za))


def _cell_averages(law_w, law_m, law_s, edges):
    c = sum(w * ndtr((edges - m) / s) for w, m, s in zip(law_w, law_m, law_s))
    return jnp.diff(c) / jnp.diff(edges)


def _continuity_error(proc, n):
    w, m, s = (0.4, 0.6), (-1.5, 1.0), (0.5, 0.7)
    law = jd.GaussianMixture(jnp.array(m)[:, None], jnp.array(s), jnp.array(w))
    grid = jd.pde.Grid(-7.0, 7.0, (n,))
    edges = jnp.linspace(-7.0, 7.0, n + 1)
    p0 = jnp.diff(ndtr(edges)) / jnp.diff(edges)  # N(0, 1) cell averages at T
    p1 = jd.solve_continuity(proc, grid, p0, t0=1.0, t1=0.0, velocity=jd.ExactVelocity(proc, law))
    return float(jnp.sum(jnp.abs(p1 - _cell_averages(w, m, s, edges))) * 14.0 / n)


def test_continuity_solve_reaches_the_data_law():
    # measured L1 error 0.017 at n = 100 (0.061 at 50, 0.0048 at 200)
    assert _continuity_error(LIN, 100) < 0.03


@pytest.mark.slow
@pytest.mark.parametrize("proc", [LIN, COS], ids=["linear", "cosine"])
def test_continuity_solve_second_order(proc):
    errs = [_continuity_error(proc, n) for n in (50, 100, 200)]
    slopes = np.log2(np.array(errs[:-1]) / np.array(errs[1:]))
    assert np.all(np.abs(slopes - 2.0) < 0.3), (errs, slopes)


@pytest.mark.slow
def test_velocity_network_trains_and_reflows():
    from jaxdiff.nn import MLP

    key = jax.random.PRNGKey(0)
    net = jd.NetworkScore(MLP(2, key=key, width=16, depth=1), LIN, jd.VelocityParam(sigma_data=1.0))
    x = jnp.array([0.3, -0.4])
    out = net.model(net.parametrisation.c_noise(LIN, 1.0), x)
    np.testing.assert_allclose(jd.NetworkVelocity(net)(1.0, x), net.parametrisation.c_out(LIN, 1.0) * out)
    loss = jd.FlowMatchingLoss()
    trained = jd.train(net, LIN, MIX, key=key, steps=20, batch_size=32, loss=loss, progress=False)
    x = jd.sample(key, trained, LIN, (8, 2), sampler=jd.DDIM(), steps=4)
    assert np.all(np.isfinite(np.asarray(x)))
    new, pairs = jd.reflow(
        key, trained, LIN, (64, 2), steps=10, batch_size=32, flow_steps=4, return_pairs=True, progress=False
    )
    assert pairs.shape == (64, 2, 2)
    assert jax.tree.structure(new) == jax.tree.structure(trained)


def test_flow_equivalence_row_holds_and_can_fail(tmp_path):
    from jaxdiff import reproduce

    module = reproduce.load_experiment("flow_equivalence")
    assert set(module.PROFILES["tiny"]) == set(module.PROFILES["quick"]) == set(module.PROFILES["full"])
    (good,) = module.main(tmp_path, profile="tiny", key=0)
    assert good["holds"] and good["measured"] < 1e-10 and good["details"]["criterion"]
    assert (tmp_path / good["figures"][0]).stat().st_size > 5000
    # the documented hook: a 1e-6 perturbation of the flow-matching prediction must show
    (bad,) = module.main(tmp_path, profile="tiny", key=0, perturb=1e-6)
    assert not bad["holds"] and bad["measured"] > 1e-8
