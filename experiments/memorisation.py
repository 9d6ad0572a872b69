r"""Memorisation by the exact score (P1c).

Data: `N` training points drawn from `N(0, I_d)`, for several `N` and `d`; forward process
OU; score: the exact empirical score (the unique minimiser of the denoising loss). Reverse
samples come from the reverse SDE (Euler–Maruyama on a geometric time grid) started at the
prior, one simulation per case, read off at every stopping time `t_end` of a grid that
contains them (the state at `t` of a path to `t_min` is a draw of the dynamics stopped at `t`).

Predictions:

* stopped at `t_end`, the exact dynamics output exactly the Gaussian kernel density
  estimate `(1/N) sum_i N(alpha x_i, sigma^2 I)` at `t = t_end` (the stopping time is a
  bandwidth). Test: the reverse samples against independent draws of that KDE, by a
  permutation MMD test and a z-test on the mean KDE log-density, Bonferroni-corrected;
  and the ratio-test copy fraction of the reverse samples against the KDE's at every `t_end`
  (within 4 binomial standard errors, plus a stated discretisation allowance);
* as `t_end -> 0` the reverse samples become copies of training points: copy fraction at
  the smallest `t_end` at least 0.9 for every `(N, d)`.
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np

import jaxdiff as jd
from jaxdiff.reproduce import (
    all_of,
    at_least,
    close,
    make_row,
    profile_sizes,
    save_figure,
    standalone,
    write_json,
)

NAME = "memorisation"
PROFILES = {
    "tiny": {
        "dims": (2, 4),
        "ns": (16, 64),
        "n_samples": 256,
        "t_ends": (1e-4, 1e-3, 1e-2, 1e-1, 1.0),
        "steps": 160,
        "kde_t_end": 0.03,
        "n_permutations": 100,
    },
    "quick": {
        "dims": (2, 8),
        "ns": (16, 128, 1024),
        "n_samples": 512,
        "t_ends": (1e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0),
        "steps": 400,
        "kde_t_end": 0.03,
        "n_permutations": 200,
    },
    "full": {
        "dims": (2, 8, 32),
        "ns": (16, 128, 1024, 8192),
        "n_samples": 4096,
        "t_ends": tuple(np.geomspace(1e-6, 1.0, 19)),
        "steps": 2000,
        "kde_t_end": 0.03,
        "n_permutations": 500,
    },
}
COPY_FLOOR = 0.9  # copy fraction required at the smallest t_end
N_SE = 4.0  # tolerance of the copy-fraction comparison, in standard errors
DISCRETISATION_ALLOWANCE = 0.03  # extra tolerance for the Euler–Maruyama bias, absolute
TEST_LEVEL = 0.01  # family-wise level of the KDE-equivalence tests (Bonferroni)


def _time_grid(T: float, t_ends, steps: int) -> np.ndarray:
    """A decreasing geometric grid from `T` to `min(t_ends)` that contains every `t_end`."""
    t_min = min(t_ends)
    grid = np.geomspace(T, t_min, steps + 1)
    grid = np.unique(np.concatenate([grid, np.asarray(t_ends, float), [T]]))[::-1]
    return grid[(grid <= T) & (grid >= t_min)]


def _mmd_permutation(x, y, permutations):
    """Observed unbiased MMD^2 of `x` vs `y` (median-heuristic bandwidth) and its null draws
    under the given `permutations` of the pooled rows (drawn outside: cheaper to compile)."""
    z = jnp.concatenate([x, y])
    sq = jnp.sum(z**2, 1)
    d2 = jnp.maximum(sq[:, None] + sq[None, :] - 2 * z @ z.T, 0.0)
    bandwidth = jnp.sqrt(0.5 * jnp.median(d2))
    n = x.shape[0]
    observed = jd.metrics.mmd(x, y, bandwidth=bandwidth)

    def one(perm):
        return jd.metrics.mmd(z[perm[:n]], z[perm[n:]], bandwidth=bandwidth)

    return observed, jax.lax.map(one, permutations), bandwidth


def _kde_draws(rng: np.random.Generator, points: np.ndarray, t: float, n: int) -> np.ndarray:
    """`n` draws of the Gaussian KDE `(1/N) sum_i N(e^-t x_i, (1 - e^-2t) I)` (the OU-noised
    empirical law), in NumPy: a reference independent of the library's samplers."""
    idx = rng.integers(0, points.shape[0], n)
    return np.exp(-t) * points[idx] + np.sqrt(-np.expm1(-2 * t)) * rng.standard_normal((n, points.shape[1]))


@jax.jit
def _analyse(points, x_at_ends, kde_at_ends, x_test, kde_test, t_test, permutations):
    """Everything measured on one case, in one compiled call: copy fractions of the reverse
    samples and of the KDE draws at each stopping time; at `t_test`, the MMD permutation
    test and the KDE log-densities of reverse samples and KDE draws."""
    copies = jax.vmap(lambda x: jd.metrics.copy_fraction(x, points))
    noised = jd.PointCloud(points).noised(jd.OU(), t_test)
    observed, null, bandwidth = _mmd_permutation(x_test, kde_test, permutations)
    log_p = jax.vmap(noised.log_prob)
    return copies(x_at_ends), copies(kde_at_ends), observed, null, bandwidth, log_p(x_test), log_p(kde_test)


def _normal_two_sided_p(z: float) -> float:
    import math

    return math.erfc(abs(z) / math.sqrt(2.0))


def _inverse_erfc(p: float) -> float:
    """`erfc^-1(p)` by bisection (the two-sided normal quantile is sqrt(2) erfc^-1(p))."""
    import math

    lo, hi = 0.0, 10.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if math.erfc(mid) > p else (lo, mid)
    return (lo + hi) / 2


def main(out_dir, *, profile: str = "quick", key: int = 0, **sizes) -> list[dict]:
    cfg = profile_sizes(PROFILES, profile, sizes)
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    base = jax.random.PRNGKey(key)
    process = jd.OU()
    n = int(cfg["n_samples"])
    t_ends = np.array(sorted(set(float(t) for t in cfg["t_ends"]) | {float(cfg["kde_t_end"])}))
    grid = _time_grid(float(process.T), t_ends, int(cfg["steps"]))
    cases = [(d, N) for d in cfg["dims"] for N in cfg["ns"]]
    n_tests = 2 * len(cases)

    results = []
    for j, (d, N) in enumerate(cases):
        rng = np.random.default_rng([key, j])
        points = jnp.asarray(rng.standard_normal((N, d)))
        ksample = jax.random.fold_in(base, j)
        score = jd.ExactScore(process, jd.PointCloud(points))
        ts, xs = jd.sample(
            ksample, score, process, (n, d), sampler=jd.ReverseSDE(), grid=jnp.asarray(grid), trajectory=True
        )
        ts = np.asarray(ts)
        rows_at = np.array([int(np.argmin(np.abs(ts - t))) for t in t_ends])
        t_kde = float(cfg["kde_t_end"])
        x_rev = xs[int(np.argmin(np.abs(ts - t_kde)))]
        perms = np.stack([rng.permutation(2 * n) for _ in range(int(cfg["n_permutations"]))])
        pts = np.asarray(points)
        kde_at_ends = np.stack([_kde_draws(rng, pts, t, 4 * n) for t in t_ends])
        x_kde = _kde_draws(rng, pts, t_kde, n)
        cf_rev, cf_kde, observed, null, bw, lp_rev, lp_kde = _analyse(
            points,
            xs[rows_at],
            jnp.asarray(kde_at_ends),
            x_rev,
            jnp.asarray(x_kde),
            jnp.asarray(t_kde),
            jnp.asarray(perms),
        )
        cf_rev, cf_kde = [float(v) for v in cf_rev], [float(v) for v in cf_kde]
        p_mmd = float((1 + jnp.sum(null >= observed)) / (1 + null.shape[0]))
        lp_rev, lp_kde = np.asarray(lp_rev), np.asarray(lp_kde)
        z = (lp_rev.mean() - lp_kde.mean()) / np.sqrt(lp_rev.var(ddof=1) / n + lp_kde.var(ddof=1) / n)
        results.append(
            {
                "d": d,
                "N": N,
                "copy_fraction_reverse": cf_rev,
                "copy_fraction_kde": cf_kde,
                "mmd2": float(observed),
                "mmd_bandwidth": float(bw),
                "p_mmd": p_mmd,
                "mean_log_kde_reverse": float(lp_rev.mean()),
                "mean_log_kde_kde": float(lp_kde.mean()),
                "z_log_kde": float(z),
                "se_log_kde_difference": float(np.sqrt(lp_rev.var(ddof=1) / n + lp_kde.var(ddof=1) / n)),
                "p_log_kde": _normal_two_sided_p(float(z)),
                "x_rev": np.asarray(x_rev),
                "x_kde": np.asarray(x_kde),
                "points": np.asarray(points),
                "lp_rev": lp_rev,
                "lp_kde": lp_kde,
            }
        )

    # --- criteria ------------------------------------------------------------------------
    n_kde = 4 * n
    curve_tol, kde_curve, rev_curve = [], [], []
    for r in results:
        for a, b in zip(r["copy_fraction_reverse"], r["copy_fraction_kde"]):
            se = np.sqrt(max(a * (1 - a), 1.0 / n) / n + max(b * (1 - b), 1.0 / n_kde) / n_kde)
            curve_tol.append(N_SE * se + DISCRETISATION_ALLOWANCE)
            kde_curve.append(b)
            rev_curve.append(a)
    smallest = [r["copy_fraction_reverse"][0] for r in results]
    # the KDE-equivalence level per test (Bonferroni); the z-test as a closeness of mean log-densities
    z_crit = float(np.sqrt(2.0) * _inverse_erfc(TEST_LEVEL / n_tests))

    # --- figures -------------------------------------------------------------------------
    import matplotlib.pyplot as plt

    dims = list(cfg["dims"])
    fig, axes = plt.subplots(1, len(dims), figsize=(3.6 * len(dims), 3.6), sharey=True, squeeze=False)
    for ax, d in zip(axes[0], dims):
        for r in results:
            if r["d"] != d:
                continue
            se = np.sqrt(
                np.clip(
                    np.array(r["copy_fraction_reverse"]) * (1 - np.array(r["copy_fraction_reverse"])),
                    1.0 / n,
                    None,
                )
                / n
            )
            (line,) = ax.plot(
                t_ends, r["copy_fraction_kde"], "-", lw=1.2, label=f"N={r['N']}: KDE (prediction)"
            )
            ax.errorbar(
                t_ends,
                r["copy_fraction_reverse"],
                yerr=2 * se,
                fmt="o",
                ms=3.5,
                color=line.get_color(),
                label=f"N={r['N']}: reverse SDE",
            )
        ax.set_xscale("log")
        ax.set_xlabel(r"stopping time $t_{end}$ (OU units)")
        ax.set_title(f"d = {d}", fontsize=9)
        ax.legend(fontsize=6)
    axes[0][0].set_ylabel("copy fraction (ratio test, 1/3)")
    fig_copies = save_figure(
        fig,
        out_dir,
        f"{NAME}_copies.png",
        caption="Share of reverse samples copying a training point against t_end, on the KDE's curve.",
    )

    r2 = next((r for r in results if r["d"] == 2), results[0])
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 4))
    a1.scatter(r2["x_kde"][:, 0], r2["x_kde"][:, 1], s=3, alpha=0.4, label="KDE draws (prediction)")
    a1.scatter(r2["x_rev"][:, 0], r2["x_rev"][:, 1], s=3, alpha=0.4, label="reverse SDE, exact score")
    a1.scatter(r2["points"][:, 0], r2["points"][:, 1], s=12, c="k", marker="x", label="training points")
    a1.set_xlabel("$x_1$")
    a1.set_ylabel("$x_2$")
    a1.set_title(f"d={r2['d']}, N={r2['N']}, stopped at t_end={t_kde:g}", fontsize=9)
    a1.legend(fontsize=7)
    bins = np.linspace(
        min(r2["lp_rev"].min(), r2["lp_kde"].min()), max(r2["lp_rev"].max(), r2["lp_kde"].max()), 40
    )
    a2.hist(r2["lp_kde"], bins=bins, density=True, histtype="step", lw=1.5, label="KDE draws (prediction)")
    a2.hist(r2["lp_rev"], bins=bins, density=True, histtype="step", lw=1.5, label="reverse SDE")
    a2.set_xlabel(r"log KDE density $\log \hat p_{t_{end}}(x)$")
    a2.set_ylabel("probability density")
    a2.set_title(f"MMD p = {r2['p_mmd']:.2f}, log-density z = {r2['z_log_kde']:.2f}", fontsize=9)
    a2.legend(fontsize=7)
    fig_kde = save_figure(
        fig,
        out_dir,
        f"{NAME}_kde.png",
        caption="Reverse samples stopped at t_end next to draws of the Gaussian KDE of the training set.",
    )

    cases_json = [
        {k: v for k, v in r.items() if k not in ("x_rev", "x_kde", "points", "lp_rev", "lp_kde")}
        for r in results
    ]
    common = {
        "t_ends": t_ends,
        "cases": cases_json,
        "steps": int(cfg["steps"]),
        "n_samples": n,
        "sampler": "jd.ReverseSDE (Euler-Maruyama), geometric grid from T=5 containing every t_end",
        "config": cfg,
    }
    cases = [f"N={r['N']}, d={r['d']}" for r in results]
    rows = [
        make_row(
            "memorisation_copies",
            "Exact-score reverse samples become copies of training points as t_end -> 0 (several N, d)",
            [COPY_FLOOR] * len(results),
            smallest,
            figures=[fig_copies],
            details={
                "cases": cases,
                "kde_copy_fraction_smallest_t_end": [r["copy_fraction_kde"][0] for r in results],
                **common,
            },
            criterion=at_least(
                0.0, f"copy fraction at t_end = {t_ends[0]:g} >= {COPY_FLOOR} for every (N, d)"
            ),
        ),
        make_row(
            "memorisation_copy_curve",
            "Copy fraction vs t_end equals that of the Gaussian KDE at bandwidth t_end",
            kde_curve,
            rev_curve,
            figures=[fig_copies],
            details={"cases": cases, "t_ends": t_ends, **common},
            criterion=close(
                curve_tol, f"|reverse - KDE| <= {N_SE:g} binomial SE + {DISCRETISATION_ALLOWANCE}"
            ),
        ),
        make_row(
            "memorisation_kde",
            f"Stopped at t_end = {t_kde:g} the exact reverse dynamics output the training set's Gaussian KDE",
            {
                "mean log KDE density": [r["mean_log_kde_kde"] for r in results],
                "MMD p-value": [TEST_LEVEL / n_tests] * len(results),
            },
            {
                "mean log KDE density": [r["mean_log_kde_reverse"] for r in results],
                "MMD p-value": [r["p_mmd"] for r in results],
            },
            figures=[fig_kde],
            details={"cases": cases, "z_log_kde": [r["z_log_kde"] for r in results], **common},
            criterion=all_of(
                **{
                    "mean log KDE density": close(
                        [z_crit * r["se_log_kde_difference"] for r in results],
                        f"reverse vs KDE draws: two-sided z-test at level {TEST_LEVEL}/{n_tests}",
                    ),
                    "MMD p-value": at_least(0.0, f"permutation MMD test p > {TEST_LEVEL}/{n_tests}"),
                }
            ),
        ),
    ]
    write_json(out_dir, NAME, rows)
    return rows


if __name__ == "__main__":
    raise SystemExit(standalone(main))
