r"""Time grids for reverse-time samplers: strategy objects that map `(process, steps, t_end)`
to a descending array of times `ts` with `ts[0] = T`, `ts[-1] = t_end` and `steps + 1` entries.

Every grid is written as a smooth map of a uniform variable, so a sampler of order `p`
keeps order `p` in the number of steps on any of them. The end points are set exactly
(`ts[0] = T`, `ts[-1] = t_end`) rather than recomputed through `exp(log(.))`: samplers and
Diffrax use `ts[0]`, `ts[-1]` as their bounds, and a round trip is not exact in float32.
Everything is differentiable in `t_end` and in the process's parameters.
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from .._checks import is_concrete
from ..processes import AbstractProcess

Scalar = Float[ArrayLike, ""]


def _with_ends(ts, T, t_end):
    return ts.at[0].set(T).at[-1].set(t_end)


def _start_log_snr(process: AbstractProcess, T, lam_end):
    """`log_snr(T)`, or `-|log_snr(t_end)|` where it is `-inf` (an interpolant's exact
    `N(0, I)` at `T`): the steps are then even in the log-SNR down from that mirror value,
    and the grid still starts at `T` itself (`_with_ends`)."""
    lam0 = process.log_snr(T)
    return jnp.where(jnp.isfinite(lam0), lam0, -jnp.abs(lam_end))


def _bounds(process: AbstractProcess, t_end):
    t_end = jnp.asarray(t_end)
    dtype = jnp.result_type(t_end, process.T, float)
    return jnp.asarray(process.T, dtype), t_end.astype(dtype)


class AbstractGrid(eqx.Module):
    """A rule that places `steps + 1` times from `T` down to `t_end`."""

    @abc.abstractmethod
    def __call__(self, process: AbstractProcess, steps: int, t_end: Scalar) -> Float[Array, " times"]:
        """The grid `T = ts[0] > ts[1] > ... > ts[steps] = t_end` for `process`."""


class UniformGrid(AbstractGrid):
    r"""Equal steps in time: $t_k = T + (k / K)(t_\mathrm{end} - T)$."""

    def __call__(self, process, steps, t_end):
        T, t_end = _bounds(process, t_end)
        u = jnp.linspace(0.0, 1.0, steps + 1, dtype=T.dtype)
        return _with_ends(T + u * (t_end - T), T, t_end)


class GeometricGrid(AbstractGrid):
    r"""Equal ratios of times: $t_k = T\,(t_\mathrm{end}/T)^{k/K}$, fine near `t_end`."""

    def __call__(self, process, steps, t_end):
        T, t_end = _bounds(process, t_end)
        u = jnp.linspace(0.0, 1.0, steps + 1, dtype=T.dtype)
        return _with_ends(T * jnp.exp(u * jnp.log(t_end / T)), T, t_end)


class LogSNRGrid(AbstractGrid):
    r"""Equal steps in the log signal-to-noise ratio $\lambda = \log(\alpha^2/\sigma^2)$:
    $t_k = \lambda^{-1}\big(\lambda(T) + (k/K)(\lambda(t_\mathrm{end}) - \lambda(T))\big)$,
    through the process's closed-form `t_from_log_snr` (the natural grid of the exponential
    integrators, DDIM and DPM-Solver++)."""

    def __call__(self, process, steps, t_end):
        T, t_end = _bounds(process, t_end)
        u = jnp.linspace(0.0, 1.0, steps + 1, dtype=T.dtype)
        lam1 = process.log_snr(t_end)
        lam0 = _start_log_snr(process, T, lam1)
        return _with_ends(process.t_from_log_snr(lam0 + u * (lam1 - lam0)), T, t_end)


class EDMGrid(AbstractGrid):
    r"""Karras et al. (2022)'s schedule, eq. (5): with the VE-equivalent noise level
    $\tilde\sigma = \sigma/\alpha = e^{-\lambda/2}$,
    $\tilde\sigma_k = \big(\tilde\sigma_\max^{1/\rho} + \tfrac kK(\tilde\sigma_\min^{1/\rho}
    - \tilde\sigma_\max^{1/\rho})\big)^\rho$ between $\tilde\sigma(T)$ and
    $\tilde\sigma(t_\mathrm{end})$, mapped back to times with `t_from_log_snr`.
    `rho = 7` concentrates the steps at low noise."""

    rho: Scalar = 7.0

    def __init__(self, rho: Scalar = 7.0):
        """**Arguments:** `rho > 0`: the schedule's exponent (Karras et al. use 7)."""
        if is_concrete(rho) and not float(rho) > 0:
            raise ValueError(f"`rho` must be > 0, got {rho}")
        self.rho = rho

    def __call__(self, process, steps, t_end):
        T, t_end = _bounds(process, t_end)
        u = jnp.linspace(0.0, 1.0, steps + 1, dtype=T.dtype)
        # sigma~^(1/rho) = exp(-lambda / (2 rho)): work with lambda to stay in log space.
        a = jnp.exp(-_start_log_snr(process, T, process.log_snr(t_end)) / (2 * self.rho))
        b = jnp.exp(-process.log_snr(t_end) / (2 * self.rho))
        lam = -2 * self.rho * jnp.log(a + u * (b - a))
        return _with_ends(process.t_from_log_snr(lam), T, t_end)
