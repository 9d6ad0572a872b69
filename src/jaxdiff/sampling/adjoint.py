r"""How gradients flow back through a step sampler's loop: the adjoint strategies of `sample`.

A step sampler is a loop $x_{k+1} = \Phi_k(x_k)$ over the grid. Reverse-mode differentiation
needs, on the way back, whatever each step needs to form its vector-Jacobian product. Two ways
to have it:

* `BackpropAdjoint()` stores it for every step during the forward pass (plain
  backpropagation through `lax.scan`): the fastest for short loops, memory linear in the
  number of steps.
* `CheckpointAdjoint(checkpoints, levels)` stores only the first state of each of
  `checkpoints` segments, recursively `levels` deep, and on the way back recomputes each
  segment forwards from its stored state before differentiating it (nested checkpointing in
  the spirit of Griewank & Walther, "Algorithm 799: revolve", ACM TOMS 26(1), 2000). With
  $n$ steps, $b$ segments per level and $L = \lceil\log_b n\rceil$ levels it holds about
  $L b$ states and costs $L - 1$ extra forward passes: two levels of $\sqrt n$ give
  $O(\sqrt n)$ memory for one extra pass; a fixed $b$ gives $O(\log n)$ memory for
  $O(n \log n)$ work.

Recomputation replays the same step with the same key (step $k$ draws its noise from
`fold_in(key, k)`), so the gradient is the one of the stored loop up to rounding. Samplers
that solve with Diffrax take a Diffrax adjoint instead (`diffrax.RecursiveCheckpointAdjoint`,
`diffrax.BacksolveAdjoint`, ...), passed through to `diffrax.diffeqsolve`; `CheckpointAdjoint`
becomes `diffrax.RecursiveCheckpointAdjoint` there.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np


class AbstractAdjoint(eqx.Module):
    """How a step sampler's loop is differentiated in reverse mode."""

    @abc.abstractmethod
    def scan(self, body: Callable, carry: Any, xs: Any, length: int) -> tuple[Any, Any]:
        """`jax.lax.scan(body, carry, xs)` over `length` steps, with this adjoint's memory
        strategy for reverse-mode differentiation. The forward values are those of
        `lax.scan`."""

    @abc.abstractmethod
    def diffrax_adjoint(self) -> diffrax.AbstractAdjoint:
        """The Diffrax adjoint that plays this role in a `diffrax.diffeqsolve`."""


class BackpropAdjoint(AbstractAdjoint):
    """Plain backpropagation through the loop: every step's intermediates are stored
    (memory linear in the number of steps). The default: the fastest for short loops."""

    def scan(self, body, carry, xs, length):
        return jax.lax.scan(body, carry, xs, length=length)

    def diffrax_adjoint(self):
        # Diffrax's own default: a Diffrax solve is already checkpointed on its step loop.
        return diffrax.RecursiveCheckpointAdjoint()


class CheckpointAdjoint(AbstractAdjoint):
    """Checkpointed backpropagation: store a few states of the loop and recompute the rest on
    the way back, level by level.

    With `checkpoints = b` and `levels = L` (so that `b**L >= steps`), the loop is cut into `b`
    segments, each segment into `b` sub-segments, and so on `L` levels deep; the start of
    each segment is stored, and a segment is recomputed from it when the backward pass
    reaches it. Memory: about `L * b` states plus the intermediates of `b` steps; time:
    `L - 1` more forward passes than `BackpropAdjoint`. The default picks `L = ceil(log10
    steps)` and the smallest `b` that covers the steps (for 1000 steps: 3 levels of 10;
    `O(log n)` states for `O(n log n)` recomputation). The gradient equals plain
    backpropagation's up to rounding, for every step sampler (multistep history and per-step
    keys included: a recomputed step draws the same noise).
    """

    checkpoints: int | None = eqx.field(static=True, default=None)
    levels: int | None = eqx.field(static=True, default=None)

    def __init__(self, checkpoints: int | None = None, levels: int | None = None):
        """**Arguments:** `checkpoints`, the states stored per level (at least 2); `levels`,
        how many levels of recomputation. Either, both or neither may be given; what is not
        given is chosen from the step count."""
        for name, v, lo in (("checkpoints", checkpoints, 2), ("levels", levels, 1)):
            if v is not None and (not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < lo):
                raise ValueError(f"`{name}` must be None or an integer >= {lo}, got {v!r}")
        self.checkpoints = None if checkpoints is None else int(checkpoints)
        self.levels = None if levels is None else int(levels)

    def schedule(self, length: int) -> tuple[int, int]:
        """`(branching b, levels L)` used for a loop of `length` steps."""
        if length <= 1:
            return 2, 1
        b, L = self.checkpoints, self.levels
        if b is None and L is None:
            L = max(1, math.ceil(math.log10(length) - 1e-9))
        if b is None:
            b = max(2, math.ceil(length ** (1.0 / L) - 1e-9))
            while b**L < length:
                b += 1
        if L is None:
            L = max(1, math.ceil(math.log(length) / math.log(b) - 1e-9))
            while b**L < length:
                L += 1
        return b, L

    def scan(self, body, carry, xs, length):
        b, L = self.schedule(length)
        return _nested_scan(body, carry, xs, length, b, L)

    def diffrax_adjoint(self):
        return diffrax.RecursiveCheckpointAdjoint(checkpoints=self.checkpoints)


def _nested_scan(body, carry, xs, length, b, level):
    """`lax.scan` of `length` steps as `b` checkpointed segments per level, `level` deep."""
    if level <= 1 or length <= b:
        return jax.lax.scan(body, carry, xs, length=length)
    seg = math.ceil(length / b)
    n_seg, n_full = length // seg, (length // seg) * seg

    @jax.checkpoint
    def segment(c, x):
        return _nested_scan(body, c, x, seg, b, level - 1)

    head = jax.tree.map(lambda a: a[:n_full].reshape(n_seg, seg, *a.shape[1:]), xs)
    carry, ys = jax.lax.scan(segment, carry, head, length=n_seg)
    ys = jax.tree.map(lambda a: a.reshape(n_full, *a.shape[2:]), ys)
    if n_full < length:
        rest = length - n_full
        tail = jax.tree.map(lambda a: a[n_full:], xs)
        carry, ys_tail = jax.checkpoint(lambda c, x: _nested_scan(body, c, x, rest, b, level - 1))(
            carry, tail
        )
        ys = jax.tree.map(lambda a, t: jnp.concatenate([a, t], axis=0), ys, ys_tail)
    return carry, ys


def as_diffrax_adjoint(adjoint: AbstractAdjoint | diffrax.AbstractAdjoint) -> diffrax.AbstractAdjoint:
    """The Diffrax adjoint for a Diffrax-based sampler: passed through, or translated."""
    if isinstance(adjoint, diffrax.AbstractAdjoint):
        return adjoint
    return adjoint.diffrax_adjoint()


def check_adjoint(adjoint) -> AbstractAdjoint | diffrax.AbstractAdjoint:
    """`sample`'s `adjoint` argument: `None` is plain backpropagation; anything else must be
    an adjoint (checked eagerly, with the fix)."""
    if adjoint is None:
        return BackpropAdjoint()
    if not isinstance(adjoint, (AbstractAdjoint, diffrax.AbstractAdjoint)):
        raise ValueError(
            "`adjoint` must be jd.BackpropAdjoint(), jd.CheckpointAdjoint(...) or, for Diffrax-based "
            f"samplers (ProbabilityFlow, DiffraxReverseSDE), a Diffrax adjoint; got {type(adjoint).__name__}"
        )
    return adjoint


def step_adjoint(adjoint, sampler_name: str) -> AbstractAdjoint:
    """The adjoint of a step loop: a Diffrax adjoint has no meaning there, so it is refused."""
    if isinstance(adjoint, diffrax.AbstractAdjoint):
        raise ValueError(
            f"`adjoint=diffrax.{type(adjoint).__name__}()` is a Diffrax adjoint, but {sampler_name} is a "
            "step sampler (a lax.scan loop, not a Diffrax solve): use jd.BackpropAdjoint() or "
            "jd.CheckpointAdjoint()"
        )
    return check_adjoint(adjoint)
