"""Learned time grids (`tune_grid`, `TunedGrid`) and the adaptive reverse-SDE solver."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdiff as jd

_ang = jnp.arange(4) * (jnp.pi / 2)
LAW = jd.GaussianMixture(2.0 * jnp.stack([jnp.cos(_ang), jnp.sin(_ang)], axis=1), 0.3)
PROCESS = jd.VP()
T_END = jnp.asarray(1e-3)
_cache = {}


def _tuned():
    if "tuned" not in _cache:
        score = jd.ExactScore(PROCESS, LAW)
        run = eqx.filter_jit(
            lambda: jd.tune_grid(score, PROCESS, jd.LMS(3), steps=4, key=jax.random.PRNGKey(0), t_end=T_END,
                                 n_train=64, n_heldout=256, n_steps_opt=40, teacher_steps=64)  # fmt: skip
        )
        _cache["tuned"] = run()
    return _cache["tuned"]


def test_tune_grid_lowers_the_heldout_error():
    tuned, log = _tuned()
    ts = np.asarray(tuned.ts)
    assert ts.shape == (5,) and np.all(np.diff(ts) < 0)
    np.testing.assert_allclose([ts[0], ts[-1]], [PROCESS.T, float(T_END)], rtol=1e-12)
    # on noise not used for training, against the same teacher: at least 1.5x better
    assert float(log.heldout_rms) < float(log.heldout_rms_init) / 1.5, log
    assert float(log.loss[-1]) < float(log.loss[0])


def test_tuned_grid_is_a_grid_and_refuses_mismatches(tmp_path):
    tuned, _ = _tuned()
    score = jd.ExactScore(PROCESS, LAW)
    kw = dict(sampler=jd.LMS(3), denoise=True)
    a = jd.sample(jax.random.PRNGKey(1), score, PROCESS, (8, 2), grid=tuned, steps=4, t_end=tuned.t_end, **kw)
    b = jd.sample(jax.random.PRNGKey(1), score, PROCESS, (8, 2), grid=tuned.ts, **kw)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="4 steps"):
        tuned(PROCESS, 5, T_END)
    with pytest.raises(ValueError, match="tuned for"):
        tuned(jd.VP(beta_max=15.0), 4, T_END)
    path = tuned.save(tmp_path / "grid.eqx")
    loaded = jd.TunedGrid.load(path, PROCESS)
    np.testing.assert_array_equal(loaded.ts, tuned.ts)
    with pytest.raises(ValueError, match="VP process"):
        jd.TunedGrid.load(path, jd.OU())
    with pytest.raises(ValueError, match="differ"):
        jd.TunedGrid.load(path, jd.VP(beta_min=0.2))
    with pytest.raises(ValueError, match="strictly decreasing"):
        jd.TunedGrid(jnp.array([1.0, 0.5, 0.7, 0.1]), PROCESS)


@pytest.mark.slow
def test_tune_grid_takes_any_callable_score():
    # a plain function (the exact score behind a lambda) needs `event_shape`
    exact = jd.ExactScore(PROCESS, LAW)
    score = lambda t, x: exact(t, x)  # noqa: E731
    with pytest.raises(ValueError, match="event_shape"):
        jd.tune_grid(score, PROCESS, jd.DPMSolverPP(2), steps=3, key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="step sampler"):
        jd.tune_grid(exact, PROCESS, jd.AdaptiveSDE(), steps=3, key=jax.random.PRNGKey(0))
    kw = dict(t_end=T_END, event_shape=(2,), n_train=32, n_heldout=64, n_steps_opt=5, teacher_steps=16)
    tuned, log = jd.tune_grid(score, PROCESS, jd.DPMSolverPP(2), steps=3, key=jax.random.PRNGKey(0), **kw)
    assert tuned.steps == 3 and bool(jnp.isfinite(log.heldout_rms))


@pytest.mark.slow
def test_adaptive_sde_matches_a_gaussian_and_counts_its_evaluations():
    # N(m, c^2 I): the law at t_end is Gaussian with a closed form; mean and variance of 4000
    # samples within 4 standard errors; tighter tolerances cost more evaluations.
    m, c, n = jnp.array([1.0, -0.5]), 0.5, 4000
    process = jd.VP()
    score = jd.ExactScore(process, jd.GaussianMixture(m[None], c))
    nfes = []
    for tol in (0.1, 0.02):
        x, nfe = jd.AdaptiveSDE(rtol=tol, atol=tol).sample_with_nfe(
            jax.random.PRNGKey(0), score, process, (n, 2), t_end=T_END, denoise=False
        )
        nfes.append(float(jnp.mean(nfe)))
        assert nfe.shape == (n,) and int(jnp.min(nfe)) >= 2
        a, v = process.alpha(T_END), process.alpha(T_END) ** 2 * c**2 + process.sigma2(T_END)
        np.testing.assert_allclose(jnp.mean(x, 0), a * m, atol=4 * float(jnp.sqrt(v / n)))
        np.testing.assert_allclose(jnp.var(x, 0), v, rtol=4 * np.sqrt(2 / n))
    assert nfes[1] > 1.5 * nfes[0]
    assert jd.AdaptiveSDE().nfe(10) is None
    with pytest.raises(ValueError, match="rtol"):
        jd.AdaptiveSDE(rtol=0.0)
