r"""The sampler interface and the `sample` entry point.

Reverse-time simulation runs from `T` down to a stopping time `t_end > 0` on a descending grid
`ts` (`ts[0] = T`, `ts[-1] = t_end`). Samplers are written for **one sample** of any event
shape; `sample` draws the initial state of the batch and `jax.vmap`s the sampler over the
rows. Row `i` uses the key `fold_in(k_noise, i)` and, within it, step `k` uses
`fold_in(fold_in(k_noise, i), k)`: a sample's noise depends on its row and step only, so the
first rows of a large batch equal a small batch, and the adaptive ODE solvers step each
sample on its own.

Two kinds of sampler:

* `AbstractStepSampler`: a one-step map `x_t -> x_s` on the grid (Euler–Maruyama, DDPM,
  DDIM, EDM's Heun, DPM-Solver++, the exact ancestral sampler, predictor–corrector),
  iterated by one `lax.scan`. This is the fast path: no Brownian tree, no solver
  bookkeeping.
* Samplers built on Diffrax (`ProbabilityFlow`, `ReverseSDE(solver=...)`), which override
  `integrate` and hand the reverse dynamics to `diffrax.diffeqsolve`.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray, PyTree

from .._checks import as_float_array, check_finite, is_concrete
from ..processes import AbstractProcess
from ..scores import AbstractScore, without_time_checks
from .grids import AbstractGrid, LogSNRGrid

Scalar = Float[ArrayLike, ""]
Score = Callable[[Any, Any], Any]

DEFAULT_STEPS = 100
DEFAULT_T_END_FRACTION = 1e-3  # t_end defaults to 1e-3 * T


def denoiser(score: Score, process: AbstractProcess) -> Callable:
    r"""Tweedie's denoiser $D(t, x) = E[X_0 | X_t = x]$ of `score`.

    A jaxdiff score (`AbstractScore`) supplies its own `denoise` (exact for `ExactScore`,
    direct for an x0-parametrised network); any other callable goes through
    $D = (x + \sigma^2 s(t, x)) / \alpha$.
    """
    if isinstance(score, AbstractScore):
        return score.denoise

    def D(t, x):
        return (x + process.sigma2(t) * score(t, x)) / process.alpha(t)

    return D


class AbstractSampler(eqx.Module):
    """A reverse-time sampler: maps a state at `ts[0]` to a state at `ts[-1]` for one sample.

    `uses_score = False` marks samplers that ignore the score (the exact sampler).
    """

    uses_score: ClassVar[bool] = True

    @abc.abstractmethod
    def integrate(
        self,
        key: PRNGKeyArray,
        score: Score,
        process: AbstractProcess,
        ts: Float[Array, " times"],
        x: Float[Array, "*event"],
        *,
        trajectory: bool,
    ) -> Float[Array, "*event"] | Float[Array, " times *event"]:
        """Run one sample `x` (the state at `ts[0]`) down the grid `ts`.

        **Arguments:** `key`, this sample's own key (step `k` may use `fold_in(key, k)`);
        `score(t, x)` on one sample; `process`; `ts`, descending times; `x`, the state at
        `ts[0]`; `trajectory`: return the states at every `ts` (first one `x`) instead of
        the last one.
        """

    @abc.abstractmethod
    def nfe(self, steps: int) -> int | None:
        """Score (or denoiser) evaluations per sample for `steps` grid steps (`None` when
        it is not known in advance, e.g. adaptive step sizes)."""

    def initial(
        self, key: PRNGKeyArray, process: AbstractProcess, ts: Float[Array, " times"], shape: tuple[int, ...]
    ):
        """The batch's state at `ts[0]`: by default the prior `N(0, prior_std^2 I)`, row `i`
        from `fold_in(key, i)`. (The exact sampler starts from the exact marginal.)"""
        return process.prior_sample(key, shape, dtype=ts.dtype)


class AbstractStepSampler(AbstractSampler):
    """A sampler given by a one-step map from `t` to `s < t` on the grid, iterated with
    `lax.scan`. Step `k` receives the key `fold_in(key, k)`."""

    @abc.abstractmethod
    def init_state(self, score: Score, process: AbstractProcess, ts: Float[Array, " times"], x) -> PyTree:
        """Auxiliary state carried between steps (multistep history; `None` if unused)."""

    @abc.abstractmethod
    def step(
        self,
        key: PRNGKeyArray,
        score: Score,
        process: AbstractProcess,
        t: Scalar,
        s: Scalar,
        x,
        state: PyTree,
    ) -> tuple[Float[Array, "*event"], PyTree]:
        """One step of one sample from time `t` to the next grid time `s < t`."""

    def integrate(self, key, score, process, ts, x, *, trajectory):
        return scan_steps(self, key, score, process, ts, x, trajectory=trajectory)


def scan_steps(sampler: AbstractStepSampler, key, score, process, ts, x, *, trajectory: bool):
    """Iterate `sampler.step` over the grid `ts` with one `lax.scan` (one sample)."""
    K = ts.shape[0] - 1
    state = sampler.init_state(score, process, ts, x)

    def body(carry, inp):
        x, state = carry
        t, s, k = inp
        x, state = sampler.step(jax.random.fold_in(key, k), score, process, t, s, x, state)
        return (x, state), (x if trajectory else None)

    (x_end, _), xs = jax.lax.scan(body, (x, state), (ts[:-1], ts[1:], jnp.arange(K)))
    if trajectory:
        return jnp.concatenate([x[None], xs], axis=0)
    return x_end


# ---------------------------------------------------------------------------------------
# The entry point
# ---------------------------------------------------------------------------------------


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
    if t_end.shape != ():
        raise ValueError(f"`t_end` must be a scalar time, got shape {t_end.shape}")
    if is_concrete(t_end, T):
        v, Tv = float(t_end), float(np.asarray(T))
        if not np.isfinite(v):
            raise ValueError(f"`t_end` must be finite, got {v}")
        if v <= 0:
            raise ValueError(
                f"`t_end` must be > 0 (the stopping time: the score of a singular law blows up at t = 0), "
                f"got {v}"
            )
        if v >= Tv:
            raise ValueError(f"`t_end` must be < T = {Tv} (sampling runs from T down to t_end), got {v}")
        return t_end
    bad = ~(jnp.isfinite(t_end) & (t_end > 0) & (t_end < T))
    return eqx.error_if(t_end, bad, "`t_end` must satisfy 0 < t_end < T")


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
        if tv[-1] <= 0:
            raise ValueError(f"an explicit `grid` must end at t_end > 0, got {tv[-1]}")
        if tv[0] > Tv * (1 + 1e-6):
            raise ValueError(f"an explicit `grid` must start at or below T = {Tv}, got {tv[0]}")
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
):
    r"""Draw samples by running the reverse-time dynamics from `T` down to `t_end`.

    **Arguments:**

    - `key`: a PRNG key. It is split into an initialisation key and a noise key; row `i`
      uses `fold_in(., i)` of each, so a sample does not depend on the batch size.
    - `score`: `score(t, x)` on one sample (`jd.ExactScore`, a network score, any callable);
      may be `None` for samplers that ignore it (`ExactSampler`).
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
      `t_end` (a uniform grid in t was 3-6x less accurate on OU at equal NFE).
    - `x_init`: the state at `ts[0]` (shape `shape`), e.g. a wrong initialisation;
      default: the prior (the exact marginal for `ExactSampler`).
    - `denoise`: finish with Tweedie's step $x \mapsto E[X_0 | X_{t_\mathrm{end}} = x]$.
    - `trajectory`: return `(ts, xs)` with `xs` of shape `(len(ts), *shape)`; with
      `denoise=True` a last entry at time 0 holds the denoised samples.

    **Returns:** an array of `shape`, or `(ts, xs)`.

    Jit-compiled (one compile per sampler, shape, step count and static configuration) and
    differentiable with respect to the score's and the process's array parameters and
    `t_end`. Non-finite output raises a `ValueError` (an `eqx.error_if` error under an
    outer `jit`/`grad`).
    """
    from .exact import ExactSampler
    from .sde import ReverseSDE

    if sampler is None:
        sampler = ReverseSDE()
    if not isinstance(sampler, AbstractSampler):
        raise ValueError(
            f"`sampler` must be a jaxdiff sampler (ReverseSDE(), DDPM(), ...), got {type(sampler).__name__}"
        )
    if not isinstance(process, AbstractProcess):
        raise ValueError(f"`process` must be a jaxdiff process (OU, VP, ...), got {type(process).__name__}")
    shape = _check_shape(shape)
    if isinstance(grid, AbstractGrid):
        steps = _check_steps(DEFAULT_STEPS if steps is None else steps)
        t_end = _check_t_end(DEFAULT_T_END_FRACTION * process.T if t_end is None else t_end, process.T)
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
    if isinstance(sampler, ExactSampler) and shape[1:] != (sampler.law.dim,):
        raise ValueError(
            f"`shape` must be (batch, {sampler.law.dim}) for the ExactSampler's law, got {shape}"
        )
    if denoise and score is None:
        if not isinstance(sampler, ExactSampler):
            raise ValueError("`denoise=True` needs a `score`")
        from ..scores import ExactScore

        score = ExactScore(process, sampler.law)
    check_score = sampler.uses_score or score is not None

    out, ok = _sample(
        key, score, process, shape, sampler, steps, t_end, grid, x_init, denoise, trajectory, check_score
    )
    if is_concrete(ok):
        if not bool(ok):
            raise ValueError(_NAN_MESSAGE)
    else:
        out = eqx.error_if(out, ~ok, _NAN_MESSAGE)
    return out


@eqx.filter_jit
def _sample(
    key, score, process, shape, sampler, steps, t_end, grid, x_init, denoise, trajectory, check_score
):
    ts = grid(process, steps, t_end) if isinstance(grid, AbstractGrid) else grid
    if check_score:  # at trace time only: once per compilation, not once per call
        _check_score(score, shape, ts.dtype)
    score = without_time_checks(score)  # the grid is checked: no error_if per step
    k_init, k_noise = jax.random.split(key)
    x = sampler.initial(k_init, process, ts, shape) if x_init is None else x_init.astype(ts.dtype)

    def one(i, xi):
        return sampler.integrate(
            jax.random.fold_in(k_noise, i), score, process, ts, xi, trajectory=trajectory
        )

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
        out = (ts, xs)
        ok = jnp.all(jnp.isfinite(xs))
    else:
        out = x0 if denoise else xs
        ok = jnp.all(jnp.isfinite(out))
    return out, ok
