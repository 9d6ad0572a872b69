r"""`L^p` stability of the backward Fokker–Planck flows and their relative entropy (P2; THEORY.md §4).

Setting: the heat flow $\partial_t u = \kappa\Delta u$ (`jd.pde.HeatFlow`, $\kappa = 1$) on
$[0, T]$, data $\rho_0$, exact score $\nabla\log u(t)$. A backward solution $v$ starts from any
density $v_0$ at $t = T$ and solves, in reverse time, the Fokker–Planck equation of

* the reverse SDE, $dY = 2\kappa\nabla\log u\,d\tau + \sqrt{2\kappa}\,dW$ (`jd.pde.Reverse()`), or
* the probability-flow ODE, $dY/d\tau = \kappa\nabla\log u$ (`jd.pde.Flow()`).

Li–Yau ($\Delta\log u \ge -d/(2\kappa t)$) bounds the compression of these flows:
$\frac{d}{d\tau}\|v\|_p^p = -c\,(p-1)\int v^p \Delta\log u\,(+\text{diffusion} \le 0)$, hence

$$\|v(t)\|_p \le (T/t)^{d(1-1/p)}\|v_0\|_p \ \text{(SDE, } c = 2\kappa),\qquad
\|v(t)\|_p \le (T/t)^{(d/2)(1-1/p)}\|v_0\|_p \ \text{(ODE, } c = \kappa).$$

For Dirac data the ODE is the dilation $Y_t = \sqrt{t/T}\,Y_T$, so the ODE bound is an equality
for every $v_0$; the SDE is the Brownian bridge, and from $v_0 = N(0, c^2 I)$ its law is
$N(0, V(t) I)$ with $V = (t/T)^2 c^2 + 2\kappa t (T - t)/T$, whose norm ratio
$(c^2/V)^{(d/2)(1-1/p)}$ exceeds the ODE bound for wide $v_0$ and tends to the SDE bound as
$c \to \infty$. Both closed forms measure the grid's discretisation error.

Relative entropy between two backward solutions of the same equation: for the SDE
$\frac{d}{d\tau}\mathrm{KL}(v_1 \| v_2) = -\kappa\int v_1 |\nabla\log(v_1/v_2)|^2 \le 0$; for the
ODE (a transport by one map) it is constant.

Everything is solved on grids by `jd.pde.solve_fokker_planck` in 1-D (and 2-D), from five
initialisations, for Dirac data and a 5-point cloud.

Run: `python experiments/lp_stability.py --out DIR [--profile quick|full]`.
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np

import jaxdiff as jd
from jaxdiff.reproduce import fit_power_law, make_row, profile_sizes, save_figure, standalone, write_json

NAME = "lp_stability"
KAPPA = 1.0
T = 1.0
PS = (2.0, 4.0, float("inf"))

PROFILES = {
    # dims: grid dimensions; n1/n2: cells per axis; ratio1/ratio2: T / t_end; n_save: saved
    # times (geometric); laws2/inits2: the data laws and initialisations (indices into
    # `_setup`'s list; 0 exact, 1 wide, 2 narrow, 3 shifted, 4 uniform) run in 2-D.
    "tiny": {"dims": (1,), "n1": 384, "n2": 48, "ratio1": 20.0, "ratio2": 4.0, "n_save": 6,
             "laws2": ("Dirac",), "inits2": (0, 1, 3)},
    "quick": {"dims": (1, 2), "n1": 1024, "n2": 96, "ratio1": 100.0, "ratio2": 6.0, "n_save": 10,
              "laws2": ("Dirac",), "inits2": (0, 1, 3)},
    "full": {"dims": (1, 2), "n1": 4096, "n2": 256, "ratio1": 1000.0, "ratio2": 30.0, "n_save": 16,
             "laws2": ("Dirac", "5-point cloud"), "inits2": (0, 1, 2, 3, 4)},
}
# Largest discretisation error (relative, against the closed forms) accepted as a working grid.
GRID_TOL = 0.1
# The ODE's fitted norm exponent for Dirac data must match (d/2)(1 - 1/p) within this
# fraction (dissipation of the limited upwind scheme lowers peaks at the last, narrowest times).
EXPONENT_RTOL = 0.1


WIDE = {1: "N(0, (3 s_T)^2)", 2: "N(0, (1.2 s_T)^2)"}
SHIFTED = "N(0.7 s_T e1, s_T^2)"


def _gauss_logpdf(mean, std):
    return lambda x: jnp.sum(jax.scipy.stats.norm.logpdf(x, mean, std))


def _setup(d: int, cfg: dict):
    """Grid, laws and initialisations in dimension `d`."""
    s_T = float(np.sqrt(2 * KAPPA * T))
    wide = 3.0 if d == 1 else 1.2  # 2-D: keep the box (and the cell count) small
    half = 5.3 * wide * s_T  # the widest initialisation's 5.3 standard deviations
    n = cfg[f"n{d}"]
    grid = jd.pde.Grid(-half * jnp.ones(d), half * jnp.ones(d), (n,) * d)
    shift = jnp.zeros(d).at[0].set(0.7 * s_T)
    cloud = jnp.array([[-1.0, 0.3], [-0.3, -0.8], [0.4, 0.5], [1.2, -0.2], [0.1, 1.0]])[:, :d]
    laws = {
        "Dirac": jd.PointCloud(jnp.zeros((5, d))),  # five copies of 0: same shapes as the cloud
        "5-point cloud": jd.PointCloud(cloud),
    }
    # (name, log-density or None for the exact rho_T, Gaussian std or None); a shift does not
    # change the norms, so the shifted Gaussian has the centred one's closed form
    inits = [
        ("rho_T (exact)", None, None),
        (WIDE[d], _gauss_logpdf(0.0, wide * s_T), wide * s_T),
        ("N(0, (s_T/2)^2)", _gauss_logpdf(0.0, 0.5 * s_T), 0.5 * s_T),
        (SHIFTED, _gauss_logpdf(shift, s_T), s_T),
        ("uniform on |x|_inf <= 1.5 s_T",
         lambda x: jnp.where(jnp.all(jnp.abs(x) <= 1.5 * s_T), -d * jnp.log(3.0 * s_T), -jnp.inf), None),
    ]
    if d == 2:
        inits = [inits[i] for i in cfg["inits2"]]
        laws = {n: laws[n] for n in cfg["laws2"]}
    return grid, laws, inits


def _kl(grid, p, q):
    """`KL(p || q)` on the grid, ignoring cells where `p < 1e-14 max p` (underflowed tails,
    where `q` may be exactly 0) and flooring `q` at the smallest normal float."""
    p = jnp.where(p > 1e-14 * jnp.max(p), p, 0.0)
    q = jnp.maximum(q, jnp.finfo(q.dtype).tiny)
    return jd.pde.relative_entropy(grid, p, q)


def main(out_dir, *, profile: str = "quick", key: int = 0, **sizes) -> list[dict]:
    """Run the experiment; write `<out_dir>/lp_stability.json` and PNGs; return the rows.
    (`key` is unused: the experiment is deterministic.)"""
    cfg = profile_sizes(PROFILES, profile, sizes)
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with jax.enable_x64(True):
        rows, details = _run(out, cfg)
    rows = [make_row(**r) for r in rows]
    write_json(out, NAME, rows, profile=profile, sizes=cfg, details=details)
    return rows


def _run(out: pathlib.Path, cfg: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    process = jd.pde.HeatFlow(kappa=KAPPA, T=T)
    dyns = {"SDE": jd.pde.Reverse(), "ODE": jd.pde.Flow()}
    res = {}  # (d, law, dyn, init) -> dict(ts, norms (n_save, len(PS)), dens)
    kl = {}  # (d, law, dyn) -> KL(v_wide || v_shifted) at the saved times
    for d in cfg["dims"]:
        grid, laws, inits = _setup(d, cfg)
        t_end = T / cfg[f"ratio{d}"]
        ts = jnp.geomspace(T, t_end, cfg["n_save"])
        for law_name, law in laws.items():
            score = jd.ExactScore(process, law)
            for dyn_name, dyn in dyns.items():
                for init_name, logp, std in inits:
                    p0 = grid.density(logp if logp is not None else law.noised(process, T).log_prob)
                    p0 = p0 / grid.integrate(p0)
                    # the monotonised-central limiter: the least dissipative of the solver's limiters
                    dens = jd.pde.solve_fokker_planck(process, grid, p0, t0=T, t1=t_end, score=score,
                                                      dynamics=dyn, saveat=ts,
                                                      limiter=jd.pde.MonotonizedCentral())
                    norms = np.array([[float(jd.pde.lp_norm(grid, v, p)) for p in PS] for v in dens])
                    if logp is None and law_name == "Dirac":
                        std = float(np.sqrt(2 * KAPPA * T))  # rho_T of a Dirac at 0
                    res[d, law_name, dyn_name, init_name] = {"ts": np.asarray(ts), "norms": norms,
                                                             "dens": dens, "std": std}
                # KL(shifted || wide): the ratio v1/v2 stays moderate in v1's tails
                pair = [res[d, law_name, dyn_name, name]["dens"] for name in (SHIFTED, WIDE[d])]
                kl[d, law_name, dyn_name] = np.array([float(_kl(grid, a, b)) for a, b in zip(*pair)])

    # ---- ratios against the bounds -------------------------------------------------------
    expo = np.array([1 - 1 / p for p in PS])  # (1 - 1/p), 1 at p = inf
    worst = {"SDE": 0.0, "ODE": 0.0}  # max ratio / own bound
    sde_over_ode = 0.0  # max SDE ratio / ODE bound: > 1 means the larger SDE exponent is needed
    closed_err = 0.0  # grid vs closed forms (Dirac data)
    exps = {}  # (d, p) -> fitted ODE exponent for Dirac data from rho_T
    for (d, law_name, dyn_name, init_name), r in res.items():
        ts, norms = r["ts"], r["norms"]
        ratio = norms / norms[0]
        growth = (T / ts)[:, None]
        b_sde, b_ode = growth ** (d * expo), growth ** (0.5 * d * expo)
        # t < T only: at t = T every ratio is 1 = the bound
        own = (ratio / (b_sde if dyn_name == "SDE" else b_ode))[1:]
        worst[dyn_name] = max(worst[dyn_name], float(np.max(own)))
        if dyn_name == "SDE":
            sde_over_ode = max(sde_over_ode, float(np.max(ratio / b_ode)))
        if law_name == "Dirac":
            std = r["std"]
            if dyn_name == "ODE":  # a dilation: the bound is exact for every initialisation
                exact = b_ode
            elif std is not None:  # Brownian bridge from N(0, c^2 I)
                V = (ts / T) ** 2 * std**2 + 2 * KAPPA * ts * (T - ts) / T
                exact = (std**2 / V)[:, None] ** (0.5 * d * expo)
            else:
                exact = None
            if exact is not None:
                closed_err = max(closed_err, float(np.max(np.abs(ratio / exact - 1))))
            if dyn_name == "ODE" and init_name == "rho_T (exact)":
                for j, p in enumerate(PS):
                    exps[d, p] = fit_power_law(T / ts[1:], ratio[1:, j])[0]
    # A bound holds if no ratio exceeds it by more than the grid's own error against the closed forms.
    tol = closed_err
    grid_ok = closed_err <= GRID_TOL
    exp_err = max(abs(e / (0.5 * d * (1 - 1 / p)) - 1) for (d, p), e in exps.items())

    # ---- relative entropy ------------------------------------------------------------------
    kl_sde_rise = max(float(np.max(np.diff(v) / v[0])) for (_, _, dn), v in kl.items() if dn == "SDE")
    kl_sde_drop = min(float(v[-1] / v[0]) for (_, _, dn), v in kl.items() if dn == "SDE")
    kl_ode_drift = max(float(np.max(np.abs(v / v[0] - 1))) for (_, _, dn), v in kl.items() if dn == "ODE")

    rows = [
        {
            "id": "lp_sde_bound",
            "claim": "Reverse-SDE Fokker-Planck: ||v(t)||_p <= (T/t)^(d(1-1/p)) ||v(T)||_p "
                     "from any initialisation",
            "predicted": "max ratio / bound <= 1",
            "measured": worst["SDE"],
            "holds": bool(grid_ok and worst["SDE"] <= 1 + tol),
            "figures": ["lp_norms.png"],
            "details": {"max_sde_ratio_over_ode_bound": sde_over_ode,
                        "grid_error_vs_closed_forms": closed_err,
                        "criterion": "ratio/bound <= 1 + grid error (closed forms), grid error <= "
                                     f"{GRID_TOL}"},
        },
        {
            "id": "lp_ode_bound",
            "claim": "Probability-flow Fokker-Planck: ||v(t)||_p <= (T/t)^((d/2)(1-1/p)) ||v(T)||_p, "
                     "equality for Dirac data",
            "predicted": "max ratio / bound <= 1; Dirac exponent (d/2)(1-1/p)",
            "measured": f"max ratio/bound {worst['ODE']:.4f}; Dirac exponents "
                        + ", ".join(f"d={d} p={p:g}: {e:.3f}" for (d, p), e in exps.items()),
            "holds": bool(grid_ok and worst["ODE"] <= 1 + tol and exp_err <= EXPONENT_RTOL),
            "figures": ["lp_norms.png"],
            "details": {"fitted_exponents": {f"d={d},p={p:g}": e for (d, p), e in exps.items()},
                        "max_relative_exponent_error": exp_err, "exponent_rtol": EXPONENT_RTOL,
                        "grid_error_vs_closed_forms": closed_err},
        },
        {
            "id": "lp_sde_needs_larger_exponent",
            "claim": "The SDE's norm growth can exceed the ODE bound (its exponent d(1-1/p) is needed)",
            "predicted": "max SDE ratio / ODE bound > 1 (wide initialisation, Dirac data)",
            "measured": sde_over_ode,
            "holds": bool(grid_ok and sde_over_ode > 1 + tol),
            "figures": ["lp_norms.png"],
            "details": {"grid_error_vs_closed_forms": closed_err},
        },
        {
            "id": "relative_entropy_sde",
            "claim": "KL between two reverse-SDE Fokker-Planck solutions is non-increasing",
            "predicted": "no increase between saved times (relative to KL at T)",
            "measured": f"max relative increase {kl_sde_rise:.2e}; KL(t_end)/KL(T) down to {kl_sde_drop:.3f}",
            "holds": bool(grid_ok and kl_sde_rise <= tol),
            "figures": ["relative_entropy.png"],
            "details": {"tolerance": tol},
        },
        {
            "id": "relative_entropy_ode",
            "claim": "KL between two probability-flow Fokker-Planck solutions is constant",
            "predicted": "KL(t)/KL(T) = 1",
            "measured": f"max |KL(t)/KL(T) - 1| = {kl_ode_drift:.2e}",
            "holds": bool(grid_ok and kl_ode_drift <= max(tol, 1e-3)),
            "figures": ["relative_entropy.png"],
            "details": {"tolerance": max(tol, 1e-3),
                        "criterion": "drift within the grid's error against the closed forms"},
        },
    ]
    details = {
        "ps": [str(p) for p in PS],
        "norm_ratios": {f"d={d}|{ln}|{dn}|{i}": (r["norms"] / r["norms"][0]).tolist()
                        for (d, ln, dn, i), r in res.items()},
        "ts": {f"d={d}": res[next(k for k in res if k[0] == d)]["ts"].tolist() for d in cfg["dims"]},
        "kl": {f"d={d}|{ln}|{dn}": v.tolist() for (d, ln, dn), v in kl.items()},
    }

    # ---- figures -------------------------------------------------------------------------
    dims = list(cfg["dims"])
    # one colour per kind of initialisation in every panel (the wide one differs between dims)
    colours = {n: f"C{i}" for i, (n, _, _) in enumerate(_setup(1, cfg)[2])} | {WIDE[2]: "C1"}
    pshow = (2.0, float("inf"))
    laws_list = ["Dirac", "5-point cloud"]
    fig, axs = plt.subplots(len(laws_list), len(dims) * len(pshow), figsize=(5 * len(dims) * len(pshow), 8),
                            squeeze=False)
    for i, law_name in enumerate(laws_list):
        for jd_, d in enumerate(dims):
            inits = [n for n, _, _ in _setup(d, cfg)[2]]
            for jp, p in enumerate(pshow):
                ax = axs[i, jd_ * len(pshow) + jp]
                if (d, law_name, "SDE", inits[0]) not in res:
                    ax.axis("off")
                    ax.text(0.5, 0.5, f"{law_name} data, d={d}: not run at this profile", ha="center")
                    continue
                j = PS.index(p)
                e = 1 - 1 / p
                for init_name in inits:
                    for dyn_name, ls in (("SDE", "-"), ("ODE", "--")):
                        r = res[d, law_name, dyn_name, init_name]
                        ax.loglog(T / r["ts"], r["norms"][:, j] / r["norms"][0, j], ls,
                                  color=colours[init_name], marker=".",
                                  label=f"{init_name}" if dyn_name == "SDE" else None)
                g = T / res[d, law_name, "SDE", inits[0]]["ts"]
                ax.loglog(g, g ** (d * e), "k-", lw=2.5, alpha=0.5, label=f"SDE bound (T/t)^{d * e:g}")
                ax.loglog(g, g ** (0.5 * d * e), "k--", lw=2.5, alpha=0.5,
                          label=f"ODE bound (T/t)^{0.5 * d * e:g}")
                ax.set_xlabel("T / t  (reconstruction progress)")
                ax.set_ylabel(r"$\|v(t)\|_p / \|v(T)\|_p$")
                ax.set_title(f"{law_name} data, d={d}, p={'inf' if p == float('inf') else f'{p:g}'}"
                             " (solid: SDE, dashed: ODE)", fontsize=9)
                if jp == 0:
                    ax.legend(fontsize=7)
                else:
                    ax.legend(handles=ax.get_legend_handles_labels()[0][-2:], fontsize=7)
    save_figure(fig, out, "lp_norms.png")

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for k, ((d, ln, dn), v) in enumerate(kl.items()):
        ts = res[next(key for key in res if key[0] == d)]["ts"]
        ax.semilogx(T / ts, v / v[0], "-" if dn == "SDE" else "--", marker=".", color=f"C{k // 2}",
                    label=f"{dn}, {ln}, d={d}")
    ax.axhline(1.0, color="k", lw=1, ls=":", label="constant (ODE prediction)")
    ax.set_xlabel("T / t  (reconstruction progress)")
    ax.set_ylabel(r"KL$(v_1(t)\,\|\,v_2(t))$ / KL at $T$")
    ax.set_title("Relative entropy of two backward solutions\n(SDE: non-increasing; ODE: constant)",
                 fontsize=10)
    ax.legend(fontsize=7)
    save_figure(fig, out, "relative_entropy.png")
    return rows, details


if __name__ == "__main__":
    raise SystemExit(standalone(main))
