"""Exact empirical score throughput against the machine's matmul figure, and peak memory.

The exact score of a point cloud on a batch of `B` queries does two matrix products of
`B x N x d` multiply-adds each (`logits = X @ D.T`, then `softmax(logits) @ D`) plus an
exponential per logit, so its natural limit is the two jitted matmuls `(X @ D.T) @ D` of
the same shapes, measured here in the same run, interleaved with the score:

    ratio = (4 B N d / score time) / (4 B N d / matmul time)

The score is called as the samplers call it, `jax.jit(jax.vmap(score, in_axes=(None, 0)))` with
`score = ExactScore(OU(), law).without_time_checks()`, on float32 data. A user's own call of
`ExactScore(OU(), law)` with a traced `t` also checks `0 < t <= T` at run time (one
`eqx.error_if`, a host callback in a conditional): that figure is kept as `ratio_checked`.

Where `B x N` logits would not fit in memory (N = 10^5, 10^6) the
reference is the same two matmuls streamed over the same chunks of points and the same
query tiles as the score's kernel (the shapes the score itself multiplies), so the ratio
still isolates the cost of everything that is not a matmul.

Peak memory is measured in a fresh subprocess for N = 10^6, d = 64, B = 4096:
`VmHWM` (peak resident set) from `/proc/self/status`, which includes the JAX runtime and
the 256 MB of points; on a GPU, the device's `peak_bytes_in_use` too.
"""

from __future__ import annotations

import textwrap

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import measure, progress, row, run_python

QUICK = [(2, 1_000, 4096), (64, 1_000, 4096), (3072, 1_000, 1024), (64, 10_000, 4096), (64, 100_000, 4096),
         (64, 1_000_000, 4096)]  # fmt: skip
FULL_D, FULL_N = (2, 64, 3072), (1_000, 10_000, 100_000, 1_000_000)
DENSE_REF_MAX_BYTES = 2**29  # the dense reference materialises B x N float32 logits


def targets(backend: str) -> dict:
    """The throughput targets (ratio to the same-run matmul), keyed by (d, N, B)."""
    if backend == "cpu":
        return {(64, 1_000, 4096): ">= 0.8", (3072, 1_000, 1024): ">= 0.95", (64, 1_000_000, 4096): ">= 0.7"}
    return {(64, 1_000, 4096): ">= 0.7", (3072, 1_000, 1024): ">= 0.7", (64, 1_000_000, 4096): ">= 0.7"}


def cases(quick: bool) -> list[tuple[int, int, int]]:
    if quick:
        return QUICK
    out = []
    for d in FULL_D:
        for n in FULL_N:
            if d * n * 4 > 2**31:  # 3072 x 10^6 float32 points are 12 GB: beyond this machine
                continue
            out.append((d, n, 4096 if d <= 64 else 1024))
    return out


def _streamed_reference(law, batch: int):
    """`(X @ D_c.T) @ D_c` summed over the law's chunks, in the score kernel's query tiles."""
    from jaxdiff.distributions.kernel import query_tiles

    n_tiles = query_tiles(batch, law.chunk_size)
    tile = -(-batch // n_tiles)

    def ref(chunks, X):
        X = jnp.pad(X, ((0, n_tiles * tile - batch), (0, 0))).reshape(n_tiles, tile, X.shape[1])

        def per_tile(Xt):
            body = lambda acc, Dc: (acc + (Xt @ Dc.T) @ Dc, None)
            return jax.lax.scan(body, jnp.zeros_like(Xt), chunks)[0]

        return jax.lax.map(per_tile, X).reshape(-1, X.shape[-1])[:batch]

    return jax.jit(ref), tile


def one_case(d: int, n: int, batch: int, rounds: int, target: str | None) -> dict:
    import jaxdiff as jd

    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    points = jax.random.normal(k1, (n, d), jnp.float32)
    law = jd.PointCloud(points)
    process = jd.OU()
    t = jnp.float32(0.5)
    # queries from the noised law, as a sampler would meet them
    idx = jax.random.randint(k2, (batch,), 0, n)
    X = process.alpha(t) * points[idx] + process.sigma(t) * jax.random.normal(k3, (batch, d), jnp.float32)
    score = jax.jit(
        lambda law, t, X: jax.vmap(jd.ExactScore(process, law).without_time_checks(), in_axes=(None, 0))(t, X)
    )
    checked = jax.jit(lambda law, t, X: jax.vmap(jd.ExactScore(process, law), in_axes=(None, 0))(t, X))

    dense = batch * n * 4 <= DENSE_REF_MAX_BYTES
    if dense:
        ref = jax.jit(lambda X, D: (X @ D.T) @ D)
        ref_call, ref_kind, tile = (lambda: ref(X, points)), "dense (X @ D.T) @ D", None
    else:
        ref, tile = _streamed_reference(law, batch)
        ref_call, ref_kind = (lambda: ref(law.chunks, X)), "same chunks and tiles, streamed"

    cands = {"score": lambda: score(law, t, X), "matmul": ref_call, "checked": lambda: checked(law, t, X)}
    times = measure(cands, rounds=rounds)
    flops = 4.0 * batch * n * d
    gf_score = flops / times["score"]["wall_s"] / 1e9
    gf_ref = flops / times["matmul"]["wall_s"] / 1e9

    # float32 error against a float64 dense evaluation of the closed form on a few rows
    out = np.asarray(score(law, t, X[:8]), np.float64)
    P, Q = np.asarray(points, np.float64), np.asarray(X[:8], np.float64)
    a, s2 = float(process.alpha(t)), float(process.sigma2(t))
    logits = (a * Q @ P.T - 0.5 * a * a * np.sum(P * P, 1)) / s2
    w = np.exp(logits - logits.max(1, keepdims=True))
    exact = (a * (w @ P) / w.sum(1, keepdims=True) - Q) / s2
    err = float(np.max(np.abs(out - exact)) / np.max(np.abs(exact)))

    return row(
        f"d={d} N={n} B={batch}", gf_score, "GFLOP/s", reference=gf_ref, ratio=gf_score / gf_ref,
        target=target,
        d=d, N=n, batch=batch, score_s=times["score"]["wall_s"], matmul_s=times["matmul"]["wall_s"],
        ratio_cpu_time=times["matmul"]["cpu_s"] / times["score"]["cpu_s"], reference_kind=ref_kind,
        checked_s=times["checked"]["wall_s"],
        ratio_checked=times["matmul"]["wall_s"] / times["checked"]["wall_s"],
        chunk_size=law.chunk_size, n_chunks=law.chunks.shape[0], query_tile=tile, rel_err_float32=err,
    )  # fmt: skip


PEAK_CODE = textwrap.dedent(
    """
    import json, os
    import jax, jax.numpy as jnp
    import jaxdiff as jd

    def hwm():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM"):
                return int(line.split()[1]) * 1024
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    n, d, b = {n}, {d}, {b}
    points = jax.random.normal(jax.random.PRNGKey(0), (n, d), jnp.float32)
    law = jd.PointCloud(points)
    del points
    X = jax.random.normal(jax.random.PRNGKey(1), (b, d), jnp.float32)
    jax.block_until_ready((law.chunks, X))
    before = hwm()
    score = jax.jit(lambda law, t, X: jax.vmap(jd.ExactScore(jd.OU(), law), in_axes=(None, 0))(t, X))
    out = jax.block_until_ready(score(law, jnp.float32(0.5), X))
    out = dict(peak_bytes=hwm(), peak_bytes_before_score=before, finite=bool(jnp.all(jnp.isfinite(out))),
               chunk_size=law.chunk_size)
    stats = jax.devices()[0].memory_stats() or dict()
    if "peak_bytes_in_use" in stats:
        out["device_peak_bytes"] = stats["peak_bytes_in_use"]
    print(json.dumps(out))
    """
)


def peak_memory(n: int = 1_000_000, d: int = 64, batch: int = 4096) -> dict:
    res = run_python(PEAK_CODE.format(n=n, d=d, b=batch), env={"XLA_PYTHON_CLIENT_PREALLOCATE": "false"})
    gib = res["peak_bytes"] / 2**30
    value = max(gib, res.get("device_peak_bytes", 0) / 2**30)
    return row(
        f"peak memory, streamed score d={d} N={n} B={batch}", value, "GiB", reference=2.0, ratio=value / 2.0,
        target="<= 1.0", peak_rss_gib=gib, rss_before_score_gib=res["peak_bytes_before_score"] / 2**30,
        device_peak_gib=res.get("device_peak_bytes", 0) / 2**30 or None, points_gib=n * d * 4 / 2**30,
        finite=res["finite"], chunk_size=res["chunk_size"],
    )  # fmt: skip


def _round_mantissa(x: np.ndarray, bits: int) -> np.ndarray:
    """float32 `x` rounded to nearest on a `bits`-bit mantissa (TF32: 10, bfloat16: 7)."""
    u = np.ascontiguousarray(x, np.float32).view(np.uint32)
    drop = 23 - bits
    keep = np.uint32(~((1 << drop) - 1) & 0xFFFFFFFF)
    return ((u + np.uint32((1 << (drop - 1)) - 1) + ((u >> drop) & 1)) & keep).view(np.float32)


def precision_error(n: int = 1000, d: int = 64, batch: int = 256) -> list[dict]:
    """Why the score's products run at full float32 precision (reduced-precision matmuls
    only where the error budget allows): the score error when the operands of both products
    are rounded as a GPU's TF32 or bfloat16 matmul rounds them, against float64, at three times.
    The logits are scaled by alpha / sigma^2, so operand rounding is amplified as t -> 0."""
    rng = np.random.default_rng(0)
    P = rng.standard_normal((n, d))
    process = jd_ou()
    out = []
    for t in (0.5, 0.05, 0.005):
        a, s2 = float(process.alpha(t)), float(process.sigma2(t))
        Q = a * P[rng.integers(0, n, batch)] + np.sqrt(s2) * rng.standard_normal((batch, d))

        def score(Q, P, rnd, dtype):
            Q, P = Q.astype(dtype), P.astype(dtype)
            # the kernel's folded GEMM: [a/s2 x, -a^2/(2 s2)] @ [x_i, |x_i|^2]^T, then softmax @ points
            lhs = np.concatenate([(a / s2) * Q, np.full((len(Q), 1), -0.5 * a * a / s2, dtype)], 1)
            rhs = np.concatenate([P, np.sum(P * P, 1, keepdims=True)], 1)
            logits = rnd(lhs) @ rnd(rhs).T
            w = np.exp(logits - logits.max(1, keepdims=True))
            mean = (rnd(w) @ rnd(P)) / w.sum(1, keepdims=True)
            return (a * mean - Q) / s2

        exact = score(Q, P, lambda v: v, np.float64)
        scale = np.max(np.abs(exact))
        for name, rnd in (("float32", lambda v: v), ("TF32 operands", lambda v: _round_mantissa(v, 10)),
                          ("bfloat16 operands", lambda v: _round_mantissa(v, 7))):
            err = float(np.max(np.abs(score(Q, P, rnd, np.float32) - exact)) / scale)
            case = f"score error, {name}, t={t} (OU, d={d})"
            out.append(row(case, err, "max rel. error", sigma=float(np.sqrt(s2))))
    return out  # fmt: skip


def translation_error(n: int = 20, d: int = 3, t: float = 0.01) -> list[dict]:
    """Float32 score error of a cloud (and of the same law as a zero-variance mixture) moved
    far from the origin, against float64 evaluations of the same float32 inputs, and how
    often the denoiser names the point each query was drawn near."""
    import jaxdiff as jd

    rng = np.random.default_rng(0)
    base = rng.normal(size=(n, d))
    noise = rng.normal(size=(n, d))
    process, tt = jd.OU(), jnp.float32(t)
    a, s2 = float(process.alpha(tt)), float(process.sigma2(tt))
    out = []
    for offset in (0.0, 1e2, 1e4, 1e6):
        P32 = (base + offset).astype(np.float32)
        P = P32.astype(np.float64)
        X32 = (a * P + 0.3 * np.sqrt(s2) * noise).astype(np.float32)
        X = X32.astype(np.float64)
        logits = -0.5 * np.sum((X[:, None] - a * P[None]) ** 2, -1) / s2
        w = np.exp(logits - logits.max(1, keepdims=True))
        exact = (a * (w @ P) / w.sum(1, keepdims=True) - X) / s2
        laws = (("PointCloud", jd.PointCloud(P32)), ("GaussianMixture(stds=0)", jd.GaussianMixture(P32, 0.0)))
        for name, law in laws:
            nl = law.noised(process, tt)
            s = np.asarray(jax.vmap(nl.score)(jnp.asarray(X32)), np.float64)
            den = np.asarray(jax.vmap(nl.denoise)(jnp.asarray(X32)), np.float64)
            err = float(np.max(np.abs(s - exact)) / np.max(np.abs(exact)))
            right = int(np.sum(np.argmin(np.sum((den[:, None] - P[None]) ** 2, -1), 1) == np.arange(n)))
            case = f"score error, float32, {name} at offset {offset:g} (t={t}, N={n}, d={d})"
            out.append(row(case, err, "max rel. error", offset=offset, denoiser_right=right, queries=n))
    return out  # fmt: skip


def jd_ou():
    import jaxdiff as jd

    return jd.OU()


def run(quick: bool = True) -> dict:
    backend = jax.default_backend()
    tgt = targets(backend)
    rows = []
    todo = cases(quick)
    for d, n, b in progress(todo, "exact score"):
        # the target cases are short: more rounds make their fastest-round figures stable
        rounds = 2 if n * b * d >= 10**11 else (25 if (d, n, b) in tgt else (3 if quick else 5))
        rows.append(one_case(d, n, b, rounds, tgt.get((d, n, b))))
    rows.append(peak_memory())
    rows += precision_error()
    rows += translation_error()
    return {
        "title": "Exact empirical score: throughput vs same-run matmul, peak memory",
        "rows": rows,
        "notes": [
            f"backend {backend}; float32; ratios from one run, fastest of interleaved rounds (wall clock)",
            "score as the samplers call it (no run-time check of t); ratio_checked: a user's call with a "
            "traced t, checked by eqx.error_if",
            "ratio_cpu_time: the same ratio from process CPU time "
            "(less sensitive to other load on the machine)",
            "peak memory row: value in GiB, reference 2 GiB, ratio = value / 2 GiB (target < 1)",
            "score error rows: max |error| / max |score| against float64, with the operands of both "
            "products rounded as TF32 / bfloat16 matmuls round them (emulated in NumPy): why the kernel "
            "asks for Precision.HIGHEST on every backend",
            "translation rows: the same 20 points moved to an offset from the origin; denoiser_right counts "
            "queries whose denoised value is nearest the point they were drawn near (of 20)",
        ],
    }


if __name__ == "__main__":
    from benchmarks import standalone

    standalone(run, "score", __doc__)
