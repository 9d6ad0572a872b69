"""Sharded batch sampling over a device mesh: scaling and equality with one device.

Each device count `k` runs in a fresh subprocess (the count is fixed when JAX starts). On
a CPU the `k` devices are simulated (`XLA_FLAGS=--xla_force_host_platform_device_count=k`)
and share the machine's physical cores, so the speed-up is bounded by the core count, not
by `k`; the JSON records both. In the same subprocess and the same run, interleaved:

- `sharded`: `jd.parallel.sharded_sample` with the batch split over the `k` devices;
- `one device`: the plain `jd.sample` call (one device), the reference.

Speed-up = one-device time / sharded time; efficiency = speed-up / min(k, physical cores).

Equality: sample `i` uses `fold_in(key, i)` on any device, so sharded and one-device runs
differ only by float rounding (the devices' kernels see other tile shapes). Reverse sampling
with an exact empirical score amplifies rounding a lot (the score is `O(1/sigma^2)` near
`t_end`, and posterior weights flip between training points), so in float32 the difference
is set against its rounding floor: the same one-device run with the score summed in another
order (chunked instead of dense). The issue's 1e-5 relative target is checked in float64
(4 devices, same run length), where rounding is far below it and only a wrong key, row or
shard could break it.
"""

from __future__ import annotations

import os
import textwrap

from benchmarks import progress, row, run_python

WORKER = textwrap.dedent(
    """
    import json
    import jax, jax.numpy as jnp, numpy as np
    import jaxdiff as jd
    from jaxdiff import parallel as par
    from benchmarks import measure

    n, d, batch, steps = {n}, {d}, {batch}, {steps}
    process = jd.OU()
    pts = jax.random.normal(jax.random.PRNGKey(0), (n, d), jnp.{dtype})
    score = jd.ExactScore(process, jd.PointCloud(pts))
    key = jax.random.PRNGKey(1)
    mesh = par.device_mesh()
    sharded = lambda: par.sharded_sample(key, score, process, (batch, d), mesh=mesh, steps=steps)
    plain = lambda: jd.sample(key, score, process, (batch, d), steps=steps)
    t = measure(dict(sharded=sharded, plain=plain), rounds={rounds}, min_round_s=0.0) if {rounds} else dict()
    rel = lambda a, b: float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)))
                             / np.max(np.abs(np.asarray(b, np.float64))))
    # the float32 rounding floor of this run: the same one-device sampling with the score's
    # sums in another order (chunked instead of dense), which is just as correct
    chunked = jd.ExactScore(process, jd.PointCloud(pts, chunk_size=n // 4))
    floor = rel(jd.sample(key, chunked, process, (batch, d), steps=steps), plain())
    print(json.dumps(dict(devices=len(jax.devices()), sharded=t.get("sharded"), plain=t.get("plain"),
                          rel=rel(par.gather(sharded()), plain()), floor=floor)))
    """
)


def physical_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def run(quick: bool = True) -> dict:
    counts = (1, 2, 4) if quick else (1, 2, 4, 8)
    if quick:
        cfg = dict(n=4096, d=16, batch=1024, steps=50, rounds=3)
    else:
        cfg = dict(n=16384, d=16, batch=4096, steps=100, rounds=5)
    cores = physical_cores()
    rows, raw = [], {}
    for k in progress(counts, "sharded sampling"):
        env = {"XLA_FLAGS": f"--xla_force_host_platform_device_count={k}", "JAX_PLATFORMS": "cpu",
               "JAX_ENABLE_X64": "0"}
        res = run_python(WORKER.format(**cfg, dtype="float32"), env=env, timeout=1200)
        raw[k] = res
        speedup = res["plain"]["wall_s"] / res["sharded"]["wall_s"]
        eff = speedup / min(k, cores)
        rows.append(row(f"{k} simulated CPU devices: speed-up vs 1 device", speedup, "x",
                        reference=float(min(k, cores)), ratio=eff, sharded_s=res["sharded"]["wall_s"],
                        one_device_s=res["plain"]["wall_s"], devices=res["devices"]))  # fmt: skip
        rows.append(row(f"{k} simulated CPU devices: float32 max rel. difference vs 1 device", res["rel"], "",
                        reference=res["floor"], ratio=res["rel"] / max(res["floor"], 1e-30),
                        rounding_floor=res["floor"]))  # fmt: skip
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu",
           "JAX_ENABLE_X64": "1"}
    res = run_python(WORKER.format(**{**cfg, "rounds": 0}, dtype="float64"), env=env, timeout=1200)
    raw["4-float64"] = res
    rows.append(row("4 simulated CPU devices: float64 max rel. difference vs 1 device", res["rel"], "",
                    reference=res["floor"], ratio=res["rel"], target="<= 1e-05",
                    rounding_floor=res["floor"]))  # fmt: skip
    return {
        "title": "Sharded batch sampling (jd.parallel.sharded_sample) on simulated CPU devices",
        "rows": rows,
        "config": {**cfg, "physical_cores": cores, "sampler": "ReverseSDE (Euler-Maruyama), exact score",
                   "dtype": "float32 (timing), float64 (the equality target)"},
        "raw": {str(k): v for k, v in raw.items()},
        "notes": [
            f"simulated devices share {cores} physical core(s): the speed-up is bounded by {cores}, "
            "and a single XLA CPU device already spreads large ops over the cores (intra-op threads)",
            "speed-up rows: reference = min(devices, cores), ratio = parallel efficiency",
            "float32 difference rows: reference = the one-device rounding floor (score summed in another "
            "order), ratio = difference / floor; float64 row: ratio = the difference itself",
        ],
    }
