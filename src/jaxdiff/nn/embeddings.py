r"""Time (noise-level) features shared by the networks.

A network receives a scalar noise conditioning `c` (by default `NetworkScore` passes
$c = \log(\sigma/\alpha)/4$, EDM's `c_noise`, which puts every process on one scale) and
embeds it with fixed Fourier features

$$\phi(c) = \big(c,\ \sin(\omega_1 c), \dots, \sin(\omega_m c),\
 \cos(\omega_1 c), \dots, \cos(\omega_m c)\big),$$

with frequencies $\omega_k$ spaced geometrically between `min_freq` and `max_freq`. The
frequencies are not parameters (they are rebuilt from static sizes), so training leaves
them alone and they cost no memory.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float


class FourierFeatures(eqx.Module):
    """Fixed geometric Fourier features of a scalar; output size `n_fourier + 1`."""

    n_fourier: int = eqx.field(static=True)
    min_freq: float = eqx.field(static=True)
    max_freq: float = eqx.field(static=True)

    def __init__(self, n_fourier: int = 16, *, min_freq: float = 1.0, max_freq: float = 64.0):
        """**Arguments:**

        - `n_fourier`: number of sine plus cosine features (even, >= 2).
        - `min_freq`, `max_freq`: angular frequency range (`0 < min_freq <= max_freq`). The
          default suits a conditioning of order one (EDM's `log(sigma)/4` spans about
          `[-2, 2]` over the usual noise levels).
        """
        if not isinstance(n_fourier, int) or n_fourier < 2 or n_fourier % 2:
            raise ValueError(f"`n_fourier` must be an even integer >= 2, got {n_fourier!r}")
        if not (0 < min_freq <= max_freq):
            raise ValueError(f"need 0 < `min_freq` <= `max_freq`, got {min_freq}, {max_freq}")
        self.n_fourier = n_fourier
        self.min_freq = float(min_freq)
        self.max_freq = float(max_freq)

    @property
    def out_size(self) -> int:
        return self.n_fourier + 1

    def __call__(self, c: Float[ArrayLike, ""]) -> Float[Array, " n"]:
        c = jnp.asarray(c)
        freqs = jnp.geomspace(self.min_freq, self.max_freq, self.n_fourier // 2, dtype=c.dtype)
        arg = freqs * c
        # keep `c` itself: a linear feature lets the network extrapolate in the noise level
        return jnp.concatenate([c[None], jnp.sin(arg), jnp.cos(arg)])


def _label_embedding(n_classes, size: int, key, dtype):
    """`(n_classes, Embedding(n_classes + 1, size))`: the last row is the null label."""
    import jax

    if not isinstance(n_classes, int) or isinstance(n_classes, bool) or n_classes < 1:
        raise ValueError(f"`n_classes` must be a positive integer, got {n_classes!r}")
    k = jax.random.fold_in(key, 0x1ABE1)
    return n_classes, eqx.nn.Embedding(n_classes + 1, size, key=k, dtype=dtype)


def add_label(emb, label_embed, n_classes, label):
    """`emb` plus the embedding of `label` (`None`: the null label); a label given to a model
    built without `n_classes` is refused."""
    if label_embed is None:
        if label is not None:
            raise ValueError("this model has no class labels: build it with `n_classes=` to pass `label`")
        return emb
    idx = n_classes if label is None else jnp.asarray(label, jnp.int32)
    return emb + label_embed(idx).astype(emb.dtype)
