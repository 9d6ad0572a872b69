r"""DPM-Solver++ (Lu et al. 2022, "DPM-Solver++: fast solver for guided sampling"), multistep.

With $\lambda = \tfrac12\log(\alpha^2/\sigma^2)$ (half the log-SNR) and the data prediction
$D(t, x) = E[X_0 | X_t = x]$, the probability-flow ODE has the exact variation-of-constants
form $x_s = \frac{\sigma_s}{\sigma_t} x_t + \sigma_s \int_{\lambda_t}^{\lambda_s} e^{\lambda} D\,d\lambda$.
Step $i$ (from $t_{i-1}$ to $t_i$, $h_i = \lambda_{t_i} - \lambda_{t_{i-1}} > 0$):

$$x_{t_i} = \frac{\sigma_{t_i}}{\sigma_{t_{i-1}}} x_{t_{i-1}} - \alpha_{t_i}(e^{-h_i} - 1)\, \hat D_i,$$

* order 1: $\hat D_i = D_{i-1}$ (this is DDIM with `eta = 0`);
* order 2 (2M, Algorithm 2): $\hat D_i = (1 + \tfrac1{2r_i}) D_{i-1} - \tfrac1{2r_i} D_{i-2}$,
  $r_i = h_{i-1}/h_i$, with a first-order first step.

One denoiser evaluation per step; global order 2 in the step size. Its natural grid is
`LogSNRGrid()`.
"""

from __future__ import annotations

import jax.numpy as jnp

from .base import AbstractStepSampler, denoiser


class DPMSolverPP(AbstractStepSampler):
    """DPM-Solver++ in data prediction, multistep of order 1 or 2 (2M)."""

    order: int = 2

    def __init__(self, order: int = 2):
        """**Arguments:** `order`: 1 or 2."""
        if order not in (1, 2) or isinstance(order, bool):
            raise ValueError(f"`order` must be 1 or 2, got {order!r}")
        self.order = order

    def nfe(self, steps):
        return steps

    def init_state(self, score, process, ts, x):
        # (previous denoised value, previous step in lambda, whether a previous step exists)
        return jnp.zeros_like(x), jnp.zeros((), ts.dtype), jnp.zeros((), bool)

    def step(self, key, score, process, t, s, x, state):
        d_prev, h_prev, started = state
        lam_t, lam_s = 0.5 * process.log_snr(t), 0.5 * process.log_snr(s)
        h = lam_s - lam_t
        d = denoiser(score, process)(t, x)
        if self.order == 1:
            d_hat = d
        else:
            # 1/(2 r) = h / (2 h_prev); on the first step h_prev = 0, so guard the division
            c = jnp.where(started, h / (2 * jnp.where(started, h_prev, 1.0)), 0.0)
            d_hat = (1 + c) * d - c * d_prev
        ratio = jnp.exp(0.5 * (jnp.log(process.sigma2(s)) - jnp.log(process.sigma2(t))))
        x_s = ratio * x - process.alpha(s) * jnp.expm1(-h) * d_hat
        return x_s, (d, h, jnp.ones((), bool))
