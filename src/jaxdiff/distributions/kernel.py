r"""The point-cloud kernel: logits, log-sum-exp and posterior mean over a streamed cloud.

For queries $x$ and points $y_i$ (both relative to the cloud's centre, see
`_translation.py`) the logits are $\ell_i = a\,x\cdot y_i - b|y_i|^2$ with
$a = \alpha/\sigma^2$, $b = \alpha^2/(2\sigma^2)$: the posterior weights of the noised
empirical measure, up to a constant. `make_logits` is the one place they are computed;
`streamer` sums them over the chunks of a cloud for the score, log-density and denoiser.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

# Full float32 products on every backend: the logits are multiplied by alpha / sigma^2
# (up to ~1e6 near t = 0), so TF32's ~1e-3 relative error (a GPU's default for float32
# matmuls) would scramble the weights. No effect on a CPU.
HIGHEST = jax.lax.Precision.HIGHEST

# Layout defaults (benchmarks/bench_score.py measures them): on a CPU the `tile x chunk`
# logits block must stay in cache, so chunks are small; the GPU sizes suit tens of GB of
# device memory. They change speed and float rounding, never the random stream.
_DENSE_MAX_CPU, _CHUNK_CPU, _TILE_ELEMS_CPU = 4096, 1024, 2**22
_DENSE_MAX_GPU, _CHUNK_GPU, _TILE_ELEMS_GPU = 65536, 16384, 2**27


def default_chunk(n_points: int) -> int:
    """Points per streamed chunk, from the shapes and the backend. A divisor of `N` near
    the target is preferred: then no chunk is ragged and no masking is needed."""
    cpu = jax.default_backend() == "cpu"
    dense_max, target = (_DENSE_MAX_CPU, _CHUNK_CPU) if cpu else (_DENSE_MAX_GPU, _CHUNK_GPU)
    if n_points <= dense_max:
        return n_points
    for c in range(target, target // 2, -1):
        if n_points % c == 0:
            return c
    return target


def query_tiles(n: int, chunk: int, split: int = 1) -> int:
    """How many query tiles a batch of `n` is cut into: `tile x chunk` logits per device
    within a cache budget, the batch being split over `split` devices. Under a split a
    divisor of `n / split` is preferred, so each device holds whole rows of every tile and
    nothing is padded."""
    budget = _TILE_ELEMS_CPU if jax.default_backend() == "cpu" else _TILE_ELEMS_GPU
    local = -(-n // split)
    n_tiles = -(-local // max(8, budget // chunk))
    if split > 1 and n % split == 0:
        for m in range(n_tiles, 2 * n_tiles + 1):
            if local % m == 0:
                return m
    return n_tiles


def make_logits(a, b, X, n_points: int, chunk: int):
    """`logits_of(c, D_c, s_c)`: the `(n, chunk)` logits of chunk `c` (points `D_c`, squared
    norms `s_c`) for the queries `X` `(n, d)` with per-query `a`, `b` `(n,)`. The zero
    padding of a ragged last chunk gets logit `-inf` (weight exactly 0).

    Many queries per point coordinate: the scale and the norm term are folded into the GEMM
    as one more column, `[-b, a x] @ [|y_i|^2, y_i]^T`, which saves a pass over the logits
    block for a copy of each chunk that costs `1/n` as much. With few queries per coordinate
    that copy costs more than the pass it saves, so the plain form is kept. The norm column
    goes first: the GEMM's sum then starts from the large term that the products cancel,
    whatever the kernel's blocking, so per-device GEMMs of a sharded batch round alike.
    """
    d = X.shape[1]
    folded = X.shape[0] >= 8 * (d + 1)
    ragged = n_points % chunk != 0
    if folded:
        Xa = jnp.concatenate([-b[:, None], a[:, None] * X], axis=1)

    def logits_of(c, Dc, sc):
        if folded:
            logits = jnp.matmul(Xa, jnp.concatenate([sc[:, None], Dc], axis=1).T, precision=HIGHEST)
        else:
            logits = a[:, None] * jnp.matmul(X, Dc.T, precision=HIGHEST) - b[:, None] * sc[None, :]
        if ragged:
            logits = jnp.where((c * chunk + jnp.arange(chunk) < n_points)[None, :], logits, -jnp.inf)
        return logits

    return logits_of


@functools.cache
def streamer(n_points: int, query_split: int = 1):
    r"""The empirical-measure kernel for clouds of `n_points` points, batches split over
    `query_split` devices.

    Returns `f(a, b, chunks, sq_norms, x) -> (lse, mean)` on one query `x`, with
    `lse` $= \log\sum_i e^{\ell_i}$ and `mean` $= \sum_i \mathrm{softmax}(\ell)_i y_i$,
    streamed over the chunks with an online log-sum-exp. Three layers, because how the batch
    is laid out matters several-fold:

    * `rows`: the kernel on a block of queries `X` (n, d). Queries sit on the left of both
      matmuls (`X @ D_c^T`, then `P @ D_c`), so the batch is the row dimension and XLA
      emits plain GEMMs (a vmapped `D_c @ x` puts the batch last and runs several times
      slower). The running max is a `stop_gradient` shift: the result does not depend on it,
      so differentiating it would only add work.
    * a `custom_vmap` rule: under `jax.vmap` the whole batch goes to `rows` in query tiles
      (`lax.map`, `query_tiles`), so each `tile x chunk` logits block stays in cache
      instead of streaming a `batch x chunk` block through memory several times.
    * a `custom_jvp` whose rule is `jax.jvp` of the plain per-sample kernel: `custom_vmap`
      has no reverse mode of its own, so every derivative (forward, reverse, any order)
      goes through ordinary, rematerialised JAX code, and only evaluation takes the fast
      path. Both paths compute the same sums; they agree to float rounding.
    """

    def rows(a, b, chunks, sq_norms, X):
        n_chunks, chunk, _ = chunks.shape
        logits_of = make_logits(a, b, X, n_points, chunk)
        if n_chunks == 1:
            logits = logits_of(0, chunks[0], sq_norms[0])
            m = jax.lax.stop_gradient(jnp.max(logits, axis=1))
            p = jnp.exp(logits - m[:, None])
            l, acc = jnp.sum(p, axis=1), jnp.matmul(p, chunks[0], precision=HIGHEST)
        else:

            @jax.checkpoint  # reverse mode stores the carries only, never a logits block
            def body(carry, inp):
                m, l, acc = carry
                c, Dc, sc = inp
                logits = logits_of(c, Dc, sc)
                m_new = jnp.maximum(m, jax.lax.stop_gradient(jnp.max(logits, axis=1)))
                scale = jnp.exp(m - m_new)
                p = jnp.exp(logits - m_new[:, None])
                acc = acc * scale[:, None] + jnp.matmul(p, Dc, precision=HIGHEST)
                return (m_new, l * scale + jnp.sum(p, axis=1), acc), None

            n, dtype = X.shape[0], jnp.result_type(X, chunks, a, b)
            zeros = jnp.zeros((n,), dtype)
            init = (jnp.full((n,), -jnp.inf, dtype), zeros, jnp.zeros((n, chunks.shape[2]), dtype))
            (m, l, acc), _ = jax.lax.scan(body, init, (jnp.arange(n_chunks), chunks, sq_norms))
        return m + jnp.log(l), acc / l[:, None]

    def one(a, b, chunks, sq_norms, x):
        lse, mean = rows(jnp.reshape(a, (1,)), jnp.reshape(b, (1,)), chunks, sq_norms, x[None])
        return lse[0], mean[0]

    fast = jax.custom_batching.custom_vmap(one)

    @fast.def_vmap
    def _rule(axis_size, in_batched, a, b, chunks, sq_norms, x):
        a_b, b_b, c_b, s_b, x_b = in_batched
        if c_b or s_b:  # a batch of clouds: nothing to tile, fall back to plain vmap
            axes = tuple(0 if f else None for f in in_batched)
            return jax.vmap(one, in_axes=axes)(a, b, chunks, sq_norms, x), (True, True)
        dtype = jnp.result_type(a, b)
        a = a if a_b else jnp.broadcast_to(jnp.asarray(a, dtype), (axis_size,))
        b = b if b_b else jnp.broadcast_to(jnp.asarray(b, dtype), (axis_size,))
        X = x if x_b else jnp.broadcast_to(x, (axis_size, *x.shape))
        n_tiles = query_tiles(axis_size, chunks.shape[1], query_split)
        if n_tiles == 1:
            return rows(a, b, chunks, sq_norms, X), (True, True)
        tile = -(-axis_size // n_tiles)
        pad = n_tiles * tile - axis_size  # padded queries (x = 0, a = b = 0) are finite, then dropped
        a, b = jnp.pad(a, (0, pad)), jnp.pad(b, (0, pad))
        X = jnp.pad(X, ((0, pad), (0, 0)))
        # Query r goes to tile r % n_tiles (strided, not blocked): a batch split in blocks
        # over devices then splits every tile the same way, so an SPMD-partitioned loop over
        # tiles needs no communication (a blocked layout made XLA all-gather each tile).
        tiles = lambda v: jnp.swapaxes(v.reshape(tile, n_tiles, *v.shape[1:]), 0, 1)
        untile = lambda v: jnp.swapaxes(v, 0, 1).reshape(-1, *v.shape[2:])[:axis_size]
        lse, mean = jax.lax.map(
            lambda blk: rows(blk[0], blk[1], chunks, sq_norms, blk[2]), (tiles(a), tiles(b), tiles(X))
        )
        return (untile(lse), untile(mean)), (True, True)

    @jax.custom_jvp
    def stream(a, b, chunks, sq_norms, x):
        return fast(a, b, chunks, sq_norms, x)

    @stream.defjvp
    def _stream_jvp(primals, tangents):
        return jax.jvp(one, primals, tangents)

    return stream
