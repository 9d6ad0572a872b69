r"""Interpolant processes of flow matching and rectified flow, as forward processes.

An interpolant joins the data to pure noise in finite time: $X_t = \alpha(t) X_0 + \sigma(t) Z$
with $\alpha(0) = 1$, $\sigma(0) = 0$ and $\alpha(T) = 0$, $\sigma(T) = 1$, so the law at $T$
is *exactly* $N(0, I)$: no initialisation error, and the log-SNR is $-\infty$ there.

* `LinearInterpolant`: $\alpha = 1 - t$, $\sigma = t$ on $[0, 1]$, the straight paths of
  rectified flow (Liu, Gong & Liu 2023, "Flow Straight and Fast", arXiv:2209.03003) and of
  flow matching with the optimal-transport conditional path (Lipman et al. 2023, "Flow
  Matching for Generative Modeling", arXiv:2210.02747).
* `CosineInterpolant`: $\alpha = \cos(\pi t/2)$, $\sigma = \sin(\pi t/2)$, variance preserving
  ($\alpha^2 + \sigma^2 = 1$), the trigonometric interpolant of Albergo & Vanden-Eijnden
  (2023, "Building Normalizing Flows with Stochastic Interpolants", arXiv:2209.15571).

Both are linear SDEs like every `AbstractProcess` ($f = \dot\alpha/\alpha$,
$g^2 = \dot{(\sigma^2)} - 2 f\sigma^2$), which is how samplers, losses and the Fokker–Planck
solver accept them; but $f$ and $g^2$ are infinite at $t = T$ (where $\alpha = 0$). The
marginal velocity $v = \dot\alpha\, E[X_0|x] + \dot\sigma\, E[Z|x]$ stays finite there, so
each interpolant also gives the exact derivatives $\dot\alpha$, $\dot\sigma$
(`alpha_dot`, `sigma_dot`), which the velocity conversions of `jaxdiff.velocity` use.
"""


import abc

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from .processes import AbstractProcess

Scalar = Float[ArrayLike, ""]


def _t(t):
    t = jnp.asarray(t)
    return t.astype(jnp.result_type(t, float))


class AbstractInterpolant(AbstractProcess):
    """An interpolant `X_t = alpha(t) X_0 + sigma(t) Z` from the data (`t = 0`) to exactly
    `N(0, I)` (`t = T`), with closed-form time derivatives of `alpha` and `sigma`."""

    T: eqx.AbstractVar[Scalar]

    @abc.abstractmethod
    def alpha_dot(self, t: Scalar) -> Float[Array, ""]:
        """`d alpha / dt`, finite on all of `[0, T]`."""

    @abc.abstractmethod
    def sigma_dot(self, t: Scalar) -> Float[Array, ""]:
        """`d sigma / dt`, finite on all of `[0, T]`."""


class LinearInterpolant(AbstractInterpolant):
    """Rectified flow's straight interpolant: `alpha = 1 - t`, `sigma = t`, `T = 1`.

    `log_snr(1) = -inf`, `f = -1/(1 - t)`, `g^2 = 2t/(1 - t)` (both infinite at `T`)."""

    T: float = eqx.field(static=True)

    def __init__(self):
        self.T = 1.0

    def log_alpha(self, t):
        return jnp.log1p(-_t(t))

    def sigma2(self, t):
        return jnp.square(_t(t))

    def f(self, t):
        return -1.0 / (1.0 - _t(t))

    def g2(self, t):
        t = _t(t)
        return 2 * t / (1.0 - t)

    def t_from_log_snr(self, log_snr):
        # lambda = 2 log((1 - t)/t)  <=>  t = sigmoid(-lambda/2); lambda = -inf gives t = 1
        return 1.0 / (1.0 + jnp.exp(0.5 * jnp.asarray(log_snr)))

    @property
    def prior_std(self):
        return 1.0

    def alpha_dot(self, t):
        return -jnp.ones_like(_t(t))

    def sigma_dot(self, t):
        return jnp.ones_like(_t(t))


class CosineInterpolant(AbstractInterpolant):
    """The trigonometric interpolant: `alpha = cos(pi t/2)`, `sigma = sin(pi t/2)`, `T = 1`.

    `alpha` is computed as `sin(pi (1 - t)/2)`, so it is exactly 0 at `t = 1` (where
    `cos(pi/2)` rounds to 6e-17). `f = -(pi/2) tan(pi t/2)`, `g^2 = pi tan(pi t/2)`."""

    T: float = eqx.field(static=True)

    def __init__(self):
        self.T = 1.0

    def _half(self, t):
        return 0.5 * jnp.pi * _t(t)

    def _cos(self, t):
        return jnp.sin(0.5 * jnp.pi * (1.0 - _t(t)))

    def log_alpha(self, t):
        return jnp.log(self._cos(t))

    def sigma2(self, t):
        return jnp.square(jnp.sin(self._half(t)))

    def f(self, t):
        return -0.5 * jnp.pi * jnp.sin(self._half(t)) / self._cos(t)

    def g2(self, t):
        return jnp.pi * jnp.sin(self._half(t)) / self._cos(t)

    def t_from_log_snr(self, log_snr):
        # lambda = 2 log cot(pi t/2)  <=>  t = (2/pi) arctan(exp(-lambda/2))
        return (2 / jnp.pi) * jnp.arctan(jnp.exp(-0.5 * jnp.asarray(log_snr)))

    @property
    def prior_std(self):
        return 1.0

    def alpha_dot(self, t):
        return -0.5 * jnp.pi * jnp.sin(self._half(t))

    def sigma_dot(self, t):
        return 0.5 * jnp.pi * self._cos(t)
