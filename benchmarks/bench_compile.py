"""JIT compile times of the main entry points.

For each entry point the first call (trace + compile + run) is timed against the fastest
of the next calls (run only): `compile_s = first - steady`, and the row's ratio is
`first / steady`, how many runs one compile costs. Small shapes: these are compile
figures, not run figures. Each entry point gets fresh objects, so nothing is cached from
an earlier row; an entry point that does not exist yet is skipped with a note.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp

from benchmarks import progress, row


def _first_and_steady(call, reps: int = 3) -> tuple[float, float]:
    t0 = time.perf_counter()
    jax.block_until_ready(call())
    first = time.perf_counter() - t0
    steady = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(call())
        steady = min(steady, time.perf_counter() - t0)
    return first, steady


def _exact_score():
    import jaxdiff as jd

    pts = jax.random.normal(jax.random.PRNGKey(0), (10_000, 64), jnp.float32)
    law, X = jd.PointCloud(pts), jax.random.normal(jax.random.PRNGKey(1), (1024, 64), jnp.float32)
    f = jax.jit(lambda law, t, X: jax.vmap(jd.ExactScore(jd.OU(), law), in_axes=(None, 0))(t, X))
    return lambda: f(law, jnp.float32(0.5), X), "jit(vmap(ExactScore)), PointCloud N=10^4 d=64, B=1024"


def _exact_score_grad():
    import jaxdiff as jd

    pts = jax.random.normal(jax.random.PRNGKey(0), (10_000, 64), jnp.float32)
    law, X = jd.PointCloud(pts), jax.random.normal(jax.random.PRNGKey(1), (1024, 64), jnp.float32)
    loss = lambda law, t, X: jnp.sum(jax.vmap(jd.ExactScore(jd.OU(), law), in_axes=(None, 0))(t, X) ** 2)
    f = jax.jit(jax.grad(loss, argnums=2))
    what = "jit(grad(sum |vmap(ExactScore)|^2)) w.r.t. queries, same shapes"
    return lambda: f(law, jnp.float32(0.5), X), what


def _sample(sampler_name: str):
    def make():
        import jaxdiff as jd

        pts = jax.random.normal(jax.random.PRNGKey(0), (1000, 2), jnp.float32)
        process = jd.OU()
        score = jd.ExactScore(process, jd.PointCloud(pts))
        sampler = getattr(jd, sampler_name)()
        key = jax.random.PRNGKey(1)
        return (lambda: jd.sample(key, score, process, (256, 2), sampler=sampler, steps=100),
                f"jd.sample({sampler_name}(), steps=100), exact score N=1000 d=2, batch 256")

    return make


def _train():
    import optax

    import jaxdiff as jd

    process = jd.VP()
    data = jax.random.normal(jax.random.PRNGKey(0), (2048, 2), jnp.float32)
    opt = optax.adam(1e-3)
    state = {"score": jd.NetworkScore(jd.nn.MLP(2, key=jax.random.PRNGKey(1), width=64, depth=2), process)}

    def call():  # the compiled step is cached on the optimizer object: reuse it, as documented
        return jd.train(state["score"], data, process, key=jax.random.PRNGKey(2), steps=50, batch_size=256,
                        optimizer=opt, progress=False, log_every=50)  # fmt: skip

    return call, "jd.train(NetworkScore(MLP(2, width=64, depth=2)), steps=50, batch 256)"


def _fokker_planck():
    import jaxdiff as jd
    from jaxdiff import pde

    process = jd.OU()
    law = jd.GaussianMixture(jnp.array([[-1.0], [1.5]]), 0.3)
    grid = pde.Grid(-6.0, 6.0, 256)
    p0 = grid.density(law.noised(process, 0.05).log_prob)
    return (lambda: pde.solve_fokker_planck(process, grid, p0, t0=0.05, t1=1.0),
            "jd.pde.solve_fokker_planck(OU, 1-D grid of 256 cells, t in [0.05, 1])")


ENTRY_POINTS = {
    "ExactScore": _exact_score,
    "grad ExactScore": _exact_score_grad,
    "sample ReverseSDE": _sample("ReverseSDE"),
    "sample ProbabilityFlow": _sample("ProbabilityFlow"),
    "sample DDIM": _sample("DDIM"),
    "train": _train,
    "solve_fokker_planck": _fokker_planck,
}


def run(quick: bool = True) -> dict:
    rows, notes = [], []
    for name, make in progress(ENTRY_POINTS.items(), "compile times", total=len(ENTRY_POINTS)):
        try:
            call, what = make()
            first, steady = _first_and_steady(call)
        except Exception as e:  # an area not written yet (or broken): record and go on
            first_line = str(e).splitlines()[0][:160] if str(e) else ""
            notes.append(f"{name}: skipped ({type(e).__name__}: {first_line})")
            continue
        rows.append(row(name, first - steady, "s", reference=steady, ratio=first / steady,
                        what=what, first_call_s=first, steady_call_s=steady))  # fmt: skip
    notes.append("figure: compile (+ trace) seconds = first call - fastest later call; "
                 "reference: that later call (s); ratio: first / later")
    return {"title": "JIT compile times of the main entry points", "rows": rows, "notes": notes}
