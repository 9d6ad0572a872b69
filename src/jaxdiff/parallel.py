r"""Many devices and many hosts: device meshes, batch shardings, sharded sampling.

jaxdiff's batch work is embarrassingly parallel: sample `i` of a batch uses
`fold_in(key, i)` and nothing else, so splitting the batch axis over devices changes no
result, only where each row is computed. Everything here is JAX's own SPMD machinery:
a one-axis `jax.sharding.Mesh` named `"batch"`, `NamedSharding(mesh, P("batch"))` for
batch-first arrays, and `jit` with a sharding constraint on the output, from which XLA
partitions the whole computation (the vmapped sampler, the score, the noise).

**One host, several devices.** ::

    mesh = jd.parallel.device_mesh()                # all devices
    xs = jd.parallel.sharded_sample(key, score, process, (4096, 2), mesh=mesh)
    # == jd.sample(key, score, process, (4096, 2)) up to float rounding

On a CPU, `XLA_FLAGS=--xla_force_host_platform_device_count=4` (set before JAX is
imported) simulates four devices; that is how the tests run.

**Many hosts.** Start one process per host with the same program and three environment
variables, and call `jd.parallel.initialize()` before any other JAX call:

    JAXDIFF_COORDINATOR=10.0.0.1:8476   # host:port of process 0 (reachable by all)
    JAXDIFF_NUM_PROCESSES=2
    JAXDIFF_PROCESS_ID=0                # 0 .. NUM_PROCESSES - 1, one per process

(`JAXDIFF_LOCAL_DEVICE_IDS=0,1` optionally restricts the local devices.) After that,
`jax.devices()` lists the devices of every host, `device_mesh()` spans them all, and the
same `sharded_sample` call runs on each host; each host computes its own slice of the
batch. The result is a global array; `gather(x)` returns all of it as a NumPy array on
every host. Without the variables (or with one process) `initialize()` does nothing, so
the same script runs on a laptop. Under SLURM or on Cloud TPU, `initialize(auto=True)`
lets JAX detect the cluster instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from .distributions import PointCloud
from .processes import AbstractProcess
from .scores import AbstractScore, tweedie_denoise, without_time_checks

BATCH = "batch"
"""The name of the mesh axis that the batch is split over."""

_ENV_COORDINATOR = "JAXDIFF_COORDINATOR"
_ENV_NUM_PROCESSES = "JAXDIFF_NUM_PROCESSES"
_ENV_PROCESS_ID = "JAXDIFF_PROCESS_ID"
_ENV_LOCAL_DEVICE_IDS = "JAXDIFF_LOCAL_DEVICE_IDS"


# ---------------------------------------------------------------------------------------
# Many hosts: jax.distributed from environment variables
# ---------------------------------------------------------------------------------------


def _env_int(environ, name: str) -> int | None:
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable `{name}` must be an integer, got {raw!r}") from None


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    local_device_ids: Sequence[int] | None = None,
    timeout_s: int = 300,
    auto: bool = False,
    environ: dict | None = None,
) -> bool:
    """Start JAX's multi-process runtime (`jax.distributed.initialize`), one process per host.

    Each argument left `None` is read from the environment: `JAXDIFF_COORDINATOR`
    (`host:port` of process 0), `JAXDIFF_NUM_PROCESSES`, `JAXDIFF_PROCESS_ID`,
    `JAXDIFF_LOCAL_DEVICE_IDS` (comma-separated). Call it before any other JAX work.

    **Arguments:** as above; `timeout_s`, how long to wait for all processes to join;
    `auto=True` hands the detection to JAX (SLURM, Open MPI, Cloud TPU) when nothing is
    given; `environ`, a mapping to read instead of `os.environ` (for tests).

    **Returns:** `True` when a multi-process runtime is running (now or already), `False`
    for a single process (no coordinator and at most one process: nothing to start).
    """
    env = os.environ if environ is None else environ
    if jax.distributed.is_initialized():
        return True
    if coordinator_address is None:
        coordinator_address = env.get(_ENV_COORDINATOR) or None
    if num_processes is None:
        num_processes = _env_int(env, _ENV_NUM_PROCESSES)
    if process_id is None:
        process_id = _env_int(env, _ENV_PROCESS_ID)
    if local_device_ids is None and env.get(_ENV_LOCAL_DEVICE_IDS):
        try:
            local_device_ids = [int(v) for v in env[_ENV_LOCAL_DEVICE_IDS].split(",")]
        except ValueError:
            raise ValueError(
                f"environment variable `{_ENV_LOCAL_DEVICE_IDS}` must be comma-separated integers, "
                f"got {env[_ENV_LOCAL_DEVICE_IDS]!r}"
            ) from None

    if coordinator_address is None and num_processes is None and process_id is None:
        if auto:  # let JAX detect SLURM / Open MPI / Cloud TPU
            jax.distributed.initialize(initialization_timeout=timeout_s)
            return jax.process_count() > 1
        return False  # nothing configured: one process
    if not isinstance(num_processes, int) or isinstance(num_processes, bool) or num_processes < 1:
        raise ValueError(
            f"`num_processes` ({_ENV_NUM_PROCESSES}) must be a positive integer, got {num_processes!r}"
        )
    if num_processes == 1 and process_id in (None, 0):
        return False
    if not isinstance(process_id, int) or isinstance(process_id, bool) or not 0 <= process_id < num_processes:
        raise ValueError(
            f"`process_id` ({_ENV_PROCESS_ID}) must be an integer in [0, {num_processes}), got {process_id!r}"
        )
    address = coordinator_address if isinstance(coordinator_address, str) else ""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(
            f"`coordinator_address` ({_ENV_COORDINATOR}) must be 'host:port' of process 0, "
            f"got {coordinator_address!r}"
        )
    if not isinstance(timeout_s, int) or timeout_s < 1:
        raise ValueError(f"`timeout_s` must be a positive integer number of seconds, got {timeout_s!r}")
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        local_device_ids=local_device_ids,
        initialization_timeout=timeout_s,
    )
    return True


# ---------------------------------------------------------------------------------------
# Meshes and shardings
# ---------------------------------------------------------------------------------------


def device_mesh(devices: Sequence[Any] | None = None, *, axis_name: str = BATCH) -> Mesh:
    """A one-axis mesh over `devices` (default: every device of every process).

    Devices are ordered by process, then by id, so each host holds one contiguous block
    of the batch.
    """
    if devices is None:
        devices = jax.devices()
    devices = list(devices)
    if not devices:
        raise ValueError("`devices` is empty: a mesh needs at least one device")
    devices = sorted(devices, key=lambda d: (d.process_index, d.id))
    return Mesh(np.array(devices), (axis_name,))


def _check_mesh(mesh: Mesh) -> Mesh:
    if not isinstance(mesh, Mesh):
        raise ValueError(f"`mesh` must be a jax.sharding.Mesh (see device_mesh()), got {type(mesh).__name__}")
    if len(mesh.axis_names) != 1:
        raise ValueError(f"`mesh` must have one axis (the batch), got axes {mesh.axis_names}")
    return mesh


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Split the first (batch) axis of an array over the mesh; other axes replicated."""
    mesh = _check_mesh(mesh)
    return NamedSharding(mesh, PartitionSpec(mesh.axis_names[0]))


def replicated(mesh: Mesh) -> NamedSharding:
    """A full copy on every device of the mesh."""
    return NamedSharding(_check_mesh(mesh), PartitionSpec())


def _check_divisible(n: int, mesh: Mesh, what: str):
    if n % mesh.size:
        raise ValueError(
            f"{what} ({n}) must be divisible by the number of devices in `mesh` ({mesh.size}); "
            f"pad the batch to {-(-n // mesh.size) * mesh.size}"
        )


def _to_global(x, sharding: NamedSharding):
    """Place an array that every process holds in full as a global array with `sharding`."""
    if isinstance(x, jax.core.Tracer):  # under grad or jit: device_put traces and differentiates
        return jax.device_put(x, sharding)
    if isinstance(x, jax.Array) and x.sharding == sharding:
        return x
    if jax.process_count() == 1:
        return jax.device_put(x, sharding)
    host = np.asarray(x)  # same value on every process; each takes the slices it owns
    return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])


def shard_batch(x, mesh: Mesh | None = None) -> jax.Array:
    """Put a batch-first array on `mesh`, its batch split over the devices.

    `x` is the whole batch (on every process, in the multi-host case).
    """
    mesh = device_mesh() if mesh is None else mesh
    shape = np.shape(x)
    if len(shape) < 1:
        raise ValueError(f"`x` must have a batch axis first, got shape {shape}")
    _check_divisible(shape[0], mesh, "the batch size of `x`")
    return _to_global(x, batch_sharding(mesh))


def replicate(tree, mesh: Mesh | None = None):
    """Copy every array leaf of `tree` (a score, a process, data) to every device of `mesh`."""
    mesh = device_mesh() if mesh is None else mesh
    sharding = replicated(mesh)
    place = lambda leaf: _to_global(leaf, sharding) if eqx.is_array(leaf) else leaf
    return jax.tree_util.tree_map(place, tree)


def gather(x) -> np.ndarray:
    """The whole of a (possibly multi-host) global array, as NumPy, on every process."""
    if jax.process_count() > 1 and isinstance(x, jax.Array) and not x.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


# ---------------------------------------------------------------------------------------
# Sharded batch work
# ---------------------------------------------------------------------------------------


def _split_queries(tree, k: int):
    """`tree` with every `PointCloud` in it told that its vmapped queries are split over `k`
    devices (a static field: part of every jit cache key), so that each device's share of
    a query tile is cache-sized."""
    is_cloud = lambda node: isinstance(node, PointCloud)
    relayout = lambda node: PointCloud(node, query_split=k) if is_cloud(node) else node
    return jax.tree_util.tree_map(relayout, tree, is_leaf=is_cloud)


def _constrained_vmap(fn, sharding: NamedSharding, in_axes, *args):
    """`jax.vmap(fn, in_axes)(*args)` with the batched arguments and the output constrained to
    `sharding`, and the laws in `fn` told the batch is split."""
    constrain = lambda a, ax: a if ax is None else jax.lax.with_sharding_constraint(a, sharding)
    args = tuple(constrain(a, ax) for a, ax in zip(args, in_axes))
    out = jax.vmap(_split_queries(fn, sharding.mesh.size), in_axes=in_axes)(*args)
    return jax.lax.with_sharding_constraint(out, sharding)


@eqx.filter_jit
def _sharded_vmap(fn, in_axes, sharding, args):
    return _constrained_vmap(fn, sharding, in_axes, *args)


def sharded_vmap(fn: Callable, *, mesh: Mesh | None = None, in_axes=0) -> Callable:
    """`jax.vmap(fn, in_axes)`, jitted, with the batch split over `mesh`.

    Batched arguments (`in_axes` entry 0) are split over the devices, the others and the
    arrays of `fn` itself (an Equinox module: a score, a process) replicated; the outputs
    come back batch-sharded. E.g. `sharded_vmap(score, in_axes=(None, 0))(t, xs)` evaluates
    an exact score on a batch of queries on every device at once.
    """
    mesh = device_mesh() if mesh is None else mesh

    def call(*args):
        axes = tuple(in_axes) if isinstance(in_axes, (tuple, list)) else (in_axes,) * len(args)
        if len(axes) != len(args):
            raise ValueError(f"`in_axes` has {len(axes)} entries for {len(args)} arguments")
        placed = []
        for a, ax in zip(args, axes):
            if ax is None:
                placed.append(replicate(a, mesh))
            elif ax == 0:
                placed.append(jax.tree_util.tree_map(lambda leaf: shard_batch(leaf, mesh), a))
            else:
                raise ValueError(f"`in_axes` entries must be 0 or None, got {ax!r}")
        return _sharded_vmap(replicate(fn, mesh), axes, batch_sharding(mesh), tuple(placed))

    return call


def _hinted_call(fn, sharding: NamedSharding, t, x):
    """`fn(t, x)` on one sample; under `jax.vmap`, the batch is constrained to `sharding`.

    A `custom_vmap` sees the whole batch that a sampler's internal `vmap` builds, which is
    where a sharding hint has to go: from there XLA's partitioner splits the sampler's
    loop, its noise and its initial state over the devices. Derivatives go through the
    plain call (a `custom_jvp`), as `custom_vmap` has no reverse mode.
    """
    dyn, static = eqx.partition(fn, eqx.is_array)
    plain = lambda dyn, t, x: eqx.combine(dyn, static)(t, x)
    split = lambda dyn, t, x: _split_queries(eqx.combine(dyn, static), sharding.mesh.size)(t, x)
    hinted = jax.custom_batching.custom_vmap(plain)

    @hinted.def_vmap
    def _rule(axis_size, in_batched, dyn, t, x):
        dyn_b, t_b, x_b = in_batched
        dyn_axes = jax.tree_util.tree_map(lambda b: 0 if b else None, dyn_b)
        axes = (dyn_axes, 0 if t_b else None, 0 if x_b else None)
        if not x_b or any(jax.tree_util.tree_leaves(dyn_b)) or axis_size % sharding.mesh.size:
            return jax.vmap(plain, in_axes=axes)(dyn, t, x), True
        return _constrained_vmap(split, sharding, axes, dyn, t, x), True

    @jax.custom_jvp
    def call(dyn, t, x):
        return hinted(dyn, t, x)

    call.defjvp(lambda primals, tangents: jax.jvp(plain, primals, tangents))
    return call(dyn, t, x)


class _ShardedScore(AbstractScore):
    """A score whose batched calls carry the batch sharding (see `_hinted_call`)."""

    score: Callable
    process: AbstractProcess
    sharding: NamedSharding = eqx.field(static=True)

    def __call__(self, t, x):
        return _hinted_call(self.score, self.sharding, t, x)

    def without_time_checks(self):
        inner = without_time_checks(self.score)
        return _ShardedScore(score=inner, process=self.process, sharding=self.sharding)

    def denoise(self, t, x):
        if isinstance(self.score, AbstractScore):  # keep the score's own (e.g. exact) denoiser
            return _hinted_call(_Method(self.score, "denoise"), self.sharding, t, x)
        return tweedie_denoise(self, t, x)


class _Method(eqx.Module):
    obj: Any
    name: str = eqx.field(static=True)

    def __call__(self, t, x):
        return getattr(self.obj, self.name)(t, x)


def sharded_sample(key, score, process, shape: tuple[int, ...], *, mesh: Mesh | None = None, **sample_kwargs):
    """`jd.sample(key, score, process, shape, **sample_kwargs)` with the batch split over `mesh`.

    Sample `i` uses `fold_in(key, i)` whichever device computes it, so the result equals
    the one-device result for the same key (up to float rounding: the devices' matrix
    kernels may block sums differently). `shape[0]` must be divisible by `mesh.size`.
    Under `jax.distributed` every process makes the same call and gets a global array
    (each holding its slice); `gather` collects it.

    How: the score is wrapped so that every batched call of it inside the sampler carries
    the batch sharding, and XLA's SPMD partitioner splits the whole sampling loop from
    there. Samplers that ignore the score (`ExactSampler`) get no such hint: their result
    is still correct but computed on every device, unless `x_init` is given (it is split).

    **Returns:** a batch-sharded global array of `shape` (or `(ts, xs)` with
    `trajectory=True`, `xs` sharded on its second axis).
    """
    from .sampling import sample

    mesh = device_mesh() if mesh is None else mesh
    shape = tuple(int(s) for s in shape)
    if not shape:
        raise ValueError("`shape` must be (batch, *event)")
    _check_divisible(shape[0], mesh, "the batch size `shape[0]`")
    x_init = sample_kwargs.pop("x_init", None)
    key, score, process, rest = replicate((key, score, process, sample_kwargs), mesh)
    if x_init is not None:  # the state at T: its batch split like the output's
        rest["x_init"] = shard_batch(x_init, mesh)
    if score is not None and callable(score):
        score = _ShardedScore(score=score, process=process, sharding=batch_sharding(mesh))
    # Called outside any jit of ours, `sample` checks its output eagerly; inside one, its
    # traced NaN check (`eqx.error_if`) pins the output to device 0, and the partitioner
    # then computed the whole loop on every device.
    out = sample(key, score, process, shape, **rest)
    if rest.get("trajectory", False):
        ts, xs = out
        return ts, jax.device_put(xs, NamedSharding(mesh, PartitionSpec(None, mesh.axis_names[0])))
    return jax.device_put(out, batch_sharding(mesh))
