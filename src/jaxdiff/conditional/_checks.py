"""Validation of class labels and observations, shared by the conditional modules."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from .._checks import is_concrete


def check_label(name: str, y, n_classes: int):
    """`y` as an integer scalar in `[0, n_classes)`: eagerly when concrete, `error_if` when traced."""
    arr = jnp.asarray(y)
    if arr.shape != ():
        raise ValueError(f"`{name}` must be one class label (a scalar integer), got shape {arr.shape}")
    if not (jnp.issubdtype(arr.dtype, jnp.integer) or arr.dtype == bool):
        raise ValueError(f"`{name}` must be an integer class label, got dtype {arr.dtype}")
    arr = arr.astype(jnp.int32)
    if is_concrete(arr):
        v = int(arr)
        if not 0 <= v < n_classes:
            raise ValueError(
                f"`{name}` must be a class in 0..{n_classes - 1} (the law has {n_classes} classes), got {v}"
            )
        return arr
    bad = (arr < 0) | (arr >= n_classes)
    return eqx.error_if(arr, bad, f"`{name}` must be a class label in [0, {n_classes})")


def check_labels(labels, n: int, what: str, n_classes: int | None):
    """Integer labels, shape `(n,)`, concrete, non-negative; returns `(labels, n_classes)`."""
    if not is_concrete(labels):
        raise ValueError("`labels` must be concrete (not traced): they fix the law's class structure")
    arr = np.asarray(labels)
    if arr.shape != (n,):
        raise ValueError(f"`labels` must have shape ({n},), one label per {what}, got {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
        raise ValueError(f"`labels` must be integers, got dtype {arr.dtype}")
    if arr.size and arr.min() < 0:
        raise ValueError(f"`labels` must be non-negative class indices, got {arr.min()}")
    top = int(arr.max()) + 1
    if n_classes is None:
        n_classes = top
    if not isinstance(n_classes, (int, np.integer)) or n_classes < top:
        raise ValueError(
            f"`n_classes` must be an integer >= {top} (the largest label + 1), got {n_classes!r}"
        )
    return jnp.asarray(arr, jnp.int32), int(n_classes)
