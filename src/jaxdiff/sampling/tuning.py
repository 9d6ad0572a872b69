r"""Time grids learned by gradient descent through the sampler: `TunedGrid` and `tune_grid`.

A step sampler with $K$ steps is a differentiable map of its grid. With the noise levels
$\tilde\sigma = \sigma/\alpha$ fixed at both ends, the interior is parametrised monotonically
by the softmax of $K$ logits $\theta$: the increments in $\log\tilde\sigma$,

$$\log\tilde\sigma_k = \log\tilde\sigma_0 - \big(\log\tilde\sigma_0 - \log\tilde\sigma_K\big)
\sum_{j < k} \operatorname{softmax}(\theta)_j,$$

so every $\theta$ gives a strictly decreasing grid (times through the process's closed-form
`t_from_log_snr`). `tune_grid` minimises the mean squared endpoint error
$\frac1n\sum_i \|\Phi_\theta(x_i) - \Phi^\star(x_i)\|^2$ over prior draws $x_i$, with $\Phi^\star$
a teacher (by default a 256-step EDM Heun solve of the same score on the Karras grid: for
an exact score this is the exact flow map to the accuracy of the figures), by Adam through
`jd.sample`. The logits start from `EDMGrid(7)`. The error is reported on held-out noise
never used for training, for the starting and the tuned grid.

The idea of learning few-step schedules against a teacher follows e.g. Watson et al. (2021,
"Learning fast samplers for diffusion models by differentiating through sample quality",
arXiv 2202.05830) and Sabour et al. (2024, "Align your steps", arXiv 2404.14507); here the
teacher is the exact flow of the same score.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, PRNGKeyArray

from .._checks import is_concrete
from ..processes import AbstractProcess
from ..scores import ExactScore
from .base import AbstractSampler, AbstractStepSampler
from .edm import EDMHeun, noise_level
from .entry import sample
from .grids import AbstractGrid, EDMGrid


def _process_mismatch(a: AbstractProcess, b: AbstractProcess):
    """`None` if `a` and `b` are the same process; a reason string (concrete) or a traced
    boolean (traced parameters) otherwise."""
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    if ta != tb:
        return f"the grid was tuned for {a!r}, got {b!r}"
    if not la:
        return None
    if is_concrete(*la, *lb):
        same = all(np.allclose(np.asarray(x), np.asarray(y), rtol=1e-12, atol=0) for x, y in zip(la, lb))
        return None if same else f"the grid was tuned for {a!r}, got {b!r} (parameters differ)"
    return ~jnp.all(jnp.stack([jnp.all(jnp.isclose(x, y, rtol=1e-12, atol=0)) for x, y in zip(la, lb)]))


class TunedGrid(AbstractGrid):
    """An explicit descending grid learned for one process and step count (`tune_grid`).

    Use it as any grid: `jd.sample(..., grid=tuned, steps=tuned.steps, t_end=tuned.t_end)`,
    or pass `tuned.ts` as the explicit grid. A different process or step count is an error.
    Save and load it like a checkpoint with `save` and `TunedGrid.load`.
    """

    ts: Float[Array, " times"]
    process: AbstractProcess

    def __init__(self, ts, process: AbstractProcess):
        """**Arguments:** `ts`, the times `T = ts[0] > ... > ts[-1] = t_end > 0`; `process`,
        the process they were tuned for."""
        if not isinstance(process, AbstractProcess):
            raise ValueError(f"`process` must be a jaxdiff process, got {type(process).__name__}")
        ts = jnp.asarray(ts)
        if ts.ndim != 1 or ts.shape[0] < 2:
            raise ValueError(f"`ts` must be a 1-D array of at least 2 times, got shape {ts.shape}")
        if is_concrete(ts):
            tv = np.asarray(ts, np.float64)
            if not (np.all(np.isfinite(tv)) and np.all(np.diff(tv) < 0) and tv[-1] > 0):
                raise ValueError("`ts` must be finite and strictly decreasing to t_end > 0")
        self.ts, self.process = ts, process

    @property
    def steps(self) -> int:
        """The number of steps the grid was tuned for."""
        return self.ts.shape[0] - 1

    @property
    def t_end(self) -> Float[Array, ""]:
        """The last time of the grid."""
        return self.ts[-1]

    def __call__(self, process, steps, t_end):
        if steps != self.steps:
            raise ValueError(
                f"this TunedGrid has {self.steps} steps, got `steps={steps}`: tune a grid for {steps} steps "
                f"(`jd.tune_grid(..., steps={steps})`)"
            )
        bad = _process_mismatch(self.process, process)
        if isinstance(bad, str):
            raise ValueError(f"TunedGrid: {bad}; tune a grid for this process")
        ts = self.ts.astype(jnp.result_type(t_end, self.ts.dtype))
        t_end = jnp.asarray(t_end, ts.dtype)
        off = jnp.abs(t_end - ts[-1]) > 1e-6 * ts[-1]
        if bad is not None:
            off = off | bad
        return eqx.error_if(ts, off, "TunedGrid: `t_end` or the process differs from those it was tuned for")

    def save(self, path: str | os.PathLike):
        """Write the grid (and its process) to `path` as a checkpoint."""
        from ..training import save_checkpoint

        return save_checkpoint(path, self, meta={"kind": "TunedGrid", "steps": self.steps,
                                                 "process": type(self.process).__name__})  # fmt: skip

    @staticmethod
    def load(path: str | os.PathLike, process: AbstractProcess) -> TunedGrid:
        """Read a grid saved by `save`; `process` must be the one it was tuned for."""
        from ..training import load_checkpoint, read_checkpoint_meta

        meta = read_checkpoint_meta(path)
        if meta.get("kind") != "TunedGrid":
            raise ValueError(f"{path} is not a saved TunedGrid")
        if meta["process"] != type(process).__name__:
            raise ValueError(
                f"{path} was tuned for a {meta['process']} process, got {type(process).__name__}"
            )
        T = float(np.asarray(process.T))
        like = TunedGrid(jnp.linspace(T, T / 2, meta["steps"] + 1), process)
        loaded = load_checkpoint(path, like)
        bad = _process_mismatch(loaded.process, process)
        if bad is not None and (isinstance(bad, str) or bool(bad)):
            raise ValueError(f"{path}: {bad if isinstance(bad, str) else 'the process parameters differ'}")
        return loaded


class TuneLog(NamedTuple):
    """What `tune_grid` measured: `loss` per optimisation step (training mean squared
    endpoint error), and the held-out RMS endpoint error of the starting and tuned grids."""

    loss: Float[Array, " n_steps_opt"]
    heldout_rms_init: Float[Array, ""]
    heldout_rms: Float[Array, ""]


def grid_from_logits(process: AbstractProcess, logits, t_end) -> Float[Array, " times"]:
    """The monotone grid of the softmax parametrisation (module docstring)."""
    T = jnp.asarray(process.T, logits.dtype)
    t_end = jnp.asarray(t_end, logits.dtype)
    l0, l1 = jnp.log(noise_level(process, T)), jnp.log(noise_level(process, t_end))
    frac = jnp.concatenate([jnp.zeros((1,), logits.dtype), jnp.cumsum(jax.nn.softmax(logits))])
    ts = process.t_from_log_snr(-2 * (l0 + frac * (l1 - l0)))
    return ts.at[0].set(T).at[-1].set(t_end)


def logits_from_grid(process: AbstractProcess, ts) -> Float[Array, " steps"]:
    """Logits whose grid is `ts` (the inverse of `grid_from_logits`)."""
    return jnp.log(-jnp.diff(jnp.log(noise_level(process, ts))))


def tune_grid(
    score,
    process: AbstractProcess,
    sampler: AbstractStepSampler,
    *,
    steps: int,
    key: PRNGKeyArray,
    teacher: AbstractSampler | None = None,
    teacher_steps: int = 256,
    n_train: int = 512,
    n_heldout: int = 1000,
    n_steps_opt: int = 300,
    learning_rate: float = 0.05,
    t_end=None,
    event_shape: tuple[int, ...] | None = None,
    denoise: bool = True,
    init: AbstractGrid = EDMGrid(7.0),
) -> tuple[TunedGrid, TuneLog]:
    r"""Learn a `steps`-step grid for `sampler` on `score` (module docstring).

    **Arguments:**

    - `score`, `process`: as for `jd.sample` (exact or learned scores).
    - `sampler`: any step sampler (`LMS()`, `UniPC()`, `DPMSolverPP()`, `EDMHeun()`, ...).
    - `steps`: the grid's number of steps.
    - `key`: splits into the training and the held-out noise.
    - `teacher`: the sampler of the target endpoints, run with `teacher_steps` steps on
      `EDMGrid(7)` from the same noise (default `EDMHeun()`).
    - `n_train`, `n_heldout`: trajectories for training and for the held-out figure.
    - `n_steps_opt`, `learning_rate`: Adam steps (full batch) and step size on the logits.
    - `t_end`: the stopping time (default `1e-3 * T`); `event_shape`: the shape of one sample
      (taken from an `ExactScore`'s law if not given).
    - `denoise`: compare endpoints after the final denoiser step (as `jd.sample(denoise=True)`).
    - `init`: the grid the logits start from.

    **Returns:** `(TunedGrid, TuneLog)`. Runs under `jax.jit` (wrap it with
    `eqx.filter_jit`) and on any device count `jd.sample` supports.
    """
    if not isinstance(sampler, AbstractStepSampler):
        raise ValueError(
            f"`sampler` must be a step sampler (LMS(), UniPC(), ...), got {type(sampler).__name__}"
        )
    for name, v in (
        ("steps", steps),
        ("n_train", n_train),
        ("n_heldout", n_heldout),
        ("n_steps_opt", n_steps_opt),
    ):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ValueError(f"`{name}` must be a positive integer, got {v!r}")
    if event_shape is None:
        if not isinstance(score, ExactScore):
            raise ValueError(
                "give `event_shape` (the shape of one sample) for a score that is not an ExactScore"
            )
        event_shape = (score.law.dim,)
    teacher = EDMHeun() if teacher is None else teacher
    if t_end is None:
        t_end = 1e-3 * process.T
    dtype = jnp.result_type(float)
    t_end = jnp.asarray(t_end, dtype)
    k_train, k_held = jax.random.split(key)
    x_train = process.prior_sample(k_train, (n_train, *event_shape), dtype)
    x_held = process.prior_sample(k_held, (n_heldout, *event_shape), dtype)

    def run(s, x, **grid_kw):
        return sample(jax.random.PRNGKey(0), score, process, x.shape, sampler=s, x_init=x, denoise=denoise,
                      **grid_kw)  # fmt: skip

    def teach(x):
        return run(teacher, x, grid=EDMGrid(7.0), steps=teacher_steps, t_end=t_end)

    y_train, y_held = jax.lax.stop_gradient(teach(x_train)), jax.lax.stop_gradient(teach(x_held))

    def err2(logits, x, y):
        out = run(sampler, x, grid=grid_from_logits(process, logits, t_end))
        return jnp.mean(jnp.sum(jnp.reshape(out - y, (x.shape[0], -1)) ** 2, axis=1))

    opt = optax.adam(learning_rate)
    logits0 = logits_from_grid(process, init(process, steps, t_end))

    def opt_step(carry, _):
        logits, state = carry
        loss, g = jax.value_and_grad(err2)(logits, x_train, y_train)
        updates, state = opt.update(g, state, logits)
        return (optax.apply_updates(logits, updates), state), loss

    (logits, _), losses = jax.lax.scan(opt_step, (logits0, opt.init(logits0)), None, length=n_steps_opt)
    log = TuneLog(losses, jnp.sqrt(err2(logits0, x_held, y_held)), jnp.sqrt(err2(logits, x_held, y_held)))
    return TunedGrid(grid_from_logits(process, logits, t_end), process), log
