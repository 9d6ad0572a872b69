r"""What classifier-free guidance samples: the density view.

A labelled Gaussian mixture (class $y$ = a set of components) under the VP process has exact
conditional and unconditional scores at every $t$, and its guided score
$\tilde s_\gamma = s(t, x) + \gamma\,(s(t, x \mid y) - s(t, x))$ is the score of the tilted
density $p_t(x)\,p_t(y \mid x)^\gamma$ at each $t$. We evolve the density of the reverse
dynamics driven by $\tilde s_\gamma$ with the Fokker–Planck solver (`jd.pde`), from the
exact $p_T$ down to $t_{end} = 10^{-3}$, for the reverse SDE (`Reverse()`) and the
probability flow (`Flow()`), in 1-D and 2-D, and compare the result $q_\gamma$ with the
tilted law $p_{t_{end}}(x)\,p_{t_{end}}(y \mid x)^\gamma / Z$ and with $p_{t_{end}}(x \mid y)$.

Predictions (Chidambaram et al., "What does guidance do? A fine-grained analysis in a simple
setting", 2024, arXiv:2409.13074; Bradley & Nakkiran, "Classifier-Free Guidance is a
Predictor-Corrector", 2024, arXiv:2408.09000):

1. `exact`: at $\gamma = 0$ and $\gamma = 1$ the guided score is an exact score (unconditional,
   conditional), so both dynamics end at the unconditional and the conditional law: $L^1$
   distance within the discretisation tolerance.
2. `not_tilted`: for $\gamma > 1$ the tilted densities are not the noising of one law, so
   $q_\gamma$ is **not** the tilted law: $L^1(q_\gamma, \text{tilted}) \ge 0.1$, far above the
   tolerance of row 1.
3. `sde_vs_ode`: for the same reason the reverse SDE and the probability flow, which agree
   for any true score, end at different laws for $\gamma > 1$ ($L^1 \ge 0.1$); for
   $\gamma \le 1$ they agree within the tolerance.
4. `overshoot` (1-D, two classes): CFG pushes the class further than the tilt does: the mean
   of $q_\gamma$ exceeds the tilted law's mean for every $\gamma > 1$ and both dynamics.

Run: `python experiments/guidance_density.py --out DIR [--profile tiny|quick|full]`.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

import jaxdiff as jd
from jaxdiff.reproduce import make_row, profile_sizes, save_figure, standalone, write_json
from jaxdiff.reproduce.rows import all_of, at_least, at_most

NAME = "guidance_density"
PROFILES = {
    "tiny": {"n1": 192, "n2": 0, "scales": (0.0, 1.0, 3.0), "tol": 0.03},
    "quick": {"n1": 512, "n2": 80, "scales": (0.0, 1.0, 2.0, 4.0), "tol": 0.03},
    "full": {"n1": 1024, "n2": 128, "scales": (0.0, 1.0, 1.5, 2.0, 3.0, 4.0), "tol": 0.02},
}
GAP = 0.1  # the L1 distance rows 2 and 3 predict at least, for scale > 1
T_END = 1e-3
Y = 1  # the class guided toward


def _problems(cfg):
    out = {}
    law1 = jd.Labelled(jd.GaussianMixture(jnp.array([[-1.0], [1.0]]), 0.6), jnp.array([0, 1]))
    out["1-D"] = (law1, jd.pde.Grid(jnp.array([-6.0]), jnp.array([6.0]), (cfg["n1"],)))
    if cfg["n2"]:
        means = jnp.array([[1.2, 0.0], [-1.2, 0.0], [0.0, 1.2], [0.0, -1.2]])
        law2 = jd.Labelled(jd.GaussianMixture(means, 0.45), jnp.array([0, 0, 1, 1]))
        n = cfg["n2"]
        out["2-D"] = (law2, jd.pde.Grid(jnp.array([-6.0, -6.0]), jnp.array([6.0, 6.0]), (n, n)))
    return out


def _targets(law, grid, process, scales):
    a, s = process.alpha(T_END), process.sigma(T_END)
    lp = grid.evaluate(lambda x: law.log_prob_at(a, s, x))
    lc = grid.evaluate(lambda x: law.log_classifier_at(a, s, x, Y))

    def normed(logd):
        d = jnp.exp(logd - jnp.max(logd))
        return d / grid.integrate(d)

    return {g: normed(lp + g * lc) for g in scales}, normed(lp + lc)


def main(out_dir, *, profile: str = "quick", key: int = 0, **sizes) -> list[dict]:
    import matplotlib.pyplot as plt

    cfg = profile_sizes(PROFILES, profile, sizes)
    process = jd.VP()
    T = float(process.T)
    scales = tuple(float(g) for g in cfg["scales"])
    results = {}
    for name, (law, grid) in _problems(cfg).items():
        ls = jd.LabelledExactScore(process, law)
        p_T = grid.density(law.noised(process, T).log_prob)
        tilted, cond = _targets(law, grid, process, scales)
        res = {"grid": grid, "tilted": tilted, "cond": cond, "q": {}, "steps": {}}
        for dname, dyn in (("SDE", jd.pde.Reverse()), ("ODE", jd.pde.Flow())):
            for g in scales:
                guided = jd.guide(ls, Y, g)
                q, st = jd.pde.solve_fokker_planck(process, grid, p_T, t0=T, t1=T_END, score=guided,
                                                   dynamics=dyn, return_stats=True)  # fmt: skip
                res["q"][dname, g] = q
                res["steps"][dname, g] = int(st["steps"])
        results[name] = res

    def l1(grid, p, q):
        return float(jd.pde.l1_distance(grid, p, q))

    exact_m, not_tilted_m, sde_ode_hi, sde_ode_lo, mean_cfg, mean_tilt, table = [], [], [], [], [], [], []
    for name, r in results.items():
        grid = r["grid"]
        for g in scales:
            d_sde_ode = l1(grid, r["q"]["SDE", g], r["q"]["ODE", g])
            (sde_ode_hi if g > 1 else sde_ode_lo).append(d_sde_ode)
            for dname in ("SDE", "ODE"):
                q = r["q"][dname, g]
                d_tilt, d_cond = l1(grid, q, r["tilted"][g]), l1(grid, q, r["cond"])
                table.append(dict(problem=name, dynamics=dname, scale=g, l1_to_tilted=d_tilt,
                                  l1_to_conditional=d_cond, l1_sde_vs_ode=d_sde_ode,
                                  solver_steps=r["steps"][dname, g]))  # fmt: skip
                if g in (0.0, 1.0):
                    exact_m.append(d_tilt)  # the tilt at 0 / 1 is the unconditional / conditional law
                elif g > 1:
                    not_tilted_m.append(d_tilt)
                    if name == "1-D":
                        x = grid.centres(0)
                        mean_cfg.append(float(grid.integrate(q * x)))
                        mean_tilt.append(float(grid.integrate(r["tilted"][g] * x)))

    tol = cfg["tol"]
    common = {"process": "VP", "t_end": T_END, "class": Y, "scales": scales, "table": table,
              "grids": {n: list(r["grid"].shape) for n, r in results.items()}}  # fmt: skip

    # --- figure -----------------------------------------------------------------------------
    big = [g for g in scales if g > 1]
    ncols = 1 + len(big) + ("2-D" in results)
    fig, axes = plt.subplots(1, ncols, figsize=(4.2 * ncols, 3.8))
    r1 = results["1-D"]
    x = np.asarray(r1["grid"].centres(0))
    axes[0].plot(x, r1["q"]["SDE", 1.0], label="guided, scale 1 (SDE)")
    axes[0].plot(x, r1["cond"], "k--", lw=1, label="exact p(x | y)")
    axes[0].set_title("1-D: scale 1 gives p(x | y)", fontsize=9)
    for ax, g in zip(axes[1:], big):
        ax.plot(x, r1["q"]["SDE", g], label="CFG, reverse SDE")
        ax.plot(x, r1["q"]["ODE", g], label="CFG, probability flow")
        ax.plot(x, r1["tilted"][g], "k--", lw=1, label=r"tilted $p\,p(y|x)^\gamma/Z$")
        ax.plot(x, r1["cond"], ":", color="gray", lw=1, label="p(x | y)")
        ax.set_title(f"1-D, scale {g:g}", fontsize=9)
    for ax in axes[: 1 + len(big)]:
        ax.set_xlim(-4, 5)
        ax.set_xlabel("x")
        ax.legend(fontsize=6)
    if "2-D" in results:
        r2, g = results["2-D"], big[-1]
        c = np.asarray(r2["grid"].centres(0))
        ax = axes[-1]
        ax.contour(c, c, np.asarray(r2["q"]["SDE", g]).T, levels=8, colors="C0")
        ax.contour(c, c, np.asarray(r2["tilted"][g]).T, levels=8, colors="k", linestyles="dashed")
        ax.set_title(f"2-D, scale {g:g}: CFG SDE (blue) vs tilted (dashed)", fontsize=9)
        ax.set_aspect("equal")
        ax.set_xlim(-3, 3)
        ax.set_ylim(-3, 3)
    fig_name = save_figure(fig, out_dir, f"{NAME}.png",
                           caption="Densities at t_end from the Fokker-Planck solver driven by the CFG "
                           "score, against the tilted law and the exact conditional law.")  # fmt: skip

    rows = [
        make_row(
            f"{NAME}/exact",
            "At guidance scale 0 and 1 the guided dynamics (SDE and ODE) end at the unconditional and the "
            "conditional law",
            [0.0] * len(exact_m),
            exact_m,
            figures=[fig_name],
            details={**common, "what": "L1 to the exact law, per (problem, dynamics, scale in {0, 1})"},
            criterion=at_most(tol, f"every L1 distance <= {tol:g} (discretisation)"),
        ),
        make_row(
            f"{NAME}/not_tilted",
            "For scale > 1 CFG does not sample the tilted law p(x) p(y|x)^scale / Z",
            [GAP] * len(not_tilted_m),
            not_tilted_m,
            figures=[fig_name],
            details={**common, "what": "L1(CFG density, tilted law), per (problem, dynamics, scale > 1)"},
            criterion=at_least(0.0, f"every L1 distance >= {GAP:g}"),
        ),
        make_row(
            f"{NAME}/sde_vs_ode",
            "For scale > 1 the reverse SDE and the probability flow end at different laws; for scale <= 1 "
            "they agree",
            {"above_1": [GAP] * len(sde_ode_hi), "at_most_1": [0.0] * len(sde_ode_lo)},
            {"above_1": sde_ode_hi, "at_most_1": sde_ode_lo},
            figures=[fig_name],
            details={**common, "what": "L1(SDE density, ODE density) per (problem, scale)"},
            criterion=all_of(
                above_1=at_least(0.0, f"L1 >= {GAP:g} for scale > 1"),
                at_most_1=at_most(2 * tol, f"L1 <= {2 * tol:g} for scale <= 1"),
            ),  # fmt: skip
        ),
        make_row(
            f"{NAME}/overshoot",
            "CFG pushes further than the tilt: the mean of the CFG law exceeds the tilted law's mean (1-D)",
            mean_tilt,
            mean_cfg,
            figures=[fig_name],
            details={
                **common,
                "what": "mean of x under CFG (SDE, ODE per scale > 1) vs under the tilted law",
            },
            criterion=at_least(0.0, "CFG mean >= tilted mean, every scale > 1 and both dynamics"),
        ),
    ]
    write_json(out_dir, NAME, rows)
    return rows


if __name__ == "__main__":
    raise SystemExit(standalone(main))
