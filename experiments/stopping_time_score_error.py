r"""Stopping-time guidance with an imperfect score: the best stop for a given number of training
points `N` and score error. Liu & Zuazua, "A PDE perspective on generative diffusion models",
arXiv 2511.05940 (2025); Cao, Johnston, Laurent, Le & Motsch, "Generative diffusion models from
a PDE perspective", arXiv 2501.17054 (2025). Derivations and criteria: docs/theory.md.

Training data: `N` draws `x_i` from `N(0, c)` in 1-D (`c = 1/4`), OU process. A score with error
level `h` is modelled as the exact score of the empirical law smoothed by `N(0, h^2)` (a score
that has not fully memorised its training points; `h = 0` is the exact empirical score). Run
exactly from `T` and stopped at `t`, the reverse dynamics of that score output its noised law
`(1/N) sum_i N(alpha_t x_i, sigma_t^2 + alpha_t^2 h^2)`
(`jd.GaussianMixture(points, stds=h).noised(jd.OU(), t)`).

* Predicted: the mean integrated squared error (MISE) of that law against `N(0, c)` in closed
  form (Gaussian integrals, the kernel variance `sigma_t^2 + alpha_t^2 h^2`); its minimiser
  `t*(N, h)` over the stopping window shrinks as `h` grows and sits at the window's lower edge
  (stop as late as possible) once `h` exceeds a threshold `h_c(N)`, the root of the closed-form
  slope of the MISE at `t = 0`. `h_c` lies a few percent above the KDE-optimal bandwidth.
* Measured, with the library's noised laws and nothing of the closed form: the integrated
  squared error of their densities on a quadrature grid, averaged over independent training
  sets (the same sets for every `h`); its minimiser over a log-time grid (parabola-refined),
  the shift `t*(N, 0) - t*(N, h)`, and the `h` at which the averaged error's slope at
  `t -> 0` changes sign (on a grid of `h`), with a standard error from the sets.
* The score error is reported as a number: the relative L2 error of the model's score against
  the exact empirical score, `||s_h - s_0|| / ||s_0||` under the noised empirical law at the
  exact score's best stop `t*(N, 0)`, by Monte Carlo with the laws' exact scores (what
  `jd.ExactScore` evaluates).
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np

import jaxdiff as jd
from jaxdiff.reproduce import all_of, make_row, profile_sizes, ratio, save_figure, standalone, write_json

NAME = "stopping_time_score_error"
PROFILES = {
    # ns: training-set sizes; n_sets: independent training sets per N (shared by every h);
    # n_t: stopping times; n_x: quadrature points; n_grid: score error levels searched for the
    # threshold; n_score: Monte Carlo draws of the score error
    "tiny": {"ns": (32, 128), "n_sets": 24, "n_t": 16, "n_x": 201, "n_grid": 10, "n_score": 1000},
    "quick": {"ns": (32, 128, 512), "n_sets": 32, "n_t": 20, "n_x": 241, "n_grid": 12, "n_score": 2000},
    "full": {"ns": (32, 128, 512, 2048), "n_sets": 128, "n_t": 40, "n_x": 601, "n_grid": 24, "n_score": 8000},
}
C = 0.25  # variance of the true law
# score error levels, in units of the KDE-optimal bandwidth h_kde(N): below the threshold
# (the best stop moves earlier in reverse time) and above it (the best stop is the last one)
H_FRACTIONS = (0.0, 0.5, 0.75, 1.5)
# stopping window, in units of the exact score's best stop t*(N, 0): N_EDGE times from its lower
# edge up to the second number, the others up to the third
WINDOW = (1 / 50, 1 / 6, 2.5)
N_EDGE = 4
STOP_TOL = 0.25  # |measured / predicted best stop - 1|; the error curve is flat near its minimum
# the shift of the best stop caused by the score error, t*(N, 0) - t*(N, h): the training sets
# are shared by every h, so their draw moves both stops alike and the shift is sharp
SHIFT_TOL = 0.10
THRESHOLD_SE = 3.0  # the measured threshold within this many standard errors ...
THRESHOLD_FLOOR = 0.03  # ... and at least this relative tolerance (quadrature, bisection)
SLOPE_TIMES = (1e-6, 2e-6)  # the slope of the error at t -> 0, by a difference
H_GRID = (0.7, 1.5)  # where the threshold is looked for, in units of h_kde(N)
N_PROBE_SETS = 4  # training sets over which the score error is averaged


def _g(var):
    return 1.0 / np.sqrt(2 * np.pi * var)  # int phi_a phi_b = g(a^2 + b^2)


def mise(t, n, h, c=C):
    """Mean integrated squared error of `(1/N) sum_i N(alpha x_i, sigma^2 + alpha^2 h^2)`,
    `x_i ~ N(0, c)`, against `N(0, c)`: bias of the expected law `N(0, v)` plus variance."""
    a2, sig2 = np.exp(-2 * t), -np.expm1(-2 * t)
    s2 = sig2 + a2 * h**2  # kernel variance
    v = a2 * c + s2
    return _g(2 * v) + _g(2 * c) - 2 * _g(v + c) + (_g(2 * s2) - _g(2 * v)) / n


def mise_slope_at_zero(n, h, c=C):
    """`d MISE / dt` at `t = 0`: at `t = 0`, `d(kernel variance)/dt = 2 (1 - h^2)` and
    `d v / dt = 2 (1 - c - h^2)` (noise added, data shrunk by `alpha`)."""
    w, s2 = c + h**2, h**2
    dg = lambda u: -_g(u) / (2 * u)  # noqa: E731
    dv, ds2 = 2 * (1 - c - h**2), 2 * (1 - h**2)
    return dv * (2 * (1 - 1 / n) * dg(2 * w) - 2 * dg(w + c)) + ds2 * 2 * dg(2 * s2) / n


def kde_bandwidth(n, c=C) -> float:
    """The bandwidth minimising the MISE of a Gaussian KDE of `N(0, c)` data (no OU shrinkage)."""
    hs = np.geomspace(1e-3, 1.0, 200001)
    k = _g(2 * (c + hs**2)) + _g(2 * c) - 2 * _g(2 * c + hs**2) + (_g(2 * hs**2) - _g(2 * (c + hs**2))) / n
    return float(hs[np.argmin(k)])


def predicted_stop(n, h, lo, hi) -> float:
    """The minimiser of the closed-form MISE over the stopping window `[lo, hi]`."""
    ts = np.geomspace(lo, hi, 20001)
    return float(ts[np.argmin(mise(ts, n, h))])


def predicted_threshold(n, c=C) -> float:
    """The `h` at which the closed-form slope at `t = 0` changes sign (bisection on `(0, 1)`)."""
    lo, hi = 1e-3, 0.9
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if mise_slope_at_zero(n, mid, c) < 0 else (lo, mid)
    return 0.5 * (lo + hi)


@jax.jit
def _measure(sets, weights, hs, ts, xs, probes, t_ref, h_probe):
    """With the library's laws: the integrated squared error against `N(0, c)` of the noised
    smoothed law at each pair `(hs[p], ts[p])`, per training set (rows of `sets`, padded with
    components of weight zero so that every `N` shares one compilation), and the relative L2
    error of the smoothed laws' exact scores (`h_probe`) against the empirical score at
    `t_ref`, at the draws `probes` of the noised empirical law of the first sets."""
    process = jd.OU()
    true = jnp.exp(-(xs**2) / (2 * C)) / jnp.sqrt(2 * jnp.pi * C)
    dx = xs[1] - xs[0]

    def law(points, h):
        return jd.GaussianMixture(points[:, None], stds=h, weights=weights)

    # `log_prob_at(alpha, sigma, x)` is the noised law's density (`law.noised(process, t)`
    # without its time check, which costs compile time here and is met by construction)
    def ise(points):
        def at(h, t):
            mixture, a, s = law(points, h), process.alpha(t), process.sigma(t)
            dens = jnp.exp(jax.vmap(lambda x: mixture.log_prob_at(a, s, x))(xs[:, None]))
            return jnp.sum((dens - true) ** 2) * dx

        return jax.lax.map(lambda p: at(*p), (hs, ts))

    def score_error(points, x, h):
        a, s = process.alpha(t_ref), process.sigma(t_ref)
        exact, model = law(points, 0.0), law(points, h)  # h = 0: the empirical law
        s0 = jax.vmap(lambda y: exact.score_at(a, s, y))(x[:, None])
        sh = jax.vmap(lambda y: model.score_at(a, s, y))(x[:, None])
        return jnp.sqrt(jnp.sum((sh - s0) ** 2) / jnp.sum(s0**2))

    errors = jax.vmap(lambda h: jax.vmap(score_error, (0, 0, None))(sets[: len(probes)], probes, h))(h_probe)
    return jax.vmap(ise)(sets), jnp.mean(errors, axis=1)


def _argmin_refined(ts, values) -> float:
    """The minimiser on a log-time grid: the first grid time when the smallest value is there
    (the lower edge), else the vertex of the parabola through the three points around it."""
    i = int(np.argmin(values))
    if i == 0 or i == len(ts) - 1:
        return float(ts[i])
    lt = np.log(ts[i - 1 : i + 2])
    a, b, _ = np.polyfit(lt, values[i - 1 : i + 2], 2)
    return float(np.exp(-b / (2 * a))) if a > 0 else float(ts[i])


def _threshold(hs, slopes):
    """The `h` where the set-averaged slope of the error at `t -> 0` changes sign (linear
    interpolation in `log h` on the grid `hs`), and its standard error (delta method: the
    spread of the per-set slopes there over the averaged slope's derivative in `h`). NaN when
    the grid holds no sign change from below to above."""
    mean = slopes.mean(axis=0)
    up = np.flatnonzero((mean[:-1] < 0) & (mean[1:] >= 0))
    if len(up) != 1:
        return float("nan"), float("nan")
    i = int(up[0])
    lh = np.log(hs[i : i + 2])
    w = mean[i] / (mean[i] - mean[i + 1])  # fraction of the interval where the mean crosses 0
    h = float(np.exp(lh[0] + w * (lh[1] - lh[0])))
    per_set = (1 - w) * slopes[:, i] + w * slopes[:, i + 1]
    d_slope = (mean[i + 1] - mean[i]) / (hs[i + 1] - hs[i])
    se = per_set.std(ddof=1) / np.sqrt(len(per_set)) / d_slope
    return h, float(se)


def main(out_dir, *, profile: str = "quick", key: int = 0, **sizes) -> list[dict]:
    cfg = profile_sizes(PROFILES, profile, sizes)
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ns = [int(n) for n in cfg["ns"]]
    n_t, n_sets, n_grid = int(cfg["n_t"]), int(cfg["n_sets"]), int(cfg["n_grid"])
    xs = jnp.asarray(np.linspace(-4.0, 4.0, int(cfg["n_x"])))  # 8 standard deviations of the widest law
    n_max, fractions = max(ns), np.array(H_FRACTIONS)

    h_kde = np.array([kde_bandwidth(n) for n in ns])
    h_c_pred = np.array([predicted_threshold(n) for n in ns])
    results, thresholds = [], []
    for j, n in enumerate(ns):
        t0 = predicted_stop(n, 0.0, 1e-5, 1.0)  # the exact score's best stop: the window's scale
        # a few times down to the window's lower edge, the rest evenly (in log t) around t*
        ts = t0 * np.concatenate(
            [
                np.geomspace(WINDOW[0], WINDOW[1], N_EDGE, endpoint=False),
                np.geomspace(WINDOW[1], WINDOW[2], n_t - N_EDGE),
            ]
        )
        h_grid = h_kde[j] * np.geomspace(*H_GRID, n_grid)
        # pairs (h, t): the error curves at each score error level, then the slope at t -> 0
        # across the threshold grid (two tiny times per h)
        pair_h = np.concatenate([np.repeat(fractions * h_kde[j], n_t), np.repeat(h_grid, 2)])
        pair_t = np.concatenate([np.tile(ts, len(fractions)), np.tile(SLOPE_TIMES, n_grid)])
        rng = np.random.default_rng([key, j])
        sets = np.zeros((n_sets, n_max))
        sets[:, :n] = np.sqrt(C) * rng.standard_normal((n_sets, n))
        weights = np.where(np.arange(n_max) < n, 1.0 / n, 0.0)
        n_probe = min(N_PROBE_SETS, n_sets)
        a, s = np.exp(-t0), np.sqrt(-np.expm1(-2 * t0))  # draws of the noised empirical law
        probes = a * sets[np.arange(n_probe)[:, None], rng.integers(0, n, (n_probe, int(cfg["n_score"])))]
        probes = probes + s * rng.standard_normal(probes.shape)
        ise, score_err = _measure(
            jnp.asarray(sets),
            jnp.asarray(weights),
            jnp.asarray(pair_h),
            jnp.asarray(pair_t),
            xs,
            jnp.asarray(probes),
            t0,
            jnp.asarray(fractions * h_kde[j]),
        )
        ise, score_err = np.asarray(ise), np.asarray(score_err)
        k = len(fractions) * n_t
        slopes = (ise[:, k + 1 :: 2] - ise[:, k::2]) / (SLOPE_TIMES[1] - SLOPE_TIMES[0])
        thresholds.append(_threshold(h_grid, slopes))
        for i, f in enumerate(fractions):
            h = float(f * h_kde[j])
            curve = ise[:, i * n_t : (i + 1) * n_t].mean(axis=0)
            results.append(
                {
                    "n": n,
                    "fraction": float(f),
                    "h": h,
                    "below_threshold": bool(h < h_c_pred[j]),
                    "predicted": predicted_stop(n, h, ts[0], ts[-1]),
                    "measured": _argmin_refined(ts, curve),
                    "window": (float(ts[0]), float(ts[-1])),
                    "times": ts,
                    "mean_ise": curve,
                    "score_error": float(score_err[i]),
                    "t_ref": t0,
                }
            )
    thresholds = np.array(thresholds)
    exact = [r for r in results if r["fraction"] == 0]
    shifted = [r for r in results if 0 < r["fraction"] and r["below_threshold"]]
    edge = [r for r in results if not r["below_threshold"]]
    for r in shifted:
        e = next(x for x in exact if x["n"] == r["n"])
        r["predicted_shift"] = e["predicted"] - r["predicted"]
        r["measured_shift"] = e["measured"] - r["measured"]
    edge_tol = 0.5 * ((WINDOW[1] / WINDOW[0]) ** (1 / N_EDGE) - 1)  # half a grid step at the edge
    thr_tol = np.maximum(THRESHOLD_FLOOR, THRESHOLD_SE * thresholds[:, 1] / thresholds[:, 0])

    # --- figure -----------------------------------------------------------------------------
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    ax = axes[0]
    for j, n in enumerate(ns):
        hs = np.linspace(0.0, 1.6 * h_kde[j], 121)
        rs = [r for r in results if r["n"] == n]
        lo, hi = rs[0]["window"]
        (line,) = ax.plot(hs, [predicted_stop(n, h, lo, hi) for h in hs], "-", lw=1.2, label=f"N = {n}")
        ax.plot([r["h"] for r in rs], [r["measured"] for r in rs], "o", color=line.get_color())
        for r in rs[1:]:  # the score's relative error next to each measured point
            ax.annotate(
                f"{r['score_error']:.0%}",
                (r["h"], r["measured"]),
                xytext=(4, 4),
                textcoords="offset points",
                fontsize=7,
                color=line.get_color(),
            )
        ax.axvline(h_c_pred[j], color=line.get_color(), ls=":", lw=1)
        ax.plot([thresholds[j, 0]], [0.0], "x", ms=9, mew=2, color=line.get_color(), clip_on=False)
    ax.plot([], [], "k-", lw=1.2, label="predicted (closed form)")
    ax.plot([], [], "ko", label=f"measured (mean of {n_sets} training sets)")
    ax.plot([], [], "k:", lw=1, label="predicted threshold h_c")
    ax.plot([], [], "kx", ms=7, mew=2, label="measured threshold")
    ax.plot([], [], " ", label="labels: score's relative L2 error")
    ax.set_xlabel("score error level h (smoothing std, data units)")
    ax.set_ylabel("best stopping time t* (OU units)")
    ax.set_ylim(0.0, 1.45 * max(r["predicted"] for r in results))
    ax.set_title("Best stop against the score error (flat: the window's last stop)")
    ax.legend(fontsize=7, ncol=2, loc="upper right")
    ax = axes[1]
    j = len(ns) - 1
    for c, r in enumerate(r for r in results if r["n"] == ns[j]):
        lab = f"h = {r['h']:.3f} (score error {r['score_error']:.0%})"
        ax.loglog(r["times"], r["mean_ise"], "-", color=f"C{c}", label=lab)
        ax.loglog(r["times"], mise(r["times"], ns[j], r["h"]), ":", color=f"C{c}")
        ax.plot([r["measured"]], [np.min(r["mean_ise"])], "o", color=f"C{c}")
    ax.plot([], [], "k:", label="closed-form mean error")
    ax.set_xlabel("stopping time t_end (OU units)")
    ax.set_ylabel("integrated squared error to the true density")
    ax.set_title(f"Error against the stop, N = {ns[j]} (dots: measured best stop)")
    ax.legend(fontsize=7)
    fig_path = save_figure(
        fig,
        out,
        f"{NAME}.png",
        caption="Best stopping time against the score's error level h for several N (lines predicted, dots "
        "measured, labelled with the score's relative L2 error); it reaches the last stop at the threshold "
        "h_c. Right: the error curves at the largest N.",
    )

    row = make_row(
        "stopping_time_score_error",
        "With a score whose error is modelled by smoothing the empirical law with N(0, h^2), the stop "
        "that minimises the distance to the true law moves earlier in reverse time by a predicted shift "
        "as h grows and becomes the last stop (t_end -> 0) for h above a threshold h_c(N), all from the "
        "closed-form mean integrated squared error",
        {
            "best stop, exact score": [r["predicted"] for r in exact],
            "shift by the score error": [r["predicted_shift"] for r in shifted],
            "last stop": [r["predicted"] for r in edge],
            "threshold": h_c_pred,
        },
        {
            "best stop, exact score": [r["measured"] for r in exact],
            "shift by the score error": [r["measured_shift"] for r in shifted],
            "last stop": [r["measured"] for r in edge],
            "threshold": thresholds[:, 0],
        },
        figures=[fig_path],
        details={
            "ns": ns,
            "true_variance": C,
            "h_fractions_of_kde_bandwidth": H_FRACTIONS,
            "kde_bandwidth": h_kde,
            "threshold_se": thresholds[:, 1],
            "cases": [{k: v for k, v in r.items() if k not in ("times", "mean_ise")} for r in results],
            "times": {str(n): next(r["times"] for r in results if r["n"] == n) for n in ns},
            "mean_ise": {f"{r['n']}/{r['fraction']}": r["mean_ise"] for r in results},
            "config": cfg,
        },
        criterion=all_of(
            **{
                "best stop, exact score": ratio(STOP_TOL, f"h = 0: |measured / predicted - 1| <= {STOP_TOL}"),
                "shift by the score error": ratio(
                    SHIFT_TOL, f"0 < h < h_c: t*(N, 0) - t*(N, h) within {SHIFT_TOL:.0%} of the closed form"
                ),
                "last stop": ratio(edge_tol, "h > h_c: the measured minimiser is the window's lowest time"),
                "threshold": ratio(
                    thr_tol,
                    f"h_c within {THRESHOLD_SE:g} standard errors (at least {THRESHOLD_FLOOR:.0%}) of the "
                    "closed form",
                ),
            }
        ),
    )
    write_json(out, NAME, [row])
    return [row]


if __name__ == "__main__":
    raise SystemExit(standalone(main))
