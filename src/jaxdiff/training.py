r"""Training a score by score matching: Optax, EMA, checkpoints, data parallelism.

One training step draws a minibatch (example `i` of step `k` uses
`fold_in(fold_in(key, k), i)`, for both the data index and the loss noise), evaluates the
loss (`DSMLoss()` by default), and applies an Optax update. The exponential moving average
of the weights is kept in its bias-corrected form,

$$m_k = \beta m_{k-1} + (1-\beta)\theta_k,\quad m_0 = 0,\qquad \bar\theta_k = m_k / (1 - \beta^k),$$

a weighted mean of the iterates with weights $\propto\beta^{k-j}$ (so short runs are not
dragged back to the initial weights).

Steps run in chunks of `log_every` (one `lax.scan` per chunk, or one compiled step per
dispatch for convolutional networks, see `fuse_steps`) with one host sync per chunk; the
progress bar, the NaN check and checkpoints happen between chunks.

**Data parallelism.** The minibatch is sharded along its first axis over a 1-D
`jax.sharding.Mesh` of `devices` (all local devices by default) and the weights are
replicated; XLA inserts the gradient all-reduce. Since every example's randomness depends
on its index only, the loss curve does not depend on the number of devices (up to the order
of floating-point sums).

**Checkpoints** are written atomically (a temporary file in the same folder, `fsync`, then
`os.replace`), so an interrupted write leaves the previous checkpoint intact. A checkpoint
holds the weights, optimizer state, EMA accumulator, step and loss history; `train` resumes
from an existing checkpoint at `checkpoint` (with the same `key`, the result is bit-for-bit
the uninterrupted run).
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import time
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import Array, PRNGKeyArray, PyTree

from ._checks import as_float_array, check_finite
from .distributions import AbstractLaw
from .losses import AbstractLoss, DSMLoss
from .processes import AbstractProcess
from .scores import AbstractScore

_MAGIC = b"jaxdiff-checkpoint-v1\n"

# ---------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------


def save_checkpoint(path: str | os.PathLike, tree: PyTree, *, meta: dict | None = None) -> pathlib.Path:
    """Write `tree`'s arrays (Equinox serialisation) and a JSON `meta` header to `path`, atomically.

    The bytes go to a temporary file beside `path`, are flushed to disk, and only then
    replace `path` (`os.replace` is atomic on POSIX and Windows): a crash or an exception
    mid-write leaves the previous file untouched.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(_MAGIC)
            f.write(json.dumps(meta or {}).encode() + b"\n")
            eqx.tree_serialise_leaves(f, tree)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def read_checkpoint_meta(path: str | os.PathLike) -> dict:
    """The JSON header written by `save_checkpoint`."""
    with open(path, "rb") as f:
        return _read_header(f, path)


def _read_header(f, path) -> dict:
    if f.readline() != _MAGIC:
        raise ValueError(f"`{path}` is not a jaxdiff checkpoint")
    return json.loads(f.readline())


def load_checkpoint(path: str | os.PathLike, like: PyTree) -> PyTree:
    """Read a checkpoint written by `save_checkpoint` into the structure of `like`
    (same tree structure, shapes and dtypes); the values are bit-for-bit those saved."""
    with open(path, "rb") as f:
        _read_header(f, path)
        try:
            return eqx.tree_deserialise_leaves(f, like)
        except Exception as e:  # shapes or structure differ from the saved tree
            raise ValueError(f"checkpoint `{path}` does not match the given structure: {e}") from e


# ---------------------------------------------------------------------------------------
# The training loop
# ---------------------------------------------------------------------------------------


class TrainLog(NamedTuple):
    """What `train(..., return_log=True)` returns next to the score."""

    step: np.ndarray  # 1, 2, ..., steps
    loss: np.ndarray  # minibatch loss of each step (before its update)
    seconds: float  # wall time of this call, compilation included
    raw_score: Any  # the last iterate (no EMA)


class _State(eqx.Module):
    params: PyTree
    opt_state: PyTree
    ema: PyTree  # un-normalised accumulator m_k
    step: Array


def _trainable_spec(score: AbstractScore) -> PyTree:
    spec = jax.tree.map(eqx.is_inexact_array, score)
    # the forward process is part of the problem, not of the model: never trained
    return eqx.tree_at(lambda s: s.process, spec, replace=jax.tree.map(lambda _: False, score.process))


def _draw_batch(data, key, batch_size: int):
    if isinstance(data, AbstractLaw):
        return data.sample(key, batch_size)
    n = data.shape[0]
    idx = jax.vmap(lambda i: jax.random.randint(jax.random.fold_in(key, i), (), 0, n))(jnp.arange(batch_size))
    return data[idx]


def _step(carry: _State, frozen, data, key, *, loss, process, optimizer, ema, batch_size, sharding):
    """One optimisation step; its randomness depends on the step and example indices only."""
    k_batch, k_loss = jax.random.split(jax.random.fold_in(key, carry.step))
    x0 = jax.lax.with_sharding_constraint(_draw_batch(data, k_batch, batch_size), sharding)

    def f(params):
        return loss(eqx.combine(params, frozen), process, x0, key=k_loss)

    value, grads = jax.value_and_grad(f)(carry.params)
    updates, opt_state = optimizer.update(grads, carry.opt_state, carry.params)
    params = optax.apply_updates(carry.params, updates)
    m = jax.tree.map(lambda e, p: ema * e + (1 - ema) * p, carry.ema, params)
    return _State(params, opt_state, m, carry.step + 1), value


# Set-up and finish are one compiled call each: leaf by leaf, a U-Net's ~300 arrays cost 60 ms
# of dispatches per `train` call (2 ms per step over a 30-step benchmark run).
@eqx.filter_jit
def _initial_state(params, optimizer, sharding) -> _State:
    # a copy (never the caller's arrays: the state is donated step by step), placed on the mesh
    params = jax.tree.map(jnp.copy, params)
    zeros = jax.tree.map(jnp.zeros_like, params)
    state = _State(params, optimizer.init(params), zeros, jnp.zeros((), jnp.int32))
    return jax.tree.map(lambda a: jax.lax.with_sharding_constraint(a, sharding), state)


@eqx.filter_jit
def _divide(tree, denominator):
    return jax.tree.map(lambda m: m / denominator, tree)


# The training state is donated (its buffers are reused for the next state; everything else,
# the first argument, is not): no fresh parameter, optimiser and EMA buffers every step.
@functools.partial(eqx.filter_jit, donate="all-except-first")
def _one_step(fixed, state: _State):
    frozen, data, key, config = fixed
    return _step(state, frozen, data, key, **config)


@functools.partial(eqx.filter_jit, donate="all-except-first")
def _fused_steps(fixed, state: _State):
    frozen, data, key, config, n_steps = fixed
    return jax.lax.scan(lambda c, _: _step(c, frozen, data, key, **config), state, None, length=n_steps)


def _run_chunk(state, frozen, data, key, *, n_steps, fuse, **config):
    if fuse:
        return _fused_steps((frozen, data, key, config, n_steps), state)
    values = []
    for _ in range(n_steps):  # asynchronous dispatch: no host sync inside the chunk
        state, value = _one_step((frozen, data, key, config), state)
        values.append(value)
    return state, jnp.stack(values)


def _has_conv(tree) -> bool:
    is_conv = lambda x: isinstance(x, eqx.nn.Conv)
    return any(is_conv(x) for x in jax.tree.leaves(tree, is_leaf=is_conv))


def _check_positive_int(name, v):
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {v!r}")
    return int(v)


def train(
    score: AbstractScore,
    data: Array | AbstractLaw,
    process: AbstractProcess,
    *,
    key: PRNGKeyArray,
    steps: int,
    batch_size: int,
    loss: AbstractLoss = DSMLoss(),
    optimizer: optax.GradientTransformation = optax.adam(1e-3),
    ema: float = 0.999,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 1000,
    log_every: int = 100,
    progress: bool = True,
    devices: list | None = None,
    fuse_steps: bool | None = None,
    return_log: bool = False,
) -> AbstractScore | tuple[AbstractScore, TrainLog]:
    """Train the arrays of `score` (not those of its process) by minimising `loss` on `data`.

    **Arguments:**

    - `score`: the score to train, e.g. `NetworkScore(MLP(2, key=k), process)`.
    - `data`: training data of shape `(N, *sample_shape)` (minibatches drawn with
      replacement), or an exact law (fresh samples every step).
    - `process`: the forward process (must equal `score.process`).
    - `key`: the run's key; step `k` uses `fold_in(key, k)`.
    - `steps`: total number of optimisation steps (a resumed run continues up to it).
    - `batch_size`: examples per step (divisible by the number of `devices`).
    - `loss`: a loss object, `DSMLoss(weighting=..., time_sampler=..., t_min=...)` (default)
      or `SlicedScoreMatchingLoss(...)`.
    - `optimizer`: an Optax transformation (default `optax.adam(1e-3)`). Reuse one object
      across calls: the compiled step is cached on it.
    - `ema`: EMA decay in `[0, 1)`; 0 returns the last iterate.
    - `checkpoint`: a file path; saved every `checkpoint_every` steps and at the end, and
      resumed from when it exists.
    - `log_every`: steps per compiled chunk (progress bar, NaN check).
    - `progress`: show a tqdm progress bar.
    - `devices`: devices for data parallelism (default: all local devices).
    - `fuse_steps`: `True` runs each chunk of `log_every` steps as one `lax.scan` (one
      dispatch per chunk: 1.9x faster for the benchmark MLP on a CPU); `False` dispatches one
      compiled step at a time (no host sync inside a chunk either). XLA:CPU runs convolutions
      inside a loop far slower (the benchmark U-Net: 40x), so the default `None` fuses unless
      the score contains an `equinox.nn.Conv` layer.
    - `return_log`: also return a `TrainLog` (per-step losses, wall time, last iterate).

    **Returns:** the trained score with the EMA weights (and the `TrainLog` if asked).
    A NaN or inf loss stops training with a `FloatingPointError` naming the step.
    """
    from tqdm import tqdm

    if not isinstance(score, AbstractScore):
        raise ValueError(f"`score` must be a jaxdiff score (e.g. NetworkScore), got {type(score).__name__}")
    if not isinstance(process, AbstractProcess):
        raise ValueError(f"`process` must be a jaxdiff process, got {type(process).__name__}")
    if not bool(eqx.tree_equal(score.process, process)):
        raise ValueError("`process` differs from `score.process`: train a score with its own process")
    if not isinstance(loss, AbstractLoss):
        raise ValueError(f"`loss` must be a loss object such as DSMLoss(), got {loss!r}")
    steps = _check_positive_int("steps", steps)
    batch_size = _check_positive_int("batch_size", batch_size)
    checkpoint_every = _check_positive_int("checkpoint_every", checkpoint_every)
    log_every = _check_positive_int("log_every", log_every)
    if not (isinstance(ema, (int, float)) and 0 <= ema < 1):
        raise ValueError(f"`ema` must be a float in [0, 1), got {ema!r}")
    if not isinstance(data, AbstractLaw):
        data = check_finite("data", as_float_array("data", data))
        if data.ndim < 2 or data.shape[0] < 1:
            raise ValueError(f"`data` must have shape (N, *sample_shape) with N >= 1, got {data.shape}")
    devices = list(jax.local_devices() if devices is None else devices)
    if not devices:
        raise ValueError("`devices` is empty")
    if batch_size % len(devices):
        raise ValueError(f"`batch_size` ({batch_size}) must be divisible by the {len(devices)} `devices`")

    mesh = Mesh(np.array(devices), ("batch",))
    replicated = NamedSharding(mesh, PartitionSpec())
    sharding = NamedSharding(mesh, PartitionSpec("batch"))

    if fuse_steps is None:
        fuse_steps = not _has_conv(score)
    params, frozen = eqx.partition(score, _trainable_spec(score))
    state = _initial_state(params, optimizer, replicated)
    losses = np.zeros((0,), np.dtype(jnp.result_type(float)))
    # only arrays move: Python scalars (a process's `T`, say) must stay static
    put = lambda tree: jax.tree.map(lambda a: jax.device_put(a, replicated) if eqx.is_array(a) else a, tree)
    if checkpoint is not None and os.path.exists(checkpoint):
        meta = read_checkpoint_meta(checkpoint)
        like = (state, np.zeros((int(meta["step"]),), losses.dtype))
        state, losses = load_checkpoint(checkpoint, like)
        state, losses = put(state), np.asarray(losses)
    frozen, data, key = put((frozen, data, key))
    start = int(state.step)
    chunk_losses = [losses]
    t0 = time.perf_counter()
    bar = tqdm(total=steps, initial=min(start, steps), disable=not progress, desc="train", unit="step")
    step = start
    try:
        while step < steps:
            # chunks end at multiples of log_every and checkpoint_every, and at `steps`
            nxt = min(steps, (step // log_every + 1) * log_every)
            if checkpoint is not None:
                nxt = min(nxt, (step // checkpoint_every + 1) * checkpoint_every)
            n = nxt - step
            state, values = _run_chunk(
                state, frozen, data, key, n_steps=n, fuse=fuse_steps, loss=loss, process=process,
                optimizer=optimizer, ema=float(ema), batch_size=batch_size, sharding=sharding,
            )
            values = np.asarray(values)
            if not np.all(np.isfinite(values)):
                bad = step + 1 + int(np.argmin(np.isfinite(values)))
                raise FloatingPointError(
                    f"training loss is NaN or inf at step {bad}: "
                    "lower the learning rate, raise t_min, or check `data`"
                )
            chunk_losses.append(values)
            step = nxt
            bar.update(n)
            bar.set_postfix(loss=f"{values.mean():.4g}")
            if checkpoint is not None and (step % checkpoint_every == 0 or step == steps):
                save_checkpoint(checkpoint, (state, np.concatenate(chunk_losses)), meta={"step": step})
    finally:
        bar.close()

    losses = np.concatenate(chunk_losses)
    k = int(state.step)
    if ema > 0 and k > 0:
        avg = _divide(state.ema, jnp.asarray(1.0 - ema**k, jnp.result_type(float)))
    else:
        avg = state.params
    trained = eqx.combine(avg, frozen)
    if not return_log:
        return trained
    log = TrainLog(step=np.arange(1, len(losses) + 1), loss=losses, seconds=time.perf_counter() - t0,
                   raw_score=eqx.combine(state.params, frozen))
    return trained, log
