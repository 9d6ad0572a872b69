r"""DDPM (ancestral) and DDIM on the grid of a continuous-time process.

Both use the exact Gaussian transitions of a point-started linear process (`bridge.py`) with
the unknown $x_0$ replaced by the denoiser $\hat x_0 = D(t, x_t)$:

* **DDPM** (Ho et al. 2020): $x_s \sim N(c_t x_t + c_0 \hat x_0, \mathrm{std}^2 I)$, the bridge
  $X_s | X_t, X_0 = \hat x_0$, i.e. the posterior $q(x_{k-1} | x_k, x_0)$ with
  $\bar\alpha_k = \alpha(t_k)^2$. As the steps shrink it becomes Euler–Maruyama for the
  reverse SDE.
* **DDIM** (Song, Meng & Ermon 2021):
  $x_s = \alpha_s \hat x_0 + \sqrt{\sigma_s^2 - c^2}\,\hat\varepsilon + c\,z$ with
  $\hat\varepsilon = (x_t - \alpha_t \hat x_0)/\sigma_t$ and $c = \eta \cdot \mathrm{std}$.
  `eta = 0` is the probability-flow map of the point-started process (deterministic,
  first order; the same map as DPM-Solver++ of order 1); `eta = 1` is DDPM.

Each step uses one denoiser evaluation; for a point mass (one-point `PointCloud`) the
denoiser is exact and both samplers have no discretisation error at all.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import ArrayLike, Float

from .._checks import is_concrete
from .base import AbstractStepSampler, denoiser
from .bridge import bridge_coefficients

Scalar = Float[ArrayLike, ""]


class DDPM(AbstractStepSampler):
    """Ancestral sampling with the DDPM posterior step on the grid (one evaluation per step)."""

    def nfe(self, steps):
        return steps

    def init_state(self, score, process, ts, x):
        return None

    def step(self, key, score, process, t, s, x, state):
        x0 = denoiser(score, process)(t, x)
        c_t, c_0, std = bridge_coefficients(process, t, s)
        # same z as ReverseSDE's step k: DDPM and Euler-Maruyama then share their noise
        z = jax.random.normal(key, x.shape, x.dtype)
        return c_t * x + c_0 * x0 + std * z, state


class DDIM(AbstractStepSampler):
    """DDIM with stochasticity `eta` in `[0, 1]` (0: deterministic, 1: DDPM)."""

    eta: Scalar = 0.0

    def __init__(self, eta: Scalar = 0.0):
        """**Arguments:** `eta`: the fraction of the DDPM posterior noise kept, in `[0, 1]`."""
        if is_concrete(eta) and not 0.0 <= float(eta) <= 1.0:
            raise ValueError(f"`eta` must lie in [0, 1], got {eta}")
        self.eta = eta

    def nfe(self, steps):
        return steps

    def init_state(self, score, process, ts, x):
        return None

    def step(self, key, score, process, t, s, x, state):
        x0 = denoiser(score, process)(t, x)
        alpha_t, sigma_t, alpha_s = process.alpha(t), process.sigma(t), process.alpha(s)
        eps = (x - alpha_t * x0) / sigma_t
        if is_concrete(self.eta) and float(self.eta) == 0.0:
            return alpha_s * x0 + process.sigma(s) * eps, state
        dlam = process.log_snr(t) - process.log_snr(s)
        one_minus_r = -jnp.expm1(dlam)  # bridge variance / sigma_s^2
        sigma2_s = process.sigma2(s)
        c = self.eta * jnp.sqrt(sigma2_s * one_minus_r)
        keep = jnp.sqrt(sigma2_s * (1 - self.eta**2 * one_minus_r))  # sqrt(sigma_s^2 - c^2)
        z = jax.random.normal(key, x.shape, x.dtype)
        return alpha_s * x0 + keep * eps + c * z, state
