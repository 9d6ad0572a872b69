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


def check_time(
    name: str,
    t,
    T,
    *,
    strictly_positive: bool,
    strictly_below: bool = False,
    bound: str = "T",
    what: str = "",
    traced: bool = True,
):
    """The one time check: `0 < t <= T` (or `0 <= t`, or `t < T`), one message style.

    `strictly_positive` refuses `t = 0` (`what` says why), `strictly_below` refuses `t = T`;
    `bound` names the upper bound in the message (`"T"`, or `"t"` for a bridge's `s <= t`).
    A concrete `t` is checked here and now (`ValueError`). A traced one gets one
    `eqx.branched_error_if` (both bounds in one conditional) unless `traced=False`, for
    callers whose times are valid by construction (see `AbstractScore.without_time_checks`).
    """
    lo = "> 0" if strictly_positive else ">= 0"
    hi = f"< {bound}" if strictly_below else f"<= {bound}"
    why = f" ({what})" if what else ""
    rule = f"`{name}` must be {lo} and {hi}{why}"
    lo_ok = (lambda v: v > 0) if strictly_positive else (lambda v: v >= 0)
    # a closed upper bound tolerates rounding (a grid's T recomputed in float32)
    hi_ok = (lambda v, b: v < b) if strictly_below else (lambda v, b: v <= b * (1 + 1e-6))
    if is_concrete(t, T):
        tv = np.asarray(t)
        if tv.shape != ():
            raise ValueError(f"`{name}` must be a scalar time, got shape {tv.shape}")
        Tv = np.asarray(T)
        if not np.isfinite(tv):
            raise ValueError(f"{rule}, got {float(tv)}")
        if not (lo_ok(tv) and hi_ok(tv, Tv)):
            raise ValueError(f"{rule}, got {name} = {float(tv)} with {bound} = {float(Tv)}")
        return t
    t = jnp.asarray(t)
    if t.shape != ():
        raise ValueError(f"`{name}` must be a scalar time, got shape {t.shape}")
    if not traced:
        return t
    lo_bad = ~(lo_ok(t) & jnp.isfinite(t))
    hi_bad = ~hi_ok(t, T)
    return eqx.branched_error_if(t, lo_bad | hi_bad, jnp.where(lo_bad, 0, 1), [rule, rule])


def check_sample_shape(name: str, x, dim: int):
    """One sample: a real vector of length `dim` (batch with `jax.vmap`)."""
    if jnp.iscomplexobj(x):  # scores and densities are of real points: a complex x gives nonsense
        raise ValueError(f"`{name}` must be real, got complex dtype {jnp.result_type(x)}: pass x.real")
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


def error_if_not_finite(x, msg: str):
    """`x` (an array), with a device-side error if any entry is NaN or inf.

    The check is one scalar predicate under `eqx.error_if`; its result is tied to `x` by
    adding an exact zero, so the conditional never carries (and never re-shards) the whole
    array, and nothing is pulled back to the host.
    """
    ok = jnp.all(jnp.isfinite(x))
    ok = eqx.error_if(ok, ~ok, msg)
    return x + jnp.where(ok, 0, 1).astype(x.dtype)
