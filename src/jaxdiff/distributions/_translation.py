r"""Exactness under translation: laws far from the origin, in floating point.

Noising commutes with translation: if $X_0 = c + Y_0$ then
$X_t = \alpha X_0 + \sigma Z = \alpha c + (\alpha Y_0 + \sigma Z)$, so every quantity of the
noised law at $x$ is that of the centred law at $r = x - \alpha c$ (scores equal, denoisers
shifted by $c$). The laws store their data relative to a centre $c$ and evaluate at $r$;
nothing large is ever squared or multiplied by $\alpha / \sigma^2$.

Two roundings are avoided on the way:

* `centre(values)`: coordinate $k$ is centred at the mean $m_k$ only where every value lies in
  $[m_k/2, 2m_k]$ (the same sign, within a factor two; else $c_k = 0$). By Sterbenz's lemma
  $x - m_k$ is then exact in floating point, and so is $(x - m_k) + m_k$: the stored offsets
  reproduce the data bit for bit. Data around the origin get $c = 0$ and are untouched.
* `shifted_query(x, alpha, c)`: $r = x - \alpha c$ with $\alpha c$ formed exactly as four
  products of half-length significands (Dekker, "A floating-point technique for extending
  the available precision", Numer. Math. 18, 1971), so only the final subtractions round.
  A plain `x - alpha * c` would carry the rounding of $\alpha c$, of order
  $|c| \cdot 2^{-24}$ in float32, into a difference of order $\sigma$.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float


def centre(values: Float[Array, "n d"]) -> Float[Array, " d"]:
    """A centre `c` for the rows of `values` such that `values - c` is exact (see above)."""
    m = jnp.mean(values, axis=0).astype(values.dtype)
    s = jnp.sign(m)
    far = (m != 0) & jnp.all(s * values >= 0.5 * (s * m), axis=0) & jnp.all(s * values <= 2 * (s * m), axis=0)
    return jnp.where(far, m, jnp.zeros_like(m))


def _halves(v):
    """`v = hi + lo` exactly, `hi` keeping the leading half of the significand bits, so a
    product of two such parts (of any two values) is exact."""
    finfo = jnp.finfo(v.dtype)
    bits = finfo.nmant + 1
    drop = bits - bits // 2
    itype = {2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint64}[v.dtype.itemsize]
    mask = jnp.asarray(((1 << 8 * v.dtype.itemsize) - 1) ^ ((1 << drop) - 1), itype)  # clears `drop` low bits
    hi = jax.lax.bitcast_convert_type(jax.lax.bitcast_convert_type(v, itype) & mask, v.dtype)
    return hi, v - hi


@jax.custom_jvp
def shifted_query(x: Float[Array, " d"], alpha, c: Float[Array, " d"]) -> Float[Array, " d"]:
    """`x - alpha * c`, with `alpha * c` formed exactly (see the module docstring)."""
    dtype = jnp.result_type(x, alpha, c)
    x, c = x.astype(dtype), c.astype(dtype)
    a_hi, a_lo = _halves(jnp.asarray(alpha, dtype))
    c_hi, c_lo = _halves(c)
    # largest product first: x - a_hi c_hi is exact where it matters (x near alpha c)
    return (((x - a_hi * c_hi) - a_hi * c_lo) - a_lo * c_hi) - a_lo * c_lo


@shifted_query.defjvp
def _shifted_query_jvp(primals, tangents):
    x, alpha, c = primals
    dx, dalpha, dc = tangents
    return shifted_query(x, alpha, c), dx - dalpha * c - alpha * dc
