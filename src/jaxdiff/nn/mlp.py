r"""A residual MLP with Fourier time features, for vector data.

$$h_0 = W_{in} x + e(c),\qquad
h_{k+1} = h_k + W^{(2)}_k\, \mathrm{silu}\big(W^{(1)}_k\, \mathrm{silu}(\mathrm{LN}(h_k))
 + U_k e(c)\big),\qquad
\mathrm{out} = W_{out}\, \mathrm{silu}(\mathrm{LN}(h_L)),$$

where $e(c) = \mathrm{silu}(W_t \phi(c))$ embeds the noise conditioning $c$ through fixed
Fourier features $\phi$ (`FourierFeatures`). Pre-norm residual blocks keep the scale of
$h$ under control at any depth; the time embedding enters every block, so each block can
change its behaviour with the noise level.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._checks import check_sample_shape
from .embeddings import FourierFeatures, _label_embedding, add_label


class _Block(eqx.Module):
    norm: eqx.nn.LayerNorm
    lin1: eqx.nn.Linear
    lin_t: eqx.nn.Linear
    lin2: eqx.nn.Linear

    def __init__(self, width, key, dtype):
        k1, k2, k3 = jax.random.split(key, 3)
        self.norm = eqx.nn.LayerNorm(width, dtype=dtype)
        self.lin1 = eqx.nn.Linear(width, width, key=k1, dtype=dtype)
        self.lin_t = eqx.nn.Linear(width, width, key=k2, dtype=dtype)
        self.lin2 = eqx.nn.Linear(width, width, key=k3, dtype=dtype)

    def __call__(self, h, emb):
        u = jax.nn.silu(self.lin1(jax.nn.silu(self.norm(h))) + self.lin_t(emb))
        return h + self.lin2(u)


class MLP(eqx.Module):
    """Residual MLP `model(c, x)`: noise conditioning `c` (a scalar), one sample `x` of
    shape `(dim,)`, output of shape `(dim,)`.

    `MLP(2, key=key)` is a working model for 2-D toy data.
    """

    embed: FourierFeatures
    time_in: eqx.nn.Linear
    lin_in: eqx.nn.Linear
    blocks: tuple[_Block, ...]
    norm_out: eqx.nn.LayerNorm
    lin_out: eqx.nn.Linear
    dim: int = eqx.field(static=True)
    label_embed: eqx.nn.Embedding | None = None  # class labels: `n_classes` rows plus a null one
    n_classes: int | None = eqx.field(static=True, default=None)

    def __init__(self, dim: int, *, key: PRNGKeyArray, width: int = 128, depth: int = 3, n_fourier: int = 16,
                 dtype=None, n_classes: int | None = None):
        """**Arguments:**

        - `dim`: size of one sample.
        - `key`: initialisation key.
        - `width`: hidden width; `depth`: number of residual blocks (>= 0).
        - `n_fourier`: number of Fourier time features (even).
        - `dtype`: parameter dtype (default: JAX's default float).
        - `n_classes`: if given, the model also takes a class `label` in `0..n_classes-1` (or
          `None`, the null label of the unconditional branch), embedded and added to the time
          embedding.
        """
        for name, v, lo in (("dim", dim, 1), ("width", width, 1), ("depth", depth, 0)):
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise ValueError(f"`{name}` must be an integer >= {lo}, got {v!r}")
        kt, ki, ko, kb = jax.random.split(key, 4)
        self.embed = FourierFeatures(n_fourier)
        self.time_in = eqx.nn.Linear(self.embed.out_size, width, key=kt, dtype=dtype)
        self.lin_in = eqx.nn.Linear(dim, width, key=ki, dtype=dtype)
        self.blocks = tuple(_Block(width, k, dtype) for k in jax.random.split(kb, depth))
        self.norm_out = eqx.nn.LayerNorm(width, dtype=dtype)
        self.lin_out = eqx.nn.Linear(width, dim, key=ko, dtype=dtype)
        self.dim = dim
        if n_classes is not None:
            self.n_classes, self.label_embed = _label_embedding(n_classes, width, key, dtype)

    def __call__(self, c: Float[ArrayLike, ""], x: Float[Array, " dim"], label=None) -> Float[Array, " dim"]:
        check_sample_shape("x", x, self.dim)
        dtype = self.lin_in.weight.dtype
        emb = jax.nn.silu(self.time_in(self.embed(jnp.asarray(c, dtype))))
        emb = add_label(emb, self.label_embed, self.n_classes, label)
        h = self.lin_in(x.astype(dtype)) + emb
        for block in self.blocks:
            h = block(h, emb)
        return self.lin_out(jax.nn.silu(self.norm_out(h)))
