"""Input validation shared by every module.

Two regimes, as in Diffrax: a value known at trace time (a Python number or a concrete
array) is checked eagerly and raises a `ValueError` naming the argument; a traced value is
checked with `eqx.error_if`, which raises at run time inside `jit` (and costs one scalar
predicate). Nothing here is on a hot path more than once per call.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(*xs) -> bool:
    """True when none of `xs` (pytrees allowed) holds a JAX tracer."""
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(xs))


def as_float_array(name: str, x) -> jax.Array:
    """`x` as a floating JAX array; integer input is promoted, anything else refused."""
    try:
        arr = jnp.asarray(x)
    except TypeError as e:
        raise ValueError(f"`{name}` must be an array of numbers, got {type(x).__name__}") from e
    if not jnp.issubdtype(arr.dtype, jnp.floating):
        if jnp.issubdtype(arr.dtype, jnp.integer) or arr.dtype == bool:
            arr = arr.astype(jnp.result_type(float))
        else:
            raise ValueError(f"`{name}` must be real floating point, got dtype {arr.dtype}")
    return arr


def check_finite(name: str, x):
    """Refuse NaN or inf in `x` (eagerly when concrete, with `error_if` when traced)."""
    if is_concrete(x):
        if not bool(np.all(np.isfinite(np.asarray(x)))):
            raise ValueError(f"`{name}` contains NaN or inf values")
        return x
    return eqx.error_if(x, ~jnp.all(jnp.isfinite(x)), f"`{name}` contains NaN or inf values")


def check_time(name: str, t, T, *, strictly_positive: bool, what: str = "", traced: bool = True):
    """Check `0 < t <= T` (or `0 <= t <= T`); `what` says why `t = 0` is refused.

    A concrete `t` is checked here and now. A traced one gets one `eqx.error_if` (both
    bounds in one conditional) unless `traced=False`, for callers whose times are valid by
    construction (see `AbstractScore.without_time_checks`)."""
    lo_ok = (lambda v: v > 0) if strictly_positive else (lambda v: v >= 0)
    lo_msg = f"`{name}` must be > 0" + (f" ({what})" if what else "")
    if not strictly_positive:
        lo_msg = f"`{name}` must be >= 0"
    hi_msg = f"`{name}` must be <= T (the process horizon)"
    if is_concrete(t, T):
        tv = np.asarray(t)
        if tv.shape != ():
            raise ValueError(f"`{name}` must be a scalar time, got shape {tv.shape}")
        if not np.isfinite(tv):
            raise ValueError(f"`{name}` must be finite, got {float(tv)}")
        if not lo_ok(tv):
            raise ValueError(f"{lo_msg}, got {float(tv)}")
        if tv > np.asarray(T) * (1 + 1e-6):
            raise ValueError(f"{hi_msg} = {float(np.asarray(T))}, got {float(tv)}")
        return t
    t = jnp.asarray(t)
    if t.shape != ():
        raise ValueError(f"`{name}` must be a scalar time, got shape {t.shape}")
    if not traced:
        return t
    lo_bad = ~(lo_ok(t) & jnp.isfinite(t))
    hi_bad = t > T * (1 + 1e-6)
    return eqx.branched_error_if(t, lo_bad | hi_bad, jnp.where(lo_bad, 0, 1), [lo_msg, hi_msg])


def check_sample_shape(name: str, x, dim: int):
    """One sample: a vector of length `dim` (batch with `jax.vmap`)."""
    shape = jnp.shape(x)
    if shape != (dim,):
        hint = " (one sample in, one sample out: batch with jax.vmap)" if len(shape) == 2 else ""
        raise ValueError(f"`{name}` must have shape ({dim},), got {shape}{hint}")


def check_nonneg(name: str, u):
    """Refuse NaN, inf or negative entries in `u` (a density): eagerly when concrete,
    with `error_if` when traced."""
    if is_concrete(u):
        un = np.asarray(u)
        if not np.all(np.isfinite(un)):
            raise ValueError(f"`{name}` contains NaN or inf values")
        if np.any(un < 0):
            raise ValueError(
                f"`{name}` must be non-negative (a density), its smallest entry is {un.min():.3g}"
            )
        return u
    u = eqx.error_if(u, ~jnp.all(jnp.isfinite(u)), f"`{name}` contains NaN or inf values")
    return eqx.error_if(u, jnp.any(u < 0), f"`{name}` must be non-negative (a density)")
