"""Adjoints of `sample`: checkpointed gradients equal plain backpropagation, for every step
sampler and every kind of parameter; Diffrax adjoints pass through; bad combinations refused."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdiff as jd
from jaxdiff.sampling.adjoint import _nested_scan

LAW = jd.GaussianMixture(jnp.array([[1.5, 0.0], [-1.0, 0.5]]), 0.4)


def _step_samplers():
    """Every step sampler; a representative three (stochastic, corrector, multistep history)
    run by default, the rest with `-m slow` (each costs a compilation of nested loops)."""
    slow = pytest.mark.slow
    return [
        jd.ReverseSDE(),
        pytest.param(jd.DDPM(), marks=slow),
        pytest.param(jd.DDIM(), marks=slow),
        pytest.param(jd.EDMHeun(), marks=slow),
        pytest.param(jd.DPMSolverPP(order=3), marks=slow),
        jd.PredictorCorrector(),
        pytest.param(jd.UniPC(order=3), marks=slow),
        pytest.param(jd.IPNDM(order=4), marks=slow),
        jd.LMS(order=4),
        pytest.param(jd.DEIS(order=3), marks=slow),
    ]


def _grads(sampler, adjoint, steps=7, dtype=jnp.float64):
    process = jd.VP()
    law = jd.GaussianMixture(LAW.means.astype(dtype), 0.4)
    x_init = 0.7 * jnp.ones((3, 2), dtype)

    def stat(beta_max, t_end, x_init):
        proc = jd.VP(beta_max=beta_max)
        score = jd.ExactScore(proc, law)
        x = jd.sample(
            jax.random.PRNGKey(3),
            score,
            proc,
            (3, 2),
            sampler=sampler,
            steps=steps,
            t_end=t_end,
            x_init=x_init,
            adjoint=adjoint,
        )
        return jnp.sum(jnp.sin(x) * jnp.arange(1, 7, dtype=dtype).reshape(3, 2))

    del process
    args = (jnp.asarray(20.0, dtype), jnp.asarray(0.02, dtype), x_init)
    return jax.jit(jax.grad(stat, argnums=(0, 1, 2)))(*args)


def _rel(a, b):
    return max(float(jnp.max(jnp.abs(x - y)) / (jnp.max(jnp.abs(x)) + 1e-30)) for x, y in zip(a, b))


@pytest.mark.parametrize(
    "sampler", _step_samplers(), ids=lambda s: type(s).__name__ if isinstance(s, jd.AbstractSampler) else None
)
def test_checkpoint_equals_backprop_float64(sampler):
    plain = _grads(sampler, jd.BackpropAdjoint())
    # 7 steps in segments of 2 over 3 levels: uneven segments and a tail at every level
    ckpt = _grads(sampler, jd.CheckpointAdjoint(checkpoints=2))
    assert _rel(plain, ckpt) < 1e-10
    assert all(bool(jnp.all(jnp.isfinite(g))) and float(jnp.max(jnp.abs(g))) > 0 for g in plain)


@pytest.mark.slow
def test_checkpoint_equals_backprop_float32_weights():
    """Network weights as the parameter, float32, default schedule (two levels at 40 steps)."""
    process = jd.VP()
    net = jd.nn.MLP(2, width=16, depth=2, key=jax.random.PRNGKey(0))
    net = jax.tree.map(lambda a: a.astype(jnp.float32) if eqx.is_inexact_array(a) else a, net)
    score = jd.NetworkScore(net, process)

    def stat(score, adjoint):
        x = jd.sample(
            jax.random.PRNGKey(1),
            score,
            process,
            (4, 2),
            sampler=jd.DDIM(),
            steps=40,
            t_end=jnp.asarray(1e-3, jnp.float32),
            adjoint=adjoint,
        )
        return jnp.mean(x**2)

    g0 = eqx.filter_jit(eqx.filter_grad(stat))(score, jd.BackpropAdjoint())
    g1 = eqx.filter_jit(eqx.filter_grad(stat))(score, jd.CheckpointAdjoint())
    l0, l1 = jax.tree.leaves(eqx.filter(g0, eqx.is_array)), jax.tree.leaves(eqx.filter(g1, eqx.is_array))
    assert l0[0].dtype == jnp.float32
    scale = max(float(jnp.max(jnp.abs(a))) for a in l0)
    assert max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(l0, l1)) < 1e-5 * scale


def test_checkpoint_gradient_matches_finite_differences():
    law = jd.GaussianMixture(LAW.means, 0.4)
    process = jd.OU()
    score = jd.ExactScore(process, law)

    def stat(t_end):
        x = jd.sample(
            jax.random.PRNGKey(0),
            score,
            process,
            (5, 2),
            sampler=jd.DDIM(),
            steps=30,
            t_end=t_end,
            adjoint=jd.CheckpointAdjoint(checkpoints=3),
        )
        return jnp.mean(x**2)

    t = jnp.asarray(0.05)
    g = jax.grad(stat)(t)
    h = 1e-5
    fd = (stat(t + h) - stat(t - h)) / (2 * h)
    np.testing.assert_allclose(g, fd, rtol=1e-6)


def test_recomputed_noise_is_identical():
    """A stochastic sampler's noise depends on the step index only: the checkpointed forward
    pass returns the plain one's samples bit for bit."""
    score = jd.ExactScore(jd.OU(), LAW)
    kw = dict(sampler=jd.ReverseSDE(), steps=17, trajectory=True)
    a = jd.sample(jax.random.PRNGKey(4), score, jd.OU(), (3, 2), **kw)
    b = jd.sample(
        jax.random.PRNGKey(4), score, jd.OU(), (3, 2), adjoint=jd.CheckpointAdjoint(checkpoints=2), **kw
    )
    np.testing.assert_array_equal(a[1], b[1])


def test_under_vmap_and_jit():
    score = jd.ExactScore(jd.OU(), LAW)

    def stat(t_end, adjoint):
        x = jd.sample(
            jax.random.PRNGKey(0),
            score,
            jd.OU(),
            (2, 2),
            sampler=jd.DDIM(),
            steps=9,
            t_end=t_end,
            adjoint=adjoint,
        )
        return jnp.sum(x)

    ts = jnp.array([0.01, 0.05, 0.2])
    g0 = jax.jit(jax.vmap(jax.grad(lambda t: stat(t, jd.BackpropAdjoint()))))(ts)
    g1 = jax.jit(jax.vmap(jax.grad(lambda t: stat(t, jd.CheckpointAdjoint()))))(ts)
    np.testing.assert_allclose(g0, g1, rtol=1e-10)


def test_checkpointing_reduces_compiled_memory():
    """The compiled gradient's scratch memory: plain backpropagation grows with the steps,
    the checkpointed one much more slowly (a structural check, not a timing)."""
    law = jd.PointCloud(jax.random.normal(jax.random.PRNGKey(1), (64, 16), jnp.float32))
    score = jd.ExactScore(jd.OU(), law)

    def temp(adjoint, steps):
        def stat(t_end):
            x = jd.sample(
                jax.random.PRNGKey(0),
                score,
                jd.OU(),
                (32, 16),
                sampler=jd.DDIM(),
                steps=steps,
                t_end=t_end,
                adjoint=adjoint,
            )
            return jnp.mean(x**2)

        mem = jax.jit(jax.grad(stat)).lower(jnp.asarray(0.01, jnp.float32)).compile().memory_analysis()
        if mem is None:
            pytest.skip("no memory analysis on this backend")
        return mem.temp_size_in_bytes

    plain, ckpt = temp(jd.BackpropAdjoint(), 400), temp(jd.CheckpointAdjoint(), 400)
    assert ckpt < 0.25 * plain


def test_nested_scan_outputs_match_scan():
    def body(c, k):
        return c * 1.01 + k, c

    for length, b, levels in ((1, 2, 3), (10, 3, 2), (37, 4, 3), (64, 4, 3)):
        xs = jnp.arange(length, dtype=jnp.float64)
        c0, y0 = jax.lax.scan(body, 1.0, xs)
        c1, y1 = _nested_scan(body, 1.0, xs, length, b, levels)
        np.testing.assert_array_equal(c0, c1)
        np.testing.assert_array_equal(y0, y1)


def test_schedule_defaults():
    assert jd.CheckpointAdjoint().schedule(1000) == (10, 3)
    b, L = jd.CheckpointAdjoint().schedule(200)
    assert b**L >= 200 and L == 3
    b, L = jd.CheckpointAdjoint(checkpoints=4).schedule(100)
    assert (b, L) == (4, 4)
    b, L = jd.CheckpointAdjoint(levels=2).schedule(50)
    assert (b, L) == (8, 2)


@pytest.mark.slow
def test_diffrax_sampler_takes_diffrax_adjoint():
    score = jd.ExactScore(jd.OU(), LAW)

    def stat(t_end, adjoint):
        x = jd.sample(
            jax.random.PRNGKey(0),
            score,
            jd.OU(),
            (3, 2),
            sampler=jd.ProbabilityFlow(diffrax.Heun()),
            steps=20,
            t_end=t_end,
            adjoint=adjoint,
        )
        return jnp.mean(x**2)

    t = jnp.asarray(0.05)
    g_default = jax.grad(stat)(t, None)
    g_ckpt = jax.grad(stat)(t, jd.CheckpointAdjoint(checkpoints=5))
    g_direct = jax.grad(stat)(t, diffrax.DirectAdjoint())
    np.testing.assert_allclose(g_ckpt, g_default, rtol=1e-10)
    np.testing.assert_allclose(g_direct, g_default, rtol=1e-10)


@pytest.mark.slow
def test_log_likelihood_backsolve_adjoint_agrees():
    """`log_likelihood` is a Diffrax solve: the continuous adjoint (backsolve) agrees with the
    default discretise-then-optimise gradient to the solver's tolerance."""
    x = jnp.array([0.3, -0.2])

    def ll(scale, adjoint):
        law = jd.GaussianMixture(LAW.means * scale, 0.4)
        score = jd.ExactScore(jd.VP(), law)
        return jd.log_likelihood(score, jd.VP(), x, adjoint=adjoint)

    s = jnp.asarray(1.0)
    g0 = jax.grad(ll)(s, diffrax.RecursiveCheckpointAdjoint())
    g1 = jax.grad(ll)(s, diffrax.BacksolveAdjoint())
    np.testing.assert_allclose(g1, g0, rtol=1e-3)


def test_bad_adjoints_are_refused():
    score = jd.ExactScore(jd.OU(), LAW)
    with pytest.raises(ValueError, match="Diffrax adjoint.*step sampler"):
        jd.sample(
            jax.random.PRNGKey(0),
            score,
            jd.OU(),
            (2, 2),
            sampler=jd.DDIM(),
            steps=4,
            adjoint=diffrax.BacksolveAdjoint(),
        )
    with pytest.raises(ValueError, match="`adjoint` must be"):
        jd.sample(jax.random.PRNGKey(0), score, jd.OU(), (2, 2), steps=4, adjoint="checkpoint")
    with pytest.raises(ValueError, match="`checkpoints`"):
        jd.CheckpointAdjoint(checkpoints=1)
    with pytest.raises(ValueError, match="`levels`"):
        jd.CheckpointAdjoint(levels=0)


def test_tuned_grid_gradient_through_checkpoints():
    """The learned-grid use: the gradient with respect to a tuned grid's times."""
    process = jd.VP()
    score = jd.ExactScore(process, LAW)
    ts0 = jd.LogSNRGrid()(process, 9, jnp.asarray(1e-3))

    def stat(ts, adjoint):
        grid = jd.TunedGrid(ts, process)
        x = jd.sample(
            jax.random.PRNGKey(0),
            score,
            process,
            (3, 2),
            sampler=jd.LMS(order=4),
            grid=grid,
            steps=9,
            adjoint=adjoint,
        )
        return jnp.mean(x**2)

    g0 = jax.grad(stat)(ts0, jd.BackpropAdjoint())
    g1 = jax.grad(stat)(ts0, jd.CheckpointAdjoint(checkpoints=3))
    assert float(jnp.max(jnp.abs(g0))) > 0
    np.testing.assert_allclose(g1, g0, rtol=1e-10, atol=1e-12 * float(jnp.max(jnp.abs(g0))))
