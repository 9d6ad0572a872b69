"""The entry point `sample`: argument checks, the batch, and one compiled call.

`sample` draws the batch's initial state with `sampler.initial`, `jax.vmap`s
`sampler.integrate` over the rows and checks the output on the device. It asks the sampler
through its hooks (`initial`, `uses_score`, `integrate`) and never looks at its class.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import ArrayLike, Float, PRNGKeyArray

from .._checks import as_float_array, check_finite, check_time, error_if_not_finite, is_concrete
from ..interpolants import AbstractInterpolant
from ..processes import AbstractProcess, default_t_end
from ..scores import check_score_process, without_time_checks
from ..velocity import as_velocity_score
from .adjoint import AbstractAdjoint, check_adjoint
from .base import AbstractSampler, denoiser
from .grids import AbstractGrid, LogSNRGrid
from .sde import ReverseSDE

Scalar = Float[ArrayLike, ""]
Score = Callable[[Any, Any], Any]

DEFAULT_STEPS = 100


def _check_shape(shape) -> tuple[int, ...]:
    try:
        shape = tuple(shape)
    except TypeError:
        raise ValueError(f"`shape` must be a tuple (batch, *event), got {shape!r}") from None
    ok = all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 1 for s in shape)
    if not ok or len(shape) < 2:
        raise ValueError(
            f"`shape` must be batch-first, (batch, *event) with positive integers and at least "
            f"one event dimension (e.g. (n, d)), got {shape!r}"
        )
    return tuple(int(s) for s in shape)


def _check_steps(steps) -> int:
    if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool):
        raise ValueError(f"`steps` must be a positive Python integer, got {steps!r}")
    if steps < 1:
        raise ValueError(f"`steps` must be >= 1, got {steps}")
    return int(steps)


def _check_t_end(t_end, T):
    t_end = as_float_array("t_end", t_end)
    return check_time(
        "t_end", t_end, T, strictly_positive=True, strictly_below=True,
        what="the stopping time: the score of a singular law blows up at t = 0; sampling runs from T down",
    )  # fmt: skip


def _check_grid_array(ts, T):
    ts = as_float_array("grid", ts)
    if ts.ndim != 1 or ts.shape[0] < 2:
        raise ValueError(f"an explicit `grid` must be a 1-D array of at least 2 times, got shape {ts.shape}")
    if is_concrete(ts, T):
        tv, Tv = np.asarray(ts, dtype=np.float64), float(np.asarray(T))
        if not np.all(np.isfinite(tv)):
            raise ValueError("an explicit `grid` must be finite")
        if not np.all(np.diff(tv) < 0):
            raise ValueError("an explicit `grid` must be strictly decreasing (from T down to t_end)")
        check_time("grid[0]", tv[0], Tv, strictly_positive=True, what="the grid starts at T or below")
        check_time("grid[-1]", tv[-1], Tv, strictly_positive=True, what="the grid ends at t_end > 0")
        return ts
    bad = ~(jnp.all(jnp.diff(ts) < 0) & (ts[-1] > 0) & (ts[0] <= T * (1 + 1e-6)))
    return eqx.error_if(ts, bad, "an explicit `grid` must decrease strictly from <= T to t_end > 0")


def _check_score(score, shape, dtype):
    if not callable(score):
        raise ValueError(f"`score` must be callable as score(t, x) on one sample, got {type(score).__name__}")
    event = shape[1:]
    try:
        out = jax.eval_shape(
            lambda t, x: score(t, x), jax.ShapeDtypeStruct((), dtype), jax.ShapeDtypeStruct(event, dtype)
        )
    except ValueError as e:
        raise ValueError(f"`score(t, x)` failed on one sample of shape {event}: {e}") from e
    if not isinstance(out, jax.ShapeDtypeStruct):
        raise ValueError(f"`score(t, x)` must return one array, got {type(out).__name__}")
    if out.shape != event:
        hint = (
            " (one sample in, one sample out: the sampler vmaps over the batch)" if out.shape == shape else ""
        )
        raise ValueError(f"`score(t, x)` must return the shape of one sample {event}, got {out.shape}{hint}")
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise ValueError(f"`score(t, x)` must return floating point values, got dtype {out.dtype}")


_NAN_MESSAGE = (
    "sampling produced NaN or inf: the score returned non-finite values or the sampler diverged "
    "(check the score near t_end, or use more steps)"
)
_INTERPOLANT_HINT = (
    "; for an interpolant, alpha(T) = 0 makes f and g^2 infinite at T, so samplers built on them "
    "(ReverseSDE, PredictorCorrector, EDMHeun) cannot start there: use ProbabilityFlow(), DDIM(), "
    "DDPM(), DPMSolverPP() or ExactSampler(law), or an explicit `grid` starting below T with `x_init`"
)


def sample(
    key: PRNGKeyArray,
    score: Score | None,
    process: AbstractProcess,
    shape: tuple[int, ...],
    *,
    sampler: AbstractSampler | None = None,
    steps: int | None = None,
    t_end: Scalar | None = None,
    grid: AbstractGrid | Float[ArrayLike, " times"] = LogSNRGrid(),
    x_init: Float[ArrayLike, " batch *event"] | None = None,
    denoise: bool = False,
    trajectory: bool = False,
    adjoint: AbstractAdjoint | diffrax.AbstractAdjoint | None = None,
):
    r"""Draw samples by running the reverse-time dynamics from `T` down to `t_end`.

    **Arguments:**

    - `key`: a PRNG key. It is split into an initialisation key and a noise key; row `i`
      uses `fold_in(., i)` of each, so a sample does not depend on the batch size.
    - `score`: `score(t, x)` on one sample (`jd.ExactScore`, a network score, any callable),
      or a velocity field (`jd.ExactVelocity`, a `jd.VelocityParam` network); may be `None`
      for samplers that ignore it (`ExactSampler`). A jaxdiff score must
      belong to `process` (`score.process` equal to `process`).
    - `process`: the forward process (`jd.OU()`, `jd.VP()`, ...).
    - `shape`: `(batch, *event)`, batch first.
    - `sampler`: a strategy object; default `ReverseSDE()` (Euler–Maruyama on the grid).
    - `steps`: number of grid steps (default 100).
    - `t_end`: the stopping time, `0 < t_end < T` (default `1e-3 * T`); pass a JAX array
      to differentiate with respect to it (Python floats are compile-time constants).
    - `grid`: a grid strategy (`UniformGrid()`, `GeometricGrid()`, `LogSNRGrid()`,
      `EDMGrid(rho)`) or an explicit descending array of times, whose first and last
      entries are the bounds (then leave `steps` and `t_end` unset). Default
      `LogSNRGrid()`: uniform in the log-SNR, so steps shrink where the score sharpens near
      `t_end`.
    - `x_init`: the state at `ts[0]` (shape `shape`), e.g. a wrong initialisation;
      default: `sampler.initial` (the prior; the exact marginal for `ExactSampler`).
    - `denoise`: finish with Tweedie's step $x \mapsto E[X_0 | X_{t_\mathrm{end}} = x]$
      (needs a `score`).
    - `trajectory`: return `(ts, xs)` with `xs` of shape `(len(ts), *shape)`; with
      `denoise=True` a last entry at time 0 holds the denoised samples.
    - `adjoint`: how reverse-mode gradients flow through the sampler: `None` or
      `jd.BackpropAdjoint()` (store every step: fastest, memory linear in `steps`),
      `jd.CheckpointAdjoint()` (store a few states and recompute: memory logarithmic in
      `steps`, same gradient), or for Diffrax-based samplers a Diffrax adjoint such as
      `diffrax.BacksolveAdjoint()`, passed through to `diffrax.diffeqsolve`.

    **Returns:** an array of `shape`, or `(ts, xs)`.

    Jit-compiled (one compile per sampler, shape, step count and static configuration) and
    differentiable with respect to the score's and the process's array parameters and
    `t_end`. Arguments are checked eagerly (`ValueError`); non-finite output is an error
    raised from the device (`eqx.error_if`: no transfer to the host on the way).
    """
    if sampler is None:
        sampler = ReverseSDE()
    if not isinstance(sampler, AbstractSampler):
        raise ValueError(
            f"`sampler` must be a jaxdiff sampler (ReverseSDE(), DDPM(), ...), got {type(sampler).__name__}"
        )
    if not isinstance(process, AbstractProcess):
        raise ValueError(f"`process` must be a jaxdiff process (OU, VP, ...), got {type(process).__name__}")
    score = as_velocity_score(score)  # a velocity field samples through its exact score and denoiser
    check_score_process(score, process)
    shape = _check_shape(shape)
    if isinstance(grid, AbstractGrid):
        steps = _check_steps(DEFAULT_STEPS if steps is None else steps)
        t_end = _check_t_end(default_t_end(process) if t_end is None else t_end, process.T)
    else:
        ts = _check_grid_array(grid, process.T)
        if t_end is not None:
            raise ValueError("give `t_end` through the explicit `grid` (its last entry), not both")
        if steps is not None and _check_steps(steps) != ts.shape[0] - 1:
            raise ValueError(
                f"`steps` ({steps}) disagrees with the explicit `grid` ({ts.shape[0] - 1} steps)"
            )
        grid, steps = ts, ts.shape[0] - 1
    if x_init is not None:
        x_init = check_finite("x_init", as_float_array("x_init", x_init))
        if x_init.shape != shape:
            raise ValueError(f"`x_init` must have shape {shape} (the state at T), got {x_init.shape}")
    if score is None and (sampler.uses_score or denoise):
        why = f"the {type(sampler).__name__} sampler" if sampler.uses_score else "`denoise=True`"
        raise ValueError(f"`score` is required by {why} (e.g. jd.ExactScore(process, law))")
    adjoint = check_adjoint(adjoint)
    return _sample(
        key, score, process, shape, sampler, steps, t_end, grid, x_init, denoise, trajectory, adjoint
    )


@eqx.filter_jit
def _sample(key, score, process, shape, sampler, steps, t_end, grid, x_init, denoise, trajectory, adjoint):
    ts = grid(process, steps, t_end) if isinstance(grid, AbstractGrid) else grid
    nan_message = _NAN_MESSAGE + (_INTERPOLANT_HINT if isinstance(process, AbstractInterpolant) else "")
    if score is not None:  # at trace time only: once per compilation, not once per call
        _check_score(score, shape, ts.dtype)
    score = without_time_checks(score)  # the grid is checked: no error_if per step
    k_init, k_noise = jax.random.split(key)
    x = sampler.initial(k_init, process, ts, shape) if x_init is None else x_init.astype(ts.dtype)

    def one(i, xi):
        k = jax.random.fold_in(k_noise, i)
        return sampler.integrate(k, score, process, ts, xi, trajectory=trajectory, adjoint=adjoint)

    xs = jax.vmap(one)(jnp.arange(shape[0]), x)  # (n, *event) or (n, K+1, *event)
    if denoise:
        D = jax.vmap(denoiser(score, process), in_axes=(None, 0))
        last = xs[:, -1] if trajectory else xs
        x0 = D(ts[-1], last)
    if trajectory:
        xs = jnp.moveaxis(xs, 1, 0)
        if denoise:
            ts = jnp.concatenate([ts, jnp.zeros((1,), ts.dtype)])
            xs = jnp.concatenate([xs, x0[None]], axis=0)
        return ts, error_if_not_finite(xs, nan_message)
    return error_if_not_finite(x0 if denoise else xs, nan_message)
