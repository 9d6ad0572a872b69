r"""Approximate posterior sampling for a `LinearObservation` with an unconditional prior score.

The posterior score splits as $\nabla \log p_t(x \mid y) = \nabla \log p_t(x) +
\nabla \log p_t(y \mid x)$; the first term is the prior score, the second is intractable
and each method approximates it through Tweedie's denoiser $\hat x_0(t, x) = E[X_0 \mid X_t = x]$:

* **DPS** (Chung et al., "Diffusion Posterior Sampling for General Noisy Inverse
  Problems", ICLR 2023, arXiv:2209.14687): $p_t(y \mid x) \approx N(y;\, A \hat x_0,\; s^2 I)$,
  so the correction is $J^\top A^\top (y - A\hat x_0) / s^2$ with $J = \partial \hat x_0 / \partial x$.
  `DPS` keeps this likelihood form (it makes DPS a score), times `scale`. `DPSSampler` is
  the paper's own algorithm (its Algorithm 1, Gaussian noise), a sampler: after each
  ancestral step $x_t \to x'_s$,
  $x_s = x'_s - \zeta_t \nabla_{x_t} |y - A\hat x_0(t, x_t)|^2$ with the normalised step
  $\zeta_t = \zeta' / |y - A\hat x_0(t, x_t)|$, i.e.
  $x_s = x'_s + 2\zeta' J^\top A^\top r / |r|$ with $r = y - A\hat x_0$; $s$ does not enter.
* **PiGDM** (Song, Vahdat, Mardani & Kautz, "Pseudoinverse-Guided Diffusion Models for
  Inverse Problems", ICLR 2023): $p_t(y \mid x) \approx N(y;\, A\hat x_0,\; s^2 I + r_t^2 A A^\top)$
  with $r_t^2 = \sigma_d^2\sigma_t^2 / (\alpha_t^2\sigma_d^2 + \sigma_t^2)$, the posterior
  variance of $X_0 \mid X_t$ for data $N(0, \sigma_d^2 I)$; the correction is
  $J^\top A^\top (s^2 I + r_t^2 A A^\top)^{-1} (y - A \hat x_0)$. Noise-free observations
  ($s = 0$) are allowed.

`DPS` and `PiGDM` are score transformations: every sampler takes them. Each evaluation costs one prior
score evaluation plus one vector–Jacobian product through it.

* **Replacement / RePaint** (Lugmayr et al., "RePaint: Inpainting using Denoising Diffusion
  Probabilistic Models", CVPR 2022, arXiv:2201.09865) is a sampler: after each reverse step
  to time $s$ the observed part is replaced by a forward-noised observation,
  $x \leftarrow x + A^+(\alpha_s y + \sigma_s A z - A x)$ (for a mask, the observed pixels
  become $\alpha_s y + \sigma_s z$), and with `resample = r > 1` each step is repeated $r$
  times, re-noising $x_s$ back to $t$ in between, to harmonise the two parts. It treats $y$
  as noise-free.
"""


import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from .._checks import as_float_array, is_concrete
from ..processes import AbstractProcess
from ..sampling.base import AbstractStepSampler, denoiser
from ..scores import AbstractScore, tweedie_denoise, without_time_checks
from .guidance import _process_of, _scale
from .observation import LinearObservation

Scalar = Float[ArrayLike, ""]


def _check_obs(observation, y):
    if not isinstance(observation, LinearObservation):
        raise ValueError(f"`observation` must be a LinearObservation, got {type(observation).__name__}")
    return observation.check_y(y)


class _AbstractLikelihoodGuidance(AbstractScore):
    score: eqx.AbstractVar[AbstractScore]
    observation: eqx.AbstractVar[LinearObservation]
    y: eqx.AbstractVar[Float[Array, " m"]]
    scale: eqx.AbstractVar[Float[Array, ""]]

    def without_time_checks(self):
        return eqx.tree_at(lambda s: s.score, self, without_time_checks(self.score))

    def denoise(self, t, x):
        return tweedie_denoise(self, t, x)

    def _correction(self, t, x, residual_map):
        A = self.observation.A.astype(x.dtype)
        x0, vjp = jax.vjp(lambda z: denoiser(self.score, self.process)(t, z), x)
        r = self.y.astype(x.dtype) - A @ x0.reshape(-1)
        (g,) = vjp((A.T @ residual_map(r)).reshape(x.shape))
        return g


class DPS(_AbstractLikelihoodGuidance):
    r"""Diffusion posterior sampling as a score: prior score plus
    `scale * J^T A^T (y - A x0_hat) / noise_std^2` (needs `noise_std > 0`)."""

    score: AbstractScore
    observation: LinearObservation
    y: Float[Array, " m"]
    scale: Float[Array, ""]
    process: AbstractProcess

    def __init__(self, score, observation: LinearObservation, y, scale: Scalar = 1.0, *, process=None):
        """**Arguments:** `score`, the prior score; `observation`; `y`, shape `(m,)`;
        `scale`, a multiplier of the likelihood term; `process` if `score` is a plain callable."""
        self.y = _check_obs(observation, y)
        s = observation.noise_std
        if is_concrete(s) and float(s) == 0:
            raise ValueError(
                "DPS's likelihood N(y; A x0_hat, noise_std^2) needs `noise_std > 0`; use PiGDM for "
                "noise-free observations"
            )
        self.process = _process_of(score, process, "score")
        self.score = score
        self.observation = observation
        self.scale = _scale(scale)

    def __call__(self, t, x):
        self.observation.check_sample(x)
        v = self.observation.noise_std.astype(x.dtype) ** 2
        g = self._correction(t, x, lambda r: r / v)
        return self.score(t, x) + self.scale.astype(x.dtype) * g


class PiGDM(_AbstractLikelihoodGuidance):
    r"""Pseudoinverse-guided diffusion as a score: prior score plus
    `scale * J^T A^T (s^2 I + r_t^2 A A^T)^{-1} (y - A x0_hat)`."""

    score: AbstractScore
    observation: LinearObservation
    y: Float[Array, " m"]
    scale: Float[Array, ""]
    sigma_data: float = eqx.field(static=True)
    process: AbstractProcess

    def __init__(
        self,
        score,
        observation: LinearObservation,
        y,
        scale: Scalar = 1.0,
        *,
        sigma_data: float = 1.0,
        process=None,
    ):
        """**Arguments:** `score`, the prior score; `observation`; `y`, shape `(m,)`; `scale`;
        `sigma_data`, the data scale in `r_t^2`; `process` if `score` is a plain callable."""
        self.y = _check_obs(observation, y)
        if not (isinstance(sigma_data, (int, float)) and sigma_data > 0):
            raise ValueError(f"`sigma_data` must be a positive number, got {sigma_data!r}")
        self.process = _process_of(score, process, "score")
        self.score = score
        self.observation = observation
        self.scale = _scale(scale)
        self.sigma_data = float(sigma_data)

    def __call__(self, t, x):
        self.observation.check_sample(x)
        p, sd2 = self.process, self.sigma_data**2
        r2 = sd2 * p.sigma2(t) / (p.alpha(t) ** 2 * sd2 + p.sigma2(t))
        A = self.observation.A.astype(x.dtype)
        cov = self.observation.noise_std.astype(x.dtype) ** 2 * jnp.eye(A.shape[0], dtype=x.dtype) + r2 * (
            A @ A.T
        )
        g = self._correction(t, x, lambda r: jnp.linalg.solve(cov, r))
        return self.score(t, x) + self.scale.astype(x.dtype) * g


class Replacement(AbstractStepSampler):
    """Replacement (RePaint-style) posterior sampling: a one-step `inner` sampler, the
    observed part replaced after every step by the forward-noised `y`, each step repeated
    `resample` times with re-noising in between (`resample = 1`: plain replacement)."""

    observation: LinearObservation
    y: Float[Array, " m"]
    inner: AbstractStepSampler
    resample: int = eqx.field(static=True)
    pinv: Float[Array, "d m"]

    def __init__(
        self, observation: LinearObservation, y, inner: AbstractStepSampler | None = None, resample: int = 1
    ):
        """**Arguments:** `observation`; `y`, shape `(m,)`; `inner`, a one-step sampler without
        multistep state (default `DDPM()`); `resample`, repetitions per step (RePaint's `r`)."""
        from ..sampling import DDPM

        self.y = _check_obs(observation, y)
        inner = DDPM() if inner is None else inner
        if not isinstance(inner, AbstractStepSampler):
            raise ValueError(f"`inner` must be a one-step sampler such as DDPM(), got {type(inner).__name__}")
        if not isinstance(resample, (int, np.integer)) or isinstance(resample, bool) or resample < 1:
            raise ValueError(f"`resample` must be a positive integer, got {resample!r}")
        self.observation = observation
        self.inner = inner
        self.resample = int(resample)
        self.pinv = jnp.linalg.pinv(observation.A)

    def nfe(self, steps):
        n = self.inner.nfe(steps)
        return None if n is None else n * self.resample

    def init_state(self, score, process, ts, x):
        return self.inner.init_state(score, process, ts, x)

    def _replace(self, key, process, s, x):
        A, P = self.observation.A.astype(x.dtype), self.pinv.astype(x.dtype)
        z = jax.random.normal(key, (A.shape[1],), x.dtype)
        target = process.alpha(s) * self.y.astype(x.dtype) + process.sigma(s) * (A @ z)
        flat = x.reshape(-1)
        return (flat + P @ (target - A @ flat)).reshape(x.shape)

    def step(self, key, score, process, t, s, x, state):
        self.observation.check_sample(x)
        for r in range(self.resample):
            k_step, k_rep, k_back = jax.random.split(jax.random.fold_in(key, r), 3)
            xs, new_state = self.inner.step(k_step, score, process, t, s, x, state)
            xs = self._replace(k_rep, process, s, xs)
            if r < self.resample - 1:  # back to t: X_t | X_s ~ N(a X_s, (sigma_t^2 - a^2 sigma_s^2) I)
                a = process.alpha(t) / process.alpha(s)
                std = jnp.sqrt(jnp.maximum(process.sigma2(t) - a**2 * process.sigma2(s), 0.0))
                x = a * xs + std * jax.random.normal(k_back, x.shape, x.dtype)
        return xs, new_state


def _step_size(step_size):
    z = as_float_array("step_size", step_size)
    if z.shape != ():
        raise ValueError(f"`step_size` must be a scalar (the paper's zeta'), got shape {z.shape}")
    if is_concrete(z):
        v = float(z)
        if not (np.isfinite(v) and v > 0):
            raise ValueError(f"`step_size` must be finite and > 0 (the paper's zeta', e.g. 1.0), got {v}")
        return z
    return eqx.error_if(z, ~(jnp.isfinite(z) & (z > 0)), "`step_size` must be finite and > 0")


class DPSSampler(AbstractStepSampler):
    r"""Diffusion posterior sampling as published (Chung et al. 2023, Algorithm 1): an
    `inner` ancestral step $x_t \to x'_s$, then the normalised measurement step

    $$x_s = x'_s - \frac{\zeta'}{|y - A\hat x_0|}\,\nabla_{x_t} |y - A\hat x_0(t, x_t)|^2
    = x'_s + 2\zeta'\, \frac{J^\top A^\top (y - A\hat x_0)}{|y - A\hat x_0|},$$

    with $\hat x_0$ the Tweedie denoiser of the score the sampler is given and
    $J = \partial\hat x_0/\partial x_t$ (one vector–Jacobian product per step). The step
    does not depend on the grid spacing or on `noise_std`: each step moves at most
    $2\zeta' \|J\|\,\|A\|$, so the total pull grows with the number of steps.
    """

    observation: LinearObservation
    y: Float[Array, " m"]
    step_size: Float[Array, ""]
    inner: AbstractStepSampler

    def __init__(
        self,
        observation: LinearObservation,
        y,
        step_size: Scalar = 1.0,
        inner: AbstractStepSampler | None = None,
    ):
        """**Arguments:** `observation`; `y`, shape `(m,)`; `step_size`, the paper's constant
        `zeta' > 0` (an array: differentiable); `inner`, a one-step sampler without multistep
        state (default `DDPM()`, the paper's ancestral step)."""
        from ..sampling import DDPM

        self.y = _check_obs(observation, y)
        inner = DDPM() if inner is None else inner
        if not isinstance(inner, AbstractStepSampler):
            raise ValueError(f"`inner` must be a one-step sampler such as DDPM(), got {type(inner).__name__}")
        self.observation = observation
        self.step_size = _step_size(step_size)
        self.inner = inner

    def nfe(self, steps):
        # the correction's denoiser is evaluated at the inner step's own (t, x_t); its VJP is a
        # backward pass, not a further evaluation
        return self.inner.nfe(steps)

    def init_state(self, score, process, ts, x):
        return self.inner.init_state(score, process, ts, x)

    def step(self, key, score, process, t, s, x, state):
        self.observation.check_sample(x)
        A = self.observation.A.astype(x.dtype)
        x0, vjp = jax.vjp(lambda z: denoiser(score, process)(t, z), x)
        r = self.y.astype(x.dtype) - A @ x0.reshape(-1)
        sq = jnp.sum(r**2)
        # |r| = 0 only when y is matched exactly: no correction (and no NaN in its gradient)
        inv_norm = jnp.where(sq > 0, jax.lax.rsqrt(jnp.where(sq > 0, sq, 1.0)), 0.0)
        (g,) = vjp((A.T @ r).reshape(x.shape))  # J^T A^T r = -grad |r|^2 / 2
        xs, new_state = self.inner.step(key, score, process, t, s, x, state)
        return xs + 2 * self.step_size.astype(x.dtype) * inv_norm * g, new_state
