"""Gradients through long samplers: peak memory and time of each adjoint against the forward pass.

The study: DDIM with the exact point-cloud score (OU, `N` points in `d` dimensions, a batch of
`B`), the gradient of the mean square of the samples with respect to the stopping time
`t_end`, for 50, 200 and 1000 steps. Each configuration runs in a fresh subprocess (peak
resident memory only ever grows within a process), which reports

* `peak_rss_gib`: the process's peak resident memory (what a user sees, JAX runtime included);
* `xla_temp_gib`: the compiled program's scratch memory (`memory_analysis()`), exact and
  noise-free; a configuration too large to run is compiled only, so its memory is still known;
* `time_s`: the fastest of a few calls after compilation.

Targets: with `CheckpointAdjoint` the gradient through 1000 steps peaks at no more than twice
the forward pass's peak, and at 200 steps it takes no more than 3x plain backpropagation's
time. Quick mode shrinks `d`, `B` and `N`, not the step counts.
"""

from __future__ import annotations

import json

from benchmarks import machine, measure, progress, row, run_python, standalone

_CHILD = r"""
import json, resource, time, sys
import jax, jax.numpy as jnp
import jaxdiff as jd
from benchmarks.bench_adjoint import study

d, B, N, steps, adjoint, mode, execute = {d}, {B}, {N}, {steps}, {adjoint!r}, {mode!r}, {execute}
f, t_end = study(d, B, N, steps, adjoint, mode)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
compiled = f.lower(t_end).compile()
mem = compiled.memory_analysis()
temp = None if mem is None else mem.temp_size_in_bytes
if execute:
    jax.block_until_ready(compiled(t_end))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({{"peak": peak if execute else None, "base": base, "temp": temp}}))
"""


def study(d, B, N, steps, adjoint, mode):
    """The jitted forward pass or gradient of the study, and its argument."""
    import jax
    import jax.numpy as jnp

    import jaxdiff as jd

    process = jd.OU()
    law = jd.PointCloud(jax.random.normal(jax.random.PRNGKey(1), (N, d)))
    score = jd.ExactScore(process, law)
    adj = {"plain": jd.BackpropAdjoint(), "checkpoint": jd.CheckpointAdjoint()}[adjoint]

    def loss(t_end):
        x = jd.sample(
            jax.random.PRNGKey(0),
            score,
            process,
            (B, d),
            sampler=jd.DDIM(),
            steps=steps,
            t_end=t_end,
            adjoint=adj,
        )
        return jnp.mean(x**2)

    return jax.jit(loss if mode == "forward" else jax.grad(loss)), jnp.asarray(0.01)


def _memory(d, B, N, steps, adjoint, mode, execute):
    code = _CHILD.format(d=d, B=B, N=N, steps=steps, adjoint=adjoint, mode=mode, execute=execute)
    return run_python(code, timeout=1800)


def run(quick: bool = True) -> dict:
    d, B, N = (256, 128, 500) if quick else (1024, 512, 1000)
    gib = 2.0**30
    configs = []
    for steps in (50, 200, 1000):
        configs.append((steps, "plain", "forward", True))
        # plain backpropagation through 1000 steps is compiled (its memory is known) but not run
        configs.append((steps, "plain", "grad", steps < 1000))
        configs.append((steps, "checkpoint", "grad", True))
    mem = {}
    for steps, adjoint, mode, execute in progress(configs, "adjoint memory (one process each)"):
        mem[steps, adjoint, mode] = _memory(d, B, N, steps, adjoint, mode, execute)

    # times: the candidates of one step count interleaved in one process (same conditions)
    times = {}
    for steps in progress((50, 200) if quick else (50, 200, 1000), "adjoint times"):
        cands = {}
        for adjoint, mode in (("plain", "forward"), ("plain", "grad"), ("checkpoint", "grad")):
            if steps == 1000 and adjoint == "plain" and mode == "grad":
                continue
            f, t_end = study(d, B, N, steps, adjoint, mode)
            cands[adjoint, mode] = lambda f=f, t=t_end: f(t)
        got = measure(cands, rounds=2 if steps < 1000 else 1, min_round_s=0.0)
        for k, v in got.items():
            times[(steps, *k)] = v["wall_s"]

    rows, table = [], []
    for steps in (50, 200, 1000):
        fwd = mem[steps, "plain", "forward"]
        for adjoint in ("plain", "checkpoint"):
            g = mem[steps, adjoint, "grad"]
            table.append({
                "steps": steps, "adjoint": adjoint,
                "peak_rss_gib": None if g["peak"] is None else g["peak"] / gib,
                "xla_temp_gib": None if g["temp"] is None else g["temp"] / gib,
                "time_s": times.get((steps, adjoint, "grad")),
                "forward_peak_rss_gib": fwd["peak"] / gib,
                "forward_xla_temp_gib": None if fwd["temp"] is None else fwd["temp"] / gib,
                "forward_time_s": times.get((steps, "plain", "forward")),
            })  # fmt: skip
    g1000, f1000 = mem[1000, "checkpoint", "grad"], mem[1000, "plain", "forward"]
    size = f"d={d} B={B} N={N}"
    rows.append(
        row(
            f"checkpointed gradient peak / forward peak, 1000 steps, {size}",
            g1000["peak"] / gib,
            "GiB",
            reference=f1000["peak"] / gib,
            ratio=g1000["peak"] / f1000["peak"],
            target="<= 2",
        )
    )
    c200, p200 = times[200, "checkpoint", "grad"], times[200, "plain", "grad"]
    rows.append(
        row(
            f"checkpointed / plain gradient time, 200 steps, {size}",
            c200,
            "s",
            reference=p200,
            ratio=c200 / p200,
            target="<= 3",
        )
    )
    p1000 = mem[1000, "plain", "grad"]
    if p1000["temp"] is not None and g1000["temp"] is not None:
        rows.append(
            row(
                f"plain / checkpointed gradient scratch memory (compiled), 1000 steps, {size}",
                p1000["temp"] / gib,
                "GiB",
                reference=g1000["temp"] / gib,
                ratio=p1000["temp"] / max(g1000["temp"], 1),
            )
        )
    return {
        "title": "Gradients through DDIM: memory and time per adjoint",
        "machine": machine(),
        "sizes": {"d": d, "batch": B, "points": N},
        "rows": rows,
        "table": table,
        "notes": [
            "peak_rss_gib: process peak resident memory (JAX runtime included), one fresh process per entry",
            "xla_temp_gib: scratch memory of the compiled program; plain backpropagation through 1000 steps"
            " is compiled but not run (its peak_rss_gib is null)",
            "times: wall-clock; the forward pass and both gradients of one step count run interleaved"
            " in one process",
            "gradient of mean(x^2) with respect to t_end; DDIM, exact point-cloud score, OU",
        ],
    }


if __name__ == "__main__":
    standalone(run, "adjoint", __doc__, after=lambda res, out: print(json.dumps(res["table"], indent=1)))
