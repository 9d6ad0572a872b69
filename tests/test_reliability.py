"""Inputs that used to give silently wrong results or unclear errors, and the guarantees of
docs/guarantees.md that are cheap to check."""

import equinox as eqx
import jax
import jax.numpy as jnp
import pytest

import jaxdiff as jd

PROCESS = jd.OU()
LAW = jd.GaussianMixture(jnp.array([[-1.0, 0.0], [1.0, 0.5]]), jnp.array([0.3, 0.4]))


def test_complex_points_are_refused():
    z = jnp.array([1.0 + 1.0j, 0.5])
    exact = jd.ExactScore(PROCESS, LAW)
    net = jd.NetworkScore(jd.nn.MLP(2, key=jax.random.PRNGKey(0), width=8, depth=0), PROCESS)
    for call in (lambda: exact(0.5, z), lambda: exact.log_prob(0.5, z), lambda: LAW.log_prob(z),
                 lambda: LAW.score(z), lambda: net(0.5, z)):
        with pytest.raises(ValueError, match="`x` must be real"):
            call()
    with pytest.raises(ValueError, match="`x` must be real"):
        jd.log_likelihood(exact, PROCESS, z)


def test_log_likelihood_names_a_nan_point():
    exact = jd.ExactScore(PROCESS, LAW)
    with pytest.raises(ValueError, match="`x` contains NaN"):
        jd.log_likelihood(exact, PROCESS, jnp.array([jnp.nan, 0.0]))


def test_errors_under_jit_carry_the_message():
    # under eqx.filter_jit the error is an EquinoxRuntimeError whose text holds the message
    exact = jd.ExactScore(PROCESS, LAW)
    with pytest.raises(Exception, match=r"`t` must be .*<= T"):
        eqx.filter_jit(lambda t: exact(t, jnp.ones(2)))(jnp.array(2 * PROCESS.T))
