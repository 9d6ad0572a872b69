r"""Karras et al. (2022)'s second-order sampler (EDM, Algorithm 2) for any linear process.

A process with $X_t = \alpha X_0 + \sigma Z$ is, after the scaling $y = x / \alpha$, the VE
process $y = X_0 + \tilde\sigma Z$ with noise level $\tilde\sigma = \sigma/\alpha = e^{-\lambda/2}$
(EDM's $s(t) = \alpha$). Its probability-flow ODE is
$dy/d\tilde\sigma = (y - D(y; \tilde\sigma)) / \tilde\sigma$, with the denoiser
$D$ evaluated at $x = \alpha(t) y$ and the time $t$ with $\tilde\sigma(t) = \tilde\sigma$.

One step from $t_i$ to $t_{i+1}$ (noise levels $\tilde\sigma_i > \tilde\sigma_{i+1} > 0$):

1. churn (optional): $\gamma = \min(S_\mathrm{churn}/K, \sqrt2 - 1)$ when
   $S_{t\min} \le \tilde\sigma_i \le S_{t\max}$, $\hat\sigma = \tilde\sigma_i (1 + \gamma)$,
   $\hat y = y + \sqrt{\hat\sigma^2 - \tilde\sigma_i^2}\, S_\mathrm{noise}\, z$;
2. Euler: $d = (\hat y - D(\hat y; \hat\sigma))/\hat\sigma$,
   $y' = \hat y + (\tilde\sigma_{i+1} - \hat\sigma) d$;
3. Heun correction: $d' = (y' - D(y'; \tilde\sigma_{i+1}))/\tilde\sigma_{i+1}$,
   $y_{i+1} = \hat y + (\tilde\sigma_{i+1} - \hat\sigma)(d + d')/2$.

Since $t_\mathrm{end} > 0$ every step has its Heun correction (2 evaluations per step).
$\hat\sigma$ is capped at $\tilde\sigma(T)$ so the score is never asked beyond `T`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jaxtyping import ArrayLike, Float

from .._checks import is_concrete
from .base import AbstractStepSampler, denoiser

Scalar = Float[ArrayLike, ""]


def noise_level(process, t):
    r"""The VE-equivalent noise level $\tilde\sigma(t) = \sigma(t)/\alpha(t) = e^{-\lambda(t)/2}$."""
    return jnp.exp(-0.5 * process.log_snr(t))


class EDMHeun(AbstractStepSampler):
    """EDM's Heun sampler (Karras et al. 2022, Alg. 2), deterministic unless `churn > 0`.

    Use it with `EDMGrid(rho=7.0)` for the paper's setting.
    """

    churn: Scalar = 0.0
    s_tmin: Scalar = 0.0
    s_tmax: Scalar = math.inf
    s_noise: Scalar = 1.0

    def __init__(
        self, churn: Scalar = 0.0, *, s_tmin: Scalar = 0.0, s_tmax: Scalar = math.inf, s_noise: Scalar = 1.0
    ):
        """**Arguments:** `churn`: `S_churn >= 0`, the total noise injected over the run;
        `s_tmin`, `s_tmax`: the noise-level window where churn applies; `s_noise`: the scale
        of the injected noise (Karras et al. use slightly above 1)."""
        for name, v in (("churn", churn), ("s_tmin", s_tmin), ("s_noise", s_noise)):
            if is_concrete(v) and not float(v) >= 0:
                raise ValueError(f"`{name}` must be >= 0, got {v}")
        if is_concrete(s_tmin, s_tmax) and float(s_tmax) < float(s_tmin):
            raise ValueError(f"`s_tmax` ({s_tmax}) must be >= `s_tmin` ({s_tmin})")
        self.churn, self.s_tmin, self.s_tmax, self.s_noise = churn, s_tmin, s_tmax, s_noise

    def _deterministic(self) -> bool:
        return is_concrete(self.churn) and float(self.churn) == 0.0

    def nfe(self, steps):
        return 2 * steps

    def init_state(self, score, process, ts, x):
        # the cap on the churned noise level, and K for gamma = S_churn / K
        return (noise_level(process, ts[0]), jnp.asarray(ts.shape[0] - 1, ts.dtype))

    def step(self, key, score, process, t, s, x, state):
        D = denoiser(score, process)
        sig_t, sig_s = noise_level(process, t), noise_level(process, s)
        y = x / process.alpha(t)
        if self._deterministic():
            t_hat, sig_hat = t, sig_t
        else:
            sig_max, K = state
            inside = (sig_t >= self.s_tmin) & (sig_t <= self.s_tmax)
            gamma = jnp.where(inside, jnp.minimum(self.churn / K, math.sqrt(2) - 1), 0.0)
            sig_hat = jnp.minimum(sig_t * (1 + gamma), jnp.maximum(sig_max, sig_t))
            churned = sig_hat > sig_t
            # the time of the raised noise level; exactly t when nothing was added
            t_hat = jnp.where(churned, process.t_from_log_snr(-2 * jnp.log(sig_hat)), t)
            z = jax.random.normal(key, x.shape, x.dtype)
            # double where: keeps the gradient finite where no noise is added
            var = jnp.where(churned, sig_hat**2 - sig_t**2, 1.0)
            y = y + jnp.where(churned, jnp.sqrt(var), 0.0) * self.s_noise * z
        d = (y - D(t_hat, process.alpha(t_hat) * y)) / sig_hat
        y1 = y + (sig_s - sig_hat) * d
        d1 = (y1 - D(s, process.alpha(s) * y1)) / sig_s
        y1 = y + (sig_s - sig_hat) * 0.5 * (d + d1)
        return process.alpha(s) * y1, state
