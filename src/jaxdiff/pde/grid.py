r"""Uniform cell-centred grids on a box in 1, 2 or 3 dimensions.

A `Grid(lower, upper, shape)` splits the box $\prod_k [\ell_k, u_k]$ into
$n_1 \times \dots \times n_d$ equal cells of widths $h_k = (u_k - \ell_k)/n_k$. A density
on the grid is an array of shape `grid.shape` holding the cell values $p_j$ (read as cell
averages or cell-centre values; both agree to $O(h^2)$), and integrals are midpoint sums
$\int \phi \approx \sum_j \phi_j\, |C|$ with the cell volume $|C| = \prod_k h_k$.

Finite volumes live on the same cells: the flux across the face between cells `j` and
`j + e_k` is evaluated at the face centre (`grid.face_points(k)`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._checks import as_float_array, check_finite, is_concrete


def _as_box(name: str, value) -> jax.Array:
    arr = check_finite(name, as_float_array(name, value))
    if arr.ndim == 0:
        arr = arr[None]
    if arr.ndim != 1:
        raise ValueError(f"`{name}` must be a scalar or a vector of box corners, got shape {arr.shape}")
    return arr


class Grid(eqx.Module):
    """A uniform cell-centred grid on the box `[lower, upper]` (1, 2 or 3 dimensions).

    Cell `j = (j_1, ..., j_d)` has centre `lower + (j + 1/2) * widths`; a density on the
    grid is an array of shape `shape` of values at cell centres.
    """

    lower: Float[Array, " d"]
    upper: Float[Array, " d"]
    shape: tuple[int, ...] = eqx.field(static=True)

    def __init__(self, lower, upper, shape):
        """**Arguments:**

        - `lower`, `upper`: the box corners, scalars (1-D) or vectors of length `d`,
          with `upper > lower`.
        - `shape`: cells per axis, an int (1-D) or a tuple of `d` ints, each `>= 3`.
        """
        lower = _as_box("lower", lower)
        upper = _as_box("upper", upper)
        if isinstance(shape, (int, np.integer)):
            shape = (shape,)
        try:
            shape = tuple(shape)
        except TypeError as e:
            raise ValueError(f"`shape` must be an int or a tuple of ints, got {shape!r}") from e
        if not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) for n in shape):
            raise ValueError(f"`shape` must hold integers, got {shape!r}")
        shape = tuple(int(n) for n in shape)
        d = len(shape)
        if d not in (1, 2, 3):
            raise ValueError(f"`shape` must have 1, 2 or 3 entries (grid dimension), got {shape}")
        if any(n < 3 for n in shape):
            raise ValueError(f"`shape` must have at least 3 cells per axis, got {shape}")
        if lower.shape != (d,) or upper.shape != (d,):
            raise ValueError(
                f"`lower` and `upper` must have one entry per grid axis ({d}), got shapes "
                f"{lower.shape} and {upper.shape}"
            )
        if is_concrete(lower, upper) and not bool(np.all(np.asarray(upper) > np.asarray(lower))):
            raise ValueError(f"`upper` must exceed `lower` on every axis, got lower={lower}, upper={upper}")
        self.lower = lower
        self.upper = upper
        self.shape = shape

    # ---- geometry -----------------------------------------------------------------------

    @property
    def ndim(self) -> int:
        """The space dimension `d`."""
        return len(self.shape)

    @property
    def n_cells(self) -> int:
        """Total number of cells."""
        return math.prod(self.shape)

    @property
    def widths(self) -> Float[Array, " d"]:
        """Cell widths `h_k = (upper_k - lower_k) / n_k`."""
        return (self.upper - self.lower) / jnp.asarray(self.shape, self.lower.dtype)

    @property
    def cell_volume(self) -> Float[Array, ""]:
        """Cell volume `prod_k h_k`."""
        return jnp.prod(self.widths)

    def centres(self, axis: int) -> Float[Array, " n"]:
        """Cell-centre coordinates along one axis."""
        n = self.shape[axis]
        return self.lower[axis] + (jnp.arange(n, dtype=self.lower.dtype) + 0.5) * self.widths[axis]

    def points(self) -> Float[Array, "*shape d"]:
        """All cell centres, shape `(*shape, d)`: `points()[j]` is the centre of cell `j`."""
        mesh = jnp.meshgrid(*(self.centres(k) for k in range(self.ndim)), indexing="ij")
        return jnp.stack(mesh, axis=-1)

    def face_points(self, axis: int) -> Float[Array, "*fshape d"]:
        """Centres of the interior faces normal to `axis`.

        Shape `(*shape, d)` with `shape[axis]` replaced by `shape[axis] - 1`: entry `i` along
        `axis` is the face between cells `i` and `i + 1` (the boundary faces carry no flux).
        """
        coords = [self.centres(k) for k in range(self.ndim)]
        n = self.shape[axis]
        coords[axis] = self.lower[axis] + jnp.arange(1, n, dtype=self.lower.dtype) * self.widths[axis]
        mesh = jnp.meshgrid(*coords, indexing="ij")
        return jnp.stack(mesh, axis=-1)

    # ---- functions on the grid ----------------------------------------------------------

    def check_density(self, name: str, u) -> jax.Array:
        """`u` as a float array of shape `shape` (a `ValueError` naming `name` otherwise)."""
        u = as_float_array(name, u)
        if u.shape != self.shape:
            raise ValueError(f"`{name}` must have the grid's shape {self.shape}, got {u.shape}")
        return u

    def integrate(self, u: Float[Array, "*shape"]) -> Float[Array, ""]:
        """Midpoint rule `sum_j u_j |C|` (the mass of a density)."""
        u = self.check_density("u", u)
        return jnp.sum(u) * self.cell_volume

    def evaluate(self, fn: Callable[[Float[Array, " d"]], Float[Array, ""]]) -> Float[Array, "*shape"]:
        """`fn` (one point in, one scalar out) at every cell centre, shape `shape`."""
        pts = self.points().reshape(-1, self.ndim)
        # One compiled call rather than op-by-op dispatch, cached across calls: a bound method
        # of a Module (`law.log_prob`) is a pytree, so a new law of the same structure reuses it.
        return _evaluate(fn, pts).reshape(self.shape)

    def density(self, log_prob: Callable[[Float[Array, " d"]], Float[Array, ""]]) -> Float[Array, "*shape"]:
        """`exp(log_prob)` at cell centres, e.g. `grid.density(law.noised(process, t).log_prob)`."""
        return jnp.exp(self.evaluate(log_prob))

    def boundary_mass(self, u: Float[Array, "*shape"]) -> Float[Array, ""]:
        """Mass in the outermost layer of cells: a box that covers `u` leaves this near zero."""
        u = self.check_density("u", u)
        inner = u[tuple(slice(1, -1) for _ in self.shape)]
        return (jnp.sum(u) - jnp.sum(inner)) * self.cell_volume

    def locate(self, x: Float[Array, "n d"]) -> tuple[jax.Array, jax.Array]:
        """Flat cell index of each row of `x` and whether the row lies inside the box."""
        idx = jnp.floor((x - self.lower) / self.widths).astype(jnp.int32)
        inside = jnp.all((idx >= 0) & (idx < jnp.asarray(self.shape)), axis=-1)
        idx = jnp.clip(idx, 0, jnp.asarray(self.shape) - 1)
        flat = jnp.ravel_multi_index(tuple(idx[:, k] for k in range(self.ndim)), self.shape, mode="clip")
        return flat, inside


@eqx.filter_jit
def _evaluate(fn, pts):
    return jax.vmap(fn)(pts)
