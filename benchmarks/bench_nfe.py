"""Few-step sampling: endpoint error against the number of network evaluations (NFE).

`run(quick=True) -> dict`; `python -m benchmarks.bench_nfe [--full] [--out PATH]` writes JSON
(default `bench-out/nfe.json`); `python -m benchmarks.report_nfe` turns it into the docs'
table and figure. Float64 throughout.

Problems (the deterministic samplers map the same starting noise to endpoints; the figure is
the RMS over trajectories of the Euclidean distance to a reference endpoint):

* `ring2d` (the fixed problem): 8 isotropic Gaussians of std 0.3 on a circle of radius 4 in
  2-D, equal weights, exact score; VE process, noise levels `sigma~ = sigma/alpha` from 80 to
  0.002, then the denoiser step (one evaluation: NFE = sampler evaluations + 1). 4000
  trajectories from fixed noise (`80 z`, `z` drawn row by row as `jd.sample` draws its prior,
  key 0); reference: EDM Heun, 1000 steps on the Karras grid (rho = 7), from the same noise,
  checked against 2000 steps.
* `aniso64`: 6 Gaussians in 64-D with unequal weights and anisotropic full covariances
  (eigenvalues from 1e-3 to 1), exact score, under a VP process (same noise-level range);
  reference as above (1000 steps checked against 2000; 500 / 1000 in quick mode).
* `moons-net`: a small MLP score (EDM parametrisation) trained on two moons; reference: a
  500-step Heun solve of the same network.

Tuned rows: `jd.tune_grid` on other noise (key 1), evaluated on the fixed noise above.
Stochastic samplers: `AdaptiveSDE` against the fixed-grid reverse SDE, sliced W2 to
`ExactSampler` samples of the ring at `t_end`, with the NFE per sample.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import progress, row

NFES = (5, 6, 8, 10, 15, 20, 50)
SIG_MAX, SIG_MIN = 80.0, 0.002


def _steps_for(sampler, nfe):
    """The most steps whose evaluations plus the final denoiser step fit in `nfe`."""
    steps = 0
    while sampler.nfe(steps + 1) + 1 <= nfe:
        steps += 1
    return steps


def _ve():
    import jaxdiff as jd

    smin = 0.01
    return jd.VE(sigma_min=smin, sigma_max=float(np.sqrt(SIG_MAX**2 + smin**2)))  # sigma~(T) = 80


def _vp():
    import jaxdiff as jd

    B = float(np.log1p(SIG_MAX**2))  # sigma~(T)^2 = e^B - 1 = 80^2
    return jd.VP(beta_min=0.1, beta_max=2 * B - 0.1)


def _noise(process, n, d, key):
    """`sigma~(T) z` in x-coordinates, `z` drawn row by row."""
    import jaxdiff as jd

    z = jd.OU().prior_sample(jax.random.PRNGKey(key), (n, d), jnp.float64)
    return process.alpha(process.T) * SIG_MAX * z


def _t_end(process):
    return jnp.asarray(process.t_from_log_snr(-2 * np.log(SIG_MIN)), jnp.float64)


def _solve(score, process, x, sampler, grid, steps):
    import jaxdiff as jd

    if isinstance(grid, jd.AbstractGrid):
        kw = dict(grid=grid, steps=steps, t_end=_t_end(process))
    else:
        kw = dict(grid=grid)
    return jd.sample(
        jax.random.PRNGKey(0), score, process, x.shape, sampler=sampler, x_init=x, denoise=True, **kw
    )


def _rms(a, b):
    return float(jnp.sqrt(jnp.mean(jnp.sum((a - b) ** 2, axis=1))))


def _problems(quick, names):
    import jaxdiff as jd

    out = {}
    ang = jnp.arange(8) * (2 * jnp.pi / 8)
    ring = jd.GaussianMixture(4.0 * jnp.stack([jnp.cos(ang), jnp.sin(ang)], 1), 0.3)
    ve = _ve()
    if "ring2d" in names:
        out["ring2d"] = dict(
            process=ve,
            score=jd.ExactScore(ve, ring),
            x=_noise(ve, 4000, 2, 0),
            ref_steps=1000,
            event=(2,),
            law=ring,
        )
    if "aniso64" in names:
        out["aniso64"] = _aniso64(quick)
    if "moons-net" in names:
        net = _moons_network(ve, quick)
        out["moons-net"] = dict(
            process=ve,
            score=net,
            x=_noise(ve, 1000 if quick else 2000, 2, 0),
            ref_steps=500,
            event=(2,),
            law=None,
        )
    return out


def _aniso64(quick):
    import jaxdiff as jd

    d, K = 64, 6
    k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(64), 4)
    means = 2.0 * jax.random.normal(k1, (K, d), jnp.float64)
    q, _ = jnp.linalg.qr(jax.random.normal(k2, (K, d, d), jnp.float64))
    evals = 10.0 ** jax.random.uniform(k3, (K, d), jnp.float64, -3.0, 0.0)
    covs = jnp.einsum("kij,kj,klj->kil", q, evals, q)
    w = jax.nn.softmax(jax.random.normal(k4, (K,), jnp.float64))
    mix = jd.GaussianMixture(means, weights=w, covs=covs)
    vp = _vp()
    n64 = 500 if quick else 1000
    return dict(
        process=vp,
        score=jd.ExactScore(vp, mix),
        x=_noise(vp, n64, d, 0),
        ref_steps=500 if quick else 1000,
        event=(d,),
        law=mix,
    )


def _moons_network(process, quick):
    import optax

    import jaxdiff as jd
    from jaxdiff.data import two_moons
    from jaxdiff.nn import MLP

    data = two_moons(jax.random.PRNGKey(0), 4096).astype(jnp.float64)
    model = MLP(2, key=jax.random.PRNGKey(1), width=64, depth=2, dtype=jnp.float64)
    score = jd.NetworkScore(model, process, jd.EDMParam(sigma_data=0.5))
    loss = jd.DSMLoss(time_sampler=jd.LogNormalTime(), t_min=float(_t_end(process)))
    return jd.train(
        score,
        data,
        process,
        key=jax.random.PRNGKey(2),
        steps=1500 if quick else 4000,
        batch_size=256,
        loss=loss,
        optimizer=optax.adam(2e-3),
        progress=False,
    )


def _hand_samplers(quick, small):
    import jaxdiff as jd

    all_ = [
        ("DDIM", jd.DDIM()),
        ("EDMHeun", jd.EDMHeun()),
        ("DPMSolverPP(2M)", jd.DPMSolverPP(2)),
        ("DPMSolverPP(3M)", jd.DPMSolverPP(3)),
        ("UniPC(3,bh2)", jd.UniPC(3)),
        ("DEIS(3)", jd.DEIS(3)),
        ("IPNDM(4)", jd.IPNDM(4)),
        ("LMS(4)", jd.LMS(4)),
    ]
    if small:
        keep = {"DPMSolverPP(2M)", "UniPC(3,bh2)", "IPNDM(4)", "LMS(4)"}
        all_ = [s for s in all_ if s[0] in keep]
    elif quick:
        all_ = [s for s in all_ if s[0] not in ("DDIM", "DEIS(3)")]
    return all_


def _grids():
    import jaxdiff as jd

    return [("EDMGrid(7)", jd.EDMGrid(7.0)), ("LogSNRGrid", jd.LogSNRGrid())]


PROBLEMS = ("ring2d", "aniso64", "moons-net")


def run(quick: bool = True, problems: tuple[str, ...] = PROBLEMS, stochastic: bool = True) -> dict:
    import jaxdiff as jd

    jax.config.update("jax_enable_x64", True)
    t_start = time.perf_counter()
    problems = _problems(quick, problems)
    table, refs, rows, notes, tuned_info = [], {}, [], [], []
    for pname, P in progress(problems.items(), "problems"):
        score, process, x = P["score"], P["process"], P["x"]
        ref = _solve(score, process, x, jd.EDMHeun(), jd.EDMGrid(7.0), P["ref_steps"])
        ref2 = _solve(score, process, x, jd.EDMHeun(), jd.EDMGrid(7.0), 2 * P["ref_steps"])
        refs[pname] = {
            "ref_steps": P["ref_steps"],
            "ref_vs_double_rms": _rms(ref, ref2),
            "n": int(x.shape[0]),
        }
        small = quick and pname != "ring2d"
        nfes = (5, 10, 20) if small else NFES
        for sname, sampler in _hand_samplers(quick, small):
            for gname, grid in _grids():
                for nfe in nfes:
                    steps = _steps_for(sampler, nfe)
                    if steps < 1:
                        continue
                    err = _rms(_solve(score, process, x, sampler, grid, steps), ref)
                    table.append(
                        dict(
                            problem=pname,
                            sampler=sname,
                            grid=gname,
                            nfe=sampler.nfe(steps) + 1,
                            nfe_budget=nfe,
                            steps=steps,
                            error=err,
                        )
                    )
        # tuned grids, trained on noise of key 1 (not the evaluation noise)
        tune_nfes = ((5, 10) if quick else (5, 6, 8, 10, 15, 20)) if pname == "ring2d" else (10,)
        tune_samplers = [("IPNDM(4)", jd.IPNDM(4))] + ([] if quick else [("UniPC(3,bh2)", jd.UniPC(3))])
        for sname, sampler in tune_samplers:
            for nfe in tune_nfes:
                steps = _steps_for(sampler, nfe)
                t0 = time.perf_counter()
                tuned, log = jd.tune_grid(
                    score,
                    process,
                    sampler,
                    steps=steps,
                    key=jax.random.PRNGKey(1),
                    t_end=_t_end(process),
                    event_shape=P["event"],
                    n_train=512 if P["event"][0] < 64 else 256,
                )
                jax.block_until_ready(tuned.ts)
                secs = time.perf_counter() - t0
                err = _rms(_solve(score, process, x, sampler, tuned.ts, None), ref)
                table.append(
                    dict(
                        problem=pname,
                        sampler=sname,
                        grid="tuned",
                        nfe=sampler.nfe(steps) + 1,
                        nfe_budget=nfe,
                        steps=steps,
                        error=err,
                        tune_s=secs,
                        tune_heldout_rms=float(log.heldout_rms),
                        tune_heldout_rms_init=float(log.heldout_rms_init),
                        ts=[float(t) for t in tuned.ts],
                    )
                )
                tuned_info.append(dict(problem=pname, sampler=sname, nfe=nfe, tune_s=secs))
    rows += _target_rows(table, tuned_info)
    stoch = _stochastic(problems["ring2d"], quick) if stochastic and "ring2d" in problems else None
    notes.append(
        "error: RMS over trajectories of the endpoint distance to the reference (same noise); "
        "NFE counts the final denoiser step"
    )
    return {
        "title": "Few-step sampling: endpoint error against NFE",
        "rows": rows,
        "notes": notes,
        "table": table,
        "references": refs,
        "stochastic": stoch,
        "wall_s_total": time.perf_counter() - t_start,
    }


def _lookup(table, problem, sampler, grid, nfe):
    for r in table:
        if (r["problem"], r["sampler"], r["grid"], r["nfe_budget"]) == (problem, sampler, grid, nfe):
            return r["error"]
    return None


def _target_rows(table, tuned_info):
    rows = []
    for nfe, want in ((10, 0.16), (20, 0.044)):
        e = _lookup(table, "ring2d", "LMS(4)", "EDMGrid(7)", nfe)
        if e is not None:
            rows.append(
                row(
                    f"ring2d LMS(4) EDMGrid(7) NFE {nfe} / published {want}",
                    e,
                    "RMS",
                    reference=want,
                    ratio=e / want,
                    target="<= 1.05",
                    lower=">= 0.95",
                )
            )
    hand = [r for r in table if r["problem"] == "ring2d" and r["grid"] != "tuned"]
    for nfe, want in ((10, 0.12), (20, 0.03)):
        cands = [r for r in hand if r["nfe_budget"] == nfe]
        if cands:
            best = min(cands, key=lambda r: r["error"])
            rows.append(
                row(
                    f"ring2d best hand-designed NFE {nfe} ({best['sampler']}, {best['grid']})",
                    best["error"],
                    "RMS",
                    ratio=best["error"],
                    target=f"<= {want}",
                )
            )
    for nfe, want in ((10, 0.05), (5, 0.5)):
        e = _lookup(table, "ring2d", "IPNDM(4)", "tuned", nfe)
        if e is not None:
            rows.append(row(f"ring2d IPNDM(4) tuned NFE {nfe}", e, "RMS", ratio=e, target=f"<= {want}"))
    for p in ("aniso64", "moons-net"):
        e, e0 = _lookup(table, p, "IPNDM(4)", "tuned", 10), _lookup(table, p, "IPNDM(4)", "EDMGrid(7)", 10)
        if e is not None and e0 is not None:
            rows.append(
                row(
                    f"{p} IPNDM(4) NFE 10: EDMGrid(7) / tuned",
                    e0 / e,
                    "x",
                    reference=e0,
                    ratio=e0 / e,
                    target=">= 2",
                    tuned=e,
                )
            )
    for t in tuned_info:
        if t["problem"] == "ring2d" and t["nfe"] == 10:
            rows.append(
                row(
                    f"tune_grid {t['sampler']} NFE 10 (ring2d) wall time",
                    t["tune_s"],
                    "s",
                    ratio=t["tune_s"],
                    target="<= 120",
                )
            )
    return rows


def _stochastic(P, quick):
    """Adaptive SDE vs fixed-grid reverse SDE: sliced W2 to exact samples, NFE per sample."""
    import jaxdiff as jd
    from jaxdiff.metrics import sliced_wasserstein

    process, law, score = P["process"], P["law"], P["score"]
    n = 2000 if quick else 4000
    t_end = _t_end(process)
    key = jax.random.PRNGKey(3)
    exact = jd.sample(key, None, process, (n, 2), sampler=jd.ExactSampler(law), steps=1, t_end=t_end)
    exact2 = jd.sample(
        jax.random.PRNGKey(4), None, process, (n, 2), sampler=jd.ExactSampler(law), steps=1, t_end=t_end
    )
    pk = jax.random.PRNGKey(9)
    sw = lambda a: float(sliced_wasserstein(a, exact, key=pk, n_projections=256))  # noqa: E731
    out = {"n": n, "floor_sw2": sw(exact2), "fixed": [], "adaptive": []}
    for steps in (20, 50, 100, 200) if quick else (20, 50, 100, 200, 500):
        x = jd.sample(
            jax.random.PRNGKey(5),
            score,
            process,
            (n, 2),
            sampler=jd.ReverseSDE(),
            grid=jd.EDMGrid(7.0),
            steps=steps,
            t_end=t_end,
        )
        out["fixed"].append({"nfe": steps, "sw2": sw(x)})
    for tol in (0.1, 0.05, 0.02) if quick else (0.2, 0.1, 0.05, 0.02, 0.01, 0.005):
        smp = jd.AdaptiveSDE(rtol=tol, atol=tol)
        x, nfe = smp.sample_with_nfe(jax.random.PRNGKey(5), score, process, (n, 2), t_end=t_end)
        out["adaptive"].append(
            {
                "rtol": tol,
                "atol": tol,
                "nfe_mean": float(jnp.mean(nfe)),
                "nfe_max": int(jnp.max(nfe)),
                "sw2": sw(x),
            }
        )
    return out


def main(argv=None):
    import argparse
    import json
    import os

    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--full", action="store_true", help="every sampler, NFE and tuned grid (default: quick)")
    ap.add_argument("--out", default=os.path.join("bench-out", "nfe.json"))
    ap.add_argument("--problems", default=",".join(PROBLEMS), help=f"comma-separated subset of {PROBLEMS}")
    ap.add_argument("--no-stochastic", action="store_true", help="skip the adaptive-SDE comparison")
    args = ap.parse_args(argv)
    names = tuple(p.strip() for p in args.problems.split(",") if p.strip())
    bad = [p for p in names if p not in PROBLEMS]
    if bad:
        ap.error(f"--problems: unknown {bad[0]!r} (have {', '.join(PROBLEMS)})")
    res = run(quick=not args.full, problems=names, stochastic=not args.no_stochastic)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    for r in res["rows"]:
        met = "met" if r["ok"] else "NOT met"
        print(f"{r['case']}: {r['value']:.4g} {r['unit']} (target {r['target']}: {met})")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
