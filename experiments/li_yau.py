r"""Li–Yau along heat flows, its OU analogue, and de Bruijn's identity (P2; docs/theory.md).

For a positive solution of the heat equation $\partial_t u = \kappa \Delta u$ on
$\mathbb{R}^d$, Li–Yau's inequality reads

$$\Delta \log u \ge -\frac{d}{2\kappa t}, \qquad
\nabla^2 \log u = -\frac{I}{2\kappa t} + \frac{\mathrm{Cov}(X_0 | X_t)}{(2\kappa t)^2}
\succeq -\frac{I}{2\kappa t},$$

with equality for a Dirac initial datum. The heat flow is `jd.pde.HeatFlow` (marginal
$X_0 + \sigma Z$ with $\sigma^2 = 2\kappa t$); we take $\kappa = 1/2$, so $\sigma^2 = t$, and
write every bound with $\sigma^2$. The same normalised matrix
$M = \sigma^2 \nabla^2 \log p_t + I$ is $\succeq 0$ for any linear process (OU:
$\nabla^2 \log\rho_t \succeq -I / s_t^2$), because
$\nabla^2 \log p_t = -I/\sigma^2 + \alpha^2\,\mathrm{Cov}(X_0 | X_t)/\sigma^4$.

Measured here:

1. **Heat flow, pointwise, by autodiff.** $q = \mathrm{tr}(M)/d = (\sigma^2/d)\Delta\log u + 1$
   from `jax.hessian` of the exact `law.noised(HeatFlow, t).log_prob`, at typical and
   atypical points, for several laws and times: $\min q \ge 0$ and $\lambda_{\min}(M) \ge 0$.
   The Hessian is also compared with the posterior-covariance formula above (computed
   independently from `law.noised(...).posterior`), and the time-derivative (Harnack) form
   $|\nabla \log u|^2 - \partial_t \log u / \kappa \le d / (2\kappa t)$ from `jax.grad` in $t$.
2. **Equality.** A Dirac gives $q \equiv 0$; a bump $N(m, \varepsilon^2 I)$ gives
   $q = \varepsilon^2 / (\sigma^2 + \varepsilon^2) \to 0$ as $\varepsilon \to 0$.
3. **OU analogue.** $\lambda_{\min}(s_t^2 \nabla^2\log\rho_t + I) \ge 0$ under `jd.OU`.
4. **On the grid.** The heat flow from indicator starts, solved by
   `jd.pde.solve_fokker_planck`; the Li–Yau quantity of `jd.pde.li_yau` stays above the bound
   up to an $O(h^2)$ discretisation allowance.
5. **de Bruijn.** $dH/dt = \kappa\, I(u)$ (entropy $H = -\int u \log u$, Fisher information
   $I = \int u |\nabla\log u|^2$), by quadrature of the exact density with `jax.jvp` in time,
   and on the grid (`jd.pde.entropy`, `jd.pde.fisher_information`); $I \le d / (2\kappa t)$.

The analytic parts run in float64 (inside `jax.enable_x64`), whatever the global setting:
they check identities to rounding.

Run: `python experiments/li_yau.py --out DIR [--profile quick|full]`.
"""

from __future__ import annotations

import pathlib

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import jaxdiff as jd
from jaxdiff.reproduce import (
    all_of,
    at_least,
    at_most,
    close,
    make_row,
    profile_sizes,
    ratio,
    save_figure,
    standalone,
    write_json,
)

NAME = "li_yau"
KAPPA = 0.5  # heat flow d_t u = kappa Laplacian u, so sigma(t)^2 = 2 kappa t = t

ALL_LAWS = (
    "Dirac (d=2)",
    "16-point cloud (d=2)",
    "16 points near a circle (d=2)",
    "3-Gaussian mixture (d=2)",
    "anisotropic Gaussian (d=3)",
    "line in R^3 (rank-1 Gaussian)",
)
PROFILES = {
    # n_x: points per time (half typical, half atypical); sigma2: range of sigma(t)^2;
    # n_eps: narrow-bump widths; quad_n: quadrature grid per axis for de Bruijn.
    # laws: which of `_laws` to use (each law class costs one compile per process).
    # grid_dims / grid_n1 / grid_n2 / n_grid_t: the heat flow on grids (cells per axis, times).
    "tiny": {
        "n_x": 8,
        "n_t": 5,
        "n_eps": 5,
        "quad_n": 128,
        "laws": ("Dirac (d=2)", "16 points near a circle (d=2)", "line in R^3 (rank-1 Gaussian)"),
        "grid_dims": (1,),
        "grid_n1": 256,
        "grid_n2": 64,
        "n_grid_t": 5,
    },
    "quick": {
        "n_x": 64,
        "n_t": 12,
        "n_eps": 9,
        "quad_n": 192,
        "laws": ALL_LAWS,
        "grid_dims": (1, 2),
        "grid_n1": 1024,
        "grid_n2": 128,
        "n_grid_t": 10,
    },
    "full": {
        "n_x": 512,
        "n_t": 24,
        "n_eps": 13,
        "quad_n": 384,
        "laws": ALL_LAWS,
        "grid_dims": (1, 2),
        "grid_n1": 4096,
        "grid_n2": 256,
        "n_grid_t": 16,
    },
}
# Rounding tolerance for the O(1) normalised quantities (q, M, errors) in float64. They are
# differences of terms as large as the posterior logits alpha x.x_i / sigma^2 (~1e4 at
# sigma^2 = 1e-3 and the atypical points), so a few hundred ulps of those, ~1e-12, is rounding;
# 1e-9 leaves margin, while a failed inequality or a wrong Hessian would show at O(1e-2) or more.
TOL = 1e-9
SIGMA2_RANGE = {"heat": (1e-3, 4.0), "OU": (1e-3, 0.98)}  # OU: s_t^2 < 1


def _heat_process() -> jd.pde.HeatFlow:
    # theta = t and sigma^2 = 2 kappa t = t; the horizon covers SIGMA2_RANGE["heat"].
    return jd.pde.HeatFlow(kappa=KAPPA, T=SIGMA2_RANGE["heat"][1])


def _time_at(process, sigma2):
    """The time at which `process.sigma2(t) = sigma2`, through the closed-form inverse of the
    log-SNR (heat flow: `alpha = 1`; OU: `alpha^2 = 1 - sigma^2`)."""
    alpha2 = 1.0 - sigma2 if isinstance(process, jd.OU) else 1.0
    return process.t_from_log_snr(jnp.log(alpha2 / sigma2))


def _laws(key) -> dict[str, jd.AbstractLaw]:
    """Laws with different posterior structure: atomic, smooth, clustered, singular.

    Laws of one class share array shapes (a Dirac is 16 copies of one point), so each class
    compiles once."""
    k1, k2 = jax.random.split(key)
    u = jnp.array([1.0, 2.0, -1.0]) / jnp.sqrt(6.0)
    angles = jnp.linspace(0, 2 * jnp.pi, 16, endpoint=False)
    circle = jnp.stack([jnp.cos(angles), jnp.sin(angles)], 1)
    return {
        "Dirac (d=2)": jd.PointCloud(jnp.tile(jnp.array([[0.5, -0.3]]), (16, 1))),
        "16-point cloud (d=2)": jd.PointCloud(jax.random.normal(k1, (16, 2))),
        "16 points near a circle (d=2)": jd.PointCloud(circle + 0.05 * jax.random.normal(k2, (16, 2))),
        "3-Gaussian mixture (d=2)": jd.GaussianMixture(
            jnp.array([[-1.0, 0.0], [1.0, 0.5], [0.0, -1.2]]),
            stds=jnp.array([0.3, 0.15, 0.5]),
            weights=jnp.array([0.5, 0.3, 0.2]),
        ),
        "anisotropic Gaussian (d=3)": jd.Gaussian(
            jnp.zeros(3), jnp.diag(jnp.array([2.0, 0.3, 0.01])) + 0.1 * jnp.ones((3, 3))
        ),
        "line in R^3 (rank-1 Gaussian)": jd.Gaussian(jnp.array([0.2, 0.0, -0.1]), 1.5 * jnp.outer(u, u)),
    }


def _posterior_cov(post: jd.Posterior):
    """`Cov(X_0 | X_t = x)` from the posterior mixture (weights, means, scales)."""
    w, m = post.weights, post.means
    mean = w @ m
    second = jnp.einsum("k,ki,kj->ij", w, m, m) - jnp.outer(mean, mean)
    if post.scale is None:  # Dirac components
        return second
    if post.scale.ndim == 1:  # isotropic
        return second + jnp.sum(w * post.scale**2) * jnp.eye(m.shape[1], dtype=m.dtype)
    return second + jnp.einsum("k,kij,klj->il", w, post.scale, post.scale)


@eqx.filter_jit
def _pointwise(law, process, ts, key, n_x: int, heat: bool):
    """Per time and point, with `M = sigma^2 Hess log p_t + I`: `q = tr(M)/d`,
    `lambda_min(M)`, the Hessian-vs-posterior-covariance error, the Harnack form (heat
    flow; else `q` again) and the size of the terms that cancel in it.
    """
    d = law.dim
    eye = jnp.eye(d)

    def at_t(t, k):
        nl = law.noised(process, t)
        s2, a = process.sigma2(t), process.alpha(t)
        ka, kb = jax.random.split(k)
        typical = nl.sample(ka, n_x // 2)
        # atypical points: spread three times wider than the noised law, centred at 0
        wide = 3.0 * (1.0 + jnp.sqrt(s2)) * jax.random.normal(kb, (n_x - n_x // 2, d))
        xs = jnp.concatenate([typical, wide])

        def one(x):
            H = jax.hessian(nl.log_prob)(x)
            M = s2 * H + eye
            H_post = -eye / s2 + a**2 * _posterior_cov(nl.posterior(x)) / s2**2
            err = jnp.max(jnp.abs(s2 * (H - H_post)))
            q = jnp.trace(M) / d
            lam = jnp.linalg.eigvalsh(0.5 * (M + M.T))[0]
            grad = nl.score(x)
            if heat:
                # Harnack form: 1 - sigma^2 (|grad log u|^2 - d_theta log u / kappa) / d >= 0 in the
                # heat-flow time theta = sigma^2 / (2 kappa) (= t for HeatFlow; d sigma^2/dt = g^2).
                dlogu_dt = jax.grad(lambda tt: law.noised(process, tt).log_prob(x))(t)
                dtheta_dt = process.g2(t) / (2 * KAPPA)
                harnack = 1 - s2 * (grad @ grad - dlogu_dt / dtheta_dt / KAPPA) / d
            else:
                harnack = q
            # size of the terms that cancel in the Harnack form (it is a difference of two of them)
            size = s2 * (grad @ grad)
            return q, lam, err, harnack, size

        return jax.vmap(one)(xs)

    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(ts.shape[0]))
    return jax.vmap(at_t)(ts, keys)


def _de_bruijn(law: jd.GaussianMixture, process, ts, n: int):
    """Entropy derivative `dH/dtheta` (by `jax.jvp` in time), `kappa * Fisher`, and the mass,
    by trapezoid quadrature of the exact 2-D density on an `n x n` grid over `[-L, L]^2`,
    where `L` holds the mixture's means plus 7 standard deviations of its widest component at
    that time (the grid moves with `t` but is held fixed under differentiation)."""
    reach = float(jnp.max(jnp.abs(law.means)))
    var_max = float(jnp.max(jnp.linalg.eigvalsh(law.covariances)))

    def one(t):
        half = jax.lax.stop_gradient(reach + 7.0 * jnp.sqrt(var_max + process.sigma2(t)))
        g = jnp.linspace(-half, half, n)
        h = g[1] - g[0]
        xs = jnp.stack(jnp.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)

        def entropy(tt):
            lp = jax.vmap(law.noised(process, tt).log_prob)(xs)
            return -jnp.sum(jnp.exp(lp) * lp) * h**2

        nl = law.noised(process, t)
        lp = jax.vmap(nl.log_prob)(xs)
        u = jnp.exp(lp)
        s = jax.vmap(nl.score)(xs)
        fisher = jnp.sum(u * jnp.sum(s**2, 1)) * h**2
        _, dH_dt = jax.jvp(entropy, (t,), (jnp.ones_like(t),))
        dtheta_dt = process.g2(t) / (2 * KAPPA)
        return dH_dt / dtheta_dt, KAPPA * fisher, jnp.sum(u) * h**2

    return jax.jit(jax.vmap(one))(ts)


def _grid_heat(d: int, cfg: dict) -> dict:
    """Heat flow on a `d`-dimensional grid from the indicator of a set (normalised), with
    `jd.pde.li_yau`, and de Bruijn by central differences of `jd.pde.entropy` in time
    against `kappa * jd.pde.fisher_information`."""
    half, n = (8.0, cfg["grid_n1"]) if d == 1 else (7.5, cfg["grid_n2"])
    grid = jd.pde.Grid(-half * jnp.ones(d), half * jnp.ones(d), (n,) * d)
    h = 2 * half / n
    if d == 1:
        inside = lambda x: ((x[0] > -2) & (x[0] < -1)) | ((x[0] > 0.5) & (x[0] < 1.0))
    else:  # a square frame and a small disc inside it
        inside = lambda x: ((jnp.max(jnp.abs(x)) < 2.0) & (jnp.max(jnp.abs(x)) > 1.0)) | (jnp.sum(x**2) < 0.1)
    p0 = grid.evaluate(lambda x: inside(x).astype(float))
    p0 = p0 / grid.integrate(p0)
    # from sigma = 4 cells (the 3-point Laplacian resolves log u) to sigma = 1 (mass stays inside)
    ts = jnp.geomspace((4 * h) ** 2 / (2 * KAPPA), 1.0, cfg["n_grid_t"])
    rel = 1e-3
    save = jnp.sort(jnp.concatenate([ts * (1 - rel), ts, ts * (1 + rel)]))
    heat = jd.pde.HeatFlow(kappa=KAPPA, T=1.01)
    us = jd.pde.solve_fokker_planck(heat, grid, p0, t0=0.0, t1=1.01, saveat=save).reshape(-1, 3, *grid.shape)
    q_min = [jnp.nanmin(jd.pde.li_yau(grid, u[1], t, KAPPA)) * 2 * KAPPA * t / d for u, t in zip(us, ts)]
    H = np.array([[jd.pde.entropy(grid, v) for v in u] for u in us])
    ts = np.asarray(ts)
    dH = (H[:, 2] - H[:, 0]) / (2 * rel * ts)
    kI = KAPPA * np.array([jd.pde.fisher_information(grid, u[1]) for u in us])
    return {
        "ts": ts,
        "q_min": np.array(q_min),
        "allow": h**2 / (2 * KAPPA * ts),
        "dH": dH,
        "kI": kI,
        "shape": grid.shape,
    }


def _log_interval_heat(x, sigma):
    """`log u` for the heat flow started from the indicator of `[-1, 1]`:
    `u = Phi((x + 1)/sigma) - Phi((x - 1)/sigma)`, evaluated where it does not cancel."""
    y = -jnp.abs(x)
    hi, lo = (y + 1) / sigma, (y - 1) / sigma
    lhi, llo = jax.scipy.special.log_ndtr(hi), jax.scipy.special.log_ndtr(lo)
    return lhi + jnp.log1p(-jnp.exp(llo - lhi))


def _indicator_q(d: int, sigma2, n_x: int):
    """`q = (sigma^2/d) Laplacian log u + 1` by autodiff of the closed-form heat solution from
    the indicator of `[-1, 1]^d` (not a mixture), at points out to 8 sigma beyond the edges,
    where the inequality becomes an equality (the constant is sharp)."""

    def log_u(x, sigma):
        return jnp.sum(jax.vmap(_log_interval_heat, in_axes=(0, None))(x, sigma))

    def q_at(x, sigma):
        lap = jnp.trace(jax.hessian(log_u)(x, sigma))
        return sigma**2 / d * lap + 1.0

    out = []
    for s2 in np.asarray(sigma2):
        sigma = float(np.sqrt(s2))
        r = np.linspace(0.0, 1.0 + 8 * sigma, n_x)
        x = np.stack([r] * d, axis=1)  # along the diagonal: inside, edge, far corner
        out.append(np.asarray(jax.vmap(q_at, in_axes=(0, None))(jnp.asarray(x), sigma)))
    return np.array(out)  # (n_t, n_x)


def main(out_dir, *, profile: str = "quick", key: int = 0, **sizes) -> list[dict]:
    """Run the experiment; write `<out_dir>/li_yau.json` and PNGs; return the report rows."""
    cfg = profile_sizes(PROFILES, profile, sizes)
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with jax.enable_x64(True):
        rows, details = _run(out, cfg, jax.random.PRNGKey(key))
    rows = [make_row(**r) for r in rows]
    write_json(out, NAME, rows, profile=profile, sizes=cfg, details=details)
    return rows


def _run(out: pathlib.Path, cfg: dict, key):
    import matplotlib.pyplot as plt  # the backend is the caller's (`report_settings` picks Agg)

    heat, ou = _heat_process(), jd.OU()
    s2s = {p: jnp.geomspace(*r, cfg["n_t"]) for p, r in SIGMA2_RANGE.items()}
    all_laws = _laws(jax.random.fold_in(key, 0))
    laws = {n: all_laws[n] for n in cfg["laws"]}
    rows, details = [], {}

    # ---- 1 and 3: pointwise, heat flow and OU -----------------------------------------
    res, res_p = {}, ("heat", "OU")
    for p_name, proc, is_heat in (("heat", heat, True), ("OU", ou, False)):
        ts = _time_at(proc, s2s[p_name])
        for i, (name, law) in enumerate(laws.items()):
            out_i = _pointwise(law, proc, ts, jax.random.fold_in(key, 10 + i), cfg["n_x"], is_heat)
            res[p_name, name] = dict(zip(("q", "lam", "err", "harnack", "size"), map(np.asarray, out_i)))

    def over(p_name, f):
        return [f(r) for (p, _), r in res.items() if p == p_name]

    # q and lambda_min(M) are O(1) differences of O(1/sigma^2)-normalised terms: absolute tolerance
    lowest = {p: min(over(p, lambda r: min(r["q"].min(), r["lam"].min()))) for p in res_p}
    # relative to the size of the cancelling terms (|grad log u|^2 and d_t log u are ~1e4 at
    # the far points for sigma^2 = 1e-3)
    harn_gap = max(over("heat", lambda r: np.max(np.abs(r["harnack"] - r["q"]) / (1 + r["size"]))))
    post_err = max(max(over(p, lambda r: r["err"].max())) for p in res_p)
    dirac_q = max(float(np.max(np.abs(res[p, "Dirac (d=2)"]["q"]))) for p in res_p)
    lowest, harn_gap, post_err = {p: float(v) for p, v in lowest.items()}, float(harn_gap), float(post_err)
    details["pointwise"] = {
        "sigma2": {p: np.asarray(v).tolist() for p, v in s2s.items()},
        "laws": list(laws),
        "lowest_q_or_lambda": lowest,
        "max_harnack_minus_q_relative": harn_gap,
        "max_hessian_vs_posterior_cov": post_err,
        "tolerance": TOL,
        "max_abs_q_dirac": dirac_q,
        "min_q_per_law_heat": {n: res["heat", n]["q"].min(axis=1).tolist() for n in laws},
        "min_lambda_per_law_ou": {n: res["OU", n]["lam"].min(axis=1).tolist() for n in laws},
    }
    # non-mixture starts with closed forms: the indicator of [-1, 1] (1-D) and of a square (2-D)
    ind_q = {
        f"indicator of [-1, 1]^{d}": _indicator_q(d, s2s["heat"], max(16, 2 * cfg["n_x"])) for d in (1, 2)
    }
    details["pointwise"]["min_q_indicator"] = {n: q.min(axis=1).tolist() for n, q in ind_q.items()}
    mix_min = [float(res["heat", n]["q"].min()) for n in laws]
    ind_min = [float(q.min()) for q in ind_q.values()]
    rows.append(
        {
            "id": "li_yau_heat_pointwise",
            "claim": "Li-Yau for the heat flow: Laplacian log u >= -d/(2 kappa t), i.e. q = (2 kappa t/d) "
            "Laplacian log u + 1 >= 0, sharp: from mixtures and atoms, and from indicators of an "
            "interval and a square (not mixtures; closed forms)",
            "predicted": {
                "mixtures, atoms": [0.0] * len(mix_min),
                "indicators": [0.0] * len(ind_min),
                "matrix form = posterior covariance": 0.0,
                "Harnack form = trace form": 0.0,
            },
            "measured": {
                "mixtures, atoms": mix_min,
                "indicators": ind_min,
                "matrix form = posterior covariance": post_err,
                "Harnack form = trace form": harn_gap,
            },
            "criterion": all_of(
                **{
                    "mixtures, atoms": at_least(TOL, f"min q >= -{TOL:g} (rounding)"),
                    "indicators": at_least(
                        TOL, f"min q >= -{TOL:g}; a bound with the constant 20% smaller (q >= 0.2) fails"
                    ),
                    "matrix form = posterior covariance": close(TOL),
                    "Harnack form = trace form": close(TOL),
                }
            ),
            "figures": ["li_yau_pointwise.png"],
            "details": {
                "harnack_form_vs_hessian_form_relative": harn_gap,
                "hessian_vs_posterior_cov": post_err,
                "tolerance": TOL,
                "laws": list(laws) + list(ind_q),
                "n_points": int(cfg["n_x"] * cfg["n_t"] * len(laws)),
            },
        }
    )
    ou_min = [float(res["OU", n]["lam"].min()) for n in laws]
    rows.append(
        {
            "id": "li_yau_ou",
            "claim": "OU analogue: Hess log rho_t >= -I / s_t^2 "
            "(min eigenvalue of s_t^2 Hess log rho_t + I >= 0)",
            "predicted": [0.0] * len(ou_min),
            "measured": ou_min,
            "criterion": at_least(TOL, f"min eigenvalue >= -{TOL:g} for every law"),
            "figures": ["li_yau_pointwise.png"],
            "details": {"tolerance": TOL, "laws": list(laws)},
        }
    )

    # ---- 2: equality for a Dirac and narrow bumps (d = 3, the heat run's times) ---------
    eps = jnp.geomspace(1e-3, 1.0, cfg["n_eps"])
    ts_heat = _time_at(heat, s2s["heat"])
    q_bump = np.stack(
        [
            np.asarray(
                _pointwise(
                    jd.Gaussian(jnp.array([0.3, -0.2, 0.1]), e**2 * jnp.eye(3)),
                    heat,
                    ts_heat,
                    jax.random.fold_in(key, 99),
                    cfg["n_x"],
                    True,
                )[0]
            )
            for e in eps
        ]
    )  # (n_eps, n_t, n_x)
    s2h = np.asarray(s2s["heat"])
    q_pred = np.asarray(eps**2)[:, None] / (s2h[None, :] + np.asarray(eps**2)[:, None])  # (n_eps, n_t)
    bump_err = float(np.max(np.abs(q_bump - q_pred[..., None])))
    details["equality"] = {
        "eps": np.asarray(eps).tolist(),
        "sigma2": s2h.tolist(),
        "q_bump_mean": q_bump.mean(-1).tolist(),
        "q_predicted": q_pred.tolist(),
        "max_abs_error": bump_err,
        "max_abs_q_dirac": dirac_q,
    }
    rows.append(
        {
            "id": "li_yau_equality",
            "claim": "Li-Yau is sharp: equality for a Dirac, approached by narrow bumps",
            "predicted": {"Dirac": 0.0, "bumps": q_pred.ravel()},
            "measured": {"Dirac": dirac_q, "bumps": q_bump.mean(-1).ravel()},
            "criterion": all_of(
                Dirac=close(TOL), bumps=close(TOL, f"q = eps^2/(sigma^2 + eps^2) within {TOL:g}")
            ),
            "figures": ["li_yau_pointwise.png"],
            "details": {"tolerance": TOL},
        }
    )

    # ---- 4: the grid: heat flow from indicator starts, jd.pde.li_yau ---------------------
    grid_res = {d: _grid_heat(d, cfg) for d in cfg["grid_dims"]}
    grid_db = max(float(np.max(np.abs(r["dH"] - r["kI"]) / r["kI"])) for r in grid_res.values())
    details["grid"] = {f"d={d}": r for d, r in grid_res.items()}
    rows.append(
        {
            "id": "li_yau_grid",
            "claim": "Li-Yau on the grid: the heat flow from indicator starts (jd.pde.solve_fokker_planck), "
            "Laplacian_h log u >= -d/(2 kappa t) (jd.pde.li_yau)",
            "predicted": np.concatenate([np.zeros_like(r["q_min"]) for r in grid_res.values()]),
            "measured": np.concatenate([r["q_min"] for r in grid_res.values()]),
            "criterion": at_least(
                np.concatenate([r["allow"] for r in grid_res.values()]),
                "min over cells of q_h >= -(h/sigma)^2 at every saved time",
            ),
            "figures": ["li_yau_grid.png"],
            "details": {
                "criterion": "q >= -(h/sigma)^2 (O(h^2) discretisation allowance), cells above 1e-8 max u",
                "dims": list(cfg["grid_dims"]),
            },
        }
    )

    # ---- 5: de Bruijn: quadrature of the exact density, and the grid --------------------
    mix = all_laws["3-Gaussian mixture (d=2)"]
    s2_db = jnp.geomspace(5e-2, 1.0, cfg["n_t"])
    dH, kI, mass = (np.asarray(v) for v in _de_bruijn(mix, heat, _time_at(heat, s2_db), cfg["quad_n"]))
    db_err = float(np.max(np.abs(dH - kI) / kI))
    fisher_norm = kI / KAPPA * np.asarray(s2_db) / 2  # Fisher / (d / (2 kappa theta)), d = 2
    mass_err = float(np.max(np.abs(mass - 1)))
    grid_fisher = max(float(np.max(r["kI"] / KAPPA * 2 * KAPPA * r["ts"] / d)) for d, r in grid_res.items())
    details["de_bruijn"] = {
        "sigma2": np.asarray(s2_db).tolist(),
        "dH_dtheta": dH.tolist(),
        "kappa_fisher": kI.tolist(),
        "max_rel_error": db_err,
        "fisher_over_bound": fisher_norm.tolist(),
        "quadrature_mass_error": mass_err,
        "grid_max_rel_error": grid_db,
        "grid_max_fisher_over_bound": grid_fisher,
    }
    rows.append(
        {
            "id": "de_bruijn",
            "claim": "de Bruijn: dH/dt = kappa * Fisher information along the heat flow; "
            "Fisher <= d/(2 kappa t)",
            "predicted": {
                "quadrature": kI,
                "grid": np.concatenate([r["kI"] for r in grid_res.values()]),
                "Fisher / bound": [1.0, 1.0],
            },
            "measured": {
                "quadrature": dH,
                "grid": np.concatenate([r["dH"] for r in grid_res.values()]),
                "Fisher / bound": [float(fisher_norm.max()), grid_fisher],
            },
            "criterion": all_of(quadrature=ratio(1e-6), grid=ratio(1e-4), **{"Fisher / bound": at_most(0.0)}),
            # quadrature: with >= 128 points per axis the narrowest component (std >= 0.27) spans >= 3
            # cells; the gap measured at 128, 192 and 384 points is below 1e-8. Grid: the face-form
            # Fisher information makes de Bruijn exact for the semi-discrete heat equation; dH/dt is a
            # central difference over +-0.1% of t, O(1e-6) relative.
            "figures": ["de_bruijn.png"],
            "details": {"quadrature_mass_error": mass_err, "tolerances": {"quadrature": 1e-6, "grid": 1e-4}},
        }
    )

    # ---- figures ------------------------------------------------------------------------
    fig, axs = plt.subplots(1, 3, figsize=(15, 4.3))
    ax = axs[0]
    floor = 1e-13  # margins at rounding level (a Dirac: exactly 0) are drawn here
    for name in laws:
        ax.plot(
            np.asarray(s2s["heat"]),
            np.maximum(res["heat", name]["q"].min(axis=1), floor),
            "o-",
            ms=3,
            label=name,
        )
    for name, q in ind_q.items():
        ax.plot(np.asarray(s2s["heat"]), np.maximum(q.min(axis=1), floor), "s--", ms=3, label=name)
    ax.axhline(0.2, color="r", lw=1, ls=":", label="margin a 20% smaller constant would need")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(r"heat-flow time $\theta = \sigma^2$ ($\kappa = 1/2$)")
    ax.set_ylabel(r"margin $\min_x q$, $q = (\sigma^2/d)\Delta\log u + 1$ (log)")
    ax.set_title("(a) heat flow: margin above the Li–Yau bound")
    ax.legend(fontsize=7)
    ax = axs[1]
    for j, it in enumerate(sorted({0, len(s2h) // 2, len(s2h) - 1})):
        c = f"C{j}"
        ax.loglog(
            np.asarray(eps),
            q_bump[:, it].mean(-1),
            "o",
            color=c,
            label=rf"measured, $\sigma^2$={s2h[it]:.2g}",
        )
        ax.loglog(
            np.asarray(eps),
            q_pred[:, it],
            "-",
            color=c,
            lw=1,
            label=r"$\varepsilon^2/(\sigma^2+\varepsilon^2)$" if j == 0 else None,
        )
    ax.plot([], [], " ", label=f"Dirac: max |q| = {dirac_q:.1e}")
    ax.set_xlabel(r"bump width $\varepsilon$")
    ax.set_ylabel(r"$q$ (0 = equality in Li–Yau)")
    ax.set_title("(b) equality approached by narrow bumps")
    ax.legend(fontsize=7)
    ax = axs[2]
    for name in laws:
        ax.plot(
            np.asarray(s2s["OU"]),
            np.maximum(res["OU", name]["lam"].min(axis=1), floor),
            "o-",
            ms=3,
            label=name,
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(r"OU noise variance $s_t^2 = 1 - e^{-2t}$")
    ax.set_ylabel(r"margin $\min_x \lambda_{\min}(s_t^2 \nabla^2 \log\rho_t + I)$ (log)")
    ax.set_title(r"(c) OU: $\nabla^2\log\rho_t \succeq -I/s_t^2$")
    ax.legend(fontsize=7)
    save_figure(
        fig,
        out,
        "li_yau_pointwise.png",
        caption="Margins above the Li-Yau bound on a log scale (values at rounding level drawn at 1e-13): "
        "heat flow from mixtures, atoms and indicators; equality approached by narrow bumps; the "
        "OU analogue.",
    )

    fig, axs = plt.subplots(1, len(grid_res), figsize=(5.5 * len(grid_res), 4.3), squeeze=False)
    for ax, (d, r) in zip(axs[0], grid_res.items()):
        ax.semilogx(r["ts"], r["q_min"], "o-", label=r"$\min_{\rm cells}\,(2\kappa t/d)\,\Delta_h\log u + 1$")
        ax.semilogx(
            r["ts"], -r["allow"], ":", color="gray", label=r"discretisation allowance $-(h/\sigma)^2$"
        )
        ax.axhline(0.0, color="k", ls="--", label="Li–Yau bound")
        ax.set_xlabel(r"heat-flow time $t$ ($\kappa = 1/2$)")
        ax.set_ylabel("normalised Li–Yau quantity on the grid")
        ax.set_title(f"{d}-D grid {r['shape']}, start: indicator of a set", fontsize=10)
        ax.legend(fontsize=8)
    save_figure(
        fig,
        out,
        "li_yau_grid.png",
        caption="Li-Yau quantity of grid solutions of the heat equation from indicator starts, above the "
        "bound up to the O(h^2) allowance.",
    )

    fig, ax = plt.subplots(figsize=(6, 4.3))
    th = np.asarray(s2_db) / (2 * KAPPA)
    ax.loglog(th, dH, "o", label=r"$dH/d\theta$ (jvp of quadrature entropy)")
    ax.loglog(th, kI, "-", label=r"$\kappa\,I(u_\theta)$ (Fisher information)")
    for d, r in grid_res.items():
        ax.loglog(r["ts"], r["dH"], "s", mfc="none", label=f"grid, {d}-D indicator start: $dH/dt$")
        ax.loglog(r["ts"], r["kI"], "-", lw=1, label=rf"grid, {d}-D: $\kappa I_h$")
    ax.loglog(th, KAPPA * 2 / (2 * KAPPA * th), "k--", label=r"bound $\kappa\, d/(2\kappa\theta)$, d = 2")
    if 1 in grid_res:
        th1 = grid_res[1]["ts"]
        ax.loglog(th1, KAPPA * 1 / (2 * KAPPA * th1), "k:", label="bound, d = 1")
    ax.set_xlabel(r"heat-flow time $\theta$ ($\kappa = 1/2$)")
    ax.set_ylabel("entropy production (nats per unit time)")
    ax.set_title("de Bruijn identity (exact 2-D mixture; grid solutions)")
    ax.legend(fontsize=8)
    save_figure(
        fig,
        out,
        "de_bruijn.png",
        caption="de Bruijn's identity: entropy production equals kappa times the Fisher information, "
        "below the bound d/(2t).",
    )
    return rows, details


if __name__ == "__main__":
    raise SystemExit(standalone(main))
