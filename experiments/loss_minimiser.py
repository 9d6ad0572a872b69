r"""The loss minimiser: the exact score attains the DSM loss's closed-form floor (P1c).

The denoising score-matching loss with weighting `sigma^2` and `t` uniform on `[t_min, T]`,

    L(s) = E_t sigma^2 E| s(t, alpha X0 + sigma Z) + Z / sigma |^2,

splits into `E_t sigma^2 E|s - grad log p_t|^2` plus the floor
`E_t alpha^2 / sigma^2 E tr Cov(X0 | X_t)` (docs/theory.md), so the exact score is its unique
minimiser. Measurements:

1. Gaussian data `N(0, c I_d)` under OU: `tr Cov(X0 | X_t) = d c sigma^2 / (alpha^2 c + sigma^2)`,
   and the floor integrates in closed form,
   `F = d c / (2 (1 - c)(T - t_min)) * log[(1 - (1 - c) e^-2T) / (1 - (1 - c) e^-2 t_min)]`;
   the Monte Carlo loss of `jd.ExactScore` must match it (4 standard errors). Perturbed scores
   `s* - eps x` have loss `F + A eps^2` (same draws for every `eps`): the fitted parabola's
   vertex is at `eps = 0`.
2. A point cloud (N training points, two moons): the exact empirical score's loss against the
   floor from the closed-form posterior covariance (`jd.dsm_minimum`, independent draws);
   a small network (`jd.nn.MLP`, `jd.train`) approaches that floor from above: its excess
   loss over the exact score (paired: the same draws of `t`, `X_0`, `Z`) stays >= -3 SE,
   falls as training proceeds, and equals the weighted score error
   `E_t sigma^2 E|s_theta - s*|^2` (`jd.fisher_divergence`, independent draws) within 4 SE:
   the decomposition of the loss, measured.
"""

from __future__ import annotations

import pathlib
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxdiff as jd
from jaxdiff.reproduce import (
    all_of,
    at_most,
    close,
    make_row,
    profile_sizes,
    save_figure,
    standalone,
    write_json,
)

NAME = "loss_minimiser"
PROFILES = {
    "tiny": {
        "n_eval": 20_000,
        "n_points": 32,
        "width": 32,
        "depth": 1,
        "stages": (0, 100, 400),
        "batch": 128,
        "n_eval_cloud": 40_000,
    },
    "quick": {
        "n_eval": 200_000,
        "n_points": 64,
        "width": 64,
        "depth": 2,
        "stages": (0, 250, 1000, 3000),
        "batch": 256,
        "n_eval_cloud": 20_000,
    },
    "full": {
        "n_eval": 2_000_000,
        "n_points": 256,
        "width": 256,
        "depth": 3,
        "stages": (0, 1000, 5000, 20_000, 100_000),
        "batch": 1024,
        "n_eval_cloud": 200_000,
    },
}
T, T_MIN, DIM, VAR = 5.0, 1e-3, 2, 0.5
N_SE = 4.0
EPS = (-0.4, -0.2, -0.1, 0.0, 0.1, 0.2, 0.4)


def gaussian_floor(d=DIM, c=VAR, T=T, t_min=T_MIN) -> float:
    """Closed-form DSM floor for `N(0, c I_d)` under OU, weighting sigma^2, t ~ U[t_min, T]."""
    log_ratio = np.log1p(-(1 - c) * np.exp(-2 * T)) - np.log1p(-(1 - c) * np.exp(-2 * t_min))
    return d * c / (2 * (1 - c) * (T - t_min)) * log_ratio


def _mean_se(terms) -> tuple[float, float]:
    terms = np.asarray(terms)
    return float(terms.mean()), float(terms.std(ddof=1) / np.sqrt(terms.size))


DIRECTIONS = ("-x", "e_1", "score")  # perturbation directions phi(t, x)
H = 0.05  # the parabola's half-width: loss at eps = -H, 0, H on the same draws


class _Perturbed(jd.AbstractScore):
    """`scale * s*(t, x) + eps phi(t, x)`: a candidate score moved off by `eps` along one of
    `DIRECTIONS` (`-x`, the constant `e_1`, or the score itself)."""

    process: jd.AbstractProcess
    exact: jd.AbstractScore
    eps: jax.Array
    scale: jax.Array
    direction: int

    def __call__(self, t, x):
        s = self.exact(t, x)
        phi = (-x, jnp.zeros_like(x).at[0].set(1.0), s)[self.direction]
        return self.scale * s + self.eps * phi

    def denoise(self, t, x):
        return jd.tweedie_denoise(self, t, x)

    def without_time_checks(self):
        return _Perturbed(
            self.process, self.exact.without_time_checks(), self.eps, self.scale, self.direction
        )


def _vertices(exact, process, x0, key, loss_kw, scale=1.0):
    """For each direction, the vertex of the parabola `eps -> L(scale s* + eps phi)` from the
    per-draw losses at `eps = -H, 0, H` on the same draws (exactly quadratic per draw), and
    its standard error (delta method)."""
    out = []
    for j in range(len(DIRECTIONS)):
        terms = [
            np.asarray(
                jd.dsm_loss(
                    _Perturbed(process, exact, jnp.asarray(e), jnp.asarray(scale), j),
                    process,
                    x0,
                    key=key,
                    **loss_kw,
                )
            )
            for e in (-H, 0.0, H)
        ]
        b = (terms[2] - terms[0]) / (2 * H)  # per-draw slope at 0
        a = (terms[2] + terms[0] - 2 * terms[1]) / (2 * H**2)  # per-draw curvature
        vertex = -b.mean() / (2 * a.mean())
        se = b.std(ddof=1) / np.sqrt(b.size) / (2 * a.mean())
        out.append((float(vertex), float(se), float(a.mean())))
    return out


def main(out_dir, *, profile: str = "quick", key: int = 0, **sizes) -> list[dict]:
    cfg = profile_sizes(PROFILES, profile, sizes)
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    base = jax.random.PRNGKey(key)
    process = jd.OU(T)
    loss_kw = dict(t_min=T_MIN, reduce=False)

    # --- 1. Gaussian data: closed-form floor, and the minimiser ------------------------
    gauss = jd.Gaussian(jnp.zeros(DIM), VAR * jnp.eye(DIM))
    exact = jd.ExactScore(process, gauss)
    x0 = gauss.sample(jax.random.fold_in(base, 1), int(cfg["n_eval"]))
    k_loss = jax.random.fold_in(base, 2)
    floor = gaussian_floor()
    measured, se = _mean_se(jd.dsm_loss(exact, process, x0, key=k_loss, **loss_kw))
    # same draws for every eps: the differences are exact quadratics up to Monte Carlo error
    curve = [
        float(
            jnp.mean(
                jd.dsm_loss(
                    _Perturbed(process, exact, jnp.asarray(e), jnp.asarray(1.0), 0),
                    process,
                    x0,
                    key=k_loss,
                    **loss_kw,
                )
            )
        )
        for e in EPS
    ]
    a2, a1, a0 = np.polyfit(EPS, curve, 2)
    vertex = -a1 / (2 * a2)
    vert_gauss = _vertices(exact, process, x0, k_loss, loss_kw)
    # a wrong candidate, the exact score scaled by 1.15: its vertex along the score is not 0
    vert_wrong = _vertices(exact, process, x0, k_loss, loss_kw, scale=1.15)

    # --- 2. point cloud: the exact empirical score and a trained network ----------------
    N = int(cfg["n_points"])
    points = jd.data.two_moons(jax.random.fold_in(base, 3), N)
    cloud = jd.PointCloud(points)
    n_eval = int(cfg["n_eval_cloud"])
    idx = jax.random.randint(jax.random.fold_in(base, 4), (n_eval,), 0, N)
    xc = points[idx]  # evaluation draws of X0 from the empirical law
    k_a, k_b, k_c = (jax.random.fold_in(base, i) for i in (5, 6, 9))
    cloud_score = jd.ExactScore(process, cloud)
    exact_terms = jd.dsm_loss(cloud_score, process, xc, key=k_a, **loss_kw)
    cloud_loss, cloud_se = _mean_se(exact_terms)
    floor_terms = jd.dsm_minimum(cloud, process, xc, key=k_b, **loss_kw)
    cloud_floor, cloud_floor_se = _mean_se(floor_terms)
    vert_cloud = _vertices(cloud_score, process, xc, k_a, loss_kw)

    net = jd.NetworkScore(
        jd.nn.MLP(2, key=jax.random.fold_in(base, 7), width=int(cfg["width"]), depth=int(cfg["depth"])),
        process,
        jd.EpsParam(),
    )
    optimizer = optax.adam(2e-3)
    stages = [int(s) for s in cfg["stages"]]
    excess, excess_se, losses, fisher, fisher_se = [], [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = pathlib.Path(tmp) / "net.ckpt"
        trained = net
        for steps in stages:
            if steps > 0:  # resume from the checkpoint: the stages are one uninterrupted run
                trained = jd.train(
                    net,
                    points,
                    process,
                    key=jax.random.fold_in(base, 8),
                    steps=steps,
                    batch_size=int(cfg["batch"]),
                    optimizer=optimizer,
                    ema=0.99,
                    loss=jd.DSMLoss(t_min=T_MIN),
                    checkpoint=ckpt,
                    progress=False,
                )
            terms = jd.dsm_loss(trained, process, xc, key=k_a, **loss_kw)
            m, s = _mean_se(terms - exact_terms)  # same draws as the exact score's loss: low variance
            excess.append(m)
            excess_se.append(s)
            losses.append(float(jnp.mean(terms)))
            m, s = _mean_se(jd.fisher_divergence(trained, cloud_score, process, xc, key=k_c, **loss_kw))
            fisher.append(m)
            fisher_se.append(s)

    # --- figures -------------------------------------------------------------------------
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    ax = axes[0]
    eg = np.linspace(min(EPS), max(EPS), 100)
    ax.plot(EPS, curve, "o", label=r"DSM loss of $s^* - \epsilon x$ (Monte Carlo)")
    ax.plot(eg, a2 * eg**2 + a1 * eg + a0, "-", lw=0.8, label=f"fitted parabola, vertex {vertex:+.3f}")
    ax.errorbar(
        [0.0],
        [measured],
        yerr=[2 * se],
        fmt="none",
        ecolor="tab:red",
        capsize=4,
        label=r"exact score: $\pm$ 2 SE",
    )
    ax.axhline(floor, color="k", ls="--", label=f"closed-form floor F = {floor:.4f}")
    ax.set_xlabel(r"perturbation $\epsilon$ of the exact score")
    ax.set_ylabel(r"DSM loss ($\lambda = \sigma^2$, $t \sim U[t_{min}, T]$)")
    ax.set_title(f"Gaussian data N(0, {VAR} I_{DIM})", fontsize=9)
    ax.legend(fontsize=7)
    ax = axes[1]
    st = np.array(stages, float)
    st_plot = np.maximum(st, 1)
    ax.plot(st_plot, losses, "o-", label="network, DSM loss (EMA weights)")
    ax.axhline(
        cloud_floor,
        color="k",
        ls="--",
        label=f"floor {cloud_floor:.4f} (exact posterior) = exact-score loss {cloud_loss:.4f}: one line",
    )
    ax.set_xscale("log")
    ax.set_xlabel("training steps (0 plotted at 1)")
    ax.set_yscale("log")
    ax.set_ylabel("DSM loss on the training set")
    ax.set_title(f"two moons, N = {N} training points", fontsize=9)
    ax.legend(fontsize=7)
    ax = axes[2]
    ax.errorbar(
        st_plot,
        np.maximum(excess, 1e-12),
        yerr=2 * np.array(excess_se),
        fmt="s-",
        capsize=3,
        label=r"excess loss $L(s_\theta) - L(s^*)$, paired ($\pm$ 2 SE)",
    )
    ax.plot(
        st_plot,
        fisher,
        "x",
        ms=9,
        color="tab:red",
        label=r"prediction: score error E $\lambda |s_\theta - s^*|^2$",
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training steps (0 plotted at 1)")
    ax.set_ylabel("DSM loss above the floor")
    ax.legend(fontsize=7)
    ax.set_title("excess loss = score error")
    fig_name = save_figure(
        fig,
        out_dir,
        f"{NAME}.png",
        caption="The DSM loss: its parabola around the exact score (Gaussian data), a network's loss falling "
        "to the floor, and its excess equal to the weighted score error.",
    )

    def vertex_part(v):
        return [x[0] for x in v], [N_SE * x[1] for x in v]

    vg, tg = vertex_part(vert_gauss)
    vc, tc = vertex_part(vert_cloud)
    stage_tol = [N_SE * float(np.hypot(a, b)) for a, b in zip(excess_se, fisher_se)]
    rows = [
        make_row(
            "loss_floor_gaussian",
            "The exact score's DSM loss equals the closed-form floor (Gaussian data)",
            floor,
            measured,
            figures=[fig_name],
            details={"se": se, "d": DIM, "c": VAR, "T": T, "t_min": T_MIN, "n_draws": cfg["n_eval"]},
            criterion=close(N_SE * se, f"|loss - F| <= {N_SE:g} SE ({cfg['n_eval']} draws)"),
        ),
        make_row(
            "loss_unique_minimiser",
            "The exact score is the unique minimiser of the DSM loss: on the same draws, the loss along "
            f"{len(DIRECTIONS)} directions ({', '.join(DIRECTIONS)}) is a parabola with its vertex at 0, for "
            "Gaussian data and for finite data (point cloud)",
            {"Gaussian": [0.0] * len(DIRECTIONS), "point cloud": [0.0] * len(DIRECTIONS)},
            {"Gaussian": vg, "point cloud": vc},
            figures=[fig_name],
            details={
                "directions": DIRECTIONS,
                "curvatures": {
                    "Gaussian": [x[2] for x in vert_gauss],
                    "point cloud": [x[2] for x in vert_cloud],
                },
                "wrong_candidate_1.15_score": {
                    "vertices": [x[0] for x in vert_wrong],
                    "tolerances": [N_SE * x[1] for x in vert_wrong],
                },
                "eps": EPS,
                "loss": curve,
            },
            criterion=all_of(
                Gaussian=close(tg, f"|vertex| <= {N_SE:g} SE (delta method) per direction"),
                **{"point cloud": close(tc, f"|vertex| <= {N_SE:g} SE per direction")},
            ),
        ),
        make_row(
            "loss_floor_point_cloud",
            "Empirical score's DSM loss equals the floor from the posterior covariance (point cloud)",
            cloud_floor,
            cloud_loss,
            figures=[fig_name],
            details={"n_points": N, "se_loss": cloud_se, "se_floor": cloud_floor_se},
            criterion=close(N_SE * float(np.hypot(cloud_se, cloud_floor_se)), f"within {N_SE:g} combined SE"),
        ),
        make_row(
            "loss_network_from_above",
            "A trained network's excess DSM loss over the floor equals its weighted score error and falls "
            "with training",
            {"excess = score error": fisher, "final <= half of initial": 0.5 * excess[0]},
            {"excess = score error": excess, "final <= half of initial": excess[-1]},
            figures=[fig_name],
            details={
                "stages": stages,
                "excess_se": excess_se,
                "fisher_se": fisher_se,
                "loss": losses,
                "width": cfg["width"],
                "depth": cfg["depth"],
            },
            criterion=all_of(
                **{
                    "excess = score error": close(stage_tol, f"within {N_SE:g} combined SE at every stage"),
                    "final <= half of initial": at_most(0.0),
                }
            ),
        ),
    ]
    write_json(out_dir, NAME, rows)
    return rows


if __name__ == "__main__":
    raise SystemExit(standalone(main))
