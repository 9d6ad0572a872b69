r"""DPM-Solver++ (Lu et al. 2022, "DPM-Solver++: fast solver for guided sampling"), multistep.

With $\lambda = \tfrac12\log(\alpha^2/\sigma^2)$ (half the log-SNR) and the data prediction
$D(t, x) = E[X_0 | X_t = x]$, the probability-flow ODE has the exact variation-of-constants
form $x_s = \frac{\sigma_s}{\sigma_t} x_t + \sigma_s \int_{\lambda_t}^{\lambda_s} e^{\lambda} D\,d\lambda$.
Step $i$ (from $t_{i-1}$ to $t_i$, $h_i = \lambda_{t_i} - \lambda_{t_{i-1}} > 0$):

$$x_{t_i} = \frac{\sigma_{t_i}}{\sigma_{t_{i-1}}} x_{t_{i-1}} - \alpha_{t_i}(e^{-h_i} - 1)\, \hat D_i,$$

* order 1: $\hat D_i = D_{i-1}$ (this is DDIM with `eta = 0`);
* order 2 (2M, Algorithm 2): $\hat D_i = (1 + \tfrac1{2r_i}) D_{i-1} - \tfrac1{2r_i} D_{i-2}$,
  $r_i = h_{i-1}/h_i$, with a first-order first step;
* order 3 (3M, Lu et al. 2022, "DPM-Solver++", arXiv 2211.01095, multistep third order),
  with $r_0 = h_{i-1}/h_i$, $r_1 = h_{i-2}/h_i$,
  $\Delta_0 = (D_{i-1} - D_{i-2})/r_0$, $\Delta_1 = (D_{i-2} - D_{i-3})/r_1$,
  $D' = \Delta_0 + \frac{r_0}{r_0 + r_1}(\Delta_0 - \Delta_1)$,
  $D'' = \frac{2(\Delta_0 - \Delta_1)}{r_0 + r_1}$ (an estimate of $h^2\,d^2D/d\lambda^2$):
  $x_{t_i} = \frac{\sigma_{t_i}}{\sigma_{t_{i-1}}} x_{t_{i-1}} - \alpha_{t_i}\varphi_1 D_{i-1}
  + \alpha_{t_i}\varphi_2 D' - \alpha_{t_i}\varphi_3 D''$ with $\varphi_1 = e^{-h} - 1$,
  $\varphi_2 = \varphi_1/h + 1$, $\varphi_3 = \varphi_2/h - \tfrac12$; warm start with
  orders 1 and 2.

One denoiser evaluation per step; global order `order` in the step size. Its natural grid is
`LogSNRGrid()`.
"""

from __future__ import annotations

import jax.numpy as jnp

from .base import AbstractStepSampler, denoiser


class DPMSolverPP(AbstractStepSampler):
    """DPM-Solver++ in data prediction, multistep of order 1, 2 (2M) or 3 (3M)."""

    order: int = 2

    def __init__(self, order: int = 2):
        """**Arguments:** `order`: 1, 2 or 3."""
        if isinstance(order, bool) or order not in (1, 2, 3):
            raise ValueError(f"`order` of DPMSolverPP must be one of (1, 2, 3), got {order!r}")
        self.order = int(order)

    def nfe(self, steps):
        return steps

    def init_state(self, score, process, ts, x):
        if self.order == 3:
            # (last two denoised values, last two steps in lambda, steps taken)
            z, h = jnp.zeros_like(x), jnp.ones((), ts.dtype)
            return z, z, h, h, jnp.zeros((), jnp.int32)
        # (previous denoised value, previous step in lambda, whether a previous step exists)
        return jnp.zeros_like(x), jnp.zeros((), ts.dtype), jnp.zeros((), bool)

    def step(self, key, score, process, t, s, x, state):
        if self.order == 3:
            return self._step3(score, process, t, s, x, state)
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

    def _step3(self, score, process, t, s, x, state):
        d1, d2, h1, h2, n = state  # D and h one and two steps back
        lam_t, lam_s = 0.5 * process.log_snr(t), 0.5 * process.log_snr(s)
        h = lam_s - lam_t
        d = denoiser(score, process)(t, x)
        phi1 = jnp.expm1(-h)
        phi2 = phi1 / h + 1
        phi3 = phi2 / h - 0.5
        r0, r1 = h1 / h, h2 / h
        delta0, delta1 = (d - d1) / r0, (d1 - d2) / r1
        # third order once two earlier values exist; second (2M) after one; first at the start
        # delta0 - delta1 = h^2 D'' (r0 + r1) / 2 + O(h^3): the second difference below is
        # h^2 D''. Without the factor 2 the method is only second order.
        d2nd = 2 * (delta0 - delta1) / (r0 + r1)
        third = phi2 * (delta0 + r0 / (r0 + r1) * (delta0 - delta1)) - phi3 * d2nd
        second = 0.5 * phi1 * (d - d1) / r0  # -phi1 * (1/(2 r0)) * (d - d1), 2M's correction
        corr = jnp.where(n >= 2, third, jnp.where(n >= 1, -second, 0.0))
        ratio = jnp.exp(0.5 * (jnp.log(process.sigma2(s)) - jnp.log(process.sigma2(t))))
        x_s = ratio * x - process.alpha(s) * phi1 * d + process.alpha(s) * corr
        return x_s, (d, d1, h, h1, n + 1)
