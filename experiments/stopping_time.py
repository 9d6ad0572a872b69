r"""Stopping-time guidance and the OU entropy decay: Liu & Zuazua, "A PDE perspective on
generative diffusion models", arXiv 2511.05940 (2025); Cao, Johnston, Laurent, Le & Motsch,
"Generative diffusion models from a PDE perspective", arXiv 2501.17054 (2025). Derivations and
criteria: docs/theory.md.

**Stopping time.** Training data: `N` draws from `N(0, c)` in 1-D (`c = 1/4`); OU process;
exact empirical score. Stopped at `t`, the reverse dynamics output the noised empirical law
`(1/N) sum_i N(alpha_t x_i, sigma_t^2)` (`jd.PointCloud(points).noised(jd.OU(), t)`). Its mean
integrated squared error to the true density has a closed form (Gaussian integrals): a bias
that grows like `sigma_t^4` and a variance that falls like `1 / (N sigma_t)`, so the best stop
`t*(N)` shrinks like `N^(-2/5)`. Predicted: the minimiser of the closed form. Measured: the
minimiser of the integrated squared error of the library's noised law on a grid, averaged over
independent training sets.

**OU entropy decay.** `KL(rho_t || N(0, 1)) <= e^(-2t) KL(rho_0 || N(0, 1))`, with equality for a
shifted standard Gaussian. Measured by quadrature of the library's exact noised densities
(`law.noised(jd.OU(), t).log_prob`) for a shifted Gaussian (the equality case), a two-component
mixture and a narrow Gaussian.
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np

import jaxdiff as jd
from jaxdiff.reproduce import (
    all_of,
    at_most,
    make_row,
    profile_sizes,
    ratio,
    save_figure,
    standalone,
    write_json,
)

NAME = "stopping_time"
PROFILES = {
    # ns: training-set sizes; n_sets: independent training sets per N; n_t: stopping times;
    # n_x: quadrature points; n_kl_t: times of the entropy decay
    "tiny": {"ns": (32, 128, 512), "n_sets": 12, "n_t": 25, "n_x": 801, "n_kl_t": 8},
    "quick": {"ns": (32, 128, 512, 2048), "n_sets": 32, "n_t": 40, "n_x": 1201, "n_kl_t": 16},
    "full": {"ns": (32, 128, 512, 2048, 8192), "n_sets": 128, "n_t": 80, "n_x": 2001, "n_kl_t": 32},
}
C = 0.25  # variance of the true law
STOP_TOL = 0.25  # |measured / predicted best stop - 1|; the error curve is flat near its minimum
KL_TOL = 1e-6  # quadrature, relative


def mise(t, n, c=C):
    """Mean integrated squared error of `(1/N) sum_i N(alpha x_i, sigma^2)`, `x_i ~ N(0, c)`,
    against `N(0, c)` (closed form; `int phi_a phi_b = 1 / sqrt(2 pi (a^2 + b^2))`)."""
    a2, s2 = np.exp(-2 * t), -np.expm1(-2 * t)
    v = a2 * c + s2  # variance of the expected output
    g = lambda var: 1.0 / np.sqrt(2 * np.pi * var)  # noqa: E731
    bias = g(2 * v) + g(2 * c) - 2 * g(v + c)
    variance = (g(2 * s2) - g(2 * v)) / n
    return bias + variance


def predicted_stop(n: int) -> float:
    ts = np.geomspace(1e-4, 1.0, 20001)
    return float(ts[np.argmin(mise(ts, n))])


@jax.jit
def _ise_curve(points, ts, xs):
    """Integrated squared error of the noised empirical law at each `t`, on the grid `xs`."""
    process = jd.OU()
    law = jd.PointCloud(points[:, None])
    true = jnp.exp(-(xs**2) / (2 * C)) / jnp.sqrt(2 * jnp.pi * C)
    dx = xs[1] - xs[0]

    def at(t):
        dens = jnp.exp(jax.vmap(law.noised(process, t).log_prob)(xs[:, None]))
        return jnp.sum((dens - true) ** 2) * dx

    return jax.lax.map(at, ts)


def _argmin_refined(ts, values) -> float:
    """The minimiser of a curve on a log-time grid, refined by a parabola through the three
    points around the smallest value."""
    i = int(np.clip(np.argmin(values), 1, len(ts) - 2))
    lt = np.log(ts[i - 1 : i + 2])
    a, b, _ = np.polyfit(lt, values[i - 1 : i + 2], 2)
    return float(np.exp(-b / (2 * a))) if a > 0 else float(ts[i])


def main(out_dir, *, profile: str = "quick", key: int = 0, **sizes) -> list[dict]:
    cfg = profile_sizes(PROFILES, profile, sizes)
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = jax.random.PRNGKey(key)
    ns = [int(n) for n in cfg["ns"]]

    # --- stopping time --------------------------------------------------------------------
    pred = np.array([predicted_stop(n) for n in ns])
    ts = np.geomspace(pred.min() / 8, min(1.0, pred.max() * 8), int(cfg["n_t"]))
    xs = jnp.linspace(-6 * np.sqrt(C + 1), 6 * np.sqrt(C + 1), int(cfg["n_x"]))
    curves, meas = [], []
    for j, n in enumerate(ns):
        ise = []
        for r in range(int(cfg["n_sets"])):
            pts = np.sqrt(C) * jax.random.normal(jax.random.fold_in(base, 1000 * j + r), (n,))
            ise.append(np.asarray(_ise_curve(pts, jnp.asarray(ts), xs)))
        curve = np.mean(ise, axis=0)
        curves.append(curve)
        meas.append(_argmin_refined(ts, curve))
    meas = np.array(meas)
    slope_pred = float(np.polyfit(np.log(ns), np.log(pred), 1)[0])
    slope_meas = float(np.polyfit(np.log(ns), np.log(meas), 1)[0])

    # --- OU entropy decay -------------------------------------------------------------------
    process = jd.OU()
    laws = {
        "shifted N(1.5, 1) (equality)": jd.Gaussian(jnp.array([1.5]), jnp.eye(1)),
        "mixture of N(-2, 0.3^2), N(2, 0.3^2)": jd.GaussianMixture(jnp.array([[-2.0], [2.0]]), stds=0.3),
        "narrow N(0.5, 0.2^2)": jd.Gaussian(jnp.array([0.5]), 0.04 * jnp.eye(1)),
    }
    x = jnp.linspace(-12.0, 12.0, 24001)
    dx = float(x[1] - x[0])
    log_ref = -0.5 * x**2 - 0.5 * np.log(2 * np.pi)
    kl_ts = np.geomspace(0.02, 2.0, int(cfg["n_kl_t"]))

    def kl(law, t):
        lp = jax.vmap(law.log_prob if t == 0 else law.noised(process, t).log_prob)(x[:, None])
        return float(jnp.sum(jnp.exp(lp) * (lp - log_ref)) * dx)

    kls = {name: (kl(law, 0.0), np.array([kl(law, float(t)) for t in kl_ts])) for name, law in laws.items()}
    eq_name = next(iter(laws))
    bound_pred = np.concatenate([np.exp(-2 * kl_ts) * k0 for k0, _ in kls.values()])
    bound_meas = np.concatenate([k for _, k in kls.values()])

    # --- figures ------------------------------------------------------------------------------
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for j, n in enumerate(ns):
        (line,) = axes[0].loglog(ts, curves[j], label=f"N = {n}: measured (mean over {cfg['n_sets']} sets)")
        axes[0].loglog(ts, mise(ts, n), ":", color=line.get_color())
        axes[0].axvline(pred[j], color=line.get_color(), ls="--", lw=0.8)
    axes[0].plot([], [], "k:", label="closed-form mean error")
    axes[0].plot([], [], "k--", lw=0.8, label="predicted best stop")
    axes[0].set_xlabel("stopping time t_end (OU units)")
    axes[0].set_ylabel("integrated squared error to the true density")
    axes[0].set_title("Error of the stopped exact reverse dynamics")
    axes[0].legend(fontsize=7)
    axes[1].loglog(ns, pred, "k--", label=f"predicted (slope {slope_pred:.2f})")
    axes[1].loglog(ns, meas, "o", label=f"measured (slope {slope_meas:.2f})")
    axes[1].set_xlabel("number of training points N")
    axes[1].set_ylabel("best stopping time t* (OU units)")
    axes[1].set_title("Best stopping time against N")
    axes[1].legend(fontsize=8)
    fig_stop = save_figure(
        fig,
        out,
        f"{NAME}.png",
        caption="Error of the exact-score output against the stopping time for several N, and the best "
        "stopping time, predicted and measured.",
    )
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for c, (name, (k0, k)) in enumerate(kls.items()):
        ax.semilogy(kl_ts, k, "o", ms=4, color=f"C{c}", label=f"{name}: measured")
        ax.semilogy(kl_ts, np.exp(-2 * kl_ts) * k0, "-", color=f"C{c}", lw=1)
    ax.plot([], [], "k-", lw=1, label=r"bound $e^{-2t}\,\mathrm{KL}(\rho_0\|N(0,1))$")
    ax.set_xlabel("time t (OU units)")
    ax.set_ylabel(r"KL$(\rho_t\,\|\,N(0, 1))$ (nats, log scale)")
    ax.set_title("OU entropy decay")
    ax.legend(fontsize=7)
    fig_kl = save_figure(
        fig,
        out,
        f"{NAME}_entropy.png",
        caption="Relative entropy to the standard Gaussian along the OU flow, below e^(-2t) times its start "
        "value, with equality for a shifted Gaussian.",
    )

    rows = [
        make_row(
            "stopping_time_guidance",
            "The stopping time that minimises the distance of the exact-score output to the true law, for N "
            "training points: predicted by the closed-form bias-variance balance (t* ~ N^(-2/5))",
            {"best stop": pred, "slope in N": slope_pred},
            {"best stop": meas, "slope in N": slope_meas},
            figures=[fig_stop],
            details={"ns": ns, "times": ts, "mean_ise": curves, "true_variance": C, "config": cfg},
            criterion=all_of(
                **{
                    "best stop": ratio(STOP_TOL, f"|measured / predicted - 1| <= {STOP_TOL} for every N"),
                    "slope in N": ratio(
                        STOP_TOL, f"fitted log-log slope within {STOP_TOL:.0%} of the predicted"
                    ),
                }
            ),
        ),
        make_row(
            "ou_entropy_decay",
            "OU entropy decay: KL(rho_t || N(0, I)) <= e^(-2t) KL(rho_0 || N(0, I)), equality for a shifted "
            "standard Gaussian",
            {"bound": bound_pred, "equality": np.exp(-2 * kl_ts) * kls[eq_name][0]},
            {"bound": bound_meas, "equality": kls[eq_name][1]},
            figures=[fig_kl],
            details={"laws": list(kls), "times": kl_ts, "kl_0": {n: v[0] for n, v in kls.items()}},
            criterion=all_of(
                bound=at_most(
                    KL_TOL * np.maximum(bound_pred, 1e-12), "KL_t <= e^(-2t) KL_0 (quadrature 1e-6)"
                ),
                equality=ratio(KL_TOL, "KL_t = e^(-2t) KL_0 for the shifted Gaussian (quadrature 1e-6)"),
            ),
        ),
    ]
    write_json(out, NAME, rows)
    return rows


if __name__ == "__main__":
    raise SystemExit(standalone(main))
