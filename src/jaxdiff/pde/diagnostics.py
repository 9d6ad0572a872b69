r"""Diagnostics of a density on a grid: the quantities the PDE view of diffusion models is about.

All are plain functions `f(grid, u, ...)` of a density `u` of shape `grid.shape`, with
integrals as midpoint sums over the cells:

- `mass`: $\int u$; `lp_norm`: $\|u\|_p = (\int |u|^p)^{1/p}$, $p \in [1, \infty]$.
- `entropy`: $H(u) = -\int u \log u$; `relative_entropy`: $\mathrm{KL}(p \| q) = \int p \log(p/q)$.
- `fisher_information`: $I(u) = \int |\nabla u|^2 / u$, discretised on the faces as
  $\sum_{\text{faces}} |C|\,\frac{(u_{j+1} - u_j)}{h}\frac{(\log u_{j+1} - \log u_j)}{h}$
  (the logarithmic mean of the two cells replaces $u$). With this form the semi-discrete
  heat equation $\dot u = D \Delta_h u$ satisfies de Bruijn's identity
  $\frac{d}{dt} H(u) = D\, I(u)$ exactly, and it is a second-order approximation of
  $\int |\nabla u|^2/u$.
- `li_yau`: the Li–Yau quantity $\Delta \log u + \frac{d}{2 D t}$, non-negative for every
  positive solution of $\partial_t u = D \Delta u$ at time $t$ after a non-negative start
  (for the OU process use $2 D t = s_t^2 = 1 - e^{-2t}$: $\mathrm{Hess}\log\rho_t \ge -I/s_t^2$).
- `histogram`, `kde`, `l1_distance`, `particle_discrepancy`: a particle cloud as a grid
  density, and its $L^1$ distance to a grid density.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.scipy.special import xlogy
from jaxtyping import Array, Float

from .._checks import as_float_array, check_nonneg, is_concrete
from .grid import Grid
from .operators import Spectral, laplacian


def _density(grid: Grid, name: str, u, *, nonneg: bool = True):
    u = grid.check_density(name, u)
    return check_nonneg(name, u) if nonneg else u


def mass(grid: Grid, u: Float[Array, "*shape"]) -> Float[Array, ""]:
    """`int u` (midpoint rule)."""
    return grid.integrate(u)


def lp_norm(grid: Grid, u: Float[Array, "*shape"], p: float = 2.0) -> Float[Array, ""]:
    """`(int |u|^p)^(1/p)` for `p >= 1`, or `max |u|` for `p = inf`."""
    u = grid.check_density("u", u)
    if is_concrete(p):
        pv = float(p)
        if not pv >= 1:
            raise ValueError(f"`p` must be >= 1 (or inf), got {p}")
        if pv == float("inf"):
            return jnp.max(jnp.abs(u))
    a = jnp.abs(u)
    m = jnp.max(a)
    # Scale by the maximum first: |u|^p over- or underflows for large p otherwise.
    scaled = a / jnp.where(m > 0, m, 1.0)
    return m * (jnp.sum(scaled**p) * grid.cell_volume) ** (1.0 / p)


def entropy(grid: Grid, u: Float[Array, "*shape"]) -> Float[Array, ""]:
    """Differential entropy `-int u log u` (with `0 log 0 = 0`)."""
    u = _density(grid, "u", u)
    return -jnp.sum(xlogy(u, u)) * grid.cell_volume


def relative_entropy(
    grid: Grid,
    p: Float[Array, "*shape"],
    q: Float[Array, "*shape"] | Callable[[Float[Array, " d"]], Float[Array, ""]],
) -> Float[Array, ""]:
    """`KL(p || q) = int p log(p / q)`; `q` is a grid density or a log-density callable on
    one point (e.g. `process.prior_log_prob`), which keeps the far tails accurate.

    Infinite where `p > 0 = q`. Neither `p` nor `q` is renormalised on the grid.
    """
    p = _density(grid, "p", p)
    if callable(q):
        log_q = grid.evaluate(q)
        cross = jnp.where(p > 0, p * log_q, 0.0)
    else:
        q = _density(grid, "q", q)
        cross = xlogy(p, q)
    return jnp.sum(xlogy(p, p) - cross) * grid.cell_volume


def _safe_log(u):
    # Cells at exactly zero (far tails) contribute (u_j - 0)(log u_j - log tiny) -> 0
    # instead of an infinite or NaN term.
    return jnp.log(jnp.maximum(u, jnp.finfo(u.dtype).tiny))


def fisher_information(grid: Grid, u: Float[Array, "*shape"]) -> Float[Array, ""]:
    """Fisher information `int |grad u|^2 / u`, by the face form of the module docstring."""
    u = _density(grid, "u", u)
    lu = _safe_log(u)
    total = jnp.zeros((), u.dtype)
    for k in range(grid.ndim):
        du = jnp.diff(u, axis=k)
        dl = jnp.diff(lu, axis=k)
        total = total + jnp.sum(du * dl) / grid.widths[k] ** 2
    return total * grid.cell_volume


def li_yau(
    grid: Grid, u: Float[Array, "*shape"], t, D=1.0, *, floor: float | None = None
) -> Float[Array, "*shape"]:
    r"""The Li–Yau field $\Delta_h \log u + d / (2 D t)$ (3-point Laplacian, zero-flux walls).

    For a positive solution of $\partial_t u = D \Delta u$ at time `t` after a non-negative
    start it is $\ge 0$ (up to discretisation error on a grid). Cells where `u` or a stencil
    neighbour is below `floor * max(u)` (where `log u` carries no information) are `NaN`:
    reduce with `jnp.nanmin`. Default `floor`: `max(1e-8, 1000 eps)` (1.2e-4 in float32,
    whose rounding noise of relative size `eps` swamps the far tails).
    """
    u = _density(grid, "u", u)
    t = as_float_array("t", t)
    D = as_float_array("D", D)
    if is_concrete(t, D) and not (float(t) > 0 and float(D) > 0):
        raise ValueError(f"`t` and `D` must be > 0, got t={float(t)}, D={float(D)}")
    if floor is None:
        floor = max(1e-8, 1000 * float(jnp.finfo(u.dtype).eps))
    field = laplacian(grid, _safe_log(u)) + grid.ndim / (2 * D * t)
    ok = u > floor * jnp.max(u)
    valid = ok
    for k in range(grid.ndim):
        # A neighbour outside the box is the cell itself (reflection), so edge padding.
        widths = [(0, 0)] * grid.ndim
        widths[k] = (1, 1)
        padded = jnp.pad(ok, widths, mode="edge")
        n = grid.shape[k]
        valid = (
            valid
            & jax.lax.slice_in_dim(padded, 0, n, axis=k)
            & jax.lax.slice_in_dim(padded, 2, n + 2, axis=k)
        )
    return jnp.where(valid, field, jnp.nan)


# ---------------------------------------------------------------------------------------
# Particles versus grid densities
# ---------------------------------------------------------------------------------------


def histogram(
    grid: Grid, samples: Float[Array, "n d"], *, outside_tol: float = 1e-3
) -> Float[Array, "*shape"]:
    """The histogram density of `samples` on the grid's cells: `counts / (n |C|)`.

    Samples outside the box are dropped (so the mass is the fraction inside); more than
    `outside_tol` of them outside means the grid does not cover the cloud: an error.
    """
    x = as_float_array("samples", samples)
    if x.ndim != 2 or x.shape[1] != grid.ndim:
        raise ValueError(f"`samples` must have shape (n, {grid.ndim}), got {x.shape}")
    n = x.shape[0]
    if n < 1:
        raise ValueError("`samples` is empty")
    counts, frac_out = _counts(grid, x)
    msg = (
        f"the grid does not cover the samples: more than outside_tol={outside_tol:g} of them "
        "lie outside the box"
    )
    if is_concrete(frac_out):
        if float(frac_out) > outside_tol:
            raise ValueError(f"{msg} ({float(frac_out):.3g})")
    else:
        counts = eqx.error_if(counts, frac_out > outside_tol, msg)
    return counts / (n * grid.cell_volume)


@eqx.filter_jit
def _counts(grid: Grid, x):
    # One compiled scatter-add per sample count (op-by-op dispatch is slower on CPU).
    flat, inside = grid.locate(x)
    counts = jnp.zeros((grid.n_cells,), x.dtype).at[flat].add(inside.astype(x.dtype))
    return counts.reshape(grid.shape), 1.0 - jnp.mean(inside.astype(x.dtype))


def kde(
    grid: Grid, samples: Float[Array, "n d"], bandwidth, *, outside_tol: float = 1e-3
) -> Float[Array, "*shape"]:
    r"""A binned Gaussian kernel density estimate: the histogram smoothed by the discrete heat
    kernel of variance `bandwidth^2` (reflecting walls, so the mass stays in the box).

    Equal to the Gaussian KDE with bandwidth `bandwidth` up to $O(h^2)$ binning error.
    """
    bw = as_float_array("bandwidth", bandwidth)
    if is_concrete(bw) and not float(bw) > 0:
        raise ValueError(f"`bandwidth` must be > 0, got {float(bw)}")
    return Spectral()(grid, histogram(grid, samples, outside_tol=outside_tol), 0.5 * bw**2)


def l1_distance(grid: Grid, p: Float[Array, "*shape"], q: Float[Array, "*shape"]) -> Float[Array, ""]:
    """`int |p - q|` (twice the total-variation distance of two probability densities)."""
    p = grid.check_density("p", p)
    q = grid.check_density("q", q)
    return jnp.sum(jnp.abs(p - q)) * grid.cell_volume


def particle_discrepancy(
    grid: Grid, p: Float[Array, "*shape"], samples: Float[Array, "n d"], *, bandwidth=None
) -> Float[Array, ""]:
    """`L^1` distance between a grid density and a particle cloud, as a histogram on the
    grid's cells (default) or a binned KDE with `bandwidth`."""
    est = histogram(grid, samples) if bandwidth is None else kde(grid, samples, bandwidth)
    return l1_distance(grid, p, est)
