"""The heat flow as a forward process (the setting of Li–Yau and de Bruijn)."""

from __future__ import annotations

import jax.numpy as jnp

from ..processes import AbstractProcess, Scalar, _positive


class HeatFlow(AbstractProcess):
    """Pure diffusion `dX = sqrt(2 kappa) dW`: the density solves `du/dt = kappa Laplacian u`.

    `alpha = 1`, `sigma^2 = 2 kappa t`, `g^2 = 2 kappa`; the prior is `N(0, 2 kappa T I)`.
    It is `VE` with a linear variance; Li–Yau reads `Laplacian log u >= -d / (2 kappa t)`.
    """

    kappa: Scalar = 1.0
    T: Scalar = 1.0

    def __init__(self, kappa: Scalar = 1.0, T: Scalar = 1.0):
        """**Arguments:** `kappa > 0`: the diffusivity; `T > 0`: the horizon."""
        self.kappa = _positive("kappa", kappa)
        self.T = _positive("T", T)

    def log_alpha(self, t):
        return jnp.zeros_like(jnp.asarray(t, dtype=jnp.result_type(t, float)))

    def sigma2(self, t):
        return 2 * self.kappa * jnp.asarray(t)

    def f(self, t):
        return jnp.zeros_like(jnp.asarray(t, dtype=jnp.result_type(t, float)))

    def g2(self, t):
        return 2 * self.kappa * jnp.ones_like(jnp.asarray(t, dtype=jnp.result_type(t, float)))

    def t_from_log_snr(self, log_snr):
        # alpha^2 / sigma^2 = 1 / (2 kappa t) = e^lambda
        return jnp.exp(-jnp.asarray(log_snr)) / (2 * self.kappa)

    @property
    def prior_std(self):
        return jnp.sqrt(2 * self.kappa * self.T)
