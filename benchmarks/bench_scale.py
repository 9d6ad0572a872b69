"""Sharded batch sampling over a device mesh: scaling and equality with one device.

Each device count `k` runs in a fresh subprocess (the count is fixed when JAX starts). On
a CPU the `k` devices are simulated (`XLA_FLAGS=--xla_force_host_platform_device_count=k`)
and share the machine's physical cores, so the speed-up is bounded by the core count, not
by `k`; the JSON records both. In the same subprocess and the same run, interleaved:

- `sharded`: `jd.parallel.sharded_sample` with the batch split over the `k` devices;
- `one device`: the plain `jd.sample` call (one device), the reference.

Speed-up = one-device time / sharded time; efficiency = speed-up / min(k, physical cores).
The sharded result must equal the one-device result to 1e-5 relative (same key). Reverse
sampling with an exact empirical score amplifies float32 rounding near `t_end` (the score
is `O(1/sigma^2)`), so each long run is also compared with its rounding floor: the same
one-device run with the score summed in another order (chunked instead of dense). The
1e-5 target is checked on a 12-step run, where that floor is far below it.
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
    pts = jax.random.normal(jax.random.PRNGKey(0), (n, d), jnp.float32)
    score = jd.ExactScore(process, jd.PointCloud(pts))
    key = jax.random.PRNGKey(1)
    mesh = par.device_mesh()
    sharded = lambda: par.sharded_sample(key, score, process, (batch, d), mesh=mesh, steps=steps)
    plain = lambda: jd.sample(key, score, process, (batch, d), steps=steps)
    t = measure(dict(sharded=sharded, plain=plain), rounds={rounds}, min_round_s=0.0)
    rel = lambda a, b: float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)))
                             / np.max(np.abs(np.asarray(b, np.float64))))
    # the float32 rounding floor of this run: the same one-device sampling with the score's
    # sums in another order (chunked instead of dense), which is just as correct
    chunked = jd.ExactScore(process, jd.PointCloud(pts, chunk_size=n // 4))
    floor = rel(jd.sample(key, chunked, process, (batch, d), steps=steps), plain())
    # and a short run (the tests' length), where that floor is far below 1e-5
    short = rel(par.gather(par.sharded_sample(key, score, process, (batch, d), mesh=mesh, steps=12)),
                jd.sample(key, score, process, (batch, d), steps=12))
    print(json.dumps(dict(devices=len(jax.devices()), sharded=t["sharded"], plain=t["plain"],
                          rel=rel(par.gather(sharded()), plain()), floor=floor, rel_short=short)))
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
        env = {"XLA_FLAGS": f"--xla_force_host_platform_device_count={k}", "JAX_PLATFORMS": "cpu"}
        res = run_python(WORKER.format(**cfg), env=env, timeout=1200)
        raw[k] = res
        speedup = res["plain"]["wall_s"] / res["sharded"]["wall_s"]
        eff = speedup / min(k, cores)
        rows.append(row(f"{k} simulated CPU devices: speed-up vs 1 device", speedup, "x",
                        reference=float(min(k, cores)), ratio=eff, sharded_s=res["sharded"]["wall_s"],
                        one_device_s=res["plain"]["wall_s"], devices=res["devices"]))  # fmt: skip
        rows.append(row(f"{k} simulated CPU devices: max rel. difference vs 1 device, 12 steps",
                        res["rel_short"], "", ratio=res["rel_short"], target="<= 1e-05"))  # fmt: skip
        rows.append(row(f"{k} simulated CPU devices: max rel. difference vs 1 device, {cfg['steps']} steps",
                        res["rel"], "", reference=res["floor"], ratio=res["rel"] / max(res["floor"], 1e-30),
                        rounding_floor=res["floor"]))  # fmt: skip
    return {
        "title": "Sharded batch sampling (jd.parallel.sharded_sample) on simulated CPU devices",
        "rows": rows,
        "config": {**cfg, "physical_cores": cores, "sampler": "ReverseSDE (Euler-Maruyama), exact score",
                   "dtype": "float32"},
        "raw": {str(k): v for k, v in raw.items()},
        "notes": [
            f"simulated devices share {cores} physical core(s): the speed-up is bounded by {cores}, "
            "and a single XLA CPU device already spreads large ops over the cores (intra-op threads)",
            "speed-up rows: reference = min(devices, cores), ratio = parallel efficiency",
            "long-run difference rows: reference = one-device float32 rounding floor, "
            "ratio = difference / floor",
        ],
    }
