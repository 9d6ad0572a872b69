"""The Fokker–Planck engine against closed forms and independent integrators.

References: the exact noised densities `law.noised(process, t).log_prob` (forward and
reverse), Diffrax's Tsit5 on the same method-of-lines ODE at tight tolerances (time
order), central finite differences (gradients). Tolerances are stated where they are used.
"""

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

import jaxdiff as jd
from jaxdiff import pde

OU = jd.OU()  # T = 5: the prior N(0, 1) is within 1e-4 (L1) of rho_T for the law below
LAW = jd.GaussianMixture(jnp.array([[-1.5], [1.0]]), jnp.array([0.3, 0.5]), jnp.array([0.4, 0.6]))
T_FWD = jnp.array(0.5)
T_END = jnp.array(0.05)


def _grid1(n):
    return pde.Grid(-6.0, 6.0, n)


def _order(errors):
    e = np.asarray(errors)
    return np.log2(e[:-1] / e[1:])


# ---------------------------------------------------------------------------------------
# Forward: convergence order, mass, positivity
# ---------------------------------------------------------------------------------------


def test_forward_mixture_converges_at_second_order():
    errors = []
    for n in (64, 128, 256):
        g = _grid1(n)
        p0 = g.density(LAW.log_prob)
        p = pde.solve_fokker_planck(OU, g, p0, t0=0.0, t1=T_FWD)
        exact = g.density(LAW.noised(OU, T_FWD).log_prob)
        errors.append(float(pde.l1_distance(g, p, exact)))
        # Zero-flux walls: the mass is conserved to rounding (1e-10 asked for).
        assert abs(float(g.integrate(p) - g.integrate(p0))) < 1e-10
        assert float(jnp.min(p)) >= 0.0
    order = _order(errors)
    print(f"forward L1 errors {errors}, observed orders {order}")  # measured: 2.1, 2.0
    # Space and time are second order (steps follow the CFL condition, dt ~ h): the
    # observed order must be close to 2; 1.8 leaves room for the limiter at extrema.
    assert np.all(order > 1.8), order
    assert errors[-1] < 2e-4


def test_forward_2d_vp_full_covariance():
    # Time-dependent coefficients (VP) and a correlated mixture in 2-D, refined once.
    vp = jd.VP()
    covs = jnp.array([[[0.3, 0.15], [0.15, 0.2]], [[0.1, 0.0], [0.0, 0.4]]])
    law = jd.GaussianMixture(jnp.array([[-1.0, 0.5], [1.0, -0.5]]), covs=covs, weights=jnp.array([0.5, 0.5]))
    t1 = jnp.array(0.2)
    errors = []
    for n in (32, 64):
        g = pde.Grid([-5.0, -5.0], [5.0, 5.0], (n, n))
        p0 = g.density(law.log_prob)
        p = pde.solve_fokker_planck(vp, g, p0, t0=0.0, t1=t1)
        exact = g.density(law.noised(vp, t1).log_prob)
        errors.append(float(pde.l1_distance(g, p, exact)))
        assert abs(float(g.integrate(p) - g.integrate(p0))) < 1e-10
        assert float(jnp.min(p)) >= 0.0
    print(f"2-D VP L1 errors {errors}")
    assert errors[1] < errors[0] / 3.0  # order > 1.58 between the two grids
    assert errors[1] < 5e-3


# ---------------------------------------------------------------------------------------
# Reverse: from the prior at T back to the exact marginal at t_end
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dynamics", [pde.Reverse(), pde.Flow()], ids=["sde", "flow"])
def test_reverse_from_prior_returns_to_exact_marginal(dynamics):
    score = jd.ExactScore(OU, LAW)
    errors = []
    for n in (128, 256):
        g = _grid1(n)
        prior = g.density(OU.prior_log_prob)
        p = pde.solve_fokker_planck(OU, g, prior, t0=OU.T, t1=T_END, score=score, dynamics=dynamics)
        exact = g.density(LAW.noised(OU, T_END).log_prob)
        errors.append(float(pde.l1_distance(g, p, exact)))
        assert abs(float(g.integrate(p) - g.integrate(prior))) < 1e-10
        assert float(jnp.min(p)) >= 0.0
    print(f"{type(dynamics).__name__}: L1 to the exact marginal at t_end {errors}")
    # Measured 2.5e-3 -> 5.5e-4 (SDE) and 3.4e-3 -> 9.5e-4 (flow): second order in h,
    # plus the prior's own error (L1(prior, rho_T) = 1.5e-5 at T = 5).
    assert errors[1] < errors[0] / 3.0
    assert errors[1] < 1.5e-3


# ---------------------------------------------------------------------------------------
# Time integration: second order against an independent Diffrax integrator
# ---------------------------------------------------------------------------------------

_G32 = _grid1(32)
_P32 = _G32.density(LAW.log_prob)


@pytest.fixture(scope="module")
def tsit5_reference():
    # The same semi-discrete ODE (FokkerPlanckTerm.vf) with an explicit 5th-order solver
    # at rtol 1e-12: its time error is far below the splitting error measured against it.
    return pde.solve_fokker_planck(
        OU,
        _G32,
        _P32,
        t0=0.0,
        t1=T_FWD,
        solver=dfx.Tsit5(),
        stepsize_controller=dfx.PIDController(rtol=1e-12, atol=1e-14),
        max_steps=50_000,
    )


@pytest.mark.parametrize(
    "diffusion, order", [(pde.Spectral(), 2.0), (pde.Implicit(), 1.0)], ids=["spectral", "implicit"]
)
def test_time_order_against_tsit5(tsit5_reference, diffusion, order):
    errors = [
        float(
            pde.l1_distance(
                _G32,
                pde.solve_fokker_planck(
                    OU, _G32, _P32, t0=0.0, t1=T_FWD, steps=n, solver=pde.IMEX(diffusion=diffusion)
                ),
                tsit5_reference,
            )
        )
        for n in (16, 32)
    ]
    observed = _order(errors)[0]
    print(f"{type(diffusion).__name__}: time errors {errors}, order {observed:.3f}")
    # Measured 2.006 (Strang + exact diffusion) and 1.02 (backward Euler diffusion).
    assert abs(observed - order) < 0.15


# ---------------------------------------------------------------------------------------
# Saved times, heat flow, gradients
# ---------------------------------------------------------------------------------------


def test_saveat_hits_exact_heat_solution():
    # Heat flow of N(0.3, v0 = 0.5^2), saved at three times.
    kappa, v0 = 0.5, 0.25
    heat = pde.HeatFlow(kappa=kappa)
    g = pde.Grid(-8.0, 8.0, 128)
    law = jd.Gaussian(jnp.array([0.3]), jnp.array([[v0]]))
    p0 = g.density(law.log_prob)
    ts = jnp.array([0.1, 0.4, 1.0])
    ps = pde.solve_fokker_planck(heat, g, p0, t0=0.0, t1=1.0, saveat=ts)
    assert ps.shape == (3, 128)
    h = float(g.widths[0])
    lap = np.diag(np.full(128, -2.0)) + np.diag(np.ones(127), 1) + np.diag(np.ones(127), -1)
    lap[0, 0] = lap[-1, -1] = -1.0
    lap /= h**2
    zs = np.linspace(-10, 10, 20001)
    he4 = zs**4 - 6 * zs**2 + 3
    mean_abs_he4 = np.sum(np.abs(he4) * np.exp(-(zs**2) / 2)) * (zs[1] - zs[0]) / np.sqrt(2 * np.pi)
    for t, p in zip(ts, ps):
        # (1) The semi-discrete solution exp(kappa t L_h) p0 by SciPy's dense expm of the
        # Neumann matrix: the solver has no time error for pure diffusion and lands exactly
        # on the saved times, so only rounding separates them.
        semi = scipy.linalg.expm(kappa * float(t) * lap) @ np.asarray(p0)
        np.testing.assert_allclose(np.asarray(p), semi, atol=1e-12)
        # (2) Against the exact heat solution: the 3-point Laplacian adds (kappa h^2 / 12) u_xxxx
        # to the equation, so the L1 error is at most kappa t h^2 / 12 max_s int |u_xxxx|,
        # with int |u_xxxx| = E|He4(Z)| / v^2 <= E|He4(Z)| / v0^2 (measured 1.5e-3 at
        # t = 0.1 against a bound of 2.4e-3).
        exact = g.density(law.noised(heat, t).log_prob)
        bound = kappa * float(t) * h**2 / 12 * mean_abs_he4 / v0**2
        assert float(pde.l1_distance(g, p, exact)) < bound


_GG = _grid1(48)
# Mean off the cell-face symmetry: a tie p_j = p_{j+1} would sit on a kink of the limiter.
_PG = _GG.density(jd.Gaussian(jnp.array([0.43]), jnp.array([[0.3]])).log_prob)
_WEIGHT = jnp.sin(_GG.points()[..., 0])


def _functional(p0, mean):
    law = jd.GaussianMixture(jnp.stack([mean, -mean])[:, None], jnp.array([0.4, 0.4]))
    score = jd.ExactScore(OU, law)
    p = pde.solve_fokker_planck(
        OU, _GG, p0, t0=jnp.array(1.0), t1=jnp.array(0.2), score=score, dynamics=pde.Reverse(), steps=120
    )
    return jnp.sum(p * _WEIGHT) * _GG.cell_volume


_value_and_grad = jax.jit(jax.value_and_grad(_functional, argnums=(0, 1)))


def test_gradients_match_finite_differences():
    mean = jnp.array(1.2)
    _, (g_p0, g_mean) = _value_and_grad(_PG, mean)
    assert bool(jnp.all(jnp.isfinite(g_p0)))
    eps = 1e-5
    fd_mean = (_functional(_PG, mean + eps) - _functional(_PG, mean - eps)) / (2 * eps)
    # Central differences: O(eps^2) ~ 1e-10 truncation; rounding ~ 1e-16 / eps ~ 1e-11.
    np.testing.assert_allclose(float(g_mean), float(fd_mean), rtol=1e-6, atol=1e-9)
    direction = jnp.cos(3 * _GG.points()[..., 0]) * _PG
    fd_p0 = (_functional(_PG + eps * direction, mean) - _functional(_PG - eps * direction, mean)) / (2 * eps)
    np.testing.assert_allclose(float(jnp.sum(g_p0 * direction)), float(fd_p0), rtol=1e-6, atol=1e-9)


# ---------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------


def test_bad_input_errors():
    g = _grid1(32)
    p0 = g.density(LAW.log_prob)
    score = jd.ExactScore(OU, LAW)
    with pytest.raises(ValueError, match="non-negative"):
        pde.solve_fokker_planck(OU, g, p0.at[3].set(-1e-3), t0=0.0, t1=0.5)
    with pytest.raises(ValueError, match="grid's shape"):
        pde.solve_fokker_planck(OU, g, p0[:-1], t0=0.0, t1=0.5)
    with pytest.raises(ValueError, match="NaN or inf"):
        pde.solve_fokker_planck(OU, g, p0.at[0].set(jnp.nan), t0=0.0, t1=0.5)
    small = pde.Grid(-2.0, 2.0, 32)  # the mixture's left component sits at -1.5 +- 0.3
    with pytest.raises(ValueError, match="does not cover"):
        pde.solve_fokker_planck(OU, small, small.density(LAW.log_prob), t0=0.0, t1=0.5)
    with pytest.raises(ValueError, match="`score` is required"):
        pde.solve_fokker_planck(OU, g, p0, t0=OU.T, t1=0.1, dynamics=pde.Reverse())
    with pytest.raises(ValueError, match="t1 < t0"):
        pde.solve_fokker_planck(OU, g, p0, t0=0.1, t1=1.0, score=score, dynamics=pde.Flow())
    with pytest.raises(ValueError, match=r"\[0, T\]"):
        pde.solve_fokker_planck(OU, g, p0, t0=0.0, t1=6.0)
    with pytest.raises(ValueError, match="Grid"):
        pde.solve_fokker_planck(OU, "grid", p0, t0=0.0, t1=1.0)
    with pytest.raises(ValueError, match="at least 3 cells"):
        pde.Grid(0.0, 1.0, 2)
    with pytest.raises(ValueError, match="exceed"):
        pde.Grid([0.0, 1.0], [1.0, 1.0], (8, 8))


def test_heat_flow_reaching_the_wall_is_refused():
    # Heat flow spreads mass outward: a box that covers p0 but not p(t1) is an error, not a
    # silently reflected density. N(0, 1.45^2) on [-8, 8]: 5.5 sds to the wall at t = 0
    # (boundary mass ~1e-8), 4.5 sds at t = 1 (~2e-6 > boundary_tol = 1e-6). Same grid,
    # process and save times as test_saveat_hits_exact_heat_solution (one compilation).
    g = pde.Grid(-8.0, 8.0, 128)
    p0 = g.density(jd.Gaussian(jnp.array([0.0]), jnp.array([[1.45**2]])).log_prob)
    with pytest.raises(Exception, match="does not cover the evolved density"):  # checked on the device
        pde.solve_fokker_planck(
            pde.HeatFlow(kappa=0.5), g, p0, t0=0.0, t1=1.0, saveat=jnp.array([0.1, 0.4, 1.0])
        ).block_until_ready()


def test_non_finite_drift_and_cfl_violation_are_refused():
    # A NaN in the score's law (injected past the constructor's checks) makes the drift
    # non-finite: refused at the first drift evaluation, not propagated into the density.
    g = _grid1(128)
    score = jd.ExactScore(OU, LAW)
    bad = eqx.tree_at(lambda s: s.law.means, score, LAW.means.at[0, 0].set(jnp.nan))
    with pytest.raises(Exception, match="drift is not finite"):
        pde.solve_fokker_planck(
            OU, g, g.density(OU.prior_log_prob), t0=OU.T, t1=T_END, score=bad, dynamics=pde.Flow()
        )
    # 16 steps over [0, 1] with |b| up to 6 and h = 0.375: CFL = 1 > 1/2, positivity lost.
    with pytest.raises(Exception, match="CFL number exceeded"):  # checked on the device
        pde.solve_fokker_planck(OU, _G32, _P32, t0=0.0, t1=jnp.array(1.0), steps=16).block_until_ready()


def test_forward_3d_matches_product_of_1d_errors():
    # An isotropic Gaussian in 3-D under OU stays a product of three identical 1-D laws; by
    # the triangle inequality the L1 error of the 3-D solution is at most the sum of the
    # three marginal errors, i.e. 3x the 1-D error on the same cells (+10% for the smaller
    # 3-D time steps and rounding).
    t1 = jnp.array(0.3)
    m, s = 0.4, 0.7
    g3 = pde.Grid(-jnp.full(3, 6.0), jnp.full(3, 6.0), (28, 28, 28))
    law3 = jd.Gaussian(jnp.full(3, m), s**2 * jnp.eye(3))
    p3 = pde.solve_fokker_planck(OU, g3, g3.density(law3.log_prob), t0=0.0, t1=t1)
    e3 = float(pde.l1_distance(g3, p3, g3.density(law3.noised(OU, t1).log_prob)))
    g1 = pde.Grid(-6.0, 6.0, 28)
    law1 = jd.Gaussian(jnp.array([m]), jnp.array([[s**2]]))
    p1 = pde.solve_fokker_planck(OU, g1, g1.density(law1.log_prob), t0=0.0, t1=t1)
    e1 = float(pde.l1_distance(g1, p1, g1.density(law1.noised(OU, t1).log_prob)))
    print(f"3-D L1 error {e3:.3e}, 1-D {e1:.3e}")
    assert e3 <= 3.3 * e1
    assert abs(float(g3.integrate(p3)) - float(g3.integrate(g3.density(law3.log_prob)))) < 1e-10
    assert float(jnp.min(p3)) >= 0.0


def test_imex_has_no_error_estimate_for_an_error_controller():
    # IMEX passes the advective rate in its state, not in Diffrax's error-estimate slot: an
    # error-based controller is refused instead of reading the rate as an error.
    with pytest.raises(RuntimeError, match="error estimates"):
        pde.solve_fokker_planck(
            OU, _G32, _P32, t0=0.0, t1=0.5, stepsize_controller=dfx.PIDController(rtol=1e-3, atol=1e-3)
        )
