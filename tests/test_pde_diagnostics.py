"""PDE diagnostics: closed forms for Gaussians, Li–Yau, de Bruijn, log-Sobolev decay,
particles against grid densities. Tolerances are stated (and derived) where used."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdiff as jd
from jaxdiff import pde

# ---------------------------------------------------------------------------------------
# Closed forms for a Gaussian on a 2-D grid
# ---------------------------------------------------------------------------------------

_G2 = pde.Grid([-6.0, -6.0], [6.0, 6.0], (128, 128))  # h = 0.094
_M = jnp.array([0.4, -0.3])
_VARS = jnp.array([0.6**2, 0.9**2])
_GAUSS = jd.Gaussian(_M, jnp.diag(_VARS))
_U = _G2.density(_GAUSS.log_prob)


def test_gaussian_closed_forms():
    det = float(jnp.prod(_VARS))
    # Midpoint sums of a Gaussian converge faster than any power of h; what is left is the
    # mass beyond the box (1.2e-10, the wider axis ends 6.3 sds from its mean) times
    # |log u| <= 25, hence the 1e-8 tolerance (measured errors: 1e-10 to 3e-9).
    tol = 1e-8
    assert abs(float(pde.mass(_G2, _U)) - 1.0) < tol
    H = 0.5 * math.log((2 * math.pi * math.e) ** 2 * det)
    assert abs(float(pde.entropy(_G2, _U)) - H) < tol
    kl = 0.5 * float(jnp.sum(_VARS) + jnp.sum(_M**2) - 2 - jnp.sum(jnp.log(_VARS)))
    assert abs(float(pde.relative_entropy(_G2, _U, jd.OU().prior_log_prob)) - kl) < tol
    q = _G2.density(jd.OU().prior_log_prob)
    assert abs(float(pde.relative_entropy(_G2, _U, q)) - kl) < tol
    for p in (1.0, 2.0, 3.5):
        exact = ((2 * math.pi) ** (-(p - 1)) * det ** (-(p - 1) / 2) * p ** (-1.0)) ** (1 / p)
        assert abs(float(pde.lp_norm(_G2, _U, p)) / exact - 1) < tol
    # Sup norm: the grid misses the peak by at most h/2 per axis: relative 1 - exp(-h^2/(8 s^2)).
    sup = (2 * math.pi) ** -1 * det**-0.5
    h = float(_G2.widths[0])
    assert 0 <= 1 - float(pde.lp_norm(_G2, _U, jnp.inf)) / sup < h**2 / (8 * 0.36)
    # Fisher information sum_k 1/s_k^2: for a Gaussian the face differences of log u are
    # exact derivatives at the faces, so the face form is a midpoint sum too (measured 2e-9).
    fisher = float(jnp.sum(1 / _VARS))
    assert abs(float(pde.fisher_information(_G2, _U)) / fisher - 1) < tol


def test_diagnostics_refuse_bad_input():
    with pytest.raises(ValueError, match="non-negative"):
        pde.entropy(_G2, _U.at[0, 0].set(-1.0))
    with pytest.raises(ValueError, match="grid's shape"):
        pde.fisher_information(_G2, _U[:, :-1])
    with pytest.raises(ValueError, match=">= 1"):
        pde.lp_norm(_G2, _U, 0.5)
    with pytest.raises(ValueError, match="> 0"):
        pde.li_yau(_G2, _U, 0.0)
    with pytest.raises(ValueError, match="does not cover the samples"):
        pde.histogram(_G2, jnp.full((10, 2), 7.0))
    with pytest.raises(ValueError, match=r"shape \(n, 2\)"):
        pde.histogram(_G2, jnp.zeros((10, 3)))


# ---------------------------------------------------------------------------------------
# Heat flow: Li–Yau and de Bruijn
# ---------------------------------------------------------------------------------------

_KAPPA = 0.5
_HEAT = pde.HeatFlow(kappa=_KAPPA, T=2.0)
_G1 = pde.Grid(-10.0, 10.0, 256)  # h = 0.078
# Saved times: triples c - delta, c, c + delta (de Bruijn's central differences), shared
# by the Li–Yau tests so that one compiled solve serves both.
_DELTA = 4e-4
_CENTRES = (0.02, 0.3, 1.5)
_TS = jnp.array([c + s for c in _CENTRES for s in (-_DELTA, 0.0, _DELTA)])


def _bumps(grid, centres, std, weights=None):
    k = len(centres)
    w = jnp.full((k,), 1.0 / k) if weights is None else jnp.asarray(weights)
    means = jnp.asarray(centres, dtype=float).reshape(k, grid.ndim)
    return grid.density(jd.GaussianMixture(means, jnp.full((k,), std), w).log_prob)


def _initial_densities():
    h = float(_G1.widths[0])
    rng = np.random.default_rng(0)
    return {
        "gaussian": _bumps(_G1, [[0.2]], 0.3),
        "two bumps": _bumps(_G1, [[-2.0], [1.5]], 0.25, [0.3, 0.7]),
        # A point-cloud-like sum of 7 narrow bumps, 1.5 cells wide.
        "narrow bumps": _bumps(_G1, rng.uniform(-4, 4, (7, 1)), 1.5 * h),
    }


# Li–Yau's bound is d / (2 kappa t); discretisation may push the computed quantity below
# zero by a small fraction of that scale. The test fails if any value falls below
# -LI_YAU_TOL * d / (2 kappa t). (Measured minima are positive: from 0.82 of the scale for
# the wide Gaussian at t = 0.02 down to 0.032 for the narrow bumps at t = 1.5, where the
# bound is nearly sharp.)
LI_YAU_TOL = 0.01


@pytest.mark.parametrize("name", ["gaussian", "two bumps", "narrow bumps"])
def test_li_yau_heat_flow_1d(name):
    p0 = _initial_densities()[name]
    ps = pde.solve_fokker_planck(_HEAT, _G1, p0, t0=0.0, t1=_TS[-1], saveat=_TS)
    for t, u in zip(_TS, ps):
        scale = 1 / (2 * _KAPPA * float(t))
        worst = float(jnp.nanmin(pde.li_yau(_G1, u, t, _KAPPA)))
        print(f"{name} t={float(t)}: min Li-Yau / scale = {worst / scale:.2e}")
        assert worst >= -LI_YAU_TOL * scale


def test_li_yau_heat_flow_2d_and_the_test_can_fail():
    g = pde.Grid([-6.0, -6.0], [6.0, 6.0], (64, 64))
    rng = np.random.default_rng(1)
    h = float(g.widths[0])
    p0 = _bumps(g, rng.uniform(-2.5, 2.5, (6, 2)), 1.5 * h)
    ts = jnp.array([0.05, 0.3])
    ps = pde.solve_fokker_planck(_HEAT, g, p0, t0=0.0, t1=ts[-1], saveat=ts)
    for t, u in zip(ts, ps):
        scale = 2 / (2 * _KAPPA * float(t))
        assert float(jnp.nanmin(pde.li_yau(g, u, t, _KAPPA))) >= -LI_YAU_TOL * scale
    # A Gaussian narrower than the heat kernel at time t (variance kappa t < 2 kappa t) is
    # no heat-flow solution at t: its Li–Yau quantity is -d / (2 kappa t) < 0, far beyond
    # the tolerance, so the check above is able to fail.
    t = 0.3
    narrow = g.density(jd.Gaussian(jnp.zeros(2), _KAPPA * t * jnp.eye(2)).log_prob)
    worst = float(jnp.nanmin(pde.li_yau(g, narrow, t, _KAPPA)))
    np.testing.assert_allclose(worst, -2 / (2 * _KAPPA * t), rtol=1e-6)


def test_de_bruijn_identity():
    # dH/dt = kappa * I(u) along the heat flow; dH/dt by central differences over +-delta.
    p0 = _initial_densities()["two bumps"]
    delta = _DELTA
    ps = pde.solve_fokker_planck(_HEAT, _G1, p0, t0=0.0, t1=_TS[-1], saveat=_TS)
    for i, c in enumerate(_CENTRES):
        lo, mid, hi = ps[3 * i], ps[3 * i + 1], ps[3 * i + 2]
        dH = (pde.entropy(_G1, hi) - pde.entropy(_G1, lo)) / (2 * delta)
        fisher = pde.fisher_information(_G1, mid)
        # Central differences err by delta^2 H'''/6: relative ~ (delta / t)^2 <= 4e-4 here.
        np.testing.assert_allclose(float(dH), _KAPPA * float(fisher), rtol=1e-3)
        # Stam / Li–Yau: I(u_t) <= d / (2 kappa t).
        assert float(fisher) <= 1 / (2 * _KAPPA * c)


# ---------------------------------------------------------------------------------------
# OU: log-Sobolev decay of the relative entropy, and the Li–Yau analogue
# ---------------------------------------------------------------------------------------


def test_ou_relative_entropy_decays_like_exp_minus_2t():
    ou = jd.OU()
    g = pde.Grid(-8.0, 8.0, 256)
    law = jd.GaussianMixture(
        jnp.array([[-2.5], [2.0], [0.0]]), jnp.array([0.2, 0.3, 0.15]), jnp.array([0.3, 0.5, 0.2])
    )
    ts = jnp.array([0.1, 0.25, 0.5, 1.0, 2.0])
    p0 = g.density(law.log_prob)
    ps = pde.solve_fokker_planck(ou, g, p0, t0=0.0, t1=ts[-1], saveat=ts)
    kl0 = previous = float(pde.relative_entropy(g, p0, ou.prior_log_prob))
    for t, p in zip(ts, ps):
        kl = float(pde.relative_entropy(g, p, ou.prior_log_prob))
        exact = float(pde.relative_entropy(g, g.density(law.noised(ou, t).log_prob), ou.prior_log_prob))
        # The computed KL matches the exact one (grid error measured < 1e-4 relative) ...
        # The computed KL matches the one of the exact density on the grid: the L1 error of
        # the solution (1e-4 here) times |log p/q| (< 5 where the mass is) bounds the gap
        # (measured 1.1e-4) ...
        assert abs(kl - exact) < 5e-4
        # ... and obeys the log-Sobolev bound KL_t <= e^{-2t} KL_0, decreasing in t.
        assert kl <= math.exp(-2 * float(t)) * kl0
        assert kl < previous
        previous = kl
        # OU Li–Yau analogue: Laplacian log rho_t >= -d / s_t^2 (pass 2 D t = s_t^2, D = 1).
        s2 = float(ou.sigma2(t))
        assert float(jnp.nanmin(pde.li_yau(g, p, s2 / 2, 1.0))) >= -LI_YAU_TOL / s2


# ---------------------------------------------------------------------------------------
# Particles against the grid density
# ---------------------------------------------------------------------------------------


def _expected_histogram_l1(grid, p, n):
    """E sum_j |hat P_j - P_j| for n multinomial draws with cell probabilities P_j = p_j |C|,
    in the normal approximation: sum_j sqrt(2 P_j (1 - P_j) / (pi n))."""
    P = jnp.clip(p * grid.cell_volume, 0.0, 1.0)
    return float(jnp.sum(jnp.sqrt(2 * P * (1 - P) / (jnp.pi * n))))


def test_reverse_density_agrees_with_particles():
    ou = jd.OU()
    law = jd.GaussianMixture(jnp.array([[-1.5], [1.0]]), jnp.array([0.3, 0.5]), jnp.array([0.4, 0.6]))
    t_end = jnp.array(0.05)
    g = pde.Grid(-6.0, 6.0, 256)
    score = jd.ExactScore(ou, law)
    prior = g.density(ou.prior_log_prob)
    p = pde.solve_fokker_planck(ou, g, prior, t0=ou.T, t1=t_end, score=score, dynamics=pde.Reverse())
    # Reverse-SDE particles from the same prior (jd.sample: Euler–Maruyama on a geometric
    # grid of 200 steps, whose bias is below the 100_000-sample noise: measured distance /
    # expected noise = 1.01, 1.05, 0.97 for the three sample sizes).
    x = jd.sample(
        jax.random.PRNGKey(0), score, ou, (100_000, 1), steps=200, t_end=t_end, grid=jd.GeometricGrid()
    )
    dists = []
    for n in (1_000, 10_000, 100_000):
        d = float(pde.particle_discrepancy(g, p, x[:n]))
        expected = _expected_histogram_l1(g, p, n)
        dists.append(d)
        # The L1 distance is a sum over ~100 effective cells: its relative spread is < 8%,
        # so +-30% (4 sd) brackets pure sampling noise; the PDE's own error (5e-4) and the
        # histogram's O(h^2) binning error (1e-4) are far below the 100_000-sample noise.
        assert 0.7 * expected < d < 1.3 * expected, (n, d, expected)
    assert dists[0] > dists[1] > dists[2]


def test_kde_is_the_gaussian_smoothed_density():
    # E[KDE] of N(0, 1) samples with a Gaussian kernel of width b is N(0, 1 + b^2) exactly;
    # the binned KDE adds only O(h^2). Its L1 noise is about
    # sqrt(2/pi) int sqrt(p / (2 sqrt(pi) b n)) = 5.5e-3 for n = 1e5, b = 0.3, so 0.0125
    # (2.3x) bounds the distance to N(0, 1 + b^2) (measured 3.0e-3), while N(0, 1) itself is
    # 0.034 away (measured 0.041 from the estimate).
    g = pde.Grid(-6.0, 6.0, 256)
    b = 0.3
    x = jax.random.normal(jax.random.PRNGKey(3), (100_000, 1))
    est = pde.kde(g, x, b)
    smoothed = g.density(jd.Gaussian(jnp.zeros(1), (1 + b**2) * jnp.eye(1)).log_prob)
    plain = g.density(jd.Gaussian(jnp.zeros(1), jnp.eye(1)).log_prob)
    assert abs(float(pde.mass(g, est)) - 1.0) < 1e-12
    assert float(pde.l1_distance(g, est, smoothed)) < 0.0125
    assert float(pde.l1_distance(g, est, plain)) > 0.02
