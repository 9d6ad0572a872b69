r"""When memorisation begins: the collapse time of Biroli, Bonnaire, de Bortoli and Mezard (2024).

Data: `N` points drawn from `N(0, s^2 I_d)`; forward process OU; exact empirical score. The
reverse dynamics started from `rho_T` have the marginal law of `X_t` at every `t`, the noised
empirical law `(1/N) sum_i N(e^-t x_i, (1 - e^-2t) I)`. A trajectory is committed to one
training point when one posterior weight `w_i(t, X_t)` dominates; the participation
`P(t) = E sum_i w_i(t, X_t)^2` runs from `1/N` (no commitment) to 1 (collapsed). The
measured collapse time `t*` is where `P(t*) = 1/2` (interpolated on a log-time grid).

Prediction: `t_C = (1/2) log(1 + s^2 / (N^(2/d) - 1))`. The transition is sharp only as
`d -> infinity` with `log N / d` fixed, so at finite `d` we test the trend: `t* / t_C` within
`[1/2, 2]` for every `(N, d)` and rank correlation of `t*` with `t_C` at least 0.9. Where
`jd.sample` is available we also follow simulated reverse-SDE trajectories and record when
each one commits (the weight of the point it lands on stays above 1/2 from then on).
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np

import jaxdiff as jd
from jaxdiff.reproduce import fit_power_law, make_row, profile_sizes, save_figure, standalone, write_json

NAME = "collapse_time"
PROFILES = {
    "tiny": {
        "dims": (4, 8),
        "ns": (32, 128),
        "n_samples": 128,
        "n_times": 24,
        "std": 1.0,
        "path_dim": 8,
        "n_paths": 64,
        "steps": 100,
    },
    "quick": {
        "dims": (2, 4, 8, 16),
        "ns": (64, 256, 1024),
        "n_samples": 256,
        "n_times": 40,
        "std": 1.0,
        "path_dim": 8,
        "n_paths": 256,
        "steps": 200,
    },
    "full": {
        "dims": (2, 4, 8, 16, 32, 64),
        "ns": (64, 256, 1024, 4096, 16384),
        "n_samples": 2048,
        "n_times": 80,
        "std": 1.0,
        "path_dim": 16,
        "n_paths": 2048,
        "steps": 1000,
    },
}
RATIO_BAND = (0.5, 2.0)
MIN_RANK_CORRELATION = 0.9


def collapse_time_prediction(n: int, d: int, std: float) -> float:
    """Biroli–Bonnaire–de Bortoli–Mezard: `t_C = (1/2) log(1 + s^2 / (N^(2/d) - 1))`."""
    return 0.5 * np.log1p(std**2 / np.expm1(2.0 * np.log(n) / d))


@jax.jit
def _participation_curve(points, ts, xs):
    """Mean and standard error over the rows of `xs[k]` of `sum_i w_i(ts[k], x)^2`."""
    law = jd.PointCloud(points)
    process = jd.OU()

    def at(t, x):
        noised = law.noised(process, t)
        p = jd.metrics.participation(jax.vmap(lambda xi: noised.posterior(xi).weights)(x))
        return jnp.mean(p), jnp.std(p) / jnp.sqrt(x.shape[0])

    return jax.lax.map(lambda a: at(*a), (ts, xs))


def _noised_draws(rng: np.random.Generator, points: np.ndarray, ts: np.ndarray, n: int) -> np.ndarray:
    """`n` draws of `X_t = e^-t x_I + (1 - e^-2t)^(1/2) Z`, `I` uniform, for each `t` in `ts`
    (the marginals of the exact reverse dynamics started from rho_T), in NumPy."""
    idx = rng.integers(0, points.shape[0], (ts.size, n))
    z = rng.standard_normal((ts.size, n, points.shape[1]))
    return np.exp(-ts)[:, None, None] * points[idx] + np.sqrt(-np.expm1(-2 * ts))[:, None, None] * z


def _crossing(ts, values, level=0.5) -> float:
    """The time where a curve decreasing in `t` crosses `level`, interpolated in `log t`."""
    below = np.nonzero(values < level)[0]
    if below.size == 0 or below[0] == 0:
        return float("nan")
    i = below[0]
    return float(np.exp(np.interp(level, [values[i], values[i - 1]], [np.log(ts[i]), np.log(ts[i - 1])])))


def _spearman(a, b) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def _trajectory_commitment(points, key, n_paths, steps, t_end):
    """Commitment times of simulated reverse-SDE paths with the exact empirical score:
    for each path, the largest grid time below which the weight of its landing point stays
    above 1/2 (Euler–Maruyama on a log-SNR grid, fine where commitment happens)."""
    process = jd.OU()
    law = jd.PointCloud(points)
    score = jd.ExactScore(process, law)
    ts, xs = jd.sample(
        key,
        score,
        process,
        (n_paths, points.shape[1]),
        steps=steps,
        t_end=t_end,
        grid=jd.LogSNRGrid(),
        trajectory=True,
    )
    land = jd.metrics.nearest_neighbours(xs[-1], points, 1)[1][:, 0]

    def weight_of_landing(t, x):
        return jax.vmap(lambda xi, i: law.noised(process, t).posterior(xi).weights[i])(x, land)

    w = jax.vmap(weight_of_landing)(ts, xs)  # (len(ts), n_paths)
    ts, w = np.asarray(ts), np.asarray(w)
    order = np.argsort(ts)  # small t first
    ts, w = ts[order], w[order]
    committed = np.cumprod(w > 0.5, axis=0).astype(bool)  # from t_end upwards, still committed
    last = committed.sum(axis=0) - 1
    return np.where(last >= 0, ts[np.maximum(last, 0)], np.nan)


def main(out_dir, *, profile: str = "quick", key: int = 0, **sizes) -> list[dict]:
    cfg = profile_sizes(PROFILES, profile, sizes)
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    base = jax.random.PRNGKey(key)
    std = float(cfg["std"])

    cases = [(d, n) for d in cfg["dims"] for n in cfg["ns"]]
    t_c = np.array([collapse_time_prediction(n, d, std) for d, n in cases])
    ts = np.geomspace(t_c.min() / 20, max(2.0, 4 * t_c.max()), int(cfg["n_times"]))
    curves, errors, t_star = [], [], []
    for j, (d, n) in enumerate(cases):
        rng = np.random.default_rng([key, j])
        points = std * rng.standard_normal((n, d))
        xs = _noised_draws(rng, points, ts, int(cfg["n_samples"]))
        mean, se = _participation_curve(jnp.asarray(points), jnp.asarray(ts), jnp.asarray(xs))
        curves.append(np.asarray(mean))
        errors.append(np.asarray(se))
        t_star.append(_crossing(ts, np.asarray(mean)))
    t_star = np.array(t_star)
    ratio = t_star / t_c
    rho = _spearman(t_star, t_c) if len(cases) > 2 else float("nan")
    in_band = bool(np.all(np.isfinite(ratio)) and np.all((ratio >= RATIO_BAND[0]) & (ratio <= RATIO_BAND[1])))
    holds_trend = in_band and (len(cases) <= 2 or rho >= MIN_RANK_CORRELATION)
    slope, _ = fit_power_law(t_c, t_star)

    # Simulated paths for one dimension: each path's commitment time, median per N.
    path_cases = [j for j, (d, _) in enumerate(cases) if d == int(cfg["path_dim"])]
    t_commit = []
    for j in path_cases:
        d, n = cases[j]
        points = std * np.random.default_rng([key, j]).standard_normal((n, d))  # the same points as above
        commit = _trajectory_commitment(
            jnp.asarray(points),
            jax.random.fold_in(base, 20_000 + j),
            int(cfg["n_paths"]),
            int(cfg["steps"]),
            jnp.asarray(t_c[j] / 50),
        )
        t_commit.append(float(np.nanmedian(commit)))
    path_ratio = np.array(t_commit) / t_c[path_cases]
    paths_ok = bool(path_cases) and bool(
        np.all((path_ratio >= RATIO_BAND[0]) & (path_ratio <= RATIO_BAND[1]))
    )

    # --- figures -------------------------------------------------------------------------
    import matplotlib.pyplot as plt

    dims = list(cfg["dims"])
    fig, axes = plt.subplots(1, len(dims), figsize=(3.2 * len(dims), 3.6), sharey=True, squeeze=False)
    for ax, d in zip(axes[0], dims):
        for j, (dd, n) in enumerate(cases):
            if dd != d:
                continue
            (line,) = ax.plot(ts, curves[j], label=f"N={n}")
            ax.axvline(t_c[j], color=line.get_color(), ls="--", lw=0.9)
        ax.axhline(0.5, color="k", lw=0.6, ls=":")
        ax.set_xscale("log")
        ax.set_xlabel("diffusion time t (OU units)")
        ax.set_title(f"d = {d}; dashed: predicted $t_C$", fontsize=9)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel(r"participation $E\,\sum_i w_i(t, X_t)^2$")
    fig_curves = save_figure(fig, out_dir, f"{NAME}_participation.png")

    fig, ax = plt.subplots(figsize=(5, 4.5))
    lo, hi = min(t_c.min(), np.nanmin(t_star)) / 1.5, max(t_c.max(), np.nanmax(t_star)) * 1.5
    ax.plot([lo, hi], [lo, hi], "k-", lw=0.8, label="prediction $t^* = t_C$")
    ax.fill_between(
        [lo, hi],
        [lo * RATIO_BAND[0], hi * RATIO_BAND[0]],
        [lo * RATIO_BAND[1], hi * RATIO_BAND[1]],
        color="0.9",
        label=f"tolerance band x{RATIO_BAND[0]}..x{RATIO_BAND[1]}",
    )
    for d in cfg["dims"]:
        sel = [j for j, (dd, _) in enumerate(cases) if dd == d]
        ax.plot(t_c[sel], t_star[sel], "o-", label=f"d={d}: participation = 1/2 (N grows to the left)")
    ax.plot(
        t_c[path_cases],
        t_commit,
        "k*",
        ms=9,
        label=f"d={cfg['path_dim']}: median commitment of reverse-SDE paths",
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(r"predicted collapse time $t_C$")
    ax.set_ylabel(r"measured collapse time $t^*$")
    ax.legend(fontsize=7)
    fig_scatter = save_figure(fig, out_dir, f"{NAME}_vs_prediction.png")

    details = {
        "criterion": f"t*/t_C in {list(RATIO_BAND)} for every (N, d) and Spearman rank correlation >= "
        f"{MIN_RANK_CORRELATION}",
        "cases": [
            {"d": d, "N": n, "t_C": float(t_c[j]), "t_star": float(t_star[j]), "ratio": float(ratio[j])}
            for j, (d, n) in enumerate(cases)
        ],
        "spearman": rho,
        "loglog_slope_t_star_vs_t_C": slope,
        "times": ts,
        "participation": curves,
        "participation_se": errors,
        "config": cfg,
    }
    rows = [
        make_row(
            "collapse_time_trend",
            "Reverse trajectories commit to one training point below the collapse time t_C (BBDM 2024)",
            f"t* = t_C (x{RATIO_BAND[0]}..x{RATIO_BAND[1]}), rank corr. 1",
            f"t*/t_C in [{np.nanmin(ratio):.2f}, {np.nanmax(ratio):.2f}], rank corr. {rho:.2f}",
            holds_trend,
            [fig_curves, fig_scatter],
            details,
        ),
        make_row(
            "collapse_time_paths",
            f"Simulated reverse-SDE paths (exact score, d = {cfg['path_dim']}) commit to their "
            f"landing point at t_C",
            f"median commitment time / t_C in [{RATIO_BAND[0]}, {RATIO_BAND[1]}]",
            ", ".join(f"N={cases[j][1]}: {r:.2f}" for j, r in zip(path_cases, path_ratio)),
            paths_ok,
            [fig_scatter],
            {
                "criterion": "for each N, the median over paths of the last time below which the "
                "posterior weight of "
                f"the path's landing point stays > 1/2, divided by t_C, lies in {list(RATIO_BAND)}",
                "median_commitment": t_commit,
                "t_C": t_c[path_cases],
                "ratio": path_ratio,
                "sampler": "jd.ReverseSDE, jd.LogSNRGrid, t_end = t_C / 50",
                "n_paths": cfg["n_paths"],
                "steps": cfg["steps"],
            },
        ),
    ]
    write_json(out_dir, NAME, rows)
    return rows


if __name__ == "__main__":
    raise SystemExit(standalone(main))
