r"""A small time-conditioned U-Net for images of shape `(C, H, W)`, 8x8 to 32x32.

Layout (one resolution level per entry of `mults`, channels `base * mults[i]`):

    conv_in -> [ResBlock -> downsample]* -> ResBlock, ResBlock (middle)
            -> [concat skip -> ResBlock -> upsample]* -> GroupNorm, silu, conv_out

A residual block is $h = x W_s + \mathrm{conv}_2(\mathrm{silu}(\mathrm{GN}(
\mathrm{conv}_1(\mathrm{silu}(\mathrm{GN}(x))) + U e(c))))$: the time embedding $e(c)$ is
added per channel between the two convolutions, as in Ho et al. (2020). Downsampling is a
stride-2 convolution, upsampling nearest-neighbour doubling followed by a convolution (no
checkerboard artefacts from transposed convolutions). `H` and `W` must be divisible by
`2^(len(mults) - 1)`.
"""

from __future__ import annotations

import functools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .embeddings import FourierFeatures, _label_embedding, add_label


def _groups(channels: int) -> int:
    return math.gcd(8, channels)


class _ResBlock(eqx.Module):
    norm1: eqx.nn.GroupNorm
    conv1: eqx.nn.Conv2d
    lin_t: eqx.nn.Linear
    norm2: eqx.nn.GroupNorm
    conv2: eqx.nn.Conv2d
    skip: eqx.nn.Conv2d | None

    def __init__(self, c_in, c_out, emb_size, key, dtype):
        k1, k2, k3, k4 = jax.random.split(key, 4)
        self.norm1 = eqx.nn.GroupNorm(_groups(c_in), c_in, dtype=dtype)
        self.conv1 = eqx.nn.Conv2d(c_in, c_out, 3, padding=1, key=k1, dtype=dtype)
        self.lin_t = eqx.nn.Linear(emb_size, c_out, key=k2, dtype=dtype)
        self.norm2 = eqx.nn.GroupNorm(_groups(c_out), c_out, dtype=dtype)
        self.conv2 = eqx.nn.Conv2d(c_out, c_out, 3, padding=1, key=k3, dtype=dtype)
        self.skip = None if c_in == c_out else eqx.nn.Conv2d(c_in, c_out, 1, key=k4, dtype=dtype)

    def __call__(self, x, emb):
        h = self.conv1(jax.nn.silu(self.norm1(x)))
        h = h + self.lin_t(emb)[:, None, None]
        h = self.conv2(jax.nn.silu(self.norm2(h)))
        return h + (x if self.skip is None else self.skip(x))


class _Up(eqx.Module):
    conv: eqx.nn.Conv2d

    def __call__(self, x):
        x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        return self.conv(x)


class UNet(eqx.Module):
    """Time-conditioned U-Net `model(c, x)` for one image `x` of shape `(channels, H, W)`."""

    embed: FourierFeatures
    time_mlp: eqx.nn.MLP
    conv_in: eqx.nn.Conv2d
    down: tuple[_ResBlock, ...]
    downsample: tuple[eqx.nn.Conv2d, ...]
    mid: tuple[_ResBlock, _ResBlock]
    up: tuple[_ResBlock, ...]
    upsample: tuple[_Up, ...]
    norm_out: eqx.nn.GroupNorm
    conv_out: eqx.nn.Conv2d
    channels: int = eqx.field(static=True)
    label_embed: eqx.nn.Embedding | None = None  # class labels: `n_classes` rows plus a null one
    n_classes: int | None = eqx.field(static=True, default=None)

    def __init__(self, channels: int, *, key: PRNGKeyArray, base: int = 32, mults: tuple[int, ...] = (1, 2),
                 emb_size: int = 64, n_fourier: int = 16, dtype=None, n_classes: int | None = None):
        """**Arguments:**

        - `channels`: image channels `C` (input and output).
        - `key`: initialisation key.
        - `base`: channels at the finest level; level `i` has `base * mults[i]`.
        - `mults`: channel multipliers, one per resolution level (`(1, 2)`: 8x8 -> 4x4).
        - `emb_size`: width of the time embedding; `n_fourier`: Fourier features (even).
        - `dtype`: parameter dtype.
        - `n_classes`: if given, the model also takes a class `label` (or `None`, the null label),
          embedded and added to the time embedding.
        """
        if not isinstance(channels, int) or channels < 1:
            raise ValueError(f"`channels` must be a positive integer, got {channels!r}")
        if not mults or any((not isinstance(m, int)) or m < 1 for m in mults):
            raise ValueError(f"`mults` must be a non-empty tuple of positive integers, got {mults!r}")
        if not isinstance(base, int) or base < 1:
            raise ValueError(f"`base` must be a positive integer, got {base!r}")
        layers = _build_layers(channels, key, base, tuple(mults), emb_size, n_fourier, dtype)
        for name, layer in layers.items():
            setattr(self, name, layer)
        self.channels = channels
        if n_classes is not None:
            self.n_classes, self.label_embed = _label_embedding(n_classes, emb_size, key, dtype)

    def __call__(self, c: Float[ArrayLike, ""], x: Float[Array, "C H W"], label=None
                 ) -> Float[Array, "C H W"]:
        L = len(self.down)
        if x.ndim != 3 or x.shape[0] != self.channels:
            raise ValueError(f"`x` must be one image of shape ({self.channels}, H, W), got {x.shape}"
                             + (" (batch with jax.vmap)" if x.ndim == 4 else ""))
        f = 2 ** (L - 1)
        if x.shape[1] % f or x.shape[2] % f:
            raise ValueError(f"`x`'s height and width must be divisible by {f}, got {x.shape[1:]}")
        dtype = self.conv_in.weight.dtype
        emb = self.time_mlp(self.embed(jnp.asarray(c, dtype)))
        emb = add_label(emb, self.label_embed, self.n_classes, label)
        h = self.conv_in(x.astype(dtype))
        skips = []
        for i in range(L):
            h = self.down[i](h, emb)
            skips.append(h)
            if i < L - 1:
                h = self.downsample[i](h)
        h = self.mid[1](self.mid[0](h, emb), emb)
        for i in reversed(range(L)):
            h = self.up[i](jnp.concatenate([h, skips[i]], axis=0), emb)
            if i > 0:
                h = self.upsample[i - 1](h)
        return self.conv_out(jax.nn.silu(self.norm_out(h)))


# Built in one compiled call with XLA's optimisations off: eagerly, every distinct weight shape
# compiled its own random initialiser (30 compilations, 4.5 s for the default U-Net); one
# unoptimised compilation takes 1.7-2 s, and initial weights need no optimised code.
@functools.partial(
    eqx.filter_jit,
    compiler_options={"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True},
)
def _build_layers(channels, key, base, mults, emb_size, n_fourier, dtype) -> dict:
    keys = iter(jax.random.split(key, 4 * len(mults) + 6))
    chans = [base * m for m in mults]
    L = len(mults)
    embed = FourierFeatures(n_fourier)

    def conv(c_in, c_out, stride=1):
        return eqx.nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, key=next(keys), dtype=dtype)

    def block(c_in, c_out):
        return _ResBlock(c_in, c_out, emb_size, next(keys), dtype)

    out = dict(embed=embed)
    out["time_mlp"] = eqx.nn.MLP(embed.out_size, emb_size, emb_size, depth=1, activation=jax.nn.silu,
                                 final_activation=jax.nn.silu, key=next(keys), dtype=dtype)
    out["conv_in"] = conv(channels, base)
    prev = [base] + chans[:-1]
    out["down"] = tuple(block(prev[i], chans[i]) for i in range(L))
    out["downsample"] = tuple(conv(chans[i], chans[i], stride=2) for i in range(L - 1))
    out["mid"] = (block(chans[-1], chans[-1]), block(chans[-1], chans[-1]))
    # up level i sees the output of level i+1 (or of the middle) concatenated with its skip
    below = chans[1:] + [chans[-1]]
    out["up"] = tuple(block(below[i] + chans[i], chans[i]) for i in range(L))
    out["upsample"] = tuple(_Up(conv(chans[i], chans[i])) for i in range(1, L))
    out["norm_out"] = eqx.nn.GroupNorm(_groups(chans[0]), chans[0], dtype=dtype)
    out["conv_out"] = conv(chans[0], channels)
    return out
