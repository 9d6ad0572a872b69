r"""Support containment and landing probabilities (P1a).

Data: a point cloud of `N` points in 2-D; forward process OU with a short horizon `T`, so
that the standard prior `N(0, I)` is itself not `rho_T`; exact empirical score. The reverse
SDE (Euler–Maruyama on a geometric grid) is started from wrong initial laws `v0`: the
standard prior and a shifted, narrow Gaussian.

Prediction (a Doob h-transform): the output is `rho_0 h` with `h = P_T(v0 / rho_T)`, so the
exact dynamics land only on the data, and on point `x_i` with probability
`pi_i = E_{y ~ v0}[w_i(T, y)]`, `w_i` the posterior weights at `T`.

Tests: every sample at `t_end` lies within `sigma(t_end) (sqrt(d) + 5)` of a point
`alpha(t_end) x_i` (a Gaussian tail bound; draws of `v0` mostly do not); the landing counts
(nearest training point) against `pi_i` by Pearson's chi-square test, `pi_i` computed
independently by Monte Carlo over `v0` with many more draws than samples. The same counts
against the uniform law `1/N` show that the test can tell the difference.
"""

from __future__ import annotations

import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

import jaxdiff as jd
from jaxdiff.reproduce import chi_square_test, make_row, profile_sizes, save_figure, standalone, write_json

NAME = "support"
PROFILES = {
    "tiny": {"n_points": 5, "n_samples": 2000, "n_prior_mc": 20_000, "steps": 150, "t_end": 1e-3, "T": 1.0},
    "quick": {
        "n_points": 6,
        "n_samples": 10_000,
        "n_prior_mc": 400_000,
        "steps": 400,
        "t_end": 1e-3,
        "T": 1.0,
    },
    "full": {
        "n_points": 12,
        "n_samples": 100_000,
        "n_prior_mc": 4_000_000,
        "steps": 2000,
        "t_end": 1e-4,
        "T": 1.0,
    },
}
TEST_LEVEL = 0.01  # family-wise level of the goodness-of-fit tests (Bonferroni over initial laws)
POWER_LEVEL = 1e-3  # the uniform law must be rejected at this level
TAIL_MARGIN = 5.0  # support radius sigma(t_end) (sqrt(d) + TAIL_MARGIN)


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
    radius = float(process.sigma(t_end)) * (np.sqrt(d) + TAIL_MARGIN)
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
        d0, _ = jd.metrics.nearest_neighbours(y0, points, 1)
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
                "share_within_radius": float(jnp.mean(dist[:, 0] <= radius)),
                "share_of_initial_within_radius": float(jnp.mean(d0[:, 0] <= radius)),
                "x": np.asarray(x),
                "y0": np.asarray(y0),
            }
        )

    support_ok = all(r["max_distance"] <= radius for r in results)
    fit_ok = all(r["p_value"] > TEST_LEVEL / len(results) for r in results)
    power_ok = all(r["p_uniform"] < POWER_LEVEL for r in results)

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
    fig_name = save_figure(fig, out_dir, f"{NAME}_landing.png")

    clean = [{k: v for k, v in r.items() if k not in ("x", "y0")} for r in results]
    common = {
        "initial_laws": clean,
        "t_end": t_end,
        "T": T,
        "radius": radius,
        "points": pts,
        "sampler": f"jd.ReverseSDE, geometric grid of {cfg['steps']} steps from T to t_end",
        "config": cfg,
    }
    rows = [
        make_row(
            "support_containment",
            "From a wrong prior the exact reverse dynamics land only on the data",
            f"all samples within {radius:.3f} of a data point",
            f"largest distance {max(r['max_distance'] for r in results):.3f} (initial draws within: "
            f"{max(r['share_of_initial_within_radius'] for r in results):.1%})",
            support_ok,
            [fig_name],
            {
                "criterion": "every sample within sigma(t_end)(sqrt(d) + 5) of alpha(t_end) x_i for some i",
                **common,
            },
        ),
        make_row(
            "support_landing",
            "Landing frequencies match pi_i = E_{y~v0}[w_i(T, y)] (chi-square), not 1/N",
            f"chi2 p > {TEST_LEVEL / len(results):g} for pi; < {POWER_LEVEL:g} for 1/N",
            "p = "
            + ", ".join(f"{r['p_value']:.3f}" for r in results)
            + "; uniform p = "
            + ", ".join(f"{r['p_uniform']:.1g}" for r in results),
            fit_ok and power_ok,
            [fig_name],
            {
                "criterion": f"Pearson chi-square against pi: p > {TEST_LEVEL}/{len(results)} for "
                "each initial law; "
                f"against uniform 1/N: p < {POWER_LEVEL} (the test discriminates)",
                **common,
            },
        ),
    ]
    write_json(out_dir, NAME, rows)
    return rows


if __name__ == "__main__":
    raise SystemExit(standalone(main))
