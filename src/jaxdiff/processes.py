r"""Forward (noising) processes: linear SDEs with Gaussian marginals.

Every process here is a linear SDE on `[0, T]`

$$dX_t = f(t) X_t\,dt + g(t)\,dW_t,$$

whose marginal given the data is exact: $X_t = \alpha(t) X_0 + \sigma(t) Z$ with
$Z \sim N(0, I)$, $f = d\log\alpha/dt$ and $g^2 = d\sigma^2/dt - 2 f \sigma^2$.

Numerics near $t = 0$: each process writes $\sigma(t)^2$ in an `expm1`-style form, so
`sigma(1e-6)` keeps full relative accuracy in float32.

The log signal-to-noise ratio is $\lambda(t) = \log(\alpha^2 / \sigma^2)$ (decreasing in
$t$); `t_from_log_snr` inverts it in closed form (used by log-SNR time grids and by
exponential-integrator samplers).

Parameters are stored as given: Python floats stay static under `eqx.filter_jit`; pass
JAX arrays to differentiate with respect to a parameter (e.g. `VP(beta_max=jnp.array(20.))`).
"""


import abc
import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ._checks import is_concrete

Scalar = Float[ArrayLike, ""]


def _positive(name: str, value, *, allow_zero: bool = False):
    if isinstance(value, (int, float)) or (is_concrete(value) and jnp.ndim(value) == 0):
        v = float(np.asarray(value))
        ok = v >= 0 if allow_zero else v > 0
        if not (ok and math.isfinite(v)):
            bound = ">= 0" if allow_zero else "> 0"
            raise ValueError(f"`{name}` must be finite and {bound}, got {v}")
    return value


class AbstractProcess(eqx.Module):
    """A linear forward SDE `dX = f(t) X dt + g(t) dW` on `[0, T]` with
    `X_t | X_0 ~ N(alpha(t) X_0, sigma(t)^2 I)`.

    Subclasses give `log_alpha`, `sigma2`, `f`, `g2`, `t_from_log_snr` and `prior_std`;
    everything else follows from those.
    """

    T: eqx.AbstractVar[Scalar]

    @abc.abstractmethod
    def log_alpha(self, t: Scalar) -> Float[Array, ""]:
        """`log alpha(t)`, the log of the signal scale of `X_t | X_0`."""

    @abc.abstractmethod
    def sigma2(self, t: Scalar) -> Float[Array, ""]:
        """`sigma(t)^2`, the noise variance of `X_t | X_0`, accurate as `t -> 0`."""

    @abc.abstractmethod
    def f(self, t: Scalar) -> Float[Array, ""]:
        """Drift coefficient `f(t) = d log alpha / dt`."""

    @abc.abstractmethod
    def g2(self, t: Scalar) -> Float[Array, ""]:
        """Squared diffusion coefficient `g(t)^2 = d sigma^2/dt - 2 f sigma^2`."""

    @abc.abstractmethod
    def t_from_log_snr(self, log_snr: Scalar) -> Float[Array, ""]:
        """The time `t` at which `log(alpha^2 / sigma^2) = log_snr` (inverse of `log_snr`)."""

    @property
    @abc.abstractmethod
    def prior_std(self) -> Float[ArrayLike, ""]:
        """Standard deviation of the isotropic Gaussian prior used at `T`."""

    # ---- derived quantities -------------------------------------------------------------

    def alpha(self, t: Scalar) -> Float[Array, ""]:
        """Signal scale `alpha(t)`."""
        return jnp.exp(self.log_alpha(t))

    def sigma(self, t: Scalar) -> Float[Array, ""]:
        """Noise scale `sigma(t)`."""
        return jnp.sqrt(self.sigma2(t))

    def log_snr(self, t: Scalar) -> Float[Array, ""]:
        """`lambda(t) = log(alpha(t)^2 / sigma(t)^2)`, decreasing in `t`."""
        return 2 * self.log_alpha(t) - jnp.log(self.sigma2(t))

    def drift(self, t: Scalar, x: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
        """Forward drift `f(t) x`."""
        return self.f(t) * x

    def diffusion(self, t: Scalar) -> Float[Array, ""]:
        """Forward diffusion coefficient `g(t)` (a scalar: the noise is isotropic)."""
        return jnp.sqrt(self.g2(t))

    def sample_marginal(
        self, key: PRNGKeyArray, t: Scalar, x0: Float[Array, "*shape"]
    ) -> Float[Array, "*shape"]:
        """One draw of `X_t = alpha(t) x0 + sigma(t) Z` given `X_0 = x0`."""
        z = jax.random.normal(key, jnp.shape(x0), dtype=jnp.result_type(x0, float))
        return self.alpha(t) * x0 + self.sigma(t) * z

    def prior_sample(self, key: PRNGKeyArray, shape: tuple[int, ...], dtype=None) -> Float[Array, "..."]:
        """Draws from the prior `N(0, prior_std^2 I)` at `T`; `shape` is batch-first.

        Row `i` of a batch uses `fold_in(key, i)`, so it does not change with the batch size.
        """
        dtype = dtype or jnp.result_type(float)
        shape = tuple(shape)
        if len(shape) < 2:
            return self.prior_std * jax.random.normal(key, shape, dtype)
        keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(shape[0]))
        z = jax.vmap(lambda k: jax.random.normal(k, shape[1:], dtype))(keys)
        return self.prior_std * z

    def prior_log_prob(self, x: Float[Array, "*shape"]) -> Float[Array, ""]:
        """Log-density of the prior at one sample `x` (all of `x`'s entries are one sample)."""
        var = jnp.square(self.prior_std)
        n = jnp.size(x)
        return -0.5 * jnp.sum(jnp.square(x)) / var - 0.5 * n * jnp.log(2 * jnp.pi * var)


class OU(AbstractProcess):
    """The seed papers' Ornstein–Uhlenbeck process `dX = -X dt + sqrt(2) dW`.

    `alpha = e^-t`, `sigma^2 = 1 - e^-2t`; stationary law `N(0, I)`.
    """

    T: Scalar = 5.0

    def __init__(self, T: Scalar = 5.0):
        """**Arguments:** `T`: the horizon (`alpha(T) = e^-T`; 5.0 gives 6.7e-3)."""
        self.T = _positive("T", T)

    def log_alpha(self, t):
        return -jnp.asarray(t)

    def sigma2(self, t):
        return -jnp.expm1(-2 * jnp.asarray(t))

    def f(self, t):
        return -jnp.ones_like(jnp.asarray(t, dtype=jnp.result_type(t, float)))

    def g2(self, t):
        return 2 * jnp.ones_like(jnp.asarray(t, dtype=jnp.result_type(t, float)))

    def t_from_log_snr(self, log_snr):
        # e^-2t / (1 - e^-2t) = e^lambda  <=>  e^-2t = sigmoid(lambda)
        return 0.5 * jax.nn.softplus(-jnp.asarray(log_snr))

    @property
    def prior_std(self):
        return 1.0


def _linear_beta(p, t):
    return p.beta_min + (jnp.asarray(t) / p.T) * (p.beta_max - p.beta_min)


def _linear_B(p, t):
    t = jnp.asarray(t)
    return p.beta_min * t + 0.5 * (p.beta_max - p.beta_min) * t**2 / p.T


def _t_from_linear_B(p, B):
    a = 0.5 * (p.beta_max - p.beta_min) / p.T
    b = p.beta_min
    # the positive root of a t^2 + b t - B = 0, in the cancellation-free form
    return 2 * B / (b + jnp.sqrt(b**2 + 4 * a * B))


class VP(AbstractProcess):
    """Variance-preserving SDE with a linear schedule (Song et al. 2021):
    `dX = -beta(t)/2 X dt + sqrt(beta(t)) dW`, `beta(t) = beta_min + (t/T)(beta_max - beta_min)`.

    `alpha = exp(-B/2)`, `sigma^2 = 1 - exp(-B)` with `B(t) = int_0^t beta`.
    """

    beta_min: Scalar = 0.1
    beta_max: Scalar = 20.0
    T: Scalar = 1.0

    def __init__(self, beta_min: Scalar = 0.1, beta_max: Scalar = 20.0, T: Scalar = 1.0):
        """**Arguments:** `beta_min`, `beta_max`: the schedule's end points (> 0);
        `T`: the horizon."""
        self.beta_min = _positive("beta_min", beta_min)
        self.beta_max = _positive("beta_max", beta_max)
        self.T = _positive("T", T)

    def beta(self, t):
        """`beta(t)`, the linear noise rate."""
        return _linear_beta(self, t)

    def B(self, t):
        """`B(t) = int_0^t beta`."""
        return _linear_B(self, t)

    def log_alpha(self, t):
        return -0.5 * self.B(t)

    def sigma2(self, t):
        return -jnp.expm1(-self.B(t))

    def f(self, t):
        return -0.5 * self.beta(t)

    def g2(self, t):
        return self.beta(t)

    def t_from_log_snr(self, log_snr):
        return _t_from_linear_B(self, jax.nn.softplus(-jnp.asarray(log_snr)))

    @property
    def prior_std(self):
        return 1.0


class SubVP(AbstractProcess):
    """Song et al.'s sub-VP SDE: `dX = -beta/2 X dt + sqrt(beta (1 - e^{-2B})) dW`.

    `alpha = exp(-B/2)`, `sigma = 1 - exp(-B)` (so `sigma^2` is below VP's), linear `beta`.
    """

    beta_min: Scalar = 0.1
    beta_max: Scalar = 20.0
    T: Scalar = 1.0

    def __init__(self, beta_min: Scalar = 0.1, beta_max: Scalar = 20.0, T: Scalar = 1.0):
        """**Arguments:** as for `VP`."""
        self.beta_min = _positive("beta_min", beta_min)
        self.beta_max = _positive("beta_max", beta_max)
        self.T = _positive("T", T)

    def log_alpha(self, t):
        return -0.5 * _linear_B(self, t)

    def sigma2(self, t):
        return jnp.square(jnp.expm1(-_linear_B(self, t)))

    def f(self, t):
        return -0.5 * _linear_beta(self, t)

    def g2(self, t):
        return _linear_beta(self, t) * (-jnp.expm1(-2 * _linear_B(self, t)))

    def t_from_log_snr(self, log_snr):
        # u = e^-B solves u / (1-u)^2 = r = e^lambda; the small root, written stably:
        # B = log1p((1 + sqrt(1 + 4 r)) / (2 r)).
        r = jnp.exp(jnp.asarray(log_snr))
        B = jnp.log1p((1 + jnp.sqrt(1 + 4 * r)) / (2 * r))
        return _t_from_linear_B(self, B)

    @property
    def prior_std(self):
        return 1.0


class CosineVP(AbstractProcess):
    """Variance-preserving process with Nichol & Dhariwal's cosine schedule:
    `alpha(t)^2 = cos^2(u(t)) / cos^2(u(0))`, `u(t) = (pi/2) (t + s) / (1 + s)`, `g^2 = -2 f`.

    The schedule's drift `f = -(pi/2)/(1+s) tan u` is unbounded at `t = 1`, so the default
    horizon stops at `T = 0.98` (`alpha(T) = 0.031`, `g(T)^2 = 100`, about five times VP's
    largest `beta`).
    """

    s: Scalar = 0.008
    T: Scalar = 0.98

    def __init__(self, s: Scalar = 0.008, T: Scalar = 0.98):
        """**Arguments:** `s`: the offset that keeps `beta` finite at 0; `T < 1`: the horizon."""
        self.s = _positive("s", s)
        self.T = _positive("T", T)
        if is_concrete(T) and float(T) >= 1.0:
            raise ValueError(f"`T` must be < 1 for the cosine schedule (its drift blows up at 1), got {T}")

    def _u(self, t):
        return (jnp.pi / 2) * (jnp.asarray(t) + self.s) / (1 + self.s)

    def log_alpha(self, t):
        return jnp.log(jnp.cos(self._u(t))) - jnp.log(jnp.cos(self._u(0.0)))

    def sigma2(self, t):
        # cos^2 u0 - cos^2 u = sin(u - u0) sin(u + u0): no cancellation as t -> 0
        u, u0 = self._u(t), self._u(0.0)
        du = (jnp.pi / 2) * jnp.asarray(t) / (1 + self.s)  # u - u0, without the cancellation
        return jnp.sin(du) * jnp.sin(u + u0) / jnp.square(jnp.cos(u0))

    def f(self, t):
        return -(jnp.pi / 2) / (1 + self.s) * jnp.tan(self._u(t))

    def g2(self, t):
        return -2 * self.f(t)

    def t_from_log_snr(self, log_snr):
        # alpha^2 = sigmoid(lambda)  =>  cos u = cos(u0) sqrt(sigmoid(lambda))
        c = jnp.cos(self._u(0.0)) * jnp.exp(0.5 * jax.nn.log_sigmoid(jnp.asarray(log_snr)))
        u = jnp.arccos(c)
        return u * (1 + self.s) * 2 / jnp.pi - self.s

    @property
    def prior_std(self):
        return 1.0


class VE(AbstractProcess):
    """Variance-exploding SDE with a geometric noise scale: `dX = g(t) dW`,
    `sigma(t)^2 = sigma_min^2 ((sigma_max/sigma_min)^(2t/T) - 1)`, `alpha = 1`.

    This is Song et al.'s geometric schedule written so that `sigma(0) = 0` exactly (their
    marginal `sigma_min (sigma_max/sigma_min)^t` ignores the variance present at `t = 0`);
    `g^2 = d sigma^2 / dt`. The prior is `N(0, sigma(T)^2 I)`.
    """

    sigma_min: Scalar = 0.01
    sigma_max: Scalar = 50.0
    T: Scalar = 1.0

    def __init__(self, sigma_min: Scalar = 0.01, sigma_max: Scalar = 50.0, T: Scalar = 1.0):
        """**Arguments:** `0 < sigma_min < sigma_max`; `T`: the horizon."""
        self.sigma_min = _positive("sigma_min", sigma_min)
        self.sigma_max = _positive("sigma_max", sigma_max)
        self.T = _positive("T", T)
        if is_concrete(sigma_min, sigma_max) and float(sigma_max) <= float(sigma_min):
            raise ValueError(f"`sigma_max` ({sigma_max}) must exceed `sigma_min` ({sigma_min})")

    def _rate(self):
        return 2 * jnp.log(self.sigma_max / self.sigma_min) / self.T

    def log_alpha(self, t):
        return jnp.zeros_like(jnp.asarray(t, dtype=jnp.result_type(t, float)))

    def sigma2(self, t):
        return self.sigma_min**2 * jnp.expm1(self._rate() * jnp.asarray(t))

    def f(self, t):
        return jnp.zeros_like(jnp.asarray(t, dtype=jnp.result_type(t, float)))

    def g2(self, t):
        return self.sigma_min**2 * self._rate() * jnp.exp(self._rate() * jnp.asarray(t))

    def t_from_log_snr(self, log_snr):
        return jnp.log1p(jnp.exp(-jnp.asarray(log_snr)) / self.sigma_min**2) / self._rate()

    @property
    def prior_std(self):
        return self.sigma(self.T)


DEFAULT_T_END_FRACTION = 1e-3


def default_t_end(process: AbstractProcess) -> Scalar:
    """The package-wide default stopping time `1e-3 * T` (sampling, likelihood, the CLI)."""
    return DEFAULT_T_END_FRACTION * process.T


# ---- the reverse-time dynamics -------------------------------------------------------------


def reverse_coefficients(
    process: AbstractProcess, t: Scalar, *, noise: Scalar = 1.0
) -> tuple[Float[Array, ""], Float[Array, ""], Float[Array, ""]]:
    r"""`(c_x, c_s, a)` of the reverse-time family of `process` at time `t`.

    In reverse time $\tau = T - t$, the family
    $dY = [c_x Y + c_s\, s(t, Y)]\,d\tau + \sqrt{a}\,d\bar W_\tau$ with
    $c_x = -f(t)$, $c_s = \frac{1 + \lambda^2}{2} g(t)^2$ and $a = \lambda^2 g(t)^2$
    (`noise` $= \lambda \ge 0$) has the forward marginals $p_t$ for the exact score $s$
    (Anderson 1982; Song et al. 2021, "Score-based generative modeling through stochastic
    differential equations", arXiv:2011.13456). `noise = 1` is the reverse SDE, `noise = 0`
    the probability-flow ODE. This is the one place the reverse drift is written: every
    sampler, the likelihood and the reverse Fokker–Planck equations use it.
    """
    g2 = process.g2(t)
    lam2 = noise * noise
    return -process.f(t), 0.5 * (1 + lam2) * g2, lam2 * g2


def reverse_drift(
    process: AbstractProcess,
    score: Callable[[Scalar, Array], Array],
    t: Scalar,
    x: Float[Array, "*shape"],
    *,
    noise: Scalar = 1.0,
) -> Float[Array, "*shape"]:
    r"""The reverse-time drift $-f(t)\,x + \frac{1 + \lambda^2}{2} g(t)^2\, s(t, x)$ of one
    sample `x` (`noise` $= \lambda$; see `reverse_coefficients`), as a velocity in reverse
    time $\tau = T - t$. The probability-flow ODE in ordinary time is
    $dx/dt = -$`reverse_drift(process, score, t, x, noise=0.0)`."""
    c_x, c_s, _ = reverse_coefficients(process, t, noise=noise)
    return c_x * x + c_s * score(t, x)
