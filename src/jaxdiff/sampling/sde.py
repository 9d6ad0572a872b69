r"""The reverse-time SDE, on a fixed grid.

In reverse time $\tau = T - t$ the reverse SDE of `dX = f X dt + g dW` is
$dY = [-f Y + g^2 s(t, Y)]\,d\tau + g\,d\bar W_\tau$ (Anderson 1982; Song et al. 2021).

**Default (fast path): Euler–Maruyama in one `lax.scan`.** From `t` to `s < t`, `h = t - s`,

$$x_s = x_t + h\,[-f(t) x_t + g(t)^2 s(t, x_t)] + g(t)\sqrt h\, z_k, \qquad
z_k \sim N(0, I) \text{ from } \mathrm{fold\_in}(\mathrm{key}_i, k).$$

The noise of step `k` comes from the step index, so nothing is stored and nothing is
searched: the loop costs what a hand-written scan costs (see `benchmarks/bench_sampling.py`;
Diffrax's `VirtualBrownianTree` is an order of magnitude slower here).

**Diffrax solvers (`solver=diffrax.Heun()`, `diffrax.ShARK()`, ...).** The same dynamics as
Diffrax terms in reverse time $\tau = T - t$ (integrated forwards: Diffrax's stochastic
Runge–Kutta solvers are wrong when `t1 < t0`), on `StepTo` of the grid, driven by
`GridBrownianPath`: a Brownian path whose increment over grid step `k` is built from
`fold_in(key_i, k)` (and, for solvers that need it, an independent space-time Lévy area).
With `solver=diffrax.Euler()` it reproduces the fast path's samples (to rounding). Only
fixed grids are supported (a grid path cannot be refined by an adaptive controller).
"""

from __future__ import annotations

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
from jaxtyping import Array, Float, PRNGKeyArray

from .base import AbstractStepSampler, scan_steps


def solver_nfe(solver, steps: int) -> int | None:
    """Vector-field evaluations of a Diffrax solver for `steps` fixed steps (FSAL counted)."""
    if isinstance(solver, (diffrax.Euler, diffrax.EulerHeun)):
        return steps
    tab = getattr(solver, "tableau", None)
    if tab is None:
        return None
    if hasattr(tab, "num_stages"):  # deterministic Runge-Kutta
        return (tab.num_stages - 1) * steps + 1 if tab.fsal else tab.num_stages * steps
    if hasattr(tab, "b_sol"):  # stochastic Runge-Kutta: drift evaluations per step
        skipped = 0 if tab.ignore_stage_f is None else int(sum(bool(v) for v in tab.ignore_stage_f))
        return (len(tab.b_sol) - skipped) * steps
    return None


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


class ReverseSDE(AbstractStepSampler):
    r"""The reverse-time SDE $dY = [-f Y + g^2 s(t, Y)]\,d\tau + g\,d\bar W$ on a fixed grid.

    `solver=None` (default): Euler–Maruyama in a `lax.scan` (the fast path, one score
    evaluation per step). Otherwise any Diffrax SDE solver on the same grid, driven by
    `GridBrownianPath` (e.g. `diffrax.Heun()`, or `diffrax.ShARK()` / `diffrax.SRA1()`,
    which exploit the additive noise).
    """

    solver: diffrax.AbstractSolver | None = None

    def __init__(self, solver: diffrax.AbstractSolver | None = None):
        """**Arguments:** `solver`: `None` for the built-in Euler–Maruyama loop, or a Diffrax
        solver (fixed grid; solvers needing space-time-time Lévy area are not supported)."""
        if solver is not None:
            if not isinstance(solver, diffrax.AbstractSolver):
                raise ValueError(f"`solver` must be None or a Diffrax solver, got {type(solver).__name__}")
            if _levy_area(solver) is None:
                raise ValueError(
                    f"`solver` {type(solver).__name__} needs space-time-time Lévy area, which the grid "
                    "Brownian path does not provide"
                )
        self.solver = solver

    def nfe(self, steps):
        return steps if self.solver is None else solver_nfe(self.solver, steps)

    def init_state(self, score, process, ts, x):
        return None

    def step(self, key, score, process, t, s, x, state):
        h = t - s
        g2 = process.g2(t)
        drift = -process.f(t) * x + g2 * score(t, x)
        z = jax.random.normal(key, x.shape, x.dtype)
        return x + h * drift + jnp.sqrt(g2 * h) * z, state

    # Overrides the scan: a Diffrax solver integrates the same SDE instead.
    def integrate(self, key, score, process, ts, x, *, trajectory):
        if self.solver is None:
            return scan_steps(self, key, score, process, ts, x, trajectory=trajectory)
        event = x.shape
        # Reverse time tau = ts[0] - t, integrated forwards: Diffrax's stochastic Runge-Kutta
        # solvers (ShARK, SRA1, ...) give wrong results when t1 < t0, so never ask them to.
        taus = ts[0] - ts

        def drift(tau, y, args):
            t = ts[0] - tau
            xe = y.reshape(event)
            return (-process.f(t) * xe + process.g2(t) * score(t, xe)).reshape(-1)

        def diffusion(tau, y, args):
            return lx.DiagonalLinearOperator(jnp.sqrt(process.g2(ts[0] - tau)) * jnp.ones_like(y))

        path = GridBrownianPath(key, taus, (x.size,), _levy_area(self.solver))
        terms = diffrax.MultiTerm(diffrax.ODETerm(drift), diffrax.ControlTerm(diffusion, path))
        saveat = diffrax.SaveAt(ts=taus) if trajectory else diffrax.SaveAt(t1=True)
        sol = diffrax.diffeqsolve(
            terms, self.solver, taus[0], taus[-1], None, x.reshape(-1),
            stepsize_controller=diffrax.StepTo(taus), saveat=saveat, max_steps=ts.shape[0] - 1,
        )  # fmt: skip
        if trajectory:
            return sol.ys.reshape((ts.shape[0], *event))
        return sol.ys[0].reshape(event)


def _levy_area(solver):
    need = getattr(solver, "minimal_levy_area", diffrax.AbstractBrownianIncrement)
    if issubclass(diffrax.BrownianIncrement, need):
        return diffrax.BrownianIncrement
    if issubclass(diffrax.SpaceTimeLevyArea, need):
        return diffrax.SpaceTimeLevyArea
    return None
