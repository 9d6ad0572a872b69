r"""Training a score by score matching: Optax, EMA, checkpoints, data parallelism.

One training step draws a minibatch (example `i` of step `k` uses
`fold_in(fold_in(key, k), i)`, for both the data index and the loss noise), evaluates the
loss (by default EDM's: preconditioning scaled by the data, its weighting and log-normal noise
levels), and applies an Optax update. The exponential moving average
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
import os
import time
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec
from jaxtyping import Array, PRNGKeyArray, PyTree

from ._checks import as_float_array, check_finite
from .checkpoint import (
    TRAIN_STATE,
    CheckpointError as CheckpointError,
    check_checkpoint_path,
    load_checkpoint as load_checkpoint,
    read_checkpoint_meta as read_checkpoint_meta,
    resume_state,
    run_fingerprint,
    save_checkpoint as save_checkpoint,
)
from .distributions import AbstractLaw
from .losses import AbstractLoss, DSMLoss, EDMWeighting, LogNormalTime
from .parallel import device_mesh
from .processes import AbstractProcess
from .scores import AbstractScore

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


_LAW_DRAWS = 8192  # samples of a law from which `sigma_data` is estimated
_SIGMA_DATA_KEY = 0x7FFFFFFF  # fold_in tag of that draw: no training step uses it


def _sigma_data_of(data, key) -> float:
    """The root mean square of the data's coordinates (1 for all-zero data)."""
    if isinstance(data, AbstractLaw):
        data = data.sample(jax.random.fold_in(key, _SIGMA_DATA_KEY), _LAW_DRAWS)
    try:
        rms = float(np.sqrt(np.mean(np.square(np.asarray(data, np.float64)))))
    except (TypeError, ValueError):  # not numbers: `train` refuses such data with its own message
        return 1.0
    return rms if np.isfinite(rms) and rms > 0 else 1.0


def _resolve_sigma_data(score, loss, data, key):
    """Fill `sigma_data=None` of EDM preconditioning and of the EDM weighting: the score's own
    value if it has one, else the data's scale; the trained score records it."""
    from .conditional.network import ConditionalNetworkScore
    from .losses import EDMWeighting, SlicedScoreMatchingLoss
    from .network_score import EDMParam, NetworkScore

    networks = (NetworkScore, ConditionalNetworkScore)  # one parametrisation each, filled alike
    edm_score = isinstance(score, networks) and isinstance(score.parametrisation, EDMParam)
    edm_loss = isinstance(loss, (DSMLoss, SlicedScoreMatchingLoss))
    edm_loss = edm_loss and isinstance(loss.weighting, EDMWeighting)
    sd = None
    if edm_score:
        sd = score.parametrisation.sigma_data
    if (edm_score and sd is None) or (edm_loss and loss.weighting.sigma_data is None and sd is None):
        sd = _sigma_data_of(data, key)
    is_none = lambda x: x is None
    if edm_score and score.parametrisation.sigma_data is None:
        score = eqx.tree_at(lambda s: s.parametrisation.sigma_data, score, sd, is_leaf=is_none)
    if edm_loss and loss.weighting.sigma_data is None:
        loss = eqx.tree_at(lambda w: w.weighting.sigma_data, loss, sd, is_leaf=is_none)
    return score, loss


@functools.lru_cache(maxsize=8)  # one object per `steps`: the compiled step is cached on it
def default_optimizer_for(steps: int) -> optax.GradientTransformation:
    """`train`'s default optimiser: Adam, learning rate decaying from 2e-3 to 1e-4 along a
    cosine over `steps`."""
    return optax.adam(optax.cosine_decay_schedule(2e-3, steps, alpha=0.05))


def train(
    score: AbstractScore,
    process: AbstractProcess,
    data: Array | AbstractLaw,
    *,
    key: PRNGKeyArray,
    steps: int,
    batch_size: int,
    loss: AbstractLoss | None = None,
    optimizer: optax.GradientTransformation | None = None,
    ema: float = 0.999,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 1000,
    resume: str = "check",
    log_every: int = 100,
    progress: bool = True,
    devices: list | None = None,
    fuse_steps: bool | None = None,
    return_log: bool = False,
    labels=None,
    label_dropout: float = 0.1,
) -> AbstractScore | tuple[AbstractScore, TrainLog]:
    """Train the arrays of `score` (not those of its process) by minimising `loss` on `data`.

    **Arguments:**

    - `score`: the score to train, e.g. `NetworkScore(MLP(2, key=k), process)`.
    - `process`: the forward process (must equal `score.process`); as everywhere, right
      after the score. (The earlier order `train(score, data, process)` is still accepted.)
    - `data`: training data of shape `(N, *sample_shape)` (minibatches drawn with
      replacement), or an exact law (fresh samples every step).
    - `key`: the run's key; step `k` uses `fold_in(key, k)`.
    - `steps`: total number of optimisation steps (a resumed run continues up to it).
    - `batch_size`: examples per step (divisible by the number of `devices`).
    - `loss`: a loss object, `DSMLoss(weighting=..., time_sampler=..., t_min=...)` or
      `SlicedScoreMatchingLoss(...)`. Default: `DSMLoss(EDMWeighting(), LogNormalTime())`,
      EDM's weighting and log-normal noise levels (Karras et al. 2022, "Elucidating the
      Design Space of Diffusion-Based Generative Models", arXiv:2206.00364). An
      `EDMWeighting(sigma_data=None)` takes the score's `sigma_data`, or the data's scale.
    - `optimizer`: an Optax transformation. Default: Adam with a cosine learning-rate decay
      from 2e-3 to 1e-4 over `steps` (Loshchilov & Hutter 2017, "SGDR: Stochastic Gradient
      Descent with Warm Restarts", arXiv:1608.03983); its schedule depends on `steps`, so a
      checkpoint of it resumes only with the same `steps`. Reuse one object
      across calls: the compiled step is cached on it.
    - `ema`: EMA decay in `[0, 1)`; 0 returns the last iterate.
    - `checkpoint`: a file path; saved every `checkpoint_every` steps and at the end, and
      resumed from when it exists. The file records a fingerprint of the run (the data's
      shape and hash, the loss, the optimiser's state structure, `batch_size`, `ema`, the
      process and the network's structure); resuming from a file of another run raises a
      `ValueError` naming what differs. A file already at `steps` returns its model without
      training; one past `steps` raises. A damaged file raises `CheckpointError`.
    - `resume`: `"check"` (default) refuses a checkpoint whose fingerprint differs;
      `"force"` resumes from it anyway (e.g. after changing the learning rate on purpose).
    - `log_every`: steps per compiled chunk (progress bar, NaN check).
    - `progress`: show a tqdm progress bar.
    - `devices`: devices for data parallelism (default: all local devices).
    - `fuse_steps`: `True` runs each chunk of `log_every` steps as one `lax.scan` (one
      dispatch per chunk: 1.9x faster for the benchmark MLP on a CPU); `False` dispatches one
      compiled step at a time (no host sync inside a chunk either). XLA:CPU runs convolutions
      inside a loop far slower (the benchmark U-Net: 40x), so the default `None` fuses unless
      the score contains an `equinox.nn.Conv` layer.
    - `return_log`: also return a `TrainLog` (per-step losses, wall time, last iterate).
    - `labels`: class labels of the examples, shape `(N,)`, to train a
      `jaxdiff.conditional.ConditionalNetworkScore`: each example's label is replaced by the
      null label with probability `label_dropout`, so one network learns the conditional and
      the unconditional score (classifier-free guidance needs both).

    A `NetworkScore` with `EDMParam(sigma_data=None)` (the default parametrisation) gets
    `sigma_data`, the root mean square of the data's coordinates (of 8192 draws for a law).

    **Returns:** the trained score with the EMA weights (and the `TrainLog` if asked).
    A NaN or inf loss stops training with a `FloatingPointError` naming the step.
    """
    from tqdm import tqdm

    if isinstance(data, AbstractProcess) and not isinstance(process, AbstractProcess):
        process, data = data, process  # the earlier order train(score, data, process)
    if not isinstance(score, AbstractScore):
        raise ValueError(f"`score` must be a jaxdiff score (e.g. NetworkScore), got {type(score).__name__}")
    if not isinstance(process, AbstractProcess):
        raise ValueError(f"`process` must be a jaxdiff process, got {type(process).__name__}")
    if not bool(eqx.tree_equal(score.process, process)):
        raise ValueError("`process` differs from `score.process`: train a score with its own process")
    if loss is None:
        loss = DSMLoss(EDMWeighting(), LogNormalTime())
    default_optimizer = optimizer is None
    if not isinstance(loss, AbstractLoss):
        raise ValueError(f"`loss` must be a loss object such as DSMLoss(), got {loss!r}")
    # from the data as given (before labels join it as a column)
    score, loss = _resolve_sigma_data(score, loss, data, key)
    if labels is not None:  # the labels travel as a last column of the data
        from .conditional.network import pack_labelled

        data, loss = pack_labelled(score, data, labels, loss, label_dropout)
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
    if resume not in ("check", "force"):
        raise ValueError(f"`resume` must be 'check' or 'force', got {resume!r}")
    if checkpoint is not None:
        checkpoint = check_checkpoint_path(checkpoint)
    if default_optimizer:
        optimizer = default_optimizer_for(steps)
    devices = list(jax.local_devices() if devices is None else devices)
    if not devices:
        raise ValueError("`devices` is empty")
    if batch_size % len(devices):
        raise ValueError(f"`batch_size` ({batch_size}) must be divisible by the {len(devices)} `devices`")

    mesh = device_mesh(devices)
    replicated = NamedSharding(mesh, PartitionSpec())
    sharding = NamedSharding(mesh, PartitionSpec(mesh.axis_names[0]))

    if fuse_steps is None:
        fuse_steps = not _has_conv(score)
    params, frozen = eqx.partition(score, _trainable_spec(score))
    state = _initial_state(params, optimizer, replicated)
    losses = np.zeros((0,), np.dtype(jnp.result_type(float)))
    # only arrays move: Python scalars (a process's `T`, say) must stay static
    put = lambda tree: jax.tree.map(lambda a: jax.device_put(a, replicated) if eqx.is_array(a) else a, tree)
    fingerprint = None
    if checkpoint is not None:
        fingerprint = run_fingerprint(score, data, process, loss, state.opt_state, batch_size, ema)
        if default_optimizer:
            fingerprint["optimizer"] += f" (default schedule over {steps} steps)"
        if checkpoint.exists():
            state, losses = resume_state(checkpoint, (state, losses), fingerprint, steps, resume)
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
                meta = {"kind": TRAIN_STATE, "step": step, "fingerprint": fingerprint}
                save_checkpoint(checkpoint, (state, np.concatenate(chunk_losses)), meta=meta)
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
