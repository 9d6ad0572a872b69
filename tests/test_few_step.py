"""Few-step samplers (LMS, DEIS, IPNDM, UniPC, DPM-Solver++ 3M): convergence orders against a
tight adaptive reference, float32 robustness, warm starts, and their bad-input errors."""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdiff as jd

_ang4 = jnp.arange(4) * (jnp.pi / 2)
WIDE = jd.GaussianMixture(jnp.stack([jnp.cos(_ang4), jnp.sin(_ang4)], axis=1), 0.5)
N, T_END = 32, jnp.asarray(1e-2)
_cache = {}


def _run(sampler, steps, grid, x_init, process=None, t_end=T_END):
    process = process or jd.OU()
    score = jd.ExactScore(process, WIDE)
    return jd.sample(jax.random.PRNGKey(0), score, process, x_init.shape, sampler=sampler, steps=steps,
                     t_end=t_end, grid=grid, x_init=x_init)  # fmt: skip


def _reference():
    # adaptive Tsit5 at 1e-11 (validated against a closed form in test_sampling_accuracy.py)
    if "ref" not in _cache:
        y0 = jd.OU().prior_sample(jax.random.PRNGKey(3), (N, 2))
        pf = jd.ProbabilityFlow(
            diffrax.Tsit5(), diffrax.PIDController(rtol=1e-11, atol=1e-11), max_steps=100_000
        )
        _cache["ref"] = (y0, _run(pf, 1, jd.UniformGrid(), y0))
    return _cache["ref"]


ORDER_CASES = [
    pytest.param("LMS(4)", jd.LMS(4), jd.EDMGrid(), (64, 128, 256), 4.0),
    pytest.param("DEIS(3)", jd.DEIS(3), jd.LogSNRGrid(), (16, 32, 64), 3.0),
    pytest.param("UniPC(3)", jd.UniPC(3), jd.LogSNRGrid(), (16, 32, 64), 4.0),
    pytest.param("DPMSolverPP(3)", jd.DPMSolverPP(3), jd.LogSNRGrid(), (64, 128, 256), 3.0),
    # the fixed equal-step weights on a non-uniform grid: second order (see sampling/multistep.py)
    pytest.param("IPNDM(4)", jd.IPNDM(4), jd.EDMGrid(), (32, 64, 128), 2.0),
    pytest.param("LMS(3)", jd.LMS(3), jd.EDMGrid(), (32, 64, 128), 3.0, marks=pytest.mark.slow),
    pytest.param(
        "UniPC(2,bh1)",
        jd.UniPC(2, "bh1"),
        jd.LogSNRGrid(),
        (16, 32, 64),
        3.0,
        marks=pytest.mark.slow,
    ),
    pytest.param(
        "UniPC(1)", jd.UniPC(1), jd.LogSNRGrid(), (16, 32, 64), 2.0, marks=pytest.mark.slow
    ),
]


@pytest.mark.parametrize("name, sampler, grid, Ks, order", ORDER_CASES)
def test_convergence_order(name, sampler, grid, Ks, order):
    # mean |x_K - x_ref| over 32 fixed starts; least-squares slope of log error vs log K
    y0, ref = _reference()
    errs = [float(jnp.mean(jnp.linalg.norm(_run(sampler, K, grid, y0) - ref, axis=1))) for K in Ks]
    slope = -np.polyfit(np.log(Ks), np.log(errs), 1)[0]
    assert abs(slope - order) <= 0.3, f"{name}: errors {errs}, slope {slope:.2f}"


def test_dpm_solver_orders_1_and_2_unchanged():
    # order 1 is DDIM (eta = 0) step for step; order 2 is the 2M formula written out here
    process = jd.VP()
    y0 = process.prior_sample(jax.random.PRNGKey(1), (8, 2))
    grid = jd.LogSNRGrid()
    a = _run(jd.DPMSolverPP(1), 12, grid, y0, process)
    b = _run(jd.DDIM(), 12, grid, y0, process)
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    ts = grid(process, 12, T_END)
    D = jd.ExactScore(process, WIDE).denoise
    x, d_prev, h_prev = y0, None, None
    for t, s in zip(ts[:-1], ts[1:]):
        h = 0.5 * (process.log_snr(s) - process.log_snr(t))
        d = jax.vmap(D, in_axes=(None, 0))(t, x)
        d_hat = d if d_prev is None else (1 + h / (2 * h_prev)) * d - h / (2 * h_prev) * d_prev
        x = process.sigma(s) / process.sigma(t) * x - process.alpha(s) * jnp.expm1(-h) * d_hat
        d_prev, h_prev = d, h
    np.testing.assert_allclose(
        _run(jd.DPMSolverPP(2), 12, grid, y0, process), x, rtol=1e-9, atol=1e-11
    )


def test_first_step_is_ddim():
    # the lower-order warm start: one step of any of them is DDIM's (first-order) step
    process = jd.VP()
    y0 = process.prior_sample(jax.random.PRNGKey(1), (8, 2))
    ddim = _run(jd.DDIM(), 1, jd.LogSNRGrid(), y0, process)
    for s in (jd.LMS(4), jd.DEIS(3), jd.IPNDM(4), jd.UniPC(3), jd.DPMSolverPP(3)):
        np.testing.assert_allclose(
            _run(s, 1, jd.LogSNRGrid(), y0, process), ddim, rtol=1e-9, atol=1e-10
        )


@pytest.mark.parametrize(
    "sampler",
    [jd.LMS(4), jd.UniPC(3), jd.DPMSolverPP(3), pytest.param(jd.DEIS(3), marks=pytest.mark.slow),
     pytest.param(jd.IPNDM(4), marks=pytest.mark.slow)],
    ids=lambda s: type(s).__name__,
)  # fmt: skip
def test_float32_finite_to_tiny_t_end(sampler):
    process = jd.VP()
    score = jd.ExactScore(process, jd.GaussianMixture(WIDE.means.astype(jnp.float32), 0.5))
    x = jd.sample(jax.random.PRNGKey(0), score, process, (64, 2), sampler=sampler, steps=10,
                  grid=jd.EDMGrid(), t_end=jnp.asarray(1e-6, jnp.float32), denoise=True)  # fmt: skip
    assert x.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(x)))
    assert float(jnp.max(jnp.abs(x))) < 10.0


def test_nfe_and_bad_input():
    for s in (jd.LMS(), jd.DEIS(), jd.IPNDM(), jd.UniPC(), jd.DPMSolverPP(3)):
        assert s.nfe(7) == 7
    for make, bad in (
        (jd.LMS, 5),
        (jd.IPNDM, 0),
        (jd.DEIS, 2.0),
        (jd.UniPC, 4),
        (jd.DPMSolverPP, 4),
    ):
        with pytest.raises(ValueError, match="`order`"):
            make(bad)
    with pytest.raises(ValueError, match="variant"):
        jd.UniPC(3, "bh3")
    process = jd.OU()
    with pytest.raises(ValueError, match="strictly decreasing"):
        jd.sample(jax.random.PRNGKey(0), jd.ExactScore(process, WIDE), process, (4, 2), sampler=jd.LMS(),
                  grid=jnp.array([5.0, 1.0, 2.0, 0.01]))  # fmt: skip
