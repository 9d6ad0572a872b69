r"""Time stepping of the Fokker–Planck equations with Diffrax (method of lines).

The semi-discrete system $\dot p = A_s(p) + c(s)\,\Delta_h p$ (advection $A_s$, see
`operators`) is a Diffrax term, `FokkerPlanckTerm`, integrated in the dynamics' running
time $s \ge 0$ (forward: $t = t_0 + s$; reverse: $t = t_0 - s$, i.e. $\tau = T - t$).

The default solver, `IMEX`, is a Strang splitting
$p \mapsto D_{\Delta s/2} \circ A_{\Delta s} \circ D_{\Delta s/2}\, p$: half a step of
diffusion (exact by DCT, or implicit with Lineax tridiagonal solves), a full explicit
SSP-RK2 (Heun) step of the limited upwind advection, half a step of diffusion. It is
second order in time, $O(\text{cells})$ per step (plus the DCT's log factor) with no
Jacobian, stays non-negative when the advective CFL number is at most 1/2, and is
differentiable with respect to the initial density and the score's parameters. The
stiff diffusion imposes no step limit; the step follows the advective CFL condition
(`CFLStepSize`), so the solver takes large steps where the drift is mild and small ones
where the score is steep (near `t_end`).

The state of the solve is the pair `(density, rate)`: `rate`, the advective rate
`sum_k max|b_k| / h_k` met in the last step, is how `IMEX` tells `CFLStepSize` the next
step. Diffrax's error-estimate slot stays what it means (`IMEX` has no error estimate, so
an error-based controller such as `PIDController` refuses it), and the largest CFL number
of the accepted steps is `IMEX`'s own solver state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._checks import as_float_array, check_nonneg, is_concrete
from ..processes import AbstractProcess
from .dynamics import AbstractDynamics, Forward
from .grid import Grid
from .operators import AbstractDiffusion, AbstractLimiter, Spectral, VanLeer, advection, laplacian

# Positivity of an SSP-RK step with the limited fluxes needs CFL <= 1/2 (see operators).
CFL_LIMIT = 0.5

# 2-point Gauss–Legendre nodes/weights on [0, 1]: integrates g(t)^2 over a half step with
# fourth-order accuracy (g^2 is smooth and may vary fast, e.g. VE's exponential).
_GL_NODES = (0.5 - 0.5 / np.sqrt(3.0), 0.5 + 0.5 / np.sqrt(3.0))


class FokkerPlanckTerm(dfx.AbstractTerm):
    r"""The method-of-lines vector field $p \mapsto -\mathrm{div}_h(b\,p) + \frac{a}{2}\Delta_h p$
    of a dynamics on a grid, as a function of the running time `s`.

    Its state is `(p, rate)` (see the module notes; `rate` does not evolve under `vf`).
    Usable with any Diffrax ODE solver (`vf` is the full right-hand side); `IMEX` uses its
    pieces (`velocities`, `advect`, `diffusivity`) separately.
    """

    grid: Grid
    process: AbstractProcess
    dynamics: AbstractDynamics
    score: Callable | None
    limiter: AbstractLimiter
    t0: Float[Array, ""]

    def time(self, s):
        """Process time `t` at running time `s`."""
        return self.t0 + self.dynamics.direction * s

    def velocities(self, s) -> tuple[tuple[Array, ...], Float[Array, ""]]:
        """Normal drift at the interior faces of each axis, and the advective rate
        `sum_k max|b_k| / h_k` (a step `ds` has CFL number `ds * rate`)."""
        t = self.time(s)
        c_x, c_s, _ = self.dynamics.coefficients(self.process, t)
        grid = self.grid
        vels, rate = [], jnp.zeros((), grid.lower.dtype)
        for k in range(grid.ndim):
            pts = grid.face_points(k)
            b = c_x * pts[..., k]
            if self.dynamics.uses_score:
                flat = pts.reshape(-1, grid.ndim)
                s_k = jax.vmap(self.score, in_axes=(None, 0))(t, flat)[:, k]
                b = b + c_s * s_k.reshape(b.shape)
            # A NaN drift would silently poison the density: refuse it here.
            b = eqx.error_if(
                b,
                ~jnp.all(jnp.isfinite(b)),
                "the Fokker-Planck drift is not finite (NaN or inf from the score or the process)",
            )
            vels.append(b)
            rate = rate + jnp.max(jnp.abs(b)) / grid.widths[k]
        return tuple(vels), rate

    def advect(self, p, vels):
        return advection(self.grid, p, vels, self.limiter)

    def diffusivity(self, s):
        """`a(t(s)) / 2`, the coefficient of the Laplacian."""
        return 0.5 * self.dynamics.coefficients(self.process, self.time(s))[2]

    def diffusion_integral(self, s0, s1):
        """`int_{s0}^{s1} a / 2 ds` by 2-point Gauss–Legendre."""
        ds = s1 - s0
        return 0.5 * ds * sum(self.diffusivity(s0 + x * ds) for x in _GL_NODES)

    # ---- the diffrax.AbstractTerm interface ----------------------------------------------

    def vf(self, t, y, args):
        p, rate = y
        vels, _ = self.velocities(t)
        out = self.advect(p, vels)
        if self.dynamics.has_diffusion:
            out = out + self.diffusivity(t) * laplacian(self.grid, p)
        return out, jnp.zeros_like(rate)

    def contr(self, t0, t1, **kwargs):
        return t1 - t0

    def prod(self, vf, control):
        return jax.tree.map(lambda v: v * control, vf)


class IMEX(dfx.AbstractSolver):
    r"""Strang-split IMEX step for a `FokkerPlanckTerm`:
    $D_{\Delta/2}\, A_\Delta\, D_{\Delta/2}$ with exact or implicit diffusion $D$ and an
    explicit SSP-RK2 step $A$ of the limited upwind advection.

    Second order in time. It has no error estimate; the new state `(p, rate)` carries the
    advective rate `max_k sum |b_k| / h_k` met in the step, which `CFLStepSize` turns into
    the next step. Its solver state is the largest CFL number of the accepted steps
    (checked against 1/2 after the solve).

    The operator pieces come from `operator`, the `FokkerPlanckTerm` being solved, which
    `solve_fokker_planck` sets (Diffrax hands solvers its own wrapper of the term, which
    only forwards the `AbstractTerm` interface).
    """

    diffusion: AbstractDiffusion = Spectral()
    operator: FokkerPlanckTerm | None = None

    term_structure: ClassVar = FokkerPlanckTerm
    interpolation_cls: ClassVar = dfx.LocalLinearInterpolation

    def order(self, terms):
        return 2

    def init(self, terms, t0, t1, y0, args):
        return jnp.zeros((), y0[0].dtype)

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        del terms, args, made_jump
        op = self.operator
        if op is None:
            raise ValueError("IMEX needs its `operator` (the FokkerPlanckTerm): use solve_fokker_planck")
        ds = t1 - t0
        mid = t0 + 0.5 * ds
        y, _ = y0
        if op.dynamics.has_diffusion:
            y = self.diffusion(op.grid, y, op.diffusion_integral(t0, mid))
        v0, r0 = op.velocities(t0)
        y1 = y + ds * op.advect(y, v0)
        v1, r1 = op.velocities(t1)
        y = 0.5 * y + 0.5 * (y1 + ds * op.advect(y1, v1))
        if op.dynamics.has_diffusion:
            y = self.diffusion(op.grid, y, op.diffusion_integral(mid, t1))
        rate = jnp.maximum(r0, r1).astype(y0[1].dtype)
        cfl = jnp.maximum(solver_state, ds * rate)
        new = (y, rate)
        return new, None, dict(y0=y0, y1=new), cfl, dfx.RESULTS.successful

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)


class CFLStepSize(dfx.AbstractStepSizeController):
    """Steps set by the advective CFL condition, for the `IMEX` solver.

    Each step is `cfl / rate` (the rate `sum_k max|b_k| / h_k` that `IMEX` leaves in the
    state `(p, rate)`), at
    most `(t1 - t0) / min_steps`; a step whose realised CFL number exceeded 1/2 (the drift
    grew within it) is rejected and retried. Steps land exactly on `step_ts` (save times),
    so saved densities carry no interpolation error.
    """

    cfl: float = 0.45
    min_steps: int = 32
    step_ts: Array | None = None

    def __init__(self, cfl: float = 0.45, min_steps: int = 32, step_ts=None):
        """**Arguments:** `cfl` in `(0, 0.5]`: the target CFL number; `min_steps`: the
        fewest steps over the interval (a cap on the step when the drift vanishes);
        `step_ts`: times the steps must hit (running time `s`)."""
        if not (0 < float(cfl) <= CFL_LIMIT):
            raise ValueError(f"`cfl` must lie in (0, {CFL_LIMIT}] (positivity of the advection), got {cfl}")
        if not isinstance(min_steps, (int, np.integer)) or min_steps < 1:
            raise ValueError(f"`min_steps` must be a positive integer, got {min_steps!r}")
        self.cfl = float(cfl)
        self.min_steps = int(min_steps)
        self.step_ts = step_ts

    def wrap(self, direction):
        return self

    def _next(self, tprev, dt):
        tnext = tprev + dt
        if self.step_ts is not None:
            ts = self.step_ts
            i = jnp.searchsorted(ts, tprev, side="right")
            target = jnp.where(i < ts.shape[0], ts[jnp.minimum(i, ts.shape[0] - 1)], jnp.inf)
            # Land on the target, and do not leave a sliver (<1% of a step) before it.
            tnext = jnp.where(tnext >= target - 0.01 * dt, target, tnext)
        return tnext

    def init(self, terms, t0, t1, y0, dt0, args, func, error_order):
        dtmax = (t1 - t0) / self.min_steps
        _, rate = y0  # the rate at t0, set by solve_fokker_planck
        dt = jnp.minimum(self.cfl / jax.lax.stop_gradient(rate), dtmax)
        if dt0 is not None:
            dt = jnp.minimum(dt, dt0)
        return self._next(t0, dt), dtmax

    def adapt_step_size(self, t0, t1, y0, y1_candidate, args, y_error, error_order, controller_state):
        dtmax = controller_state
        rate = jax.lax.stop_gradient(y1_candidate[1])
        keep = (t1 - t0) * rate <= CFL_LIMIT
        tprev = jnp.where(keep, t1, t0)
        dt = jnp.minimum(self.cfl / rate, dtmax)
        return keep, tprev, self._next(tprev, dt), False, controller_state, dfx.RESULTS.successful


# ---------------------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------------------


def _check_cover(grid: Grid, name: str, u, tol, what: str, *, on_device: bool = False):
    """Refuse densities with more than `tol` of their mass in the outermost cells: eagerly
    for an argument, with `eqx.error_if` for a computed density (`on_device`)."""
    if tol is None:
        return u
    batch = u.reshape(-1, *grid.shape)
    total = jnp.maximum(jax.vmap(grid.integrate)(batch), jnp.finfo(u.dtype).tiny)
    frac = jax.vmap(grid.boundary_mass)(batch) / total
    msg = (
        f"the grid does not cover {what}: more than boundary_tol={tol:g} of the mass of `{name}` lies in "
        "the outermost cells; enlarge the box (lower/upper) or raise `boundary_tol`"
    )
    if is_concrete(frac) and not on_device:
        worst = float(np.max(np.asarray(frac)))
        if worst > tol:
            raise ValueError(f"{msg} (found {worst:.3g})")
        return u
    return eqx.error_if(u, jnp.max(frac) > tol, msg)


def _scalar_time(name, t):
    t = as_float_array(name, t)
    if t.shape != ():
        raise ValueError(f"`{name}` must be a scalar time, got shape {t.shape}")
    return t


_CFL_MESSAGE = (
    f"the advective CFL number exceeded {CFL_LIMIT} (positivity of the density is not "
    "guaranteed): use more `steps`, or the default CFL-controlled steps"
)


@eqx.filter_jit
def _integrate(term, solver, controller, y0, span, save_s, max_steps, adjoint, progress_meter, boundary_tol):
    saveat = dfx.SaveAt(ts=save_s, solver_state=True)
    imex = isinstance(solver, IMEX)
    if imex:
        solver = IMEX(solver.diffusion, operator=term)
    rate0 = term.velocities(jnp.zeros_like(span))[1] if imex else jnp.zeros((), y0.dtype)
    sol = dfx.diffeqsolve(
        term,
        solver,
        t0=jnp.zeros_like(span),
        t1=span,
        dt0=None,
        y0=(y0, rate0.astype(y0.dtype)),
        saveat=saveat,
        stepsize_controller=controller,
        max_steps=max_steps,
        adjoint=adjoint,
        progress_meter=progress_meter,
    )
    ys = sol.ys[0]
    cfl = sol.solver_state if imex else jnp.full((), jnp.nan, ys.dtype)  # tracked by IMEX only
    # checks of computed values, on the device: nothing is pulled back to the host
    if imex:
        ys = eqx.error_if(ys, cfl > CFL_LIMIT * (1 + 1e-9), _CFL_MESSAGE)
    ys = _check_cover(term.grid, "the solution", ys, boundary_tol, "the evolved density", on_device=True)
    return ys, cfl, sol.stats["num_accepted_steps"]


def solve_fokker_planck(
    process: AbstractProcess,
    grid: Grid,
    p0: Float[Array, "*shape"],
    *,
    t0,
    t1,
    score: Callable | None = None,
    dynamics: AbstractDynamics = Forward(),
    saveat=None,
    steps: int | None = None,
    solver: dfx.AbstractSolver = IMEX(),
    stepsize_controller: dfx.AbstractStepSizeController | None = None,
    limiter: AbstractLimiter = VanLeer(),
    boundary_tol: float | None = 1e-6,
    max_steps: int = 2**16,
    adjoint: dfx.AbstractAdjoint = dfx.RecursiveCheckpointAdjoint(),
    progress_meter: dfx.AbstractProgressMeter = dfx.NoProgressMeter(),
    return_stats: bool = False,
):
    r"""Evolve a density on `grid` by a Fokker–Planck equation of `process`.

    `dynamics=Forward()` solves $\partial_t p = -\mathrm{div}(f x p) + \frac{g^2}{2}\Delta p$
    from `t0` up to `t1 > t0`. `Reverse()` (reverse SDE) and `Flow()` (probability flow)
    run backward in the process time, from `t0` (e.g. `process.T`) down to `t1 = t_end`,
    with the drift $-f x + c\, g^2 s(t, x)$ built from `score` (exact or learned).

    **Arguments:**

    - `process`: the forward process (`jd.OU()`, `jd.VP()`, `jd.pde.HeatFlow()`, ...).
    - `grid`: a `Grid` whose box covers the density at all times.
    - `p0`: the density at `t0`, shape `grid.shape`, non-negative (any mass; the equation
      is linear). Differentiable.
    - `t0`, `t1`: start and end times (scalars or 0-d arrays).
    - `score`: `score(t, x)` on one point (`jd.ExactScore`, a network score, ...); required
      by the reverse dynamics. Its parameters are differentiable.
    - `dynamics`: `Forward()`, `Reverse(noise=1.0)` or `Flow()`.
    - `saveat`: optional 1-D array of times between `t0` and `t1`, in the order of travel.
    - `steps`: a fixed number of uniform steps (the save times are added to the grid);
      default: CFL-controlled steps (`CFLStepSize()`).
    - `solver`: `IMEX()` (default; `IMEX(diffusion=Implicit())` for Lineax tridiagonal
      solves) or any Diffrax ODE solver (then pass `steps` or `stepsize_controller`).
    - `stepsize_controller`: overrides the default step-size control.
    - `limiter`: slope limiter of the advective fluxes (`VanLeer()`, `Minmod()`,
      `MonotonizedCentral()`, `Upwind()`).
    - `boundary_tol`: largest fraction of mass allowed in the outermost cells, at the start
      and at every returned time (`None`: no check): a zero-flux box that is too small
      would otherwise reflect mass silently.
    - `max_steps`, `adjoint`, `progress_meter` (e.g. `diffrax.TqdmProgressMeter()`):
      passed to `diffrax.diffeqsolve`.
    - `return_stats`: also return a dict with the step count and the largest CFL number.

    **Returns:** the density at `t1` (shape `grid.shape`), or with `saveat` the densities
    at those times (shape `(len(saveat), *grid.shape)`); with `return_stats`, a pair
    `(densities, stats)`.
    """
    if not isinstance(process, AbstractProcess):
        raise ValueError(f"`process` must be a jaxdiff process (OU, VP, ...), got {type(process).__name__}")
    if not isinstance(grid, Grid):
        raise ValueError(f"`grid` must be a jaxdiff.pde.Grid, got {type(grid).__name__}")
    if not isinstance(dynamics, AbstractDynamics):
        raise ValueError(
            f"`dynamics` must be jaxdiff.pde.Forward(), Reverse() or Flow(), got {type(dynamics).__name__}"
        )
    if dynamics.uses_score and score is None:
        raise ValueError(
            f"`score` is required by the {type(dynamics).__name__} dynamics "
            "(e.g. jd.ExactScore(process, law))"
        )
    if score is not None and not callable(score):
        raise ValueError(f"`score` must be callable as score(t, x), got {type(score).__name__}")
    p0 = check_nonneg("p0", grid.check_density("p0", p0))
    p0 = _check_cover(grid, "p0", p0, boundary_tol, "the initial density")

    t0 = _scalar_time("t0", t0)
    t1 = _scalar_time("t1", t1)
    dtype = jnp.result_type(p0.dtype, t0.dtype, t1.dtype)
    t0, t1, p0 = t0.astype(dtype), t1.astype(dtype), p0.astype(dtype)
    direction = dynamics.direction
    if is_concrete(t0, t1, process.T):
        a, b, T = float(t0), float(t1), float(np.asarray(process.T))
        word = "forward" if direction > 0 else "backward"
        if not (direction * (b - a) > 0):
            raise ValueError(
                f"{type(dynamics).__name__} dynamics run {word} in time: need "
                f"{'t1 > t0' if direction > 0 else 't1 < t0'}, got t0={a}, t1={b}"
            )
        if min(a, b) < 0 or max(a, b) > T * (1 + 1e-6):
            raise ValueError(f"`t0` and `t1` must lie in [0, T] = [0, {T}], got t0={a}, t1={b}")
    span = direction * (t1 - t0)

    if saveat is None:
        save_t = t1[None]
    else:
        save_t = as_float_array("saveat", saveat).astype(dtype)
        if save_t.ndim != 1 or save_t.shape[0] < 1:
            raise ValueError(f"`saveat` must be a non-empty 1-D array of times, got shape {save_t.shape}")
    save_s = direction * (save_t - t0)
    if is_concrete(save_s, span):
        ss, sp = np.asarray(save_s), float(span)
        if np.any(ss < -1e-12 * max(sp, 1.0)) or np.any(ss > sp * (1 + 1e-12)) or np.any(np.diff(ss) < 0):
            raise ValueError("`saveat` times must lie between t0 and t1, in the order of travel")
    save_s = jnp.clip(save_s, 0.0, span)

    if stepsize_controller is None:
        if steps is not None:
            if not isinstance(steps, (int, np.integer)) or steps < 1:
                raise ValueError(f"`steps` must be a positive integer, got {steps!r}")
            grid_s = jnp.linspace(0.0, 1.0, int(steps) + 1, dtype=dtype) * span
            if saveat is not None:
                if not is_concrete(save_s, span):
                    raise ValueError(
                        "`steps` with `saveat` needs concrete times (or use the default CFL steps)"
                    )
                merged = np.union1d(np.asarray(grid_s), np.asarray(save_s))
                keep = np.concatenate([[True], np.diff(merged) > 1e-9 * float(span)])
                merged = merged[keep]
                merged[-1] = float(span)
                grid_s = jnp.asarray(merged, dtype)
            stepsize_controller = dfx.StepTo(ts=grid_s)
        elif isinstance(solver, IMEX):
            stepsize_controller = CFLStepSize(step_ts=jnp.sort(jnp.concatenate([save_s, span[None]])))
        else:
            raise ValueError("with a Diffrax solver other than IMEX, pass `steps` or a `stepsize_controller`")

    term = FokkerPlanckTerm(grid, process, dynamics, score, limiter, t0)
    ys, cfl, n_steps = _integrate(
        term, solver, stepsize_controller, p0, span, save_s, max_steps, adjoint, progress_meter, boundary_tol
    )
    out = ys[-1] if saveat is None else ys
    if return_stats:
        return out, dict(steps=n_steps, max_cfl=cfl)
    return out
