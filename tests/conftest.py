import jax
import pytest

# Analytic identities are checked in float64; tests that need float32 say so explicitly.
jax.config.update("jax_enable_x64", True)


@pytest.fixture
def key():
    return jax.random.PRNGKey(0)
