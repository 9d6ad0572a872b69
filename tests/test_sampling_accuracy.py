"""Statistical and convergence checks of the samplers against exact references.

* Every sampler, with the exact score of a 2-D and an 8-D Gaussian mixture under OU and VP,
  matches the exact law at `t_end` in sliced W2 relative to the two-sample noise floor.
* `ExactSampler` has the forward marginals at every grid time (Kolmogorov–Smirnov).
* ODE samplers converge at their order against a tight adaptive reference.
* DDPM converges pathwise to Euler–Maruyama for the reverse SDE (same noise) as K grows.
"""

import math

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.stats import norm

import jaxdiff as jd
from jaxdiff.metrics import sliced_wasserstein

PROJ_KEY = jax.random.PRNGKey(7)
_ang = jnp.arange(8) * (2 * jnp.pi / 8)
RING = jd.GaussianMixture(2.0 * jnp.stack([jnp.cos(_ang), jnp.sin(_ang)], axis=1), 0.2)
MIX8 = jd.GaussianMixture(1.5 * jax.random.normal(jax.random.PRNGKey(8), (8, 8)), 0.3)
CASES = {
    "OU-2d": (jd.OU(), RING),
    "OU-8d": (jd.OU(), MIX8),
    "VP-2d": (jd.VP(), RING),
    "VP-8d": (jd.VP(), MIX8),
}

# ---- every sampler against the exact law at t_end ---------------------------------------
#
# Statistic: S = mean over R = 4 groups of m = 1000 samples of SW2(group_r, exact_r), with
# 64 fixed random directions, exact_r fresh draws of the exact law at t_end (not through any
# sampler). Noise floor: the same statistic between two independent exact groups, 16 pairs,
# mean mF and standard deviation sF. Pass: S <= 1.25 mF + 3 sF / sqrt(R), i.e. within three
# standard errors of the floor plus a 25% allowance for bias. A 4-step Euler–Maruyama run
# fails it by a factor > 2 (checked below), so the test has power.

R, M, N_FLOOR = 4, 1000, 16
_cache = {}
# one compile for all groups: SW2 of matching (M, d) groups, vmapped
_sw_groups = jax.jit(jax.vmap(lambda x, y: sliced_wasserstein(x, y, key=PROJ_KEY, n_projections=64)))


@eqx.filter_jit
def _exact_draws(law, process, key, n):
    """n draws of the exact law at t_end, straight from the law (no sampler involved)."""
    return law.noised(process, 1e-3 * process.T).sample(key, n)


def _groups(x):
    return x.reshape(-1, M, x.shape[-1])


def _reference(case):
    if case not in _cache:
        process, law = CASES[case]
        # rows are independent draws: R reference groups, then 2 x N_FLOOR groups for the floor
        draws = _groups(_exact_draws(law, process, jax.random.PRNGKey(100), (R + 2 * N_FLOOR) * M))
        floors = np.asarray(_sw_groups(draws[R::2], draws[R + 1 :: 2]))
        threshold = 1.25 * np.mean(floors) + 3 * np.std(floors, ddof=1) / math.sqrt(R)
        _cache[case] = (draws[:R].reshape(R * M, -1), threshold)
    return _cache[case]


def _statistic(x, ref):
    return float(np.mean(_sw_groups(_groups(x), _groups(ref))))


SAMPLERS = {
    "ReverseSDE": (lambda law: jd.ReverseSDE(), jd.UniformGrid(), 200),
    "PredictorCorrector": (lambda law: jd.PredictorCorrector(), jd.UniformGrid(), 200),
    "DDPM": (lambda law: jd.DDPM(), jd.UniformGrid(), 200),
    "DDIM": (lambda law: jd.DDIM(), jd.LogSNRGrid(), 100),
    "PF(Tsit5)": (lambda law: jd.ProbabilityFlow(), jd.EDMGrid(), 20),
    "PF(Heun)": (lambda law: jd.ProbabilityFlow(diffrax.Heun()), jd.EDMGrid(), 50),
    "PF(adaptive)": (
        lambda law: jd.ProbabilityFlow(diffrax.Tsit5(), diffrax.PIDController(rtol=1e-5, atol=1e-5)),
        jd.UniformGrid(),
        1,
    ),
    "EDMHeun": (lambda law: jd.EDMHeun(), jd.EDMGrid(), 30),
    "EDMHeun(churn)": (lambda law: jd.EDMHeun(churn=10.0), jd.EDMGrid(), 30),
    "DPMSolverPP": (lambda law: jd.DPMSolverPP(), jd.LogSNRGrid(), 30),
    "ExactSampler": (lambda law: jd.ExactSampler(law), jd.UniformGrid(), 3),
}
# Fast suite: each sampler on one case, round-robin over the four cases; the rest are slow.
_PARAMS = []
for i, name in enumerate(SAMPLERS):
    for j, case in enumerate(CASES):
        marks = () if j == i % len(CASES) else (pytest.mark.slow,)
        _PARAMS.append(pytest.param(name, case, marks=marks, id=f"{name}-{case}"))
# Diffrax's stochastic Runge-Kutta on the grid Brownian path: a 15 s compile, so slow only.
SAMPLERS["ReverseSDE(ShARK)"] = (lambda law: jd.DiffraxReverseSDE(diffrax.ShARK()), jd.UniformGrid(), 100)
_PARAMS += [
    pytest.param("ReverseSDE(ShARK)", c, marks=pytest.mark.slow, id=f"ReverseSDE(ShARK)-{c}") for c in CASES
]


def _run(name, case, **override):
    process, law = CASES[case]
    make, grid, steps = SAMPLERS[name]
    kw = dict(sampler=make(law), grid=grid, steps=steps, t_end=jnp.asarray(1e-3 * float(process.T)))
    kw.update(override)
    return jd.sample(jax.random.PRNGKey(1), jd.ExactScore(process, law), process, (R * M, law.dim), **kw)


@pytest.mark.parametrize("name, case", _PARAMS)
def test_sampler_matches_exact_law(name, case):
    ref, threshold = _reference(case)
    S = _statistic(_run(name, case), ref)
    assert S <= threshold, f"{name} on {case}: S = {S:.4f} > {threshold:.4f}"


def test_the_statistic_has_power():
    ref, threshold = _reference("OU-2d")
    S = _statistic(_run("ReverseSDE", "OU-2d", steps=4), ref)
    assert S > 2 * threshold


# ---- ExactSampler: the forward marginal at every grid time -------------------------------


def _projected_cdf(law, process, t, u, values):
    """Exact CDF of u.X_t for a mixture of isotropic Gaussians or a point cloud."""
    if isinstance(law, jd.PointCloud):
        means, var0, logw = (
            law.points @ u,
            jnp.zeros(law.n_points),
            jnp.full(law.n_points, -math.log(law.n_points)),
        )
    else:
        means, var0, logw = law.means @ u, law.variances, law.log_weights
    std = jnp.sqrt(process.alpha(t) ** 2 * var0 + process.sigma2(t))  # |u| = 1
    return jnp.sum(jnp.exp(logw) * norm.cdf((values[:, None] - process.alpha(t) * means) / std), axis=1)


def _max_ks(law, process, ts, xs, directions):
    """Largest Kolmogorov–Smirnov distance over grid times and projection directions."""
    n = xs.shape[1]
    worst = 0.0
    for k, t in enumerate(ts):
        for u in directions:
            v = jnp.sort(xs[k] @ u)
            F = _projected_cdf(law, process, t, u, v)
            i = jnp.arange(1, n + 1)
            worst = max(worst, float(jnp.max(jnp.maximum(i / n - F, F - (i - 1) / n))))
    return worst


@pytest.mark.parametrize("law", [RING, jd.PointCloud(jax.random.normal(jax.random.PRNGKey(5), (20, 2)))],
                         ids=["GaussianMixture", "PointCloud"])  # fmt: skip
def test_exact_sampler_has_the_forward_marginals(law):
    # Three steps on a coarse grid (no discretisation error at any step count). KS at level
    # 0.001 per check: critical value 1.95 / sqrt(n); 4 times x 3 directions per law.
    process, n = jd.OU(), 4000
    dirs = [jnp.array([1.0, 0.0]), jnp.array([0.6, 0.8]), jnp.array([-0.8, 0.6])]
    kw = dict(steps=3, t_end=jnp.asarray(0.01), trajectory=True)
    ts, xs = jd.sample(jax.random.PRNGKey(2), None, process, (n, 2), sampler=jd.ExactSampler(law), **kw)
    crit = 1.95 / math.sqrt(n)
    assert _max_ks(law, process, ts, xs, dirs) < crit
    # the same check rejects Euler–Maruyama on that grid, started from the same exact states
    ts, xs = jd.sample(
        jax.random.PRNGKey(2), jd.ExactScore(process, law), process, (n, 2), x_init=xs[0], **kw
    )
    assert _max_ks(law, process, ts[-1:], xs[-1:], dirs) > 3 * crit


# ---- convergence order of the ODE samplers -----------------------------------------------

_ang4 = jnp.arange(4) * (jnp.pi / 2)
WIDE = jd.GaussianMixture(jnp.stack([jnp.cos(_ang4), jnp.sin(_ang4)], axis=1), 0.5)
N_ORDER, T_END_ORDER = 32, jnp.asarray(1e-2)
REFERENCE_ODE = jd.ProbabilityFlow(
    diffrax.Tsit5(), diffrax.PIDController(rtol=1e-11, atol=1e-11), max_steps=100_000
)


def _ode_run(law, sampler, steps, grid, x_init):
    process = jd.OU()
    score = jd.ExactScore(process, law)
    return jd.sample(jax.random.PRNGKey(0), score, process, (N_ORDER, 2), sampler=sampler,
                     steps=steps, t_end=T_END_ORDER, grid=grid, x_init=x_init)  # fmt: skip


def test_reference_ode_is_exact_for_a_gaussian():
    # For N(m, c^2 I) the PF-ODE keeps (x - alpha m) / sqrt(alpha^2 c^2 + sigma^2) constant.
    process, m, c = jd.OU(), jnp.array([0.5, -1.0]), 0.7
    gauss = jd.GaussianMixture(m[None], c)
    y0 = process.prior_sample(jax.random.PRNGKey(3), (N_ORDER, 2))
    x = _ode_run(gauss, REFERENCE_ODE, 1, jd.UniformGrid(), y0)
    v = lambda t: process.alpha(t) ** 2 * c**2 + process.sigma2(t)
    T = process.T
    ref = process.alpha(T_END_ORDER) * m + jnp.sqrt(v(T_END_ORDER) / v(T)) * (y0 - process.alpha(T) * m)
    np.testing.assert_allclose(x, ref, rtol=1e-8, atol=1e-9)


ORDER_CASES = [
    pytest.param("PF(Euler)", jd.ProbabilityFlow(diffrax.Euler()), jd.EDMGrid(), (16, 32, 64), 1.0),
    pytest.param("PF(Heun)", jd.ProbabilityFlow(diffrax.Heun()), jd.EDMGrid(), (16, 32, 64), 2.0),
    pytest.param("EDMHeun", jd.EDMHeun(), jd.EDMGrid(), (16, 32, 64), 2.0),
    pytest.param("DPMSolverPP(2M)", jd.DPMSolverPP(2), jd.LogSNRGrid(), (32, 64, 128), 2.0),
    pytest.param("DDIM", jd.DDIM(), jd.LogSNRGrid(), (16, 32, 64), 1.0, marks=pytest.mark.slow),
    pytest.param(
        "DPMSolverPP(1)", jd.DPMSolverPP(1), jd.LogSNRGrid(), (16, 32, 64), 1.0, marks=pytest.mark.slow
    ),
]


@pytest.mark.parametrize("name, sampler, grid, Ks, order", ORDER_CASES)
def test_ode_convergence_order(name, sampler, grid, Ks, order):
    # Error: mean |x_K - x_ref| over 32 fixed starts, x_ref from adaptive Tsit5 at 1e-11
    # (validated above). Slope of log error against log K by least squares: within +-0.3.
    y0 = jd.OU().prior_sample(jax.random.PRNGKey(3), (N_ORDER, 2))
    if "ode" not in _cache:
        _cache["ode"] = _ode_run(WIDE, REFERENCE_ODE, 1, jd.UniformGrid(), y0)
    ref = _cache["ode"]
    errs = [float(jnp.mean(jnp.linalg.norm(_ode_run(WIDE, sampler, K, grid, y0) - ref, axis=1))) for K in Ks]
    slope = -np.polyfit(np.log(Ks), np.log(errs), 1)[0]
    assert abs(slope - order) <= 0.3, f"{name}: errors {errs}, slope {slope:.2f}"


# ---- DDPM -> reverse SDE -----------------------------------------------------------------


def test_ddpm_converges_to_the_reverse_sde():
    # Same key, so DDPM and Euler–Maruyama use the same z_k at step k: their pathwise RMS gap
    # must shrink as K grows, at least at Euler–Maruyama's strong rate 1/2.
    process, n, Ks = jd.OU(), 256, (16, 64, 256)
    score = jd.ExactScore(process, WIDE)
    y0 = process.prior_sample(jax.random.PRNGKey(3), (n, 2))
    gaps = []
    for K in Ks:
        kw = dict(steps=K, t_end=T_END_ORDER, x_init=y0)
        a = jd.sample(jax.random.PRNGKey(0), score, process, (n, 2), sampler=jd.DDPM(), **kw)
        b = jd.sample(jax.random.PRNGKey(0), score, process, (n, 2), sampler=jd.ReverseSDE(), **kw)
        gaps.append(float(jnp.sqrt(jnp.mean(jnp.sum((a - b) ** 2, axis=1)))))
    rate = -np.polyfit(np.log(Ks), np.log(gaps), 1)[0]
    assert gaps[0] > gaps[1] > gaps[2] and rate >= 0.5, f"gaps {gaps}, rate {rate:.2f}"
