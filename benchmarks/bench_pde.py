"""Fokker–Planck engine: throughput (grid cells x steps per second) and accuracy at fixed work.

Throughput: `jd.pde.solve_fokker_planck` with the default `IMEX` solver (Strang splitting,
exact DCT diffusion, van Leer fluxes, CFL-controlled steps) on a 1-D grid of 4096 cells
and a 2-D grid of 256 x 256, forward (OU) and reverse (score-driven, exact mixture score).
The reference, measured in the same run, interleaved, is the same number of `IMEX` steps
of the same size in a bare jitted `lax.fori_loop` (no Diffrax loop, no step control, no
saving): `ratio = reference time / solve time` is the share of the time spent on the
numerics rather than on the machinery around it.

Accuracy: the forward OU solution from a two-component Gaussian mixture against the exact
noised density (L1), for each scheme and grid size, with the work (cells x steps) it
took. The steps follow the CFL condition, so work grows like n^2 in 1-D; "at fixed work"
compares the schemes on the same grid (the same steps), and the refinement table gives
the observed order.

`python benchmarks/bench_pde.py [--full] [--out bench-out/pde.json]`
"""

from __future__ import annotations

import os
import platform
import sys

import jax
import jax.numpy as jnp
import numpy as np

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import machine, measure, progress, row  # noqa: E402


def _setup():
    import jaxdiff as jd

    law = jd.GaussianMixture(jnp.array([[-1.5], [1.0]]), jnp.array([0.3, 0.5]), jnp.array([0.4, 0.6]))
    law2 = jd.GaussianMixture(
        jnp.array([[-1.2, 0.4], [1.0, -0.6], [0.2, 1.5]]),
        jnp.array([0.35, 0.5, 0.3]),
        jnp.array([0.3, 0.4, 0.3]),
    )
    return jd, law, law2


def throughput(case: str, grid, process, p0, t0, t1, score, dynamics, rounds: int) -> dict:
    """Cells x steps per second of one solve, and of the same steps in a bare loop."""
    from jaxdiff import pde
    from jaxdiff.pde.solve import IMEX, FokkerPlanckTerm

    def solve():
        return pde.solve_fokker_planck(
            process, grid, p0, t0=t0, t1=t1, score=score, dynamics=dynamics, return_stats=True
        )

    _, stats = solve()
    steps = int(stats["steps"])
    span = abs(float(t1) - float(t0))
    ds = span / steps
    term = FokkerPlanckTerm(grid, process, dynamics, score, pde.VanLeer(), jnp.asarray(t0, p0.dtype))
    solver = IMEX(operator=term)

    @jax.jit
    def bare(p):
        def body(i, carry):
            y, st = carry
            s = i * ds
            y, _, _, st, _ = solver.step(term, s, s + ds, y, None, st, False)
            return y, st

        y0 = (p, jnp.zeros((), p.dtype))  # the solver's state is (density, advective rate)
        return jax.lax.fori_loop(0, steps, body, (y0, jnp.zeros((), p.dtype)))[0][0]

    times = measure({"solve": lambda: solve()[0], "bare": lambda: bare(p0)}, rounds=rounds)
    cs = grid.n_cells * steps
    solve_rate = cs / times["solve"]["wall_s"]
    bare_rate = cs / times["bare"]["wall_s"]
    return dict(
        case=case,
        cells=grid.n_cells,
        steps=steps,
        wall_s=times["solve"]["wall_s"],
        cpu_s=times["solve"]["cpu_s"],
        cell_steps_per_s=solve_rate,
        bare_loop_cell_steps_per_s=bare_rate,
        ratio=solve_rate / bare_rate,
        max_cfl=float(stats["max_cfl"]),
    )


def accuracy(jobs) -> list[dict]:
    """L1 error of the forward OU solution from a mixture at t = 0.5, for each
    `(scheme name, (solver, limiter), n)` job."""
    jd, law, _ = _setup()
    from jaxdiff import pde

    ou = jd.OU()
    t1 = jnp.array(0.5)
    out = []
    for name, (solver, limiter), n in progress(jobs, "pde accuracy"):
        g = pde.Grid(-6.0, 6.0, n)
        p0 = g.density(law.log_prob)
        p, stats = pde.solve_fokker_planck(
            ou, g, p0, t0=0.0, t1=t1, solver=solver, limiter=limiter, return_stats=True
        )
        exact = g.density(law.noised(ou, t1).log_prob)
        steps = int(stats["steps"])
        out.append(
            dict(
                scheme=name,
                n=n,
                steps=steps,
                work_cell_steps=n * steps,
                l1=float(pde.l1_distance(g, p, exact)),
                mass_error=abs(float(g.integrate(p) - g.integrate(p0))),
                min_value=float(jnp.min(p)),
            )
        )
    return out


def plot(acc: list[dict], path: str) -> None:
    """L1 error against work (cells x steps), one marker per scheme."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name in dict.fromkeys(r["scheme"] for r in acc):
        pts = sorted((r["work_cell_steps"], r["l1"]) for r in acc if r["scheme"] == name)
        ax.loglog(*zip(*pts), "o-", label=name)
    ax.set_xlabel("work: grid cells x time steps")
    ax.set_ylabel("L1 error vs exact density")
    ax.set_title("1-D forward OU from a Gaussian mixture, t = 0.5")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(quick: bool = True) -> dict:
    """All figures as a dict (about a minute with `quick` on a laptop CPU)."""
    jax.config.update("jax_enable_x64", True)
    jd, law, law2 = _setup()
    from jaxdiff import pde

    ou = jd.OU()
    rounds = 2 if quick else 5
    g1 = pde.Grid(-6.0, 6.0, 4096)
    g2 = pde.Grid([-6.0, -6.0], [6.0, 6.0], (256, 256))
    score1, score2 = jd.ExactScore(ou, law), jd.ExactScore(ou, law2)
    # Short intervals in quick mode: the rate per step is what is measured.
    fwd_t1 = 0.05 if quick else 0.2
    tp = [
        throughput("1-D 4096 cells, forward OU", g1, ou, g1.density(law.log_prob), 0.0, fwd_t1, None,
                   pde.Forward(), rounds),
        throughput("1-D 4096 cells, reverse SDE (exact score)", g1, ou, g1.density(ou.prior_log_prob), 1.0,
                   1.0 - fwd_t1, score1, pde.Reverse(), rounds),
        throughput("2-D 256x256, forward OU", g2, ou, g2.density(law2.log_prob), 0.0, 2 * fwd_t1, None,
                   pde.Forward(), rounds),
        throughput("2-D 256x256, reverse SDE (exact score)", g2, ou, g2.density(ou.prior_log_prob), 1.0,
                   1.0 - 2 * fwd_t1, score2, pde.Reverse(), rounds),
    ]  # fmt: skip
    schemes = {
        "van Leer + exact diffusion (default)": (pde.IMEX(), pde.VanLeer()),
        "MC + exact diffusion": (pde.IMEX(), pde.MonotonizedCentral()),
        "minmod + exact diffusion": (pde.IMEX(), pde.Minmod()),
        "upwind + exact diffusion": (pde.IMEX(), pde.Upwind()),
        "van Leer + implicit Euler (Lineax)": (pde.IMEX(diffusion=pde.Implicit()), pde.VanLeer()),
    }
    n_fixed = 256
    ns = (64, 128, 256, 512) if quick else (64, 128, 256, 512, 1024, 2048)
    first = next(iter(schemes))
    jobs = [(first, schemes[first], n) for n in ns]
    others = ns if not quick else (n_fixed,)
    jobs += [(name, s, n) for name, s in schemes.items() if name != first for n in others]
    acc = accuracy(jobs)
    default = [r for r in acc if r["scheme"].endswith("(default)")]
    orders = [float(np.log2(a["l1"] / b["l1"])) for a, b in zip(default[:-1], default[1:])]

    rows = [
        row(t["case"], t["cell_steps_per_s"], "cell-steps/s", reference=t["bare_loop_cell_steps_per_s"],
            ratio=t["ratio"], target=">= 0.7", steps=t["steps"], cells=t["cells"])
        for t in tp
    ]  # fmt: skip
    ref = next(r for r in acc if r["n"] == n_fixed and r["scheme"].startswith("upwind"))
    for r in acc:
        if r["n"] == n_fixed:
            rows.append(
                row(f"L1 error, 1-D n={n_fixed}: {r['scheme']}", r["l1"], "L1", reference=ref["l1"],
                    ratio=r["l1"] / ref["l1"], target=None, work_cell_steps=r["work_cell_steps"])
            )  # fmt: skip
    return dict(
        title="Fokker-Planck engine (jaxdiff.pde)",
        benchmark="pde",
        quick=quick,
        machine=machine(),
        platform=platform.platform(),
        rows=rows,
        throughput=tp,
        accuracy=acc,
        observed_order_default=orders,
        notes=[
            "throughput ratio = bare fori_loop of the same IMEX steps / full solve (Diffrax loop, "
            "CFL control, saving, checks); target >= 0.7",
            f"observed L1 order of the default scheme under refinement (n = {ns}): "
            + ", ".join(f"{o:.2f}" for o in orders),
            "L1 rows: the reference is first-order upwind on the same grid and steps (same work)",
        ],
    )


def main(argv=None) -> dict:
    from benchmarks import standalone

    return standalone(run, "pde", __doc__, argv,
                      after=lambda res, out: plot(res["accuracy"], os.path.splitext(out)[0] + ".png"))

if __name__ == "__main__":
    main()
