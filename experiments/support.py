r"""Support containment and landing probabilities: Cao, Johnston, Laurent, Le & Motsch,
"Generative diffusion models from a PDE perspective", arXiv 2501.17054 (2025). Derivations and
criteria: docs/theory.md.

**Continuous data.** Data: the uniform law on `[-1, 1]` (compact, not atomic), exact score in
closed form (differences of normal CDFs). Started from a wrong prior `v0 = N(0.5, 0.6^2)` at
`T`, the reverse SDE ends at the h-transformed law `rho_t h_t`, `h_t(x) = E[v0/rho_T (X_T) | X_t = x]`
(1-D quadrature), and the probability-flow ODE, a monotone map in 1-D, ends at the law with
CDF `V0(Q_T(F_t(x)))` (`F` the CDFs of `rho`, `Q` its quantile, `V0` the CDF of `v0`). Both
vanish outside the support up to the blur `sigma(t_end)`. Histograms of the samples are
tested against these laws by chi-square; the same counts against the law reached from
`rho_T` (`h = 1`) must fail. The old check "every sample lies near a data point" is dropped:
any sampler that pulls samples onto the points passes it, so it could not fail.

**Point cloud.**

Data: a point cloud of `N` points in 2-D; forward process OU with a short horizon `T`, so
that the standard prior `N(0, I)` is itself not `rho_T`; exact empirical score. The reverse
SDE (Euler–Maruyama on a geometric grid) is started from wrong initial laws `v0`: the
standard prior and a shifted, narrow Gaussian.

Prediction (a Doob h-transform): the output is `rho_0 h` with `h = P_T(v0 / rho_T)`, so the
exact dynamics land only on the data, and on point `x_i` with probability
`pi_i = E_{y ~ v0}[w_i(T, y)]`, `w_i` the posterior weights at `T`.

Test: the landing counts (nearest training point) against `pi_i` by Pearson's chi-square
test, `pi_i` computed independently by Monte Carlo over `v0` with many more draws than
samples. The same counts against the uniform law `1/N` must fail.
"""

from __future__ import annotations

import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

import jaxdiff as jd
from jaxdiff.reproduce import (
    all_of,
    chi_square,
    chi_square_test,
    make_row,
    profile_sizes,
    save_figure,
    standalone,
    write_json,
)

NAME = "support"
PROFILES = {
    "tiny": {
        "n_points": 5,
        "n_samples": 2000,
        "n_prior_mc": 20_000,
        "steps": 150,
        "t_end": 1e-3,
        "T": 1.0,
        "n_continuous": 4000,
        "steps_continuous": 200,
    },
    "quick": {
        "n_points": 6,
        "n_samples": 10_000,
        "n_prior_mc": 400_000,
        "steps": 400,
        "t_end": 1e-3,
        "T": 1.0,
        "n_continuous": 20_000,
        "steps_continuous": 400,
    },
    "full": {
        "n_points": 12,
        "n_samples": 100_000,
        "n_prior_mc": 4_000_000,
        "steps": 2000,
        "t_end": 1e-4,
        "T": 1.0,
        "n_continuous": 200_000,
        "steps_continuous": 2000,
    },
}
TEST_LEVEL = 0.01  # family-wise level of the goodness-of-fit tests (Bonferroni over initial laws)
CONT_T_END = 0.01  # continuous data: the blur sigma(t_end) = 0.14 keeps the edges resolved
CONT_PRIOR = (0.5, 0.6)  # the wrong prior N(0.5, 0.6^2) at T
CONT_BINS = np.linspace(-1.5, 1.5, 25)  # histogram cells (plus two tails)


class UniformIntervalScore(jd.AbstractScore):
    """The exact score of the uniform law on `[-1, 1]` noised by `process` (closed form):
    `p_t(x) = (Phi((x + a)/s) - Phi((x - a)/s)) / (2a)`, `a = alpha(t)`, `s = sigma(t)`."""

    process: jd.AbstractProcess

    def __call__(self, t, x):
        a, s = self.process.alpha(t), self.process.sigma(t)
        y = -jnp.abs(x)  # the score is odd; evaluate where the CDF difference is not cancelled
        hi, lo = (y + a) / s, (y - a) / s
        lhi, llo = jax.scipy.special.log_ndtr(hi), jax.scipy.special.log_ndtr(lo)
        log_z = lhi + jnp.log1p(-jnp.exp(llo - lhi))
        lphi = lambda u: -0.5 * u**2 - 0.5 * jnp.log(2 * jnp.pi)
        g = (jnp.exp(lphi(hi) - log_z) - jnp.exp(lphi(lo) - log_z)) / s
        return jnp.where(x > 0, -g, g)

    def denoise(self, t, x):
        # Tweedie's formula
        p = self.process
        return (x + p.sigma2(t) * self(t, x)) / p.alpha(t)

    def without_time_checks(self):
        return self  # no run-time time checks to turn off


def _ndtr(u):
    return np.asarray(jax.scipy.special.ndtr(jnp.asarray(u, jnp.float64)))


def _npdf(u, m=0.0, s=1.0):
    return np.exp(-0.5 * ((u - m) / s) ** 2) / (s * np.sqrt(2 * np.pi))


def _uniform_cdf(x, a, s):
    """CDF of `U[-a, a] + N(0, s^2)` (closed form)."""

    def prim(u):  # integral of Phi: u Phi(u) + phi(u)
        return u * _ndtr(u) + _npdf(u)

    return s / (2 * a) * (prim((x + a) / s) - prim((x - a) / s))


def _continuous_predictions(process, T, t_end):
    """Cell probabilities (tails included) of the laws reached at `t_end` by the reverse SDE
    (h-transform) and the probability flow (monotone transport) from the wrong prior, and
    of the law reached from `rho_T` itself."""
    a_t, s_t = float(process.alpha(t_end)), float(process.sigma(t_end))
    a_T, s_T = float(process.alpha(T)), float(process.sigma(T))
    m0, s0 = CONT_PRIOR
    xs = np.linspace(-3, 3, 6001)
    ys = np.linspace(-6, 6, 6001)
    rho_T = (_ndtr((ys + a_T) / s_T) - _ndtr((ys - a_T) / s_T)) / (2 * a_T)
    ratio = _npdf(ys, m0, s0) / rho_T
    # h_t(x) = E[ratio(X_T) | X_t = x]: X_T | X_t ~ N(e^-(T-t) x, 1 - e^-2(T-t)) under OU
    r = np.exp(-(T - t_end))
    kern = _npdf(ys[None, :], r * xs[:, None], np.sqrt(1 - r**2))
    h = (kern * ratio[None, :]).sum(1) * (ys[1] - ys[0])
    rho_t = (_ndtr((xs + a_t) / s_t) - _ndtr((xs - a_t) / s_t)) / (2 * a_t)
    dens_sde = rho_t * h
    cdf_sde = np.concatenate([[0.0], np.cumsum((dens_sde[1:] + dens_sde[:-1]) / 2 * np.diff(xs))])
    cdf_sde /= cdf_sde[-1]
    edges = np.concatenate([[-np.inf], CONT_BINS, [np.inf]])

    def cells(cdf_at):
        c = np.array([0.0 if np.isinf(e) and e < 0 else 1.0 if np.isinf(e) else cdf_at(e) for e in edges])
        return np.diff(c)

    # flow: x = Q_t(F_T(y)), so P(X <= x) = V0(Q_T(F_t(x)))
    grid_T = np.linspace(-4, 4, 8001)
    F_T = _uniform_cdf(grid_T, a_T, s_T)

    def flow_cdf(x):
        u = _uniform_cdf(x, a_t, s_t)
        return _ndtr((np.interp(u, F_T, grid_T) - m0) / s0)

    return (
        cells(lambda x: np.interp(x, xs, cdf_sde)),
        cells(flow_cdf),
        cells(lambda x: _uniform_cdf(x, a_t, s_t)),
        (xs, dens_sde),
    )


def _initial_laws(d: int):
    """Wrong initial laws at T: (name, mean, std) of isotropic Gaussians."""
    shift = jnp.zeros(d).at[1].set(-1.5)
    return [("standard prior N(0, I)", jnp.zeros(d), 1.0), ("shifted N((0, -1.5), 0.5^2 I)", shift, 0.5)]


@functools.partial(jax.jit, static_argnames=("n", "chunk"))
def _landing_probabilities(points, T, mean, std, key, n, chunk=20_000):
    """`pi_i = E_{y ~ N(mean, std^2 I)}[w_i(T, y)]` by Monte Carlo with `n` draws."""
    noised = jd.PointCloud(points).noised(jd.OU(T), T)
    d = points.shape[1]

    def block(k):
        y = mean + std * jax.random.normal(k, (chunk, d))
        return jnp.sum(jax.vmap(lambda yi: noised.posterior(yi).weights)(y), axis=0)

    keys = jax.random.split(key, n // chunk)
    return jnp.sum(jax.lax.map(block, keys), axis=0) / (chunk * (n // chunk))


def main(out_dir, *, profile: str = "quick", key: int = 0, **sizes) -> list[dict]:
    cfg = profile_sizes(PROFILES, profile, sizes)
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    base = jax.random.PRNGKey(key)
    d, N, n = 2, int(cfg["n_points"]), int(cfg["n_samples"])
    T = float(cfg["T"])
    process = jd.OU(T)
    t_end = float(cfg["t_end"])
    # Points on an off-centre circle of radius 2 with a random jitter: well separated, and
    # neither initial law is symmetric about them, so the pi_i are far from uniform.
    angles = 2 * jnp.pi * (jnp.arange(N) + 0.3 * jax.random.uniform(jax.random.fold_in(base, 1), (N,))) / N
    points = 2.0 * jnp.stack([jnp.cos(angles), jnp.sin(angles)], 1) + jnp.array([1.0, 0.5])
    law = jd.PointCloud(points)
    score = jd.ExactScore(process, law)
    grid = jnp.asarray(np.geomspace(T, t_end, int(cfg["steps"]) + 1))
    chunk = min(20_000, int(cfg["n_prior_mc"]))

    results = []
    for j, (label, mean, std) in enumerate(_initial_laws(d)):
        kinit, ksim, kmc = jax.random.split(jax.random.fold_in(base, 100 + j), 3)
        y0 = mean + std * jax.random.normal(kinit, (n, d))
        x = jd.sample(ksim, score, process, (n, d), sampler=jd.ReverseSDE(), grid=grid, x_init=y0)
        dist, idx = jd.metrics.nearest_neighbours(x, process.alpha(t_end) * points, 1)
        counts = np.bincount(np.asarray(idx[:, 0]), minlength=N)
        pi = np.asarray(_landing_probabilities(points, T, mean, std, kmc, int(cfg["n_prior_mc"]), chunk))
        stat, p, dof = chi_square_test(counts, pi)
        stat_u, p_u, _ = chi_square_test(counts, np.full(N, 1.0 / N))
        results.append(
            {
                "initial_law": label,
                "counts": counts,
                "pi": pi,
                "chi2": stat,
                "dof": dof,
                "p_value": p,
                "chi2_uniform": stat_u,
                "p_uniform": p_u,
                "max_distance": float(jnp.max(dist)),
                "x": np.asarray(x),
                "y0": np.asarray(y0),
            }
        )

    # --- continuous data: uniform on [-1, 1], from the wrong prior, SDE and flow --------
    m0, s0 = CONT_PRIOR
    n_c = int(cfg["n_continuous"])
    cont_score = UniformIntervalScore(process)
    cont_grid = jnp.asarray(np.geomspace(T, CONT_T_END, int(cfg["steps_continuous"]) + 1))
    y_c = m0 + s0 * jax.random.normal(jax.random.fold_in(base, 500), (n_c, 1))
    x_sde = jd.sample(
        jax.random.fold_in(base, 501),
        cont_score,
        process,
        (n_c, 1),
        sampler=jd.ReverseSDE(),
        grid=cont_grid,
        x_init=y_c,
    )
    x_flow = jd.sample(
        jax.random.fold_in(base, 502),
        cont_score,
        process,
        (n_c, 1),
        sampler=jd.ProbabilityFlow(),
        grid=cont_grid,
        x_init=y_c,
    )
    p_sde, p_flow, p_rho, (xs_c, dens_sde) = _continuous_predictions(process, T, CONT_T_END)
    edges = np.concatenate([[-np.inf], CONT_BINS, [np.inf]])

    def counts_of(x):
        return np.histogram(
            np.clip(np.asarray(x)[:, 0], -1e6, 1e6), bins=np.concatenate([[-1e7], CONT_BINS, [1e7]])
        )[0]

    c_sde, c_flow = counts_of(x_sde), counts_of(x_flow)
    outside = float(process.alpha(CONT_T_END)) + 4 * float(process.sigma(CONT_T_END))
    cont_details = {
        "data": "uniform on [-1, 1]",
        "wrong_prior": f"N({m0}, {s0}^2)",
        "t_end": CONT_T_END,
        "cell_edges": edges,
        "p_value_sde": chi_square_test(c_sde, p_sde)[1],
        "p_value_flow": chi_square_test(c_flow, p_flow)[1],
        "p_value_sde_vs_rho": chi_square_test(c_sde, p_rho)[1],
        "p_value_flow_vs_rho": chi_square_test(c_flow, p_rho)[1],
        "share_beyond_support_plus_4_sigma": {
            "start": float(jnp.mean(jnp.abs(y_c) > outside)),
            "sde": float(jnp.mean(jnp.abs(x_sde) > outside)),
            "flow": float(jnp.mean(jnp.abs(x_flow) > outside)),
        },
        "law_reached_from_rho_T": p_rho,
        "sampler": f"jd.ReverseSDE and jd.ProbabilityFlow, geometric grid of {cfg['steps_continuous']} steps",
        "config": cfg,
    }

    # --- figures -------------------------------------------------------------------------
    import matplotlib.pyplot as plt

    pts = np.asarray(points)
    fig, axes = plt.subplots(1, 1 + len(results), figsize=(4.2 * (1 + len(results)), 4))
    ax = axes[0]
    for r, c in zip(results, ("tab:blue", "tab:orange")):
        ax.scatter(
            r["y0"][:400, 0], r["y0"][:400, 1], s=3, alpha=0.25, color=c, label=f"start: {r['initial_law']}"
        )
        ax.scatter(r["x"][:400, 0], r["x"][:400, 1], s=10, color=c, marker="o", edgecolor="k", lw=0.3)
    ax.scatter(pts[:, 0], pts[:, 1], s=70, facecolor="none", edgecolor="k", lw=1.2, label="training points")
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    ax.set_title(f"starts (faint) and landings at t_end={t_end:g}", fontsize=9)
    ax.legend(fontsize=6, loc="lower left")
    ax.set_aspect("equal")
    for ax, r in zip(axes[1:], results):
        freq = r["counts"] / n
        se = np.sqrt(r["pi"] * (1 - r["pi"]) / n)
        i = np.arange(N)
        ax.bar(i, freq, color="tab:gray", alpha=0.6, label="measured landing frequency")
        ax.errorbar(
            i,
            r["pi"],
            yerr=2 * se,
            fmt="o",
            color="tab:red",
            ms=4,
            capsize=3,
            label=r"prediction $\pi_i = E[w_i(T, y)]$ $\pm$ 2 SE",
        )
        ax.axhline(1 / N, color="k", ls="--", lw=0.8, label=r"uniform 1/N (start from $\rho_T$)")
        ax.set_xlabel("training point index i")
        ax.set_ylabel("probability of landing on $x_i$")
        ax.set_title(
            f"{r['initial_law']}: chi2 p = {r['p_value']:.2f} (uniform p = {r['p_uniform']:.1g})", fontsize=8
        )
        ax.legend(fontsize=6)
    fig_name = save_figure(
        fig,
        out_dir,
        f"{NAME}_landing.png",
        caption="Point cloud: starts and landings (left); landing frequencies against the predicted "
        "pi_i and the uniform 1/N for two wrong priors.",
    )

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    width = np.diff(CONT_BINS)
    centres = (CONT_BINS[1:] + CONT_BINS[:-1]) / 2
    for ax, x, p_pred, label in (
        (axes[0], x_sde, p_sde, "reverse SDE"),
        (axes[1], x_flow, p_flow, "probability flow"),
    ):
        ax.hist(
            np.asarray(y_c)[:, 0],
            bins=60,
            range=(-2.5, 2.5),
            density=True,
            color="0.85",
            label="wrong prior v0 at T",
        )
        ax.hist(
            np.asarray(x)[:, 0],
            bins=CONT_BINS,
            density=True,
            color="tab:blue",
            alpha=0.5,
            label=f"{label} samples at t_end",
        )
        ax.plot(centres, p_pred[1:-1] / width, "ro", ms=4, label="predicted law (cell averages)")
        ax.plot(centres, p_rho[1:-1] / width, "k_", ms=8, label=r"law reached from $\rho_T$ (wrong here)")
        ax.axvspan(-1, 1, color="tab:green", alpha=0.08, label="data support [-1, 1]")
        ax.set_xlabel("x")
        ax.set_ylabel("density")
        ax.set_title(f"Uniform data, {label} from N({m0}, {s0}^2)")
        ax.legend(fontsize=7, loc="upper left")
    fig_cont = save_figure(
        fig,
        out_dir,
        f"{NAME}_continuous.png",
        caption="Uniform data on [-1, 1] from a wrong prior: the reverse SDE and the probability flow end "
        "inside the support, on the predicted laws (h-transform, monotone transport).",
    )

    clean = [{k: v for k, v in r.items() if k not in ("x", "y0")} for r in results]
    common = {
        "initial_laws": clean,
        "t_end": t_end,
        "T": T,
        "points": pts,
        "sampler": f"jd.ReverseSDE, geometric grid of {cfg['steps']} steps from T to t_end",
        "config": cfg,
    }
    level = TEST_LEVEL / len(results)
    labels = [f"v0 = {r['initial_law']}" for r in results]
    rows = [
        make_row(
            "support_landing",
            "From a wrong prior the exact reverse SDE lands on training point i with probability "
            "pi_i = E_{y~v0}[w_i(T, y)], not 1/N (point cloud)",
            {k: r["pi"] for k, r in zip(labels, results)},
            {k: r["counts"] for k, r in zip(labels, results)},
            figures=[fig_name],
            details=common,
            criterion=all_of(**{k: chi_square(level) for k in labels}),
        ),
        make_row(
            "support_continuous_sde",
            "From a wrong prior the exact reverse SDE ends inside the support of continuous data, on the "
            "h-transformed law rho_t P_T(v0 / rho_T) (uniform on [-1, 1])",
            p_sde,
            c_sde,
            figures=[fig_cont],
            details=cont_details,
            criterion=chi_square(TEST_LEVEL),
        ),
        make_row(
            "support_continuous_flow",
            "From a wrong prior the probability flow ends inside the support, on the law with CDF "
            "V0(Q_T(F_t)) (uniform on [-1, 1])",
            p_flow,
            c_flow,
            figures=[fig_cont],
            details=cont_details,
            criterion=chi_square(TEST_LEVEL),
        ),
    ]
    write_json(out_dir, NAME, rows)
    return rows


if __name__ == "__main__":
    raise SystemExit(standalone(main))
