"""Log-likelihood through the probability-flow ODE against the closed-form density of a
Gaussian mixture, Hutchinson's estimator against its standard error, and input gradients
against finite differences and the exact score."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdiff as jd

# T = 10: the prior N(0, I) differs from the exact p_T by O(alpha(T)) = 5e-5, below the tolerance
PROCESS = jd.OU(T=10.0)
LAW = jd.GaussianMixture(jnp.array([[-1.5, 0.0], [1.0, 1.0]]), jnp.array([0.3, 0.5]), jnp.array([0.4, 0.6]))
EXACT = jd.ExactScore(PROCESS, LAW)
T_END = jnp.array(1e-2)
TIGHT = diffrax.PIDController(rtol=1e-9, atol=1e-9)
POINTS = jnp.array([[-1.4, 0.1], [0.9, 1.2], [0.0, 0.5], [2.0, -1.0]])
H = 1e-4


def _ll(x):
    return jd.log_likelihood(EXACT, PROCESS, x, t_end=T_END, stepsize_controller=TIGHT)


@pytest.fixture(scope="module")
def values():
    # one compiled, vmapped solve for the test points and the finite-difference points around POINTS[0]
    fd = POINTS[0] + H * jnp.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    return jax.jit(jax.vmap(_ll))(jnp.concatenate([POINTS, fd]))


def test_exact_divergence_matches_closed_form(values):
    want = jax.vmap(LAW.noised(PROCESS, T_END).log_prob)(POINTS)
    d = POINTS.shape[1]
    np.testing.assert_array_less(jnp.abs(values[: len(POINTS)] - want) / d, 1e-3)
    # much tighter in fact; a wrong divergence or sign would be off by O(1)
    np.testing.assert_allclose(values[: len(POINTS)], want, atol=2e-4)


def test_input_gradient_matches_finite_differences_and_exact_score(values):
    g = jax.jit(jax.grad(_ll))(POINTS[0])
    fp = values[len(POINTS):]
    fd = jnp.array([(fp[0] - fp[1]) / (2 * H), (fp[2] - fp[3]) / (2 * H)])
    np.testing.assert_allclose(g, fd, rtol=1e-4, atol=1e-4)
    # the gradient of log p_{t_end} is the exact score of the noised law
    np.testing.assert_allclose(g, LAW.noised(PROCESS, T_END).score(POINTS[0]), rtol=1e-4, atol=1e-4)


def test_hutchinson_agrees_within_standard_error(values):
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.PRNGKey(7), i))(jnp.arange(48))
    est = jax.jit(jax.vmap(lambda k: jd.log_likelihood(EXACT, PROCESS, POINTS[0], t_end=T_END,
                                                       divergence=jd.Hutchinson(2), key=k)))(keys)
    est = np.asarray(est)
    se = est.std(ddof=1) / np.sqrt(est.size)
    assert se > 1e-3  # the probes really are random
    assert abs(est.mean() - float(values[0])) < 4 * se, (est.mean(), float(values[0]), se)


def test_log_likelihood_refuses_bad_input():
    with pytest.raises(ValueError, match="t_end"):
        jd.log_likelihood(EXACT, PROCESS, POINTS[0], t_end=0.0)
    with pytest.raises(ValueError, match="key"):
        jd.log_likelihood(EXACT, PROCESS, POINTS[0], divergence=jd.Hutchinson(1))
    with pytest.raises(ValueError, match="divergence"):
        jd.log_likelihood(EXACT, PROCESS, POINTS[0], divergence="exact")


# ---- gradients through the samplers with respect to network weights ---------------------------------

NET = jd.NetworkScore(jd.nn.MLP(2, key=jax.random.PRNGKey(4), width=8, depth=1), jd.OU(), jd.EDMParam())


# the probability-flow case costs a Diffrax solve's compilation twice over: with `-m slow`
@pytest.mark.parametrize(
    "sampler",
    [jd.ReverseSDE(), pytest.param(jd.ProbabilityFlow(), marks=pytest.mark.slow)],
    ids=lambda s: type(s).__name__,
)
def test_gradient_through_sampler_matches_finite_differences(sampler):
    # J(theta) = mean |X_{t_end}|^2 over 16 samples with fixed noise: a smooth function of the weights
    @eqx.filter_jit
    def J(score):
        xs = jd.sample(jax.random.PRNGKey(8), score, score.process, (16, 2), sampler=sampler, steps=6,
                       t_end=jnp.array(0.05))
        return jnp.mean(jnp.sum(xs**2, axis=1))

    grads = eqx.filter_grad(J)(NET)
    params, static = eqx.partition(NET, eqx.is_inexact_array)
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(9), len(leaves))
    direction = jax.tree.unflatten(treedef, [jax.random.normal(k, x.shape, x.dtype)
                                             for k, x in zip(keys, leaves)])
    h = 1e-5
    shifted = lambda s: eqx.combine(jax.tree.map(lambda p, v: p + s * v, params, direction), static)
    fd = (J(shifted(h)) - J(shifted(-h))) / (2 * h)
    ad = sum(jnp.vdot(g, v) for g, v in zip(jax.tree.leaves(eqx.filter(grads, eqx.is_inexact_array)),
                                             jax.tree.leaves(direction)))
    assert abs(float(fd)) > 1e-3  # the direction moves the objective
    np.testing.assert_allclose(ad, fd, rtol=1e-6)
