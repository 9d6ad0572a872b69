r"""When memorisation begins, and when the classes separate: the collapse and speciation times
of Biroli, Bonnaire, de Bortoli and Mezard, "Dynamical regimes of diffusion models",
arXiv 2402.18491 (2024). Derivations and criteria: docs/theory.md.

**Collapse.** Data: `N = round(e^(alpha d))` points drawn from `N(0, I_d)`, `alpha` fixed;
forward process OU; exact empirical score. The participation `P(t) = E sum_i w_i(t, X_t)^2`
of the posterior weights runs from about `1/N` (no commitment) to 1 (collapsed onto one
training point); the measured collapse time `t*` is where `P = 1/2`, under the exact
marginals (draws of the noised empirical law), and along simulated reverse-SDE paths at the
largest `d` (criterion there: within 10% of `t_C`).
Prediction: `t_C = (1/2) log(1 + 1 / (N^(2/d) - 1))`. The transition is sharp only as
`d -> infinity` with `log N / d = alpha` fixed, so the criterion is that `t* / t_C` tends to 1
along growing `d` and ends within 10%; `0.5 N^(-2/d)` and the formula without its `-1` sit
at ratios near 1.7 and 2.2 and fail.

**Speciation.** Data: the two-Gaussian mixture `(1/2) N(m, I) + (1/2) N(-m, I)` with
`|m|^2 = d`, whose covariance has top eigenvalue `Lambda = d + 1`. Reverse-SDE trajectories
(exact score) decide their class (the sign of `m . x` at the end) when the signal along `m`,
`e^-t |m|`, reaches the unit noise: prediction `t_S = (1/2) log Lambda`. Measured: the time
where the mean posterior probability of the path's final class, along the simulated path,
crosses its value at unit signal-to-noise.
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np

import jaxdiff as jd
from jaxdiff.reproduce import converging, make_row, profile_sizes, ratio, save_figure, standalone, write_json

NAME = "collapse_time"
PROFILES = {
    "tiny": {
        "alpha": 0.2,
        "dims": (20, 30),
        "n_samples": 256,
        "n_times": 24,
        "n_paths": 128,
        "steps": 100,
        "spec_dims": (4, 16, 64),
        "spec_paths": 256,
        "spec_steps": 120,
    },
    "quick": {
        "alpha": 0.2,
        "dims": (10, 20, 30, 40),
        "n_samples": 512,
        "n_times": 40,
        "n_paths": 256,
        "steps": 200,
        "spec_dims": (4, 16, 64, 256),
        "spec_paths": 1024,
        "spec_steps": 300,
    },
    "full": {
        "alpha": 0.2,
        "dims": (10, 20, 30, 40, 50),
        "n_samples": 2048,
        "n_times": 80,
        "n_paths": 1024,
        "steps": 1000,
        "spec_dims": (4, 16, 64, 256, 1024),
        "spec_paths": 4096,
        "spec_steps": 1000,
    },
}
COLLAPSE_TOL = 0.1  # |t*/t_C - 1| at the largest d (finite-d offset there: about 5%)
SPECIATION_TOL = 0.05  # |t_S measured / (1/2) log Lambda - 1| at the largest d


def collapse_time_prediction(n: int, d: int, std: float = 1.0) -> float:
    """`t_C = (1/2) log(1 + s^2 / (N^(2/d) - 1))` for data `N(0, s^2 I_d)`."""
    return 0.5 * np.log1p(std**2 / np.expm1(2.0 * np.log(n) / d))


def speciation_time_prediction(top_eigenvalue: float) -> float:
    """`t_S = (1/2) log Lambda`, Lambda the top eigenvalue of the data covariance."""
    return 0.5 * np.log(top_eigenvalue)


@jax.jit
def _participation_curve(points, ts, xs):
    """Mean over the rows of `xs[k]` of `sum_i w_i(ts[k], x)^2`."""
    law = jd.PointCloud(points)
    process = jd.OU()

    def at(t, x):
        noised = law.noised(process, t)
        return jnp.mean(jd.metrics.participation(jax.vmap(lambda xi: noised.posterior(xi).weights)(x)))

    return jax.lax.map(lambda a: at(*a), (ts, xs))


def _noised_draws(rng: np.random.Generator, points: np.ndarray, ts: np.ndarray, n: int) -> np.ndarray:
    """`n` draws of `X_t = e^-t x_I + (1 - e^-2t)^(1/2) Z`, `I` uniform, for each `t` in `ts`
    (the marginals of the exact reverse dynamics started from rho_T)."""
    idx = rng.integers(0, points.shape[0], (ts.size, n))
    z = rng.standard_normal((ts.size, n, points.shape[1]))
    return np.exp(-ts)[:, None, None] * points[idx] + np.sqrt(-np.expm1(-2 * ts))[:, None, None] * z


def _crossing(ts, values, level) -> float:
    """The time where a curve decreasing in `t` crosses `level`, interpolated in `log t`."""
    order = np.argsort(ts)
    ts, values = np.asarray(ts)[order], np.asarray(values)[order]
    below = np.nonzero(values < level)[0]
    if below.size == 0 or below[0] == 0:
        return float("nan")
    i = below[0]
    return float(np.exp(np.interp(level, [values[i], values[i - 1]], [np.log(ts[i]), np.log(ts[i - 1])])))


def _path_participation(points, key, n_paths, steps, t_end):
    """Grid times and the participation along simulated reverse-SDE paths (exact score)."""
    process = jd.OU()
    law = jd.PointCloud(points)
    ts, xs = jd.sample(
        key,
        jd.ExactScore(process, law),
        process,
        (n_paths, points.shape[1]),
        steps=steps,
        t_end=t_end,
        grid=jd.LogSNRGrid(),
        trajectory=True,
    )
    return np.asarray(ts), np.asarray(_participation_curve(points, ts, xs))


def _speciation_level() -> float:
    """`E[sum_c P(c | X_t)^2]` at unit signal-to-noise along `m` (Gauss–Hermite quadrature):
    the value of the class-decision curve at the predicted speciation time."""
    y, w = np.polynomial.hermite_e.hermegauss(80)
    p = 1.0 / (1.0 + np.exp(-2.0 * (1.0 + y)))  # y ~ N(1, 1): projection at unit signal
    return float(np.sum(w * (p**2 + (1 - p) ** 2)) / np.sum(w))


def _speciation(d: int, width: int, key, n_paths: int, steps: int, t_max: float):
    """Grid times and `E P(final class | X_t)` along reverse-SDE paths of the two-Gaussian
    mixture with `|m|^2 = d` (exact score). The mixture lives in `R^width` with `m` on the
    first `d` axes (the other axes are independent standard normals and leave `Lambda = d + 1`),
    so every `d` shares one compiled sampler."""
    m = jnp.zeros(width).at[:d].set(1.0)
    law = jd.GaussianMixture(jnp.stack([m, -m]), stds=1.0)
    process = jd.OU(t_max)
    ts, xs = jd.sample(
        key,
        jd.ExactScore(process, law),
        process,
        (n_paths, width),
        steps=steps,
        t_end=0.01,
        grid=jd.UniformGrid(),
        trajectory=True,
    )
    ts, xs = np.asarray(ts), np.asarray(xs)
    final = np.sign(xs[-1] @ np.asarray(m))
    # the posterior of the class given X_t: component covariances stay I under OU
    logit = 2.0 * np.exp(-ts)[:, None] * (xs @ np.asarray(m)) * final[None, :]
    return ts, np.mean(1.0 / (1.0 + np.exp(-logit)), axis=1)


def main(out_dir, *, profile: str = "quick", key: int = 0, **sizes) -> list[dict]:
    cfg = profile_sizes(PROFILES, profile, sizes)
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    base = jax.random.PRNGKey(key)
    alpha, dims = float(cfg["alpha"]), [int(d) for d in cfg["dims"]]
    ns = [int(round(np.exp(alpha * d))) for d in dims]
    t_c = np.array([collapse_time_prediction(n, d) for d, n in zip(dims, ns)])

    # --- collapse under the exact marginals, and along simulated paths ---------------------
    ts = np.geomspace(t_c.min() / 4, 4 * t_c.max(), int(cfg["n_times"]))
    curves, t_star = [], []
    for j, (d, n) in enumerate(zip(dims, ns)):
        rng = np.random.default_rng([key, j])
        points = rng.standard_normal((n, d))
        xs = _noised_draws(rng, points, ts, int(cfg["n_samples"]))
        curve = np.asarray(_participation_curve(jnp.asarray(points), jnp.asarray(ts), jnp.asarray(xs)))
        curves.append(curve)
        t_star.append(_crossing(ts, curve, 0.5))
    t_star = np.array(t_star)
    # simulated paths at the largest d only (one compiled sampler)
    points = np.random.default_rng([key, len(dims) - 1]).standard_normal((ns[-1], dims[-1]))
    path_t, path_p = _path_participation(
        jnp.asarray(points),
        jax.random.fold_in(base, 20_000),
        int(cfg["n_paths"]),
        int(cfg["steps"]),
        jnp.asarray(t_c[-1] / 20),
    )
    t_path = _crossing(path_t, path_p, 0.5)

    # --- speciation --------------------------------------------------------------------
    spec_dims = [int(d) for d in cfg["spec_dims"]]
    level = _speciation_level()
    t_s_pred = np.array([speciation_time_prediction(d + 1.0) for d in spec_dims])
    spec_curves, t_s = [], []
    t_max = float(t_s_pred.max()) + 4.0  # the class is undecided there (signal e^-4 of the noise)
    for j, d in enumerate(spec_dims):
        sts, q = _speciation(
            d,
            max(spec_dims),
            jax.random.fold_in(base, 30_000 + j),
            int(cfg["spec_paths"]),
            int(cfg["spec_steps"]),
            t_max,
        )
        spec_curves.append((sts, q))
        t_s.append(_crossing(sts, q, level))
    t_s = np.array(t_s)

    # --- figures -------------------------------------------------------------------------
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for j, (d, n) in enumerate(zip(dims, ns)):
        axes[0].plot(ts, curves[j], label=f"d={d}, N={n}: exact marginals")
    axes[0].plot(path_t, path_p, "k:", label=f"d={dims[-1]}: reverse-SDE paths")
    axes[0].axvline(t_c[-1], color="k", ls="--", lw=0.9, label=f"predicted $t_C$ = {t_c[-1]:.3f}")
    axes[0].axhline(0.5, color="0.5", lw=0.6)
    axes[0].set_xscale("log")
    axes[0].set_xlabel("diffusion time t (OU units, log scale)")
    axes[0].set_ylabel(r"participation $E\,\sum_i w_i(t, X_t)^2$")
    axes[0].set_title(rf"Collapse: $N = e^{{{alpha:g} d}}$ Gaussian points")
    axes[0].legend(fontsize=7, loc="upper right")
    axes[1].plot(dims, t_star / t_c, "o-", label="measured $t^*$ / $t_C$ (exact marginals)")
    axes[1].plot(dims[-1:], [t_path / t_c[-1]], "ks", label="measured / $t_C$ (reverse-SDE paths)")
    wrong_a = np.array([0.5 * n ** (-2 / d) for d, n in zip(dims, ns)])
    wrong_b = np.array([0.5 * np.log1p(n ** (-2 / d)) for d, n in zip(dims, ns)])
    axes[1].plot(dims, t_star / wrong_a, "x--", color="0.5", label=r"measured / $0.5 N^{-2/d}$ (wrong)")
    axes[1].plot(dims, t_star / wrong_b, "+--", color="0.3", label=r"measured / formula without $-1$ (wrong)")
    axes[1].axhspan(
        1 - COLLAPSE_TOL, 1 + COLLAPSE_TOL, color="0.9", label=f"tolerance at largest d: ±{COLLAPSE_TOL:.0%}"
    )
    axes[1].set_xlabel("dimension d (log N / d fixed)")
    axes[1].set_ylabel("measured / predicted collapse time")
    axes[1].set_title("The ratio tends to 1 only for the right formula")
    axes[1].legend(fontsize=7)
    fig_collapse = save_figure(
        fig,
        out_dir,
        f"{NAME}_collapse.png",
        caption="Left: participation against time; it crosses 1/2 near the predicted collapse time. "
        "Right: measured/predicted collapse time against d, tending to 1 for the formula of Biroli et al. "
        "and not for two wrong ones.",
    )

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for d, (sts, q), tp in zip(spec_dims, spec_curves, t_s_pred):
        (line,) = axes[0].plot(sts, q, label=f"d={d}")
        axes[0].axvline(tp, color=line.get_color(), ls="--", lw=0.9)
    axes[0].axhline(level, color="0.5", lw=0.6, label=f"level at unit signal-to-noise ({level:.3f})")
    axes[0].set_xlabel("diffusion time t (OU units)")
    axes[0].set_ylabel("mean posterior probability of the final class")
    axes[0].set_title(r"Speciation: dashed, predicted $t_S = \frac{1}{2}\log\Lambda$")
    axes[0].legend(fontsize=7)
    axes[1].plot(spec_dims, t_s, "o-", label="measured speciation time")
    axes[1].plot(spec_dims, t_s_pred, "k--", label=r"predicted $\frac{1}{2}\log(d + 1)$")
    axes[1].plot(dims, t_star, "s-", label="measured collapse time (Gaussian data)")
    axes[1].set_xscale("log")
    axes[1].set_xlabel("dimension d (log scale)")
    axes[1].set_ylabel("time t (OU units)")
    axes[1].set_title("Speciation happens before collapse")
    axes[1].legend(fontsize=7)
    fig_spec = save_figure(
        fig,
        out_dir,
        f"{NAME}_speciation.png",
        caption="Left: class-decision curves of reverse-SDE paths for a two-Gaussian mixture, crossing "
        "near the predicted speciation time. Right: speciation time against d next to the collapse time.",
    )

    common = {"alpha": alpha, "dims": dims, "N": ns, "times": ts, "participation": curves, "config": cfg}
    rows = [
        make_row(
            "collapse_time_trend",
            "Exact-score trajectories collapse onto one training point at t_C (exact marginals, "
            "participation = 1/2), as d grows with log N / d fixed",
            t_c,
            t_star,
            figures=[fig_collapse],
            details={**common, "ratio": t_star / t_c},
            criterion=converging(COLLAPSE_TOL),
        ),
        make_row(
            "collapse_time_paths",
            f"Simulated reverse-SDE paths (exact score, d = {dims[-1]}) collapse at t_C",
            t_c[-1],
            t_path,
            figures=[fig_collapse],
            details={
                **common,
                "ratio": t_path / t_c[-1],
                "path_times": path_t,
                "path_participation": path_p,
                "sampler": "jd.ReverseSDE on jd.LogSNRGrid, t_end = t_C / 20",
                "n_paths": cfg["n_paths"],
                "steps": cfg["steps"],
            },
            criterion=ratio(COLLAPSE_TOL),
        ),
        make_row(
            "speciation_time",
            "Reverse-SDE paths of a two-Gaussian mixture decide their class at t_S = (1/2) log Lambda",
            t_s_pred,
            t_s,
            figures=[fig_spec],
            details={
                "dims": spec_dims,
                "Lambda": [d + 1.0 for d in spec_dims],
                "level": level,
                "ratio": t_s / t_s_pred,
                "collapse_time_for_comparison": {"dims": dims, "t_star": t_star},
                "sampler": "jd.ReverseSDE on jd.UniformGrid, exact mixture score",
                "config": cfg,
            },
            criterion=converging(SPECIATION_TOL),
        ),
    ]
    write_json(out_dir, NAME, rows)
    return rows


if __name__ == "__main__":
    raise SystemExit(standalone(main))
