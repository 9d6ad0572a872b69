r"""Velocities: the flow-matching view of a forward process, and its exact conversions.

For $X_t = \alpha(t) X_0 + \sigma(t) Z$ the marginals $p_t$ solve the continuity equation
$\partial_t p + \mathrm{div}(p\,v) = 0$ with the *marginal velocity*

$$v(t, x) = E[\dot X_t \mid X_t = x] = \dot\alpha\, E[X_0 | x] + \dot\sigma\, E[Z | x]$$

(Lipman et al. 2023, "Flow Matching for Generative Modeling", arXiv:2210.02747; Liu, Gong &
Liu 2023, arXiv:2209.03003; Albergo & Vanden-Eijnden 2023, arXiv:2209.15571). With the
denoiser $D = E[X_0|x]$ and the score $s = \nabla\log p_t$, Tweedie's formulas
$x = \alpha D + \sigma E[Z|x]$ and $E[Z|x] = -\sigma s$ make the three interchangeable:

$$v = \dot\alpha D + \sigma\dot\sigma\,\frac{x - \alpha D}{\sigma^2}
    = \frac{\dot\alpha}{\alpha}x + \Big(\frac{\dot\alpha}{\alpha}\sigma^2 - \sigma\dot\sigma\Big)s
    = f x - \tfrac12 g^2 s,$$

the last form being the probability-flow drift of the equivalent diffusion
($f = \dot\alpha/\alpha$, $g^2 = 2\sigma\dot\sigma - 2f\sigma^2$). Back from a velocity,
with $\Delta = \alpha\sigma\dot\sigma - \dot\alpha\sigma^2$ ($= \alpha g^2/2 > 0$),

$$D = \frac{\sigma\dot\sigma\, x - \sigma^2 v}{\Delta},\qquad s = -\frac{\alpha v - \dot\alpha x}{\Delta}.$$

All conversions here use the pair $(\dot\alpha, \sigma\dot\sigma)$, which is finite on the whole
of $[0, T]$ for every process (at $t = 0$, $\sigma\dot\sigma = g^2/2$ even where $\dot\sigma$
blows up). At an interpolant's end $t = T$ ($\alpha = 0$) the score carries no information
about the data ($s = -x$ for every law), so the velocity must come from a denoiser or a
velocity, never from a score: this is why samplers take a velocity field (`VelocityScore`).
"""


import abc
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ._checks import check_sample_shape, check_time, is_concrete
from .distributions import AbstractLaw
from .interpolants import AbstractInterpolant
from .network_score import AbstractParametrisation, NetworkScore
from .processes import AbstractProcess, reverse_coefficients, reverse_drift
from .scores import AbstractScore

Scalar = Float[ArrayLike, ""]

# ---------------------------------------------------------------------------------------
# Rates and conversions (the only place they are written)
# ---------------------------------------------------------------------------------------


def rates(process: AbstractProcess, t: Scalar):
    r"""`(alpha, alpha_dot, sigma^2, sigma sigma_dot)` at `t`, finite on `[0, T]`.

    Interpolants give their derivatives in closed form; any other process through its SDE
    coefficients, $\dot\alpha = f\alpha$ and $\sigma\dot\sigma = g^2/2 + f\sigma^2$.
    """
    alpha, sigma2 = process.alpha(t), process.sigma2(t)
    if isinstance(process, AbstractInterpolant):
        return alpha, process.alpha_dot(t), sigma2, process.sigma(t) * process.sigma_dot(t)
    f = process.f(t)
    return alpha, f * alpha, sigma2, 0.5 * process.g2(t) + f * sigma2


def alpha_dot(process: AbstractProcess, t: Scalar) -> Float[Array, ""]:
    """`d alpha / dt` of any process."""
    return rates(process, t)[1]


def sigma_dot(process: AbstractProcess, t: Scalar) -> Float[Array, ""]:
    """`d sigma / dt` of any process (infinite at `t = 0` for a diffusion: `sigma ~ sqrt(t)`)."""
    if isinstance(process, AbstractInterpolant):
        return process.sigma_dot(t)
    _, _, sigma2, ssd = rates(process, t)
    return ssd / jnp.sqrt(sigma2)


def velocity_from_denoiser(process: AbstractProcess, t: Scalar, x: Array, d: Array) -> Array:
    """`v = alpha_dot D + sigma sigma_dot (x - alpha D) / sigma^2` (needs `sigma > 0`)."""
    alpha, alpha_dot, sigma2, ssd = rates(process, t)
    return alpha_dot * d + ssd * (x - alpha * d) / sigma2


def velocity_from_score(process: AbstractProcess, t: Scalar, x: Array, s: Array) -> Array:
    """`v = f x - g^2 s / 2`, the probability-flow drift (needs `alpha > 0`): minus the
    noiseless reverse drift of `reverse_coefficients`."""
    c_x, c_s, _ = reverse_coefficients(process, t, noise=0.0)
    return -(c_x * x + c_s * s)


def denoiser_from_velocity(process: AbstractProcess, t: Scalar, x: Array, v: Array) -> Array:
    """`D = (sigma sigma_dot x - sigma^2 v) / (alpha sigma sigma_dot - alpha_dot sigma^2)`."""
    alpha, alpha_dot, sigma2, ssd = rates(process, t)
    return (ssd * x - sigma2 * v) / (alpha * ssd - alpha_dot * sigma2)


def score_from_velocity(process: AbstractProcess, t: Scalar, x: Array, v: Array) -> Array:
    """`s = -(alpha v - alpha_dot x) / (alpha sigma sigma_dot - alpha_dot sigma^2)`."""
    alpha, alpha_dot, sigma2, ssd = rates(process, t)
    return -(alpha * v - alpha_dot * x) / (alpha * ssd - alpha_dot * sigma2)


def denoiser_from_score(process: AbstractProcess, t: Scalar, x: Array, s: Array) -> Array:
    """Tweedie: `D = (x + sigma^2 s) / alpha` (needs `alpha > 0`)."""
    return (x + process.sigma2(t) * s) / process.alpha(t)


def score_from_denoiser(process: AbstractProcess, t: Scalar, x: Array, d: Array) -> Array:
    """Tweedie: `s = (alpha D - x) / sigma^2` (needs `sigma > 0`)."""
    return (process.alpha(t) * d - x) / process.sigma2(t)


def check_endpoints(process: AbstractProcess, what: str) -> None:
    """Refuse a process whose `X_0` is not the data: `alpha(0) = 1` and `sigma(0) = 0` are
    needed by `what` (checked when the process's parameters are concrete)."""
    if not is_concrete(process):
        return
    with jax.ensure_compile_time_eval():  # also when called inside a traced function
        a0, s0 = float(np.asarray(process.alpha(0.0))), float(np.asarray(process.sigma2(0.0)))
    if abs(a0 - 1.0) > 1e-12 or abs(s0) > 1e-12:
        raise ValueError(
            f"{what} needs a process with alpha(0) = 1 and sigma(0) = 0 (X_0 is the data), but "
            f"{type(process).__name__} has alpha(0) = {a0:.6g}, sigma(0)^2 = {s0:.6g}; "
            "use jd.LinearInterpolant(), jd.CosineInterpolant() or a diffusion process"
        )


# ---------------------------------------------------------------------------------------
# Velocity fields
# ---------------------------------------------------------------------------------------


class AbstractVelocity(eqx.Module):
    """A velocity field `v(t, x)` of a forward `process` on one sample (batch with `jax.vmap`).

    `score`, `denoise` convert it exactly; `as_score()` wraps it as a score, which is how
    every sampler, loss and PDE solver takes it (`jd.sample` does this by itself).
    """

    process: eqx.AbstractVar[AbstractProcess]

    @abc.abstractmethod
    def __call__(self, t: Scalar, x: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
        """The velocity at time `t` of one sample `x`."""

    def score(self, t: Scalar, x: Array) -> Array:
        """The score implied by this velocity (`score_from_velocity`)."""
        return score_from_velocity(self.process, t, x, self(t, x))

    def denoise(self, t: Scalar, x: Array) -> Array:
        """The denoiser implied by this velocity (`denoiser_from_velocity`); finite at `T`."""
        return denoiser_from_velocity(self.process, t, x, self(t, x))

    def as_score(self) -> "VelocityScore":
        """This velocity as a jaxdiff score."""
        return VelocityScore(self)

    @abc.abstractmethod
    def without_time_checks(self) -> "AbstractVelocity":
        """This velocity without run-time checks of a traced `t` (see
        `AbstractScore.without_time_checks`); velocities without checks return themselves."""


class ExactVelocity(AbstractVelocity):
    r"""The exact marginal velocity of `law` carried by `process`:
    $v = \dot\alpha\,E[X_0|x] + \dot\sigma\,E[Z|x]$ with $E[X_0|x]$ the law's exact posterior
    mean and $E[Z|x] = -\sigma\nabla\log p_t(x)$; finite on `[0, T]` (on `(0, T]` for a
    law without a density, such as a point cloud), including `t = T` where `alpha = 0`.
    """

    process: AbstractProcess
    law: AbstractLaw
    check_times: bool = eqx.field(static=True)

    def __init__(self, process: AbstractProcess, law: AbstractLaw, *, check_times: bool = True):
        """**Arguments:** `process` (an interpolant or any diffusion process with
        `alpha(0) = 1`, `sigma(0) = 0`); `law`, the exact law of `X_0`; `check_times`: check
        a traced `t` at run time (see `without_time_checks`)."""
        if not isinstance(process, AbstractProcess):
            raise ValueError(
                "`process` must be a jaxdiff process (LinearInterpolant, VP, ...), "
                f"got {type(process).__name__}"
            )
        if not isinstance(law, AbstractLaw):
            raise ValueError(f"`law` must be a jaxdiff law (GaussianMixture, ...), got {type(law).__name__}")
        check_endpoints(process, "ExactVelocity")
        self.process = process
        self.law = law
        self.check_times = bool(check_times)

    def without_time_checks(self) -> "ExactVelocity":
        return ExactVelocity(self.process, self.law, check_times=False)

    def __call__(self, t, x):
        t = check_time(
            "t", t, self.process.T, strictly_positive=self.law.singular,
            what=f"the velocity of a {type(self.law).__name__} is singular at t = 0",
            traced=self.check_times,
        )  # fmt: skip
        check_sample_shape("x", x, self.law.dim)
        alpha, alpha_dot, sigma2, ssd = rates(self.process, t)
        sigma = jnp.sqrt(sigma2)
        d = self.law.denoise_at(alpha, sigma, x)
        # sigma_dot E[Z|x] = -sigma sigma_dot s: finite at t = 0 (s is) and at t = T
        return alpha_dot * d - ssd * self.law.score_at(alpha, sigma, x)


class NetworkVelocity(AbstractVelocity):
    """The velocity predicted by a `NetworkScore` with `VelocityParam` (the network output
    itself, without the round trip through the score, which is singular where `alpha = 0`)."""

    network: NetworkScore

    def __init__(self, network: NetworkScore):
        """**Arguments:** `network`: a `NetworkScore` whose parametrisation is `VelocityParam`."""
        if not (isinstance(network, NetworkScore) and isinstance(network.parametrisation, VelocityParam)):
            raise ValueError("`network` must be a NetworkScore with parametrisation=VelocityParam()")
        self.network = network

    @property
    def process(self):
        return self.network.process

    def without_time_checks(self) -> "NetworkVelocity":
        return NetworkVelocity(self.network.without_time_checks())

    def __call__(self, t, x):
        net = self.network
        t = check_time("t", t, net.process.T, strictly_positive=False, traced=net.check_times)
        p, proc = net.parametrisation, net.process
        out = net.model(p.c_noise(proc, t), p.c_in(proc, t) * x)
        return p.velocity(proc, t, x, out.astype(jnp.result_type(out, x)))


class VelocityScore(AbstractScore):
    """A velocity field seen as a score: `score_from_velocity` and `denoiser_from_velocity`
    of `velocity`, finite at `t = T` (where a score cannot give the velocity back)."""

    velocity: AbstractVelocity

    def __init__(self, velocity: AbstractVelocity):
        """**Arguments:** `velocity`: an `ExactVelocity`, a `NetworkVelocity`, ..."""
        if not isinstance(velocity, AbstractVelocity):
            raise ValueError(f"`velocity` must be a jaxdiff velocity field, got {type(velocity).__name__}")
        self.velocity = velocity

    @property
    def process(self):
        return self.velocity.process

    def without_time_checks(self) -> "VelocityScore":
        return VelocityScore(self.velocity.without_time_checks())

    def __call__(self, t, x):
        return self.velocity.score(t, x)

    def denoise(self, t, x):
        return self.velocity.denoise(t, x)


class VelocityParam(AbstractParametrisation):
    r"""The network predicts the flow-matching velocity $v = \dot\alpha X_0 + \dot\sigma Z$,
    scaled to unit variance: $v = c_v F$ with $c_v = \sqrt{\dot\alpha^2\sigma_d^2 + \dot\sigma^2}$
    (the standard deviation of the conditional target for data of per-coordinate standard
    deviation `sigma_data`). Score and denoiser follow from `score_from_velocity` and
    `denoiser_from_velocity`. Not the `VParam` of Salimans & Ho (a rotation of `(X_0, Z)`)."""

    sigma_data: float = 1.0

    def c_out(self, process: AbstractProcess, t: Scalar) -> Float[Array, ""]:
        """`c_v = sqrt(alpha_dot^2 sigma_data^2 + sigma_dot^2)`."""
        _, alpha_dot, _, _ = rates(process, t)
        return jnp.sqrt(alpha_dot**2 * self.sigma_data**2 + sigma_dot(process, t) ** 2)

    def velocity(self, process: AbstractProcess, t: Scalar, x: Array, out: Array) -> Array:
        """The velocity `c_v F` given the network output `F`."""
        return self.c_out(process, t) * out

    def score(self, process, t, x, out):
        return score_from_velocity(process, t, x, self.velocity(process, t, x, out))


# ---------------------------------------------------------------------------------------
# One velocity from any score
# ---------------------------------------------------------------------------------------


def as_velocity_score(score):
    """`score` as a score whose denoiser is finite at an interpolant's `T`: a velocity field
    or a velocity-parametrised network becomes a `VelocityScore`; anything else is returned
    as it is."""
    if isinstance(score, AbstractVelocity):
        return VelocityScore(score)
    if isinstance(score, NetworkScore) and isinstance(score.parametrisation, VelocityParam):
        return VelocityScore(NetworkVelocity(score))
    return score


def velocity_of(score: Callable, process: AbstractProcess) -> Callable:
    r"""The probability-flow velocity $v(t, x)$ of any score, denoiser-backed or velocity field.

    A velocity field (or a velocity-parametrised network) gives itself. A jaxdiff score on
    an interpolant goes through its denoiser (`velocity_from_denoiser`, finite at `T`); any
    other score through $f x - g^2 s/2$ (`velocity_from_score`).
    """
    score = as_velocity_score(score)
    if isinstance(score, VelocityScore):
        return score.velocity
    if isinstance(process, AbstractInterpolant) and isinstance(score, AbstractScore):
        denoise = score.denoise
        return lambda t, x: velocity_from_denoiser(process, t, x, denoise(t, x))
    return lambda t, x: -reverse_drift(process, score, t, x, noise=0.0)


def check_velocity_shape(velocity: Callable, shape: tuple[int, ...], dtype) -> None:
    """Refuse a velocity that does not map one sample of `shape` to an array of that shape."""
    try:
        out = jax.eval_shape(
            lambda t, x: velocity(t, x), jax.ShapeDtypeStruct((), dtype), jax.ShapeDtypeStruct(shape, dtype)
        )
    except ValueError as e:
        raise ValueError(f"`velocity(t, x)` failed on one sample of shape {shape}: {e}") from e
    if not isinstance(out, jax.ShapeDtypeStruct) or out.shape != tuple(shape):
        got = out.shape if isinstance(out, jax.ShapeDtypeStruct) else type(out).__name__
        raise ValueError(
            f"`velocity(t, x)` must return the shape of one sample {tuple(shape)}, got {got} "
            "(one sample in, one sample out: batch with jax.vmap)"
        )
