r"""The reverse-time SDE with a Diffrax solver, on a fixed grid.

The dynamics of `ReverseSDE` (drift `jaxdiff.reverse_drift`, diffusion $g$) as Diffrax terms
in reverse time $\tau = T - t$, integrated forwards (Diffrax's stochastic Runge–Kutta solvers
are wrong when `t1 < t0`), on `StepTo` of the grid, driven by `GridBrownianPath`: a Brownian
path whose increment over grid step `k` is built from `fold_in(key_i, k)` (and, for solvers
that need it, an independent space-time Lévy area). With `diffrax.Euler()` it reproduces
`ReverseSDE`'s samples (to rounding). Only fixed grids are supported (a grid path cannot be
refined by an adaptive controller).
"""

from __future__ import annotations

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
from jaxtyping import Array, Float, PRNGKeyArray

from ..processes import reverse_drift
from .adjoint import as_diffrax_adjoint
from .base import AbstractScoreSampler
from .diffrax_nfe import solver_nfe

# Solvers whose Brownian increments are enough, and those that also need a space-time Lévy area.
_INCREMENT_SOLVERS = (diffrax.Euler, diffrax.EulerHeun, diffrax.Heun, diffrax.Midpoint, diffrax.Ralston,
                      diffrax.ReversibleHeun, diffrax.ItoMilstein, diffrax.StratonovichMilstein)
_LEVY_SOLVERS = (diffrax.ShARK, diffrax.SRA1, diffrax.SEA, diffrax.SPaRK, diffrax.GeneralShARK,
                 diffrax.SlowRK)


class GridBrownianPath(diffrax.AbstractBrownianPath):
    r"""A Brownian path on a fixed ascending grid `taus`, with increments from the step index.

    The increment over grid step `k` (from `taus[k]` to `taus[k+1]`, length `h_k`) is
    $\sqrt{h_k}\, z_k$ with $z_k \sim N(0, I)$ drawn from `fold_in(key, k)`: nothing is
    stored, nothing is searched but the step's index. With
    `levy_area=diffrax.SpaceTimeLevyArea` it also returns a space-time Lévy area
    $H_k \sim N(0, h_k/12)$, independent of $z_k$, from `fold_in(fold_in(key, k), 1)`.

    It can only be evaluated between consecutive grid points (anything else raises at run
    time): use it with `diffrax.StepTo(taus)`.
    """

    key: PRNGKeyArray
    taus: Float[Array, " times"]
    shape: tuple[int, ...] = eqx.field(static=True)
    levy_area: type[diffrax.BrownianIncrement | diffrax.SpaceTimeLevyArea] = eqx.field(static=True)

    def __init__(self, key, taus, shape, levy_area=diffrax.BrownianIncrement):
        """**Arguments:** `key`; `taus`, the ascending grid; `shape`, the shape of one
        increment; `levy_area`: `diffrax.BrownianIncrement` or `diffrax.SpaceTimeLevyArea`."""
        if levy_area not in (diffrax.BrownianIncrement, diffrax.SpaceTimeLevyArea):
            raise ValueError(
                f"`levy_area` must be diffrax.BrownianIncrement or diffrax.SpaceTimeLevyArea, got {levy_area}"
            )
        self.key, self.taus, self.shape, self.levy_area = key, taus, tuple(shape), levy_area

    @property
    def t0(self):
        return self.taus[0]

    @property
    def t1(self):
        return self.taus[-1]

    def evaluate(self, t0, t1=None, left=True, use_levy=False):
        if t1 is None:
            raise ValueError("GridBrownianPath gives increments between grid points only: pass `t1`")
        K = self.taus.shape[0] - 1
        k = jnp.clip(jnp.searchsorted(self.taus, t0, side="right") - 1, 0, K - 1)
        on_grid = (self.taus[k] == t0) & (self.taus[k + 1] == t1)
        t0 = eqx.error_if(t0, ~on_grid, "GridBrownianPath evaluated off its grid: use diffrax.StepTo(taus)")
        key_k = jax.random.fold_in(self.key, k)
        h = t1 - t0
        dtype = self.taus.dtype
        w = jnp.sqrt(h) * jax.random.normal(key_k, self.shape, dtype)
        if not use_levy:
            return w
        if self.levy_area is not diffrax.SpaceTimeLevyArea:
            return diffrax.BrownianIncrement(dt=h, W=w)
        hh = jnp.sqrt(h / 12) * jax.random.normal(jax.random.fold_in(key_k, 1), self.shape, dtype)
        return diffrax.SpaceTimeLevyArea(dt=h, W=w, H=hh)


def _levy_area(solver):
    if isinstance(solver, _LEVY_SOLVERS):
        return diffrax.SpaceTimeLevyArea
    if isinstance(solver, _INCREMENT_SOLVERS):
        return diffrax.BrownianIncrement
    return None


class DiffraxReverseSDE(AbstractScoreSampler):
    r"""The reverse-time SDE $dY = [-f Y + g^2 s(t, Y)]\,d\tau + g\,d\bar W$ with a Diffrax SDE
    solver on the fixed grid, driven by `GridBrownianPath` (e.g. `diffrax.Heun()`, or
    `diffrax.ShARK()` / `diffrax.SRA1()`, which exploit the additive noise)."""

    solver: diffrax.AbstractSolver

    def __init__(self, solver: diffrax.AbstractSolver = diffrax.ShARK()):
        """**Arguments:** `solver`: a Diffrax SDE solver that needs at most a space-time Lévy
        area: `Euler`, `EulerHeun`, `Heun`, `Midpoint`, `Ralston`, `ReversibleHeun`,
        `ItoMilstein`, `StratonovichMilstein` (increments), `ShARK`, `SRA1`, `SEA`, `SPaRK`,
        `GeneralShARK`, `SlowRK` (space-time Lévy area)."""
        if not isinstance(solver, diffrax.AbstractSolver):
            raise ValueError(f"`solver` must be a Diffrax solver, got {type(solver).__name__}")
        if _levy_area(solver) is None:
            raise ValueError(
                f"`solver` {type(solver).__name__} is not supported: the grid Brownian path gives increments "
                "and space-time Levy areas, for the solvers listed in DiffraxReverseSDE's docstring"
            )
        self.solver = solver

    def nfe(self, steps):
        return solver_nfe(self.solver, steps)

    def integrate(self, key, score, process, ts, x, *, trajectory, adjoint):
        event = x.shape
        # Reverse time tau = ts[0] - t, integrated forwards: Diffrax's stochastic Runge-Kutta
        # solvers (ShARK, SRA1, ...) give wrong results when t1 < t0, so never ask them to.
        taus = ts[0] - ts

        def drift(tau, y, args):
            return reverse_drift(process, score, ts[0] - tau, y.reshape(event)).reshape(-1)

        def diffusion(tau, y, args):
            return lx.DiagonalLinearOperator(jnp.sqrt(process.g2(ts[0] - tau)) * jnp.ones_like(y))

        path = GridBrownianPath(key, taus, (x.size,), _levy_area(self.solver))
        terms = diffrax.MultiTerm(diffrax.ODETerm(drift), diffrax.ControlTerm(diffusion, path))
        saveat = diffrax.SaveAt(ts=taus) if trajectory else diffrax.SaveAt(t1=True)
        sol = diffrax.diffeqsolve(
            terms, self.solver, taus[0], taus[-1], None, x.reshape(-1),
            stepsize_controller=diffrax.StepTo(taus), saveat=saveat, max_steps=ts.shape[0] - 1,
            adjoint=as_diffrax_adjoint(adjoint),
        )  # fmt: skip
        if trajectory:
            return sol.ys.reshape((ts.shape[0], *event))
        return sol.ys[0].reshape(event)
