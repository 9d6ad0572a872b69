r"""The continuity equation on a grid: a density carried by a velocity field, no diffusion.

$$\partial_t p + \mathrm{div}(p\, v) = 0 .$$

This is the density view of a flow $\dot x = v(t, x)$: with the exact marginal velocity of
an interpolant or a diffusion (`jaxdiff.ExactVelocity`), the marginals $p_t$ of
$X_t = \alpha X_0 + \sigma Z$ solve it, so carrying $N(0, I)$ from $t = T$ down to $t = 0$
gives the data law back. `solve_continuity` uses the Fokker–Planck solver's scheme
unchanged (`solve_fokker_planck`): conservative finite volumes with limited MUSCL upwind
fluxes, SSP-RK2 in time under the advective CFL condition; it is second order in the grid
size for smooth densities and keeps the mass exactly.
"""

from __future__ import annotations

from collections.abc import Callable

import diffrax as dfx
import numpy as np
from jaxtyping import Array, Float

from .._checks import as_float_array, is_concrete
from ..processes import AbstractProcess
from ..velocity import AbstractVelocity, check_velocity_shape
from .dynamics import AbstractDynamics
from .grid import Grid
from .operators import AbstractLimiter, VanLeer
from .solve import IMEX, solve_fokker_planck


class _ContinuityForward(AbstractDynamics):
    """`dp/dt = -div(v p)` forward in `t`: drift `b = v`, no diffusion."""

    direction = 1
    uses_score = True
    has_diffusion = False

    def coefficients(self, process, t):
        return 0.0 * t, 1.0 + 0.0 * t, 0.0 * t


class _ContinuityBackward(AbstractDynamics):
    """`dp/dt = -div(v p)` backward in `t` (running time `s = t0 - t`): drift `b = -v`."""

    direction = -1
    uses_score = True
    has_diffusion = False

    def coefficients(self, process, t):
        return 0.0 * t, -1.0 + 0.0 * t, 0.0 * t


def solve_continuity(
    process: AbstractProcess,
    grid: Grid,
    p0: Float[Array, "*shape"],
    *,
    t0,
    t1,
    velocity: Callable,
    saveat=None,
    steps: int | None = None,
    limiter: AbstractLimiter = VanLeer(),
    boundary_tol: float | None = 1e-6,
    max_steps: int = 2**16,
    adjoint: dfx.AbstractAdjoint = dfx.RecursiveCheckpointAdjoint(),
    return_stats: bool = False,
):
    r"""Carry the density `p0` at `t0` to `t1` by $\partial_t p + \mathrm{div}(p\,v) = 0$.

    **Arguments:**

    - `process`: the process whose time `velocity` uses (sets the range `[0, T]`).
    - `grid`, `p0`: as for `solve_fokker_planck` (non-negative, any mass; differentiable).
    - `t0`, `t1`: concrete start and end times in `[0, T]`, either order (generation runs
      from `t0 = T` down to `t1 = 0`).
    - `velocity`: `velocity(t, x)` on one point of shape `(grid.ndim,)` (`jd.ExactVelocity`,
      a network velocity, any callable); its parameters are differentiable.
    - `saveat`, `steps`, `limiter`, `boundary_tol`, `max_steps`, `adjoint`, `return_stats`:
      as for `solve_fokker_planck` (default: CFL-controlled steps).

    **Returns:** the density at `t1` (or at the `saveat` times), as `solve_fokker_planck`.
    """
    if not isinstance(grid, Grid):
        raise ValueError(f"`grid` must be a jaxdiff.pde.Grid, got {type(grid).__name__}")
    if not callable(velocity):
        raise ValueError(f"`velocity` must be callable as velocity(t, x), got {type(velocity).__name__}")
    dtype = as_float_array("p0", p0).dtype
    check_velocity_shape(velocity, (grid.ndim,), dtype)
    if isinstance(velocity, AbstractVelocity):
        velocity = velocity.without_time_checks()  # t0, t1 are checked against [0, T] below
    t0a, t1a = as_float_array("t0", t0), as_float_array("t1", t1)
    if not is_concrete(t0a, t1a):
        raise ValueError("`t0` and `t1` must be concrete (their order sets the direction of travel)")
    a, b = float(np.asarray(t0a)), float(np.asarray(t1a))
    if a == b:
        raise ValueError(f"`t0` and `t1` must differ, got {a} for both")
    dynamics = _ContinuityForward() if b > a else _ContinuityBackward()
    return solve_fokker_planck(
        process, grid, p0, t0=t0, t1=t1, score=velocity, dynamics=dynamics, saveat=saveat, steps=steps,
        solver=IMEX(), limiter=limiter, boundary_tol=boundary_tol, max_steps=max_steps, adjoint=adjoint,
        return_stats=return_stats,
    )  # fmt: skip
