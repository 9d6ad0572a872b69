"""Sampling benchmark: accuracy against the exact sampler at fixed NFE, wall time, and the
cost of the fixed-grid reverse SDE against a hand-written `lax.scan` loop.

`run(quick=True) -> dict`; `python -m benchmarks.bench_sampling [--full] [--out PATH]` writes
JSON (default `bench-out/sampling.json`). CPU figures are from one run on one machine: read
ratios, not absolute times. Float32 (JAX's default), as a user would run it.

Accuracy: sliced W2 (`jaxdiff.metrics.sliced_wasserstein`, 256 projections) between `n`
samples of each sampler (exact score, VP process, `t_end = 1e-3`) and `n` samples of
`ExactSampler`; `floor_sw2` is the mean (`floor_sw2_sd` the spread) of the same statistic
between independent `ExactSampler` runs (5 pairs). All samplers of one table share the key,
hence their prior draws, so their errors are correlated; a ratio `sw2_over_floor` within
about one floor standard deviation of 1 is indistinguishable from exact sampling.
"""

from __future__ import annotations

import platform

import diffrax
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
from tqdm import tqdm

import jaxdiff as jd
from jaxdiff.metrics import sliced_wasserstein

NFES = (10, 20, 50, 100)


def _laws():
    ang = jnp.arange(8) * (2 * jnp.pi / 8)
    ring = jd.GaussianMixture(2.0 * jnp.stack([jnp.cos(ang), jnp.sin(ang)], axis=1), 0.2)
    means8 = 2.0 * jax.random.normal(jax.random.PRNGKey(8), (8, 8))
    mix8 = jd.GaussianMixture(means8, 0.3)
    return {"ring2d_8comp": ring, "mix8d_8comp": mix8}


def _samplers():
    """(name, sampler, grid): each sampler on the grid it is designed for."""
    return [
        ("ReverseSDE(EM)", jd.ReverseSDE(), jd.UniformGrid()),
        ("ReverseSDE(diffrax.ShARK)", jd.DiffraxReverseSDE(diffrax.ShARK()), jd.UniformGrid()),
        ("PredictorCorrector", jd.PredictorCorrector(), jd.UniformGrid()),
        ("DDPM", jd.DDPM(), jd.UniformGrid()),
        ("DDIM(eta=0)", jd.DDIM(), jd.LogSNRGrid()),
        ("ProbabilityFlow(Euler)", jd.ProbabilityFlow(diffrax.Euler()), jd.EDMGrid()),
        ("ProbabilityFlow(Heun)", jd.ProbabilityFlow(diffrax.Heun()), jd.EDMGrid()),
        ("ProbabilityFlow(Tsit5)", jd.ProbabilityFlow(diffrax.Tsit5()), jd.EDMGrid()),
        ("EDMHeun", jd.EDMHeun(), jd.EDMGrid()),
        ("EDMHeun(churn=10)", jd.EDMHeun(churn=10.0), jd.EDMGrid()),
        ("DPMSolverPP(2M)", jd.DPMSolverPP(order=2), jd.LogSNRGrid()),
    ]


def _steps_for(sampler, nfe):
    """The largest step count whose NFE fits the budget (at least one step)."""
    steps = 1
    while sampler.nfe(steps + 1) is not None and sampler.nfe(steps + 1) <= nfe:
        steps += 1
    return steps


def _times(fns: dict, rounds: int) -> tuple[dict, dict]:
    """Best wall and process CPU time of each function, interleaved (`benchmarks.measure`)."""
    from benchmarks import measure

    m = measure(fns, rounds=rounds, min_round_s=0.0)
    return {k: v["wall_s"] for k, v in m.items()}, {k: v["cpu_s"] for k, v in m.items()}


def accuracy(n: int, reps: int, nfes=NFES) -> dict:
    process = jd.VP()
    t_end = jnp.asarray(1e-3)
    proj_key = jax.random.PRNGKey(123)
    out = {}
    jobs = [(ln, law, s) for ln, law in _laws().items() for s in _samplers()]
    bar = tqdm(total=len(jobs) * len(nfes), desc="sampling accuracy", leave=False)
    for lname, law in _laws().items():
        d = law.dim
        exact = jd.ExactSampler(law)

        def exact_run(seed):
            key = jax.random.PRNGKey(seed)
            return jd.sample(key, None, process, (n, d), sampler=exact, steps=10, t_end=t_end)

        ref = exact_run(1)
        # the noise floor: the same statistic between independent exact runs, 5 pairs
        floors = [float(sliced_wasserstein(exact_run(10 + 2 * j), exact_run(11 + 2 * j), key=proj_key))
                  for j in range(5)]  # fmt: skip
        floor = float(np.mean(floors))
        score = jd.ExactScore(process, law)
        rows = []
        for name, sampler, grid in _samplers():
            for nfe in nfes:
                steps = _steps_for(sampler, nfe)

                def call(sampler=sampler, grid=grid, steps=steps):
                    return jd.sample(jax.random.PRNGKey(0), score, process, (n, d), sampler=sampler,
                                     steps=steps, t_end=t_end, grid=grid)  # fmt: skip

                wall = _times({"call": call}, reps)[0]["call"]
                x = call()
                sw = float(sliced_wasserstein(x, ref, key=proj_key))
                rows.append(dict(sampler=name, grid=type(grid).__name__, nfe_budget=nfe, steps=steps,
                                 nfe=sampler.nfe(steps), sw2=sw, sw2_over_floor=sw / floor,
                                 wall_s=wall))  # fmt: skip
                bar.update()
        out[lname] = dict(dim=d, n=n, process="VP()", t_end=1e-3, floor_sw2=floor,
                          floor_sw2_sd=float(np.std(floors, ddof=1)), results=rows)  # fmt: skip
    bar.close()
    return out


def sde_speed(n: int, steps: int, reps: int) -> dict:
    """Fixed-grid reverse SDE (Euler–Maruyama) through `jd.sample` against hand-written loops."""
    law = _laws()["ring2d_8comp"]
    process = jd.VP()
    score = jd.ExactScore(process, law)
    t_end = jnp.asarray(1e-3)
    ts = jd.UniformGrid()(process, steps, t_end)
    key = jax.random.PRNGKey(0)
    x0 = process.prior_sample(key, (n, 2))
    bscore = jax.vmap(score, in_axes=(None, 0))

    def em_update(t, s, x, z):
        h = t - s
        return x + h * (-process.f(t) * x + process.g2(t) * score(t, x)) + jnp.sqrt(process.g2(t) * h) * z

    @jax.jit
    def hand_rows(key, x):  # the same noise semantics as jd.sample: fold_in(fold_in(key, i), k)
        keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n))

        def one(k_i, x):
            def body(x, inp):
                t, s, k = inp
                return em_update(t, s, x, jax.random.normal(jax.random.fold_in(k_i, k), x.shape)), None

            return jax.lax.scan(body, x, (ts[:-1], ts[1:], jnp.arange(steps)))[0]

        return jax.vmap(one)(keys, x)

    @jax.jit
    def hand_bulk(key, x):
        # The simplest loop: one normal draw for the whole batch per step. (With JAX's default
        # partitionable threefry its rows do not change with the batch size either, but they are
        # not derived from fold_in(key, i).)
        def body(x, inp):
            t, s, k = inp
            h = t - s
            z = jax.random.normal(jax.random.fold_in(key, k), x.shape)
            drift = -process.f(t) * x + process.g2(t) * bscore(t, x)
            return x + h * drift + jnp.sqrt(process.g2(t) * h) * z, None

        return jax.lax.scan(body, x, (ts[:-1], ts[1:], jnp.arange(steps)))[0]

    @jax.jit
    def diffrax_vbt(key, x):  # Diffrax's default Brownian path, in reverse time tau = T - t
        T = ts[0]

        def one(k_i, x):
            drift = diffrax.ODETerm(
                lambda tau, y, a: -process.f(T - tau) * y + process.g2(T - tau) * score(T - tau, y)
            )
            bm = diffrax.VirtualBrownianTree(
                0.0, T - ts[-1], tol=1e-3 * (T - ts[-1]) / steps, shape=(2,), key=k_i
            )
            diff = diffrax.ControlTerm(
                lambda tau, y, a: lx.DiagonalLinearOperator(jnp.sqrt(process.g2(T - tau)) * jnp.ones_like(y)),
                bm,
            )
            taus = T - ts
            terms = diffrax.MultiTerm(drift, diff)
            sol = diffrax.diffeqsolve(terms, diffrax.Euler(), taus[0], taus[-1], None, x,
                                      stepsize_controller=diffrax.StepTo(taus), max_steps=steps)  # fmt: skip
            return sol.ys[0]

        return jax.vmap(one)(jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n)), x)

    def ours():
        return jd.sample(
            key, score, process, (n, 2), sampler=jd.ReverseSDE(), steps=steps, t_end=t_end, x_init=x0
        )

    def ours_diffrax_grid():
        sampler = jd.DiffraxReverseSDE(diffrax.Euler())
        return jd.sample(key, score, process, (n, 2), sampler=sampler, steps=steps, t_end=t_end, x_init=x0)

    fns = {
        "jd.sample(ReverseSDE())": ours,
        "hand_scan_per_sample_noise": lambda: hand_rows(key, x0),
        "hand_scan_batch_noise": lambda: hand_bulk(key, x0),
        "jd.sample(ReverseSDE(diffrax.Euler())) [GridBrownianPath]": ours_diffrax_grid,
    }
    times, cpu = _times(fns, reps)
    times["diffrax_euler_virtual_brownian_tree"] = _times({"vbt": lambda: diffrax_vbt(key, x0)}, 2)[0]["vbt"]
    ours_key = "jd.sample(ReverseSDE())"

    def ratios(t, base):
        return {k: v / t[base] for k, v in t.items()}

    return dict(
        n=n, steps=steps, nfe=steps, dim=2, dtype=str(x0.dtype), rounds=reps, wall_s=times, cpu_s=cpu,
        ratio_to_hand_scan_per_sample_noise=ratios(times, "hand_scan_per_sample_noise"),
        ratio_to_hand_scan_batch_noise=ratios(times, "hand_scan_batch_noise"),
        cpu_ratio_to_hand_scan_per_sample_noise=ratios(cpu, "hand_scan_per_sample_noise"),
        cpu_ratio_to_hand_scan_batch_noise=ratios(cpu, "hand_scan_batch_noise"),
        headline=dict(wall_vs_same_noise_loop=times[ours_key] / times["hand_scan_per_sample_noise"],
                      cpu_vs_same_noise_loop=cpu[ours_key] / cpu["hand_scan_per_sample_noise"],
                      wall_vs_batch_noise_loop=times[ours_key] / times["hand_scan_batch_noise"],
                      cpu_vs_batch_noise_loop=cpu[ours_key] / cpu["hand_scan_batch_noise"]),
    )  # fmt: skip


def pf_speed(n: int, steps: int, reps: int) -> dict:
    """Fixed-grid probability flow (Euler, Heun) through `jd.sample` against hand-written scans."""
    law = _laws()["ring2d_8comp"]
    process = jd.VP()
    score = jd.ExactScore(process, law).without_time_checks()
    ts = jd.EDMGrid()(process, steps, jnp.asarray(1e-3))
    key = jax.random.PRNGKey(0)
    x0 = process.prior_sample(key, (n, 2))
    bscore = jax.vmap(score, in_axes=(None, 0))
    v = lambda t, x: process.f(t) * x - 0.5 * process.g2(t) * bscore(t, x)

    @jax.jit
    def hand_euler(x):
        def body(x, inp):
            t, s = inp
            return x + (s - t) * v(t, x), None

        return jax.lax.scan(body, x, (ts[:-1], ts[1:]))[0]

    @jax.jit
    def hand_heun(x):
        def body(x, inp):
            t, s = inp
            h = s - t
            k1 = v(t, x)
            k2 = v(s, x + h * k1)
            return x + 0.5 * h * (k1 + k2), None

        return jax.lax.scan(body, x, (ts[:-1], ts[1:]))[0]

    def ours(solver):
        return lambda: jd.sample(key, score, process, (n, 2), sampler=jd.ProbabilityFlow(solver), grid=ts,
                                 x_init=x0)  # fmt: skip

    fns = {
        "jd.sample(ProbabilityFlow(Euler()))": ours(diffrax.Euler()),
        "hand_scan_euler": lambda: hand_euler(x0),
        "jd.sample(ProbabilityFlow(Heun()))": ours(diffrax.Heun()),
        "hand_scan_heun": lambda: hand_heun(x0),
    }
    times, cpu = _times(fns, reps)
    ours_of = lambda name: f"jd.sample(ProbabilityFlow({name}()))"
    hand_of = lambda name: f"hand_scan_{name.lower()}"
    solvers = ("Euler", "Heun")
    err = {name: float(jnp.max(jnp.abs(fns[ours_of(name)]() - fns[hand_of(name)]()))) for name in solvers}
    return dict(
        n=n, steps=steps, dim=2, grid="EDMGrid", dtype=str(x0.dtype), rounds=reps, wall_s=times, cpu_s=cpu,
        max_abs_difference_to_hand_scan=err,
        headline={
            name: dict(wall=times[ours_of(name)] / times[hand_of(name)],
                       cpu=cpu[ours_of(name)] / cpu[hand_of(name)])
            for name in solvers
        },
    )  # fmt: skip


def run(quick: bool = True) -> dict:
    """All figures as a dict; `quick` keeps it to about a minute or two on a laptop CPU."""
    n = 2000 if quick else 10000
    reps = 3 if quick else 5
    result = dict(
        benchmark="sampling",
        quick=quick,
        device=str(jax.devices()[0]),
        platform=platform.platform(),
        jax_version=jax.__version__,
        sde_speed=sde_speed(n=4096 if quick else 16384, steps=100, reps=15 if quick else 30),
        pf_speed=pf_speed(n=4096 if quick else 16384, steps=50, reps=15 if quick else 30),
        accuracy=accuracy(n=n, reps=reps),
    )
    result["rows"] = _rows(result)
    result["title"] = "Sampling: fixed-grid loops vs hand-written scans; accuracy vs the exact sampler"
    result["notes"] = [
        "speed rows: figure = jd.sample wall time (ms), reference = the hand-written lax.scan of the "
        "same steps and noise (ms), ratio = figure / reference (target <= 1.1); cpu_ratio in the JSON",
        "accuracy rows: sliced W2 to ExactSampler samples at 50 NFE, reference = the two-sample floor "
        "(independent exact runs); ratio = sw2 / floor, about 1 is exact sampling",
    ]
    return result


def _rows(res: dict) -> list[dict]:
    from benchmarks import row

    out = []
    sde = res["sde_speed"]
    base = "hand_scan_per_sample_noise"
    for name in ("jd.sample(ReverseSDE())", "jd.sample(ReverseSDE(diffrax.Euler())) [GridBrownianPath]",
                 "diffrax_euler_virtual_brownian_tree"):
        ratio = sde["wall_s"][name] / sde["wall_s"][base]
        case = f"reverse SDE, {sde['steps']} steps, n={sde['n']}: {name}"
        out.append(row(case, sde["wall_s"][name] * 1e3, "ms",
                       reference=sde["wall_s"][base] * 1e3, ratio=ratio,
                       target="<= 1.1" if name == "jd.sample(ReverseSDE())" else None,
                       cpu_ratio=sde["cpu_s"].get(name, float("nan")) / sde["cpu_s"][base]))
    pf = res["pf_speed"]
    for solver in ("Euler", "Heun"):
        ours, hand = f"jd.sample(ProbabilityFlow({solver}()))", f"hand_scan_{solver.lower()}"
        case = f"probability flow, {pf['steps']} steps, n={pf['n']}: {ours}"
        out.append(row(case, pf["wall_s"][ours] * 1e3, "ms",
                       reference=pf["wall_s"][hand] * 1e3, ratio=pf["wall_s"][ours] / pf["wall_s"][hand],
                       target="<= 1.1", cpu_ratio=pf["cpu_s"][ours] / pf["cpu_s"][hand],
                       max_abs_difference=pf["max_abs_difference_to_hand_scan"][solver]))
    for law, acc in res["accuracy"].items():
        for r in acc["results"]:
            if r["nfe_budget"] == 50:
                case = f"accuracy {law}, NFE 50: {r['sampler']} on {r['grid']}"
                out.append(row(case, r["sw2"], "sliced W2",
                               reference=acc["floor_sw2"], ratio=r["sw2_over_floor"]))
    return out  # fmt: skip


def main(argv=None) -> dict:
    from benchmarks import standalone

    return standalone(run, "sampling", __doc__, argv)

if __name__ == "__main__":
    main()
